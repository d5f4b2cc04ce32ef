"""The functions behind the CLI: everything the command line does is a function here first.

>>> import beyondbp as bb
>>> result = bb.train("bp", data="digits", net="mlp:256x2", epochs=20)
>>> result.metrics["test_acc"], result.model
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from beyondbp.bench.grid import Cell, GridSpec, natural_key, run_grid, setup_key
from beyondbp.data import Dataset, load_dataset
from beyondbp.errors import BeyondBPError, UnknownNameError
from beyondbp.harness import EpochCallback, TrainConfig, Trainer, make_config, seed_everything
from beyondbp.measure import environment
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
        raise UnknownNameError("training setting", bad[0], known)
    cfg = make_config(config)
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
    ckpt_dir = run_store.checkpoint_dir(record.id) if run_store else None
    rule_obj = rule_cls(opts)
    trainer = Trainer(
        rule_obj, model, make_task(dataset), cfg, record, run_store, ckpt_dir, callbacks
    )
    trainer.fit(resume=resume is not None)
    return TrainResult(model, rule_obj, record)


def options_diff(record: RunRecord) -> str:
    """The options of a run that differ from its rule's defaults, as ``k=v, ...`` ('' if none)."""
    from beyondbp.rules import available_rules

    cls = available_rules().get(record.rule)
    if cls is None:
        return ""
    defaults = cls.Options().model_dump()
    return ", ".join(f"{k}={v}" for k, v in record.options.items() if defaults.get(k) != v)


def time_to_target(record: RunRecord, target: float) -> float | None:
    """Training seconds until the validation accuracy first reached ``target`` (None: never)."""
    for row in record.history:
        if (row.get("val_acc") or 0.0) >= target:
            return row["train_time_s"]
    return None


def summarize(
    records: Iterable[RunRecord], target_acc: float | None = None
) -> list[dict[str, Any]]:
    """Mean ± std over seeds for each (rule, dataset, net), with ratios against ``bp`` on the same
    dataset and net: Δaccuracy, time, energy and memory ratios (the Spyra 2025 table format)."""
    # Seeds of one setup form a group; the same rule, data and net under another budget or
    # other options is another group (its setup id tells them apart).
    groups: dict[tuple[str, str, str, str, str], list[RunRecord]] = {}
    for r in records:
        key = (r.rule, r.dataset, r.net, setup_key(r), setup_key(r, with_options=False))
        groups.setdefault(key, []).append(r)

    def stats(values: list[float | None]) -> tuple[float | None, float | None]:
        vals = [v for v in values if v is not None]
        if not vals:
            return None, None
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0

    rows = []
    for (rule, dataset, net, setup, budget), rs in groups.items():
        done = [r for r in rs if r.status == "finished"]
        row: dict[str, Any] = {
            "rule": rule,
            "dataset": dataset,
            "net": net,
            "setup": setup,
            "budget": budget,
            "variant": options_diff(rs[0]),
            "runs": len(done),
            "not_finished": len(rs) - len(done),
            "errors": sorted(
                {
                    f"{r.status}: {r.error or r.metrics.get('stop_reason')}"
                    for r in rs
                    if r.status != "finished"
                }
            ),
        }
        for key in METRICS:
            row[key], row[key + "_std"] = stats([r.metrics.get(key) for r in done])
        if target_acc is not None:
            times = [time_to_target(r, target_acc) for r in done]
            row["target_acc"] = target_acc
            row["reached_target"] = sum(t is not None for t in times)
            row["time_to_target_s"], row["time_to_target_s_std"] = stats(times)
        labels = {r.metrics.get("energy_label") for r in done}
        row["energy_label"] = labels.pop() if len(labels) == 1 else "mixed"
        rows.append(row)
    # the baseline: bp on the same data and net under the same harness budget; failing that,
    # bp on the same data and net under its own protocol (a paper comparison where each rule
    # trains to its own early stopping, e.g. FF with batch 100 against BP with batch 128)
    by_cell: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in rows:
        if r["rule"] == "bp" and r["runs"]:
            by_cell.setdefault((r["dataset"], r["net"], r["budget"]), r)
            by_cell.setdefault((r["dataset"], r["net"]), r)
    for row in rows:
        base = by_cell.get((row["dataset"], row["net"], row["budget"]))
        row["baseline"] = "bp, same budget" if base else None
        if base is None and (base := by_cell.get((row["dataset"], row["net"]))) is not None:
            row["baseline"] = "bp, its own budget"
        for key, name in RATIOS:
            a, b = row.get(key), base.get(key) if base else None
            if a is None or b is None:
                row[name] = None
            else:
                row[name] = a - b if name == "delta_acc" else (a / b if b else None)
    return rows


