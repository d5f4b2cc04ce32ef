"""``reproduce``: a paper preset's grids run, with the paper's numbers and the gap beside ours."""

from __future__ import annotations

import dataclasses
import gzip
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beyondbp.bench.grid import Cell, natural_key, run_grid, setup_key
from beyondbp.bench.presets import is_percent
from beyondbp.bench.summary import behaviour, summarize
from beyondbp.errors import BeyondBPError
from beyondbp.runner import open_store
from beyondbp.runs import RunRecord, RunStore

GZIP_ABOVE = 2_000_000  # characters: a results JSON longer than this is written as .json.gz
SETTINGS = ("attack_eps", "attack_steps")  # metrics that are settings: tabled plainly


@dataclass
class ReproduceResult:
    preset: Any  # beyondbp.bench.presets.Preset
    rows: list[dict[str, Any]]  # summary rows with the paper's numbers and the gap
    records: list[RunRecord]
    quick: bool
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)  # device, max_seconds


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
    run_store = open_store(store if store is not False else True)
    assert run_store is not None
    if run:
        # a cell that failed may fail no more (its data has been placed, a bug fixed): retried;
        # a diverged one is a result
        run_grid(cells, run_store, jobs=jobs, retry_failed=True, on_done=on_done)
    found = [(c, c.find(run_store)) for c in cells]
    records = [r for _, r in found if r is not None]
    rows = summarize(records)
    metric, scale = preset.metric, 100.0 if is_percent(preset.metric) else 1.0
    options, scores = {}, {}  # per setup: the rule's options, the finished seeds' scores
    for r in records:
        key = (r.rule, r.dataset, r.net, setup_key(r))
        options[key] = r.options | behaviour(r)  # a paper variant may name state_noise
        if r.status == "finished" and r.metrics.get(metric) is not None:
            scores.setdefault(key, []).append(scale * r.metrics[metric])
    for c in (c for c, r in found if r is None):  # a setup with no run yet: a row that says so
        ghost = RunRecord(c.rule, c.dataset, c.net, c.seed, options=c.full_options(),
                          config=c.full_config())  # fmt: skip
        key = (c.rule, c.dataset, c.net, setup_key(ghost))
        if key not in options:
            options[key] = ghost.options | behaviour(ghost)
            rows += [{**summarize([ghost])[0], "not_finished": 0, "errors": []}]
    bars = _solved_bars(preset, {row["dataset"] for row in rows}, data_dir, scale)
    for row in rows:
        key = (row["rule"], row["dataset"], row["net"], row["setup"])
        paper = preset.paper_number(row["rule"], row["dataset"], row["net"], options[key])
        ours = scores.get(key, [])
        row["score"], row["score_std"] = row.get(metric), row.get(metric + "_std")
        if row["dataset"] in bars:
            row["solved_at"] = bars[row["dataset"]]
            row["solved"] = sum(v >= bars[row["dataset"]] for v in ours)
        row.update(paper_acc=None, gap=None, verdict="no paper number", paper_time_s=None)
        row["paper_time_ratio"] = None
        if not ours:  # with or without a paper number: say why there is no number of ours
            failed = [e for e in row["errors"] if e.startswith("failed")]
            row["verdict"] = "failed: " + failed[0] if failed else "not run"
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
    overrides = {k: v for k, v in (("device", device), ("max_seconds", max_seconds)) if v}
    return ReproduceResult(preset, rows, records, quick, overrides)


def _solved_bars(
    preset: Any, datasets: set[str], data_dir: str | Path | None, scale: float
) -> dict[str, float]:
    """Each dataset's bar of the "solved" column, in the table's units (``chance``: the
    task's floor on its test split, computed here)."""
    bars = {}
    for dataset in datasets & set(preset.solved_at):
        bar = preset.solved_at[dataset]
        if bar == "chance":
            from beyondbp.data import load_dataset
            from beyondbp.tasks import make_task

            bar = scale * make_task(load_dataset(dataset, data_dir)).chance("test")
        bars[dataset] = float(bar)
    return bars


