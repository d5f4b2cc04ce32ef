"""``bench``: a grid of runs (rules × datasets × nets × seeds), each cell in its own process,
summarised against a baseline rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beyondbp.bench.grid import Cell, GridSpec, run_grid
from beyondbp.bench.summary import BASELINE, summarize
from beyondbp.rules import available_rules, get_rule
from beyondbp.runner import open_store
from beyondbp.runs import RunRecord, RunStore
from beyondbp.tasks import task_kind


@dataclass
class BenchResult:
    records: list[RunRecord]
    rows: list[dict[str, Any]]  # the summary, one row per (rule, dataset, net)
    store: RunStore
    skipped: dict[str, str] = field(default_factory=dict)  # what was left out, and why


def fits(rule: str, dataset: str, net: str) -> str | None:
    """Why ``rule`` cannot run on this dataset and net (None: it can)."""
    cls = get_rule(rule)
    kind = task_kind(dataset)
    if kind not in cls.tasks:
        return f"learns {' and '.join(cls.tasks)} tasks; {dataset} is {kind}"
    if not cls.works_on(net):
        return f"cannot train net {net}"
    return None


def default_rules(nets: Sequence[str], datasets: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The rules of a grid that names none, and why each other rule is left out: every rule that
    fits at least one (dataset, net) pair, except the zeroth-order and population rules (their
    defaults target LLM fine-tuning or RL populations and would take hours and learn little)."""
    chosen, skipped = [], {}
    for name, cls in available_rules().items():
        why = [fits(name, d, n) for d in datasets for n in nets]
        if not cls.default_grid:
            skipped[name] = "zeroth-order / population rule: name it with --rules"
        elif all(why):
            skipped[name] = "; ".join(sorted({w for w in why if w}))
        else:
            chosen.append(name)
    return chosen, skipped


@dataclass
class GridPlan:
    """What a grid will run: its grids, their cells, and the cells left out with the reason."""

    grids: list[GridSpec]
    cells: list[Cell]
    skipped: dict[str, str] = field(default_factory=dict)


def plan_grid(
    grid: GridSpec | Sequence[GridSpec] | None = None,
    *,
    rules: Sequence[str] | None = None,
    data: str | Sequence[str] = "digits",
    nets: Sequence[str] = ("mlp:1000x2",),
    seeds: Sequence[int] = (0, 1, 2),
    options: Mapping[str, Mapping[str, Any]] | None = None,
    data_dir: str | Path | None = None,
    target_acc: float | None = None,
    **config: Any,
) -> GridPlan:
    """The cells of one or more :class:`GridSpec` (from a file or a preset) or of a grid given
    by its fields. Without ``rules`` the grid holds the :func:`default_rules` and leaves out
    the (rule, dataset, net) cells a rule cannot run, each named with the reason."""
    skipped: dict[str, str] = {}
    auto = grid is None and rules is None
    if grid is None:
        datasets = [data] if isinstance(data, str) else list(data)
        if rules is None:
            rules, skipped = default_rules(nets, datasets)
        grid = GridSpec(
            rules=list(rules),
            datasets=datasets,
            nets=list(nets),
            seeds=list(seeds),
            options={k: dict(v) for k, v in (options or {}).items()},
            config=config,
            data_dir=str(data_dir) if data_dir else None,
            target_acc=target_acc,
        )
    grids = [grid] if isinstance(grid, GridSpec) else list(grid)
    cells = []
    for g in grids:
        for c in g.cells():
            why = fits(c.rule, c.dataset, c.net) if auto else None
            if why:
                skipped[f"{c.rule} on {c.dataset}, {c.net}"] = why
            else:
                cells.append(c)
    return GridPlan(grids, cells, skipped)


def bench(
    grid: GridPlan | GridSpec | Sequence[GridSpec] | None = None,
    *,
    store: str | Path | RunStore | bool | None = True,
    jobs: int = 1,
    retry_failed: bool = False,
    on_done: Callable[[Cell, RunRecord | None], None] | None = None,
    backend: str = "local",
    address: str | None = None,
    baseline: str = BASELINE,
    **fields: Any,
) -> BenchResult:
    """Run a grid (every rule × dataset × net × seed), each cell in its own process, and
    summarise it against the ``baseline`` rule. Finished cells are never recomputed; a killed
    grid continues where it stopped.

    Give a :class:`GridPlan`, one or more :class:`GridSpec` (from a YAML/TOML file or a preset),
    or the grid's fields (``rules``, ``data``, ``nets``, ``seeds``, ``options``, ``data_dir``,
    ``target_acc`` and harness settings, as :func:`plan_grid` takes them). ``backend="ray"``
    runs the cells as Ray tasks (``address``: a cluster's; default a local Ray head), ``jobs``
    at a time.
    """
    plan = grid if isinstance(grid, GridPlan) else plan_grid(grid, **fields)
    run_store = open_store(store if store is not False else True)
    assert run_store is not None
    records = run_grid(
        plan.cells, run_store, jobs=jobs, retry_failed=retry_failed, on_done=on_done,
        backend=backend, address=address,
    )  # fmt: skip
    rows = summarize(records, plan.grids[0].target_acc, baseline=baseline)
    return BenchResult(records, rows, run_store, plan.skipped)
