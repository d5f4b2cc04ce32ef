"""The functions behind the CLI: everything the command line does is a function here first.

>>> import beyondbp as bb
>>> result = bb.train("bp", data="digits", net="mlp:256x2", epochs=20)
>>> result.metrics["test_acc"], result.model
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from beyondbp.data import Dataset, load_dataset
from beyondbp.errors import BeyondBPError
from beyondbp.harness import EpochCallback, TrainConfig, Trainer, seed_everything
from beyondbp.measure import environment
from beyondbp.nets import build_net
from beyondbp.rules import Rule, get_rule, make_options
from beyondbp.runs import RunRecord, RunStore
from beyondbp.runs.store import new_run_id


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
        self.rule.train_mode(False)
        device = next(self.model.parameters()).device
        return self.rule.predict(x.to(device)).argmax(1)


def resolve_device(device: str, rule_cls: type[Rule]) -> str:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() and "cuda" in rule_cls.devices else "cpu"
    kind = torch.device(device).type
    if kind not in rule_cls.devices:
        raise BeyondBPError(
            f"rule {rule_cls.name!r} runs on {', '.join(rule_cls.devices)}, not {device}"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise BeyondBPError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


def _open_store(store: str | Path | RunStore | bool | None) -> RunStore | None:
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
    callbacks: Sequence[EpochCallback] = (),
    **config: Any,
) -> TrainResult:
    """Train ``net`` on ``data`` with a learning rule; store the run and return the result.

    ``options`` are the rule's (see ``beyondbp rules NAME``); ``config`` are the harness settings
    of :class:`~beyondbp.harness.TrainConfig` (epochs, batch_size, patience, seed, device, ...).
    ``store=True`` writes to the default run store, a path to another, ``False`` to none.
    ``resume="RUN_ID"`` continues a stopped or killed run from its last checkpoint;
    ``run_id`` names a new run (a grid uses it so a cell is stored once, whatever happens).
    ``callbacks`` see every epoch's history row; one returning a string stops the run.
    """
    run_store = _open_store(store)
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
        from beyondbp.errors import UnknownNameError

        raise UnknownNameError("training setting", bad[0], known)
    cfg = TrainConfig(**config)
    cfg = cfg.model_copy(update={"device": resolve_device(cfg.device, rule_cls)})

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
    ckpt_dir = run_store.path.parent / "checkpoints" / record.id if run_store else None
    rule_obj = rule_cls(opts)
    trainer = Trainer(rule_obj, model, dataset, cfg, record, run_store, ckpt_dir, callbacks)
    trainer.fit(resume=resume is not None)
    return TrainResult(model, rule_obj, record)


def summarize(records: Iterable[RunRecord]) -> list[dict[str, Any]]:
    """Mean ± std over seeds for each (rule, dataset, net), with ratios against ``bp``."""
    groups: dict[tuple[str, str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.rule, r.dataset, r.net), []).append(r)

    def stats(rs: list[RunRecord], key: str) -> tuple[float | None, float | None]:
        vals = [r.metrics[key] for r in rs if r.metrics.get(key) is not None]
        if not vals:
            return None, None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

    rows = []
    for (rule, dataset, net), rs in groups.items():
        done = [r for r in rs if r.status == "finished"]
        row: dict[str, Any] = {
            "rule": rule,
            "dataset": dataset,
            "net": net,
            "runs": len(done),
            "failed": len(rs) - len(done),
        }
        for key in (
            "test_acc",
            "train_time_s",
            "peak_step_bytes",
            "peak_rss_bytes",
            "energy_wh",
            "gflops_per_s",
            "epochs",
        ):
            row[key], row[key + "_std"] = stats(done, key)
        labels = {r.metrics.get("energy_label") for r in done}
        row["energy_label"] = labels.pop() if len(labels) == 1 else "mixed"
        rows.append(row)
    by_cell = {(r["dataset"], r["net"]): r for r in rows if r["rule"] == "bp"}
    for row in rows:
        base = by_cell.get((row["dataset"], row["net"]))
        for key, name in (
            ("test_acc", "delta_acc"),
            ("train_time_s", "time_ratio"),
            ("energy_wh", "energy_ratio"),
            ("peak_step_bytes", "memory_ratio"),
        ):
            a, b = row.get(key), base.get(key) if base else None
            if a is None or b is None:
                row[name] = None
            else:
                row[name] = a - b if name == "delta_acc" else (a / b if b else None)
    return rows


def bench(
    rules: Sequence[str] | None = None,
    data: str = "digits",
    nets: Sequence[str] = ("mlp:1000x2",),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    data_dir: str | Path | None = None,
    store: str | Path | RunStore | bool | None = True,
    **config: Any,
) -> list[dict[str, Any]]:
    """Run every rule × net × seed in this process and summarise (mean ± std, ratios vs bp).

    ``options`` maps a rule name to its options. This is the small in-process comparison of the
    main job; grids with process isolation and resume belong to the benchmark tooling.
    """
    from beyondbp.rules import available_rules

    rules = list(rules or available_rules())
    records = []
    for rule in rules:
        for net in nets:
            for seed in seeds:
                res = train(
                    rule,
                    data,
                    net,
                    options=(options or {}).get(rule),
                    data_dir=data_dir,
                    store=store,
                    seed=seed,
                    **config,
                )
                records.append(res.record)
    return summarize(records)