METRICS = (
    "test_acc",
    "test_return",
    "train_time_s",
    "val_time_s",
    "peak_step_bytes",
    "peak_rss_bytes",
    "energy_wh",
    "flops_per_step",
    "gflops_per_s",
    "epochs",
    "step_transient_bytes",
)
RATIOS = (
    ("test_acc", "delta_acc"),
    ("train_time_s", "time_ratio"),
    ("energy_wh", "energy_ratio"),
    ("peak_step_bytes", "memory_ratio"),
)


@dataclass
class BenchResult:
    records: list[RunRecord]
    rows: list[dict[str, Any]]  # the summary, one row per (rule, dataset, net)
    store: RunStore


def bench(
    grid: GridSpec | None = None,
    *,
    rules: Sequence[str] | None = None,
    data: str | Sequence[str] = "digits",
    nets: Sequence[str] = ("mlp:1000x2",),
    seeds: Sequence[int] = (0, 1, 2),
    options: Mapping[str, Mapping[str, Any]] | None = None,
    data_dir: str | Path | None = None,
    store: str | Path | RunStore | bool | None = True,
    jobs: int = 1,
    retry_failed: bool = False,
    target_acc: float | None = None,
    on_done: Callable[[Cell, RunRecord | None], None] | None = None,
    backend: str = "local",
    address: str | None = None,
    **config: Any,
) -> BenchResult:
    """Run a grid (every rule × dataset × net × seed), each cell in its own process, and
    summarise it. Finished cells are never recomputed; a killed grid continues where it stopped.

    Give a :class:`GridSpec` (e.g. from a YAML/TOML file) or the same fields as arguments;
    ``config`` are harness settings for every cell. ``backend="ray"`` runs the cells as Ray
    tasks (``address``: a cluster's; default a local Ray head), ``jobs`` at a time.
    """
    from beyondbp.rules import available_rules

    if grid is None:
        grid = GridSpec(
            rules=list(rules or available_rules()),
            datasets=[data] if isinstance(data, str) else list(data),
            nets=list(nets),
            seeds=list(seeds),
            options={k: dict(v) for k, v in (options or {}).items()},
            config=config,
            data_dir=str(data_dir) if data_dir else None,
            target_acc=target_acc,
        )
    run_store = _open_store(store if store is not False else True)
    assert run_store is not None
    records = run_grid(
        grid.cells(), run_store, jobs=jobs, retry_failed=retry_failed, on_done=on_done,
        backend=backend, address=address,
    )  # fmt: skip
    return BenchResult(records, summarize(records, grid.target_acc), run_store)


@dataclass
class ReproduceResult:
    preset: Any  # beyondbp.bench.presets.Preset
    rows: list[dict[str, Any]]  # summary rows with the paper's numbers and the gap
    records: list[RunRecord]
    quick: bool