def reproduce_markdown(result: ReproduceResult, notes: Sequence[str] = ()) -> str:
    """The ours-vs-paper table of a reproduction, as Markdown; ``notes``: paragraphs of the
    person who ran it, printed under the preset's."""
    p = result.preset
    quick = " **Quick run** (reduced budget, one seed): not a reproduction." if result.quick else ""
    acc = is_percent(p.metric)
    score = p.metric.replace("_", " ") + (" %" if acc else "")
    extra = list(p.columns.items())
    solved = " solved |" if p.solved_at else ""
    lines = [
        f"# {p.name}: {p.description}",
        "",
        f"Source of the paper's numbers: {p.source}.{quick}",
        "",
        f"| data | net | rule | runs | ours: {score} |"
        + "".join(f" {header} |" for _, header in extra)
        + f" paper{' %' if acc else ''} | gap{' (points)' if acc else ''} | verdict |{solved}"
        " train time s | time ×BP | paper time s | paper time ×BP | energy Wh | epochs "
        "| GFLOP/step | step memory MiB (of it allocated by the step) |",
        "|---|---|---|---:|---:|" + "---:|" * len(extra) + "---:|---:|---|"
        + ("---:|" if solved else "") + "---:|" * 8,
    ]  # fmt: skip

    def num(v: float | None, fmt: str, scale: float = 1.0) -> str:
        return "-" if v is None else fmt.format(v * scale)

    def pm(r: dict[str, Any], key: str, fmt: str, scale: float = 1.0) -> str:
        if r.get(key) is None:
            return "-"
        return f"{num(r[key], fmt, scale)} ± {num(r[key + '_std'], fmt, scale)}"

    def metric(r: dict[str, Any], key: str) -> str:  # a metric in its unit, by its name
        if is_percent(key):
            return pm(r, key, "{:.2f}", 100)
        if key.endswith("_bytes"):
            return pm(r, key, "{:.1f}", 2**-20)
        if key.endswith("_passes"):  # counts
            return pm(r, key, "{:,.0f}")
        if key in SETTINGS and r.get(key) is not None:  # the same for every seed
            return f"{r[key]:g}"
        return pm(r, key, "{:.2f}")

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
            metric(r, p.metric),
            *(metric(r, key) for key, _ in extra),
            num(r["paper_acc"], "{}"),
            num(r["gap"], "{:+.2f}"),
            r["verdict"],
            *([f"{r['solved']}/{r['runs']} (≥ {r['solved_at']:g})" if "solved" in r else "-"]
              if solved else []),
            pm(r, "train_time_s", "{:.1f}"),
            num(r["time_ratio"], "{:.2f}")
            + ("*" if (r["baseline"] or "").endswith("own budget") else ""),
            num(r["paper_time_s"], "{}"),
            num(r["paper_time_ratio"], "{:.2f}"),
            energy,
            num(r["epochs"], "{:.0f}"),
            num(r["flops_per_step"], "{:.2f}", 1e-9),
            memory,
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "time ×BP: our training time over that of bp on the same data and net in this table "
        "(* bp under its own budget, e.g. another batch size: each rule to its own stopping "
        "rule, as in the paper). Train time excludes validation passes; the paper's includes "
        "them.",
    ]
    if any(r["energy_label"] == "estimated" for r in result.rows):
        lines += [
            "",
            "Energy (estimated): no RAPL or NVML counter was readable, so CodeCarbon modelled "
            "the CPU's power from its power class, plus RAM: an estimate, not a measurement.",
        ]
    lines += [x for n in (p.notes, *notes) if n for x in ("", n)]
    return "\n".join(lines) + "\n"


def read_reproduction(path: str | Path) -> dict[str, Any]:
    """A results file :func:`write_reproduction` wrote (its command, rows and runs), from
    ``NAME.json`` or, where the text was long, ``NAME.json.gz`` (either name may be given)."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".gz"), path.with_suffix("")):
        if candidate.is_file() and candidate.name.endswith((".json", ".json.gz")):
            raw = candidate.read_bytes()
            try:
                return json.loads(gzip.decompress(raw) if candidate.suffix == ".gz" else raw)
            except (OSError, ValueError) as e:
                raise BeyondBPError(f"{candidate} is not a readable results file ({e}); "
                                    "write it again with `beyondbp reproduce ... --no-run`") from e  # fmt: skip
    raise BeyondBPError(f"no results file {path} (nor {path.name}.gz); write it with "
                        "`beyondbp reproduce PRESET --no-run --out benchmarks/results`")  # fmt: skip


def write_reproduction(
    result: ReproduceResult, out: str | Path, command: str, notes: Sequence[str] = ()
) -> list[Path]:
    """Write a reproduction where ``out`` says: a folder gets ``PRESET.md`` (the table) and
    ``PRESET.json`` (summary rows and full run records, which ``beyondbp runs import`` reads;
    ``PRESET.json.gz`` when over 2 MB), both with their provenance (command, machine, versions,
    commit), named ``PRESET-quick`` for a quick run and ``PRESET-gpu`` for cells run with
    ``--device cuda`` (cells of their own); a ``.md`` path gets the table alone."""
    from beyondbp.measure import environment, provenance_markdown

    out = Path(out)
    provenance = provenance_markdown(command, runs=[r.env for r in result.records])
    table = reproduce_markdown(result, notes) + "\n" + "\n".join(provenance) + "\n"
    if out.suffix == ".md":
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table)
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    gpu = str(result.overrides.get("device", "")).startswith("cuda")
    name = result.preset.name + ("-quick" if result.quick else "") + ("-gpu" if gpu else "")
    md, js = out / f"{name}.md", out / f"{name}.json"
    md.write_text(table)
    record = {"command": command, "preset": result.preset.name, "quick": result.quick,
              "overrides": result.overrides, "environment": environment(), "rows": result.rows,
              "runs": [dataclasses.asdict(r) for r in result.records]}  # fmt: skip
    text = json.dumps(record, indent=1, default=str) + "\n"
    if len(text) > GZIP_ABOVE:  # long per-epoch histories: compressed (~10×), nothing dropped
        gz = js.with_suffix(".json.gz")
        gz.write_bytes(gzip.compress(text.encode(), mtime=0))
        js.unlink(missing_ok=True)
        return [md, gz]
    js.write_text(text)
    return [md, js]
