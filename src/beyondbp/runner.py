"""One run: build the task, the net and the rule, run the harness, store the record.

>>> from beyondbp.runner import train
>>> result = train("bp", data="digits", net="mlp:256x2", epochs=20)
>>> result.metrics["test_acc"], result.model
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from beyondbp.data import Dataset, load_dataset
from beyondbp.errors import BeyondBPError, UnknownNameError
from beyondbp.harness import (
    Callback,
    EpochCallback,
    TrainConfig,
    Trainer,
    make_config,
    seed_everything,
)
from beyondbp.measure import environment
from beyondbp.measure.energy import warm_up
from beyondbp.nets import build_net
from beyondbp.rules import Rule, get_rule, make_options
from beyondbp.runs import RunRecord, RunStore
from beyondbp.runs.store import new_run_id
from beyondbp.tasks import make_task


@dataclass
class TrainResult:
    """A trained model, the rule that trained it (some rules predict with extra modules), and
    the stored record with every metric."""

    model: nn.Module
    rule: Rule
    record: RunRecord

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.metrics

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted classes for normalised inputs ``x``."""
        self.rule.set_phase("test")
        device = next(self.model.parameters()).device
        return self.rule.predict(x.to(device)).argmax(1)


def resolve_device(device: str, rule_cls: type[Rule], check: bool = True) -> str:
    """The device a run of ``rule_cls`` trains on; ``check=False`` names it without asking
    whether this machine has it (to find a GPU machine's runs in a store elsewhere)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and "cuda" in rule_cls.devices else "cpu"
    kind = torch.device(device).type
    if kind not in rule_cls.devices:
        raise BeyondBPError(
            f"rule {rule_cls.name!r} runs on {', '.join(rule_cls.devices)}, not {device}"
        )
    if check and kind == "cuda" and not torch.cuda.is_available():
        raise BeyondBPError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def open_store(store: str | Path | RunStore | bool | None) -> RunStore | None:
    if store is False or store is None:
        return None
    if isinstance(store, RunStore):
        return store
    return RunStore(None if store is True else store)


def train(
    rule: str,
    data: str | Dataset = "digits",
    net: str | nn.Module = "mlp:1000x2",
    *,
    options: Mapping[str, Any] | None = None,
    data_dir: str | Path | None = None,
    store: str | Path | RunStore | bool | None = True,
    resume: str | None = None,
    run_id: str | None = None,
    callbacks: Sequence[Callback | EpochCallback] = (),
    **config: Any,
) -> TrainResult:
    """Train ``net`` on ``data`` with a learning rule; store the run and return the result.

    ``options`` are the rule's (see ``beyondbp rules NAME``); ``config`` are the harness settings
    of :class:`~beyondbp.harness.TrainConfig` (epochs, batch_size, patience, seed, device, ...).
    ``store=True`` writes to the default run store, a path to another, ``False`` to none.
    ``resume="RUN_ID"`` continues a stopped or killed run from its last checkpoint;
    ``run_id`` names a new run (a grid uses it so a cell is stored once, whatever happens).
    ``callbacks``: :class:`~beyondbp.harness.Callback` objects, or functions that see every
    epoch's history row (one returning a string stops the run).
    """
    run_store = open_store(store)
    if resume is not None:
        if run_store is None:
            raise BeyondBPError("resume needs the run store that holds the run")
        old = run_store.get(resume)
        if old.status == "finished":
            raise BeyondBPError(f"run {old.id} already finished; nothing to resume")
        rule, options = old.rule, old.options
        config = {k: v for k, v in old.config.items() if k != "data_dir"} | config
        data = data if isinstance(data, Dataset) else old.dataset
        net = net if isinstance(net, nn.Module) else old.net
        data_dir = data_dir or old.config.get("data_dir")
        record = old
    rule_cls = get_rule(rule)
    opts = make_options(rule_cls, options)
    known = TrainConfig.model_fields
    bad = [k for k in config if k not in known]
    if bad:
        raise UnknownNameError("training setting", bad[0], known)
    cfg = make_config(config)
    cfg = cfg.model_copy(update={"device": resolve_device(cfg.device, rule_cls)})
    if cfg.energy:  # CodeCarbon's one-off hardware detection, beside the set-up below
        warm_up(cfg.device)

    dataset = (
        data if isinstance(data, Dataset) else load_dataset(data, data_dir, data_seed=cfg.data_seed)
    )
    seed_everything(cfg.seed)  # the net's initial weights depend on the run seed only
    if isinstance(net, str):
        net_spec, model = net, build_net(net, dataset.meta.input_shape, dataset.meta.classes)
    else:
        net_spec, model = type(net).__name__, net

    if resume is None:
        record = RunRecord(
            id=run_id or new_run_id(),
            rule=rule,
            dataset=dataset.meta.name,
            net=net_spec,
            seed=cfg.seed,
            data_seed=cfg.data_seed,
            options=opts.model_dump(),
            config=cfg.model_dump() | {"data_dir": str(data_dir) if data_dir else None},
        )
    record.env = environment(cfg.device)
    record.metrics.setdefault("params", sum(p.numel() for p in model.parameters()))
    if dataset.meta.notes:
        record.metrics["data_notes"] = dataset.meta.notes
    ckpt_dir = run_store.checkpoint_dir(record.id) if run_store else None
    rule_obj = rule_cls(opts)
    trainer = Trainer(
        rule_obj, model, make_task(dataset), cfg, record, run_store, ckpt_dir, callbacks
    )
    trainer.fit(resume=resume is not None)
    return TrainResult(model, rule_obj, record)