def reproduce(
    name: str,
    *,
    quick: bool = False,
    datasets: Sequence[str] | None = None,
    nets: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    data_dir: str | Path | None = None,
    store: str | Path | RunStore | bool | None = True,
    jobs: int = 1,
    on_done: Callable[[Cell, RunRecord | None], None] | None = None,
    run: bool = True,
    rules: Sequence[str] | None = None,
    device: str | None = None,
    max_seconds: float | None = None,
) -> ReproduceResult:
    """Run a paper preset and put the paper's numbers next to ours.

    Each row gets ``paper_acc`` (%), ``gap`` (ours − paper, points) and ``verdict``: whether the
    paper's number lies inside the range of our seeds, or below / above it. ``quick`` runs the
    preset's reduced budget with one seed, so anyone can try it in minutes. ``datasets``,
    ``nets`` and ``rules`` keep only those parts of the preset. ``run=False`` runs nothing: the table of what
    the store already holds. ``device`` (cpu, cuda, auto) and ``max_seconds`` (a training-time
    budget per run) change every cell's harness settings, so such runs are stored as cells of
    their own, apart from the preset's as written.
    """
    from beyondbp.bench.presets import get_preset

    preset = get_preset(name)
    cells: list[Cell] = []
    for grid in preset.grids:
        update: dict[str, Any] = {}
        config = {**grid.config, **(preset.quick if quick else {})}
        if device is not None:
            config["device"] = device
        if max_seconds is not None:
            config["max_seconds"] = max_seconds
        if config != grid.config:
            update["config"] = config
        if quick:
            update["seeds"] = [0]
        if seeds is not None:
            update["seeds"] = list(seeds)
        if datasets:
            update["datasets"] = [d for d in grid.datasets if d in datasets]
        if nets:
            update["nets"] = [n for n in grid.nets if n in nets]
        if rules:
            update["rules"] = [r for r in grid.rules if r in rules]
        if data_dir is not None:
            update["data_dir"] = str(data_dir)
        cells += grid.model_copy(update=update).cells()
    run_store = _open_store(store if store is not False else True)
    assert run_store is not None
    if run:
        run_grid(cells, run_store, jobs=jobs, on_done=on_done)
    found = [(c, c.find(run_store)) for c in cells]
    records = [r for _, r in found if r is not None]
    rows = summarize(records)
    options, accs = {}, {}  # per setup: the rule's options, the finished seeds' accuracies
    for r in records:
        key = (r.rule, r.dataset, r.net, setup_key(r))
        options[key] = r.options
        if r.status == "finished":
            accs.setdefault(key, []).append(100 * r.metrics["test_acc"])
    for c in (c for c, r in found if r is None):  # a setup with no run yet: a row that says so
        ghost = RunRecord(c.rule, c.dataset, c.net, c.seed, options=c.full_options(),
                          config=c.full_config())  # fmt: skip
        key = (c.rule, c.dataset, c.net, setup_key(ghost))
        if key not in options:
            options[key] = ghost.options
            rows += [{**summarize([ghost])[0], "not_finished": 0, "errors": []}]
    for row in rows:
        key = (row["rule"], row["dataset"], row["net"], row["setup"])
        paper = preset.paper_number(row["rule"], row["dataset"], row["net"], options[key])
        ours = accs.get(key, [])
        row.update(paper_acc=None, gap=None, verdict="no paper number", paper_time_s=None)
        row["paper_time_ratio"] = None
        if paper is not None:
            row.update(
                paper_acc=paper.test_acc, paper_time_s=paper.time_s, paper_energy_wh=paper.energy_wh
            )
            paper_bp = preset.paper_number("bp", row["dataset"], row["net"], {})
            if paper.time_s and paper_bp is not None and paper_bp.time_s:
                row["paper_time_ratio"] = paper.time_s / paper_bp.time_s
            if ours:
                row["gap"] = statistics.fmean(ours) - paper.test_acc
                if min(ours) <= paper.test_acc <= max(ours):
                    row["verdict"] = "inside our seed spread"
                else:
                    row["verdict"] = "ours above" if min(ours) > paper.test_acc else "ours below"
            else:
                row["verdict"] = "not run"
    return ReproduceResult(preset, rows, records, quick)


def reproduce_markdown(result: ReproduceResult) -> str:
    """The ours-vs-paper table of a reproduction, as Markdown."""
    p = result.preset
    quick = " **Quick run** (reduced budget, one seed): not a reproduction." if result.quick else ""
    lines = [
        f"# {p.name}: {p.description}",
        "",
        f"Source of the paper's numbers: {p.source}.{quick}",
        "",
        "| data | net | rule | runs | ours: test acc % | paper % | gap (points) | verdict "
        "| train time s | time ×BP | paper time s | paper time ×BP | energy Wh | epochs "
        "| GFLOP/step | step memory MiB (of it allocated by the step) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def num(v: float | None, fmt: str, scale: float = 1.0) -> str:
        return "-" if v is None else fmt.format(v * scale)

    def pm(r: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
        if r[key] is None:
            return "-"
        return f"{num(r[key], fmt, scale)} ± {num(r[key + '_std'], fmt, scale)}"

    for r in sorted(result.rows, key=lambda r: (r["dataset"], natural_key(r["net"]), r["rule"])):
        energy = "-" if r["energy_wh"] is None else f"{r['energy_wh']:.3f} ({r['energy_label']})"
        memory = num(r["peak_step_bytes"], "{:.1f}", 2**-20)
        if r["step_transient_bytes"] is not None:
            memory += f" ({r['step_transient_bytes'] / 2**20:.1f})"
        cells = [
            r["dataset"],
            r["net"],
            r["rule"] + (f" ({r['variant']})" if r["variant"] else ""),
            str(r["runs"]),
            pm(r, "test_acc", "{:.2f}", 100),
            num(r["paper_acc"], "{}"),
            num(r["gap"], "{:+.2f}"),
            r["verdict"],
            pm(r, "train_time_s", "{:.1f}"),
            num(r["time_ratio"], "{:.2f}") + ("*" if r["baseline"] == "bp, its own budget" else ""),
            num(r["paper_time_s"], "{}"),
            num(r["paper_time_ratio"], "{:.2f}"),
            energy,
            num(r["epochs"], "{:.0f}"),
            num(r["flops_per_step"], "{:.2f}", 1e-9),
            memory,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "time ×BP: our training time over that of bp on the same data and net in this table "
        "(* bp under its own budget, e.g. another batch size: each rule to its own stopping "
        "rule, as in the paper). Train time excludes validation passes; the paper's includes "
        "them.",
    ]
    if p.notes:
        lines += ["", p.notes]
    return "\n".join(lines) + "\n"
