"""The ``beyondbp`` command line: a thin Typer layer over :mod:`beyondbp.api`."""

from __future__ import annotations

import functools
import inspect
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from beyondbp import api
from beyondbp.errors import BeyondBPError
from beyondbp.rules import available_rules, get_rule, parse_assignments
from beyondbp.runs import RunRecord, RunStore, records_from_json

app = typer.Typer(
    help="Train networks with and beyond backpropagation; compare learning rules honestly.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
runs_app = typer.Typer(
    help="The run store: list, show, export and import runs.", no_args_is_help=True
)
app.add_typer(runs_app, name="runs")
results_app = typer.Typer(
    help="Committed result tables: how far behind the code they are.", no_args_is_help=True
)
app.add_typer(results_app, name="results")
# Wide tables stay readable in logs and pipes, where rich would otherwise assume 80 columns.
# No markup or emoji codes read from text by default: net specs, dataset names and error messages
# come from the user (a print that styles its own words says markup=True and escapes the rest).
console = Console(width=None if sys.stdout.isatty() else 200, markup=False, emoji=False)

StoreOpt = Annotated[
    Path | None,
    typer.Option(
        "--store", help="run store (default ./beyondbp-runs/runs.sqlite or $BEYONDBP_RUNS)"
    ),
]


def _fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _fmt(v: Any, fmt: str = "{:.4g}") -> str:
    return "-" if v is None else fmt.format(v)


def _energy(m: dict[str, Any]) -> str:
    if m.get("energy_wh") is None:
        return f"- ({m.get('energy_label', 'unavailable')})"
    return f"{m['energy_wh']:.4f} Wh ({m['energy_label']})"


def _result_table(r: RunRecord) -> Table:
    m = r.metrics
    t = Table(title=f"run {r.id}: {r.rule} on {r.dataset} / {r.net} (seed {r.seed})")
    t.add_column("metric")
    t.add_column("value", justify="right")
    acc = m.get("test_acc")
    rows = [
        ("status", r.status + (f" ({m['stop_reason']})" if m.get("stop_reason") else "")),
        *(
            [
                (
                    "test return (mean ± std per episode)",
                    f"{m['test_return']:.2f} ± {m.get('test_return_std', 0.0):.2f}",
                ),
                ("best val return", _fmt(m.get("val_return"), "{:.2f}")),
            ]
            if m.get("test_return") is not None
            else [
                ("test accuracy", "-" if acc is None else f"{100 * acc:.2f} %"),
                ("best val accuracy", _fmt(m.get("val_acc") and 100 * m["val_acc"], "{:.2f} %")),
            ]
        ),
        *(  # link prediction
            [
                ("test ROC-AUC", f"{100 * m['test_auc']:.2f} %"),
                ("test Hits@50", _fmt(m.get("test_hits50") and 100 * m["test_hits50"], "{:.2f} %")),
            ]
            if m.get("test_auc") is not None
            else []
        ),
        ("epochs (tested epoch)", f"{m.get('epochs')} ({m.get('tested_epoch', '-')})"),
        ("train time", _fmt(m.get("train_time_s"), "{:.2f} s")),
        ("validation time", _fmt(m.get("val_time_s"), "{:.2f} s")),
        ("test time", _fmt(m.get("test_time_s"), "{:.3f} s")),
        ("peak memory (process RSS)", _fmt_bytes(m.get("peak_rss_bytes"))),
        ("peak memory (training step)", _fmt_bytes(m.get("peak_step_bytes"))),
        (
            "peak memory (inference, same batch)",
            _fmt_bytes(m.get("inference_step_bytes"))
            + (
                f" (step/inference {m['step_to_inference_memory']:.2f}x)"
                if m.get("step_to_inference_memory")
                else ""
            ),
        ),
        ("energy", _energy(m)),
        ("FLOPs per training step", _fmt(m.get("flops_per_step"), "{:.3g}")),
        (
            "achieved GFLOP/s",
            "-"
            if m.get("gflops_per_s") is None
            else f"{m['gflops_per_s']:.1f} ({100 * m['peak_fraction']:.0f} % of "
            f"{m['matmul_peak_gflops']:.0f} matmul peak)",
        ),
    ]
    if m.get("attack_eps") is not None:
        eps = f"ε = {m['attack_eps']:g}, {m.get('attack_loss', 'rule')} loss"
        rows.append((f"test accuracy under FGSM ({eps})", f"{100 * m['test_fgsm_acc']:.2f} %"))
        rows.append((
            f"test accuracy under PGD-{m['attack_steps']} ({eps})",
            f"{100 * m['test_pgd_acc']:.2f} %",
        ))  # fmt: skip
    if m.get("data_notes"):
        rows.append(("data notes", m["data_notes"]))
    for k, v in rows:
        t.add_row(k, str(v))
    return t


@app.command("rules")
def rules_cmd(name: Annotated[str | None, typer.Argument(help="show this rule's options")] = None):
    """List the learning rules, or show one rule's options with their defaults."""
    if name is None:
        for rule_name, cls in available_rules().items():
            console.print(f"{rule_name:<16} {cls.description}", highlight=False)
        return
    cls = get_rule(name)
    t = Table(title=f"{name}: {cls.description}")
    for col in ("option", "type", "default", "description"):
        t.add_column(col)
    for key, f in cls.Options.model_fields.items():
        ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        t.add_row(key, ann, repr(f.default), f.description or "")
    console.print(t)
    space = ", ".join(f"{k}: {v}" for k, v in cls.search_space.items())
    console.print(f"unit of work: {cls.unit}; devices: {', '.join(cls.devices)}", highlight=False)
    if space:
        console.print(f"search space: {space}", highlight=False)


@app.command("datasets")
def datasets_cmd():
    """List the datasets and where their files are looked for."""
    from beyondbp.data import available_datasets, data_search_dirs

    fileless = ("digits", "deceptive-maze", "gym:ID")  # bundled or generated: nothing to look for
    for name, desc in available_datasets().items():
        dirs = (
            ""
            if name in fileless
            else "  [dim](looks in "
            + escape(", ".join(str(d) for d in data_search_dirs(name)[:-1]))
            + ")[/dim]"
        )
        console.print(f"{escape(name):<14} {escape(desc)}{dirs}", highlight=False, markup=True)


def interruptible(fn: Callable) -> Callable:
    """Ctrl-C (or SIGTERM in a grid) ends the command with exit code 130, as ``train`` does;
    click would turn the interrupt into "Aborted!" and exit 1."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            Console(stderr=True, markup=False).print(
                "interrupted: finished runs are stored; run the same command again to continue",
                highlight=False,
            )
            raise typer.Exit(130) from None

    return run


def harness_flags(*, exclude: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Give a command one ``--flag`` per :class:`~beyondbp.harness.TrainConfig` setting it does
    not declare itself, with the help and default taken from the model (one source); the
    command receives the flags that were given as ``config`` (a dict)."""
    from beyondbp.harness import TrainConfig

    def flag(name: str) -> inspect.Parameter:
        field = TrainConfig.model_fields[name]
        kind: Any = field.annotation
        choices = ""
        if get_origin(kind) is Literal:
            kind, choices = str, f" ({', '.join(map(str, get_args(kind)))})"
        elif get_origin(kind) in (UnionType, Union):
            kind = next(a for a in get_args(kind) if a is not type(None))
        default = "off" if field.default is None else field.default
        text = f"{field.description or name.replace('_', ' ')}{choices} [default: {default}]"
        option = typer.Option(
            help=escape(text), rich_help_panel="Harness settings", show_default=False
        )
        return inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=None,
            annotation=Annotated[kind | None, option],
        )  # fmt: skip

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != "config"]
        names = [
            n for n in TrainConfig.model_fields if n not in sig.parameters and n not in exclude
        ]
        params = own + [flag(n) for n in names]

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in names}
            return fn(*args, config={k: v for k, v in given.items() if v is not None}, **kwargs)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return deco


def _seed_list(count: int | None, listed: str | None) -> list[int] | None:
    if listed is not None:
        try:
            return [int(s) for s in _split(listed) or []]
        except ValueError:
            raise typer.BadParameter(
                f"--seed-list wants integers like 1,2; got {listed!r}"
            ) from None
    return None if count is None else list(range(count))


@app.command()
@harness_flags(exclude=("checkpoint",))
@interruptible
def train(
    rule: Annotated[str, typer.Argument(help="learning rule (see `beyondbp rules`)")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="dataset name; name:3,8 keeps those classes")
    ] = "digits",
    net: Annotated[
        str, typer.Option("--net", "-n", help="net spec: mlp:1000x2, cnn3, ...")
    ] = "mlp:1000x2",
    no_early_stop: Annotated[
        bool, typer.Option("--no-early-stop", help="train all epochs (patience off)")
    ] = False,
    lr: Annotated[float | None, typer.Option(help="learning rate (the rule's `lr` option)")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="rule option key=value")
    ] = None,
    options_file: Annotated[
        Path | None, typer.Option("--options", help="options file (JSON/YAML), e.g. from tune")
    ] = None,
    device: Annotated[
        str, typer.Option(help="cpu, cuda, cuda:N or auto (the GPU when there is one)")
    ] = "auto",
    data_dir: Annotated[
        Path | None, typer.Option(help="folder with dataset files [$BEYONDBP_DATA]")
    ] = None,
    store: StoreOpt = None,
    resume: Annotated[str | None, typer.Option(help="continue the run with this id")] = None,
    config: dict[str, Any] | None = None,
):
    """Train one model with one rule; print the result table and store the run."""
    from beyondbp.bench.tune import read_options

    options = read_options(options_file, rule) if options_file else {}
    options.update(parse_assignments(set_ or []))
    if lr is not None:
        options["lr"] = lr
    config = dict(config or {})
    if no_early_stop:
        config["patience"] = None
    if resume is None:
        config.setdefault("device", device)
    elif "seed" in config or "data_seed" in config:
        raise BeyondBPError("--resume continues a run with its own seeds; drop --seed/--data-seed")
    config["progress"] = config.get("progress", True) and sys.stderr.isatty()
    result = api.train(
        rule,
        data,
        net,
        options=options or None,
        data_dir=data_dir,
        store=store if store is not None else True,
        resume=resume,
        **config,
    )
    console.print(_result_table(result.record))
    if result.record.status == "interrupted":
        console.print(f"resume with: beyondbp train {rule} --resume {result.record.id}")
        raise typer.Exit(130)
    if result.record.status == "diverged":
        raise typer.Exit(3)


def _split(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _rule_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--set RULE.key=value`` for grids (options belong to a rule)."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in parse_assignments(items).items():
        rule, dot, opt = key.partition(".")
        if not dot:
            raise BeyondBPError(f"bench --set takes RULE.key=value, got {key!r}")
        out.setdefault(rule, {})[opt] = value
    return out


@app.command()
@harness_flags(exclude=("seed", "progress", "checkpoint"))
@interruptible
def bench(
    rules: Annotated[
        str | None,
        typer.Option(
            help="comma-separated rules [default: all but the zeroth-order and population ones]"
        ),
    ] = None,
    data: Annotated[str, typer.Option("--data", "-d", help="comma-separated datasets")] = "digits",
    nets: Annotated[str, typer.Option(help="comma-separated net specs")] = "mlp:1000x2,cnn3",
    seeds: Annotated[int, typer.Option(help="number of seeds (0..N-1)")] = 3,
    grid: Annotated[
        Path | None, typer.Option(help="grid file (YAML/TOML); replaces the flags")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="a preset's grids (e.g. quickstart: each rule at tuned settings)"),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", "-s", help="RULE.key=value")] = None,
    options_file: Annotated[
        Path | None, typer.Option("--options", help="{rule: options} file")
    ] = None,
    target_acc: Annotated[
        float | None, typer.Option(help="val accuracy for time-to-target")
    ] = None,
    jobs: Annotated[int, typer.Option(help="cells run in parallel")] = 1,
    backend: Annotated[
        str, typer.Option(help="local (a process per cell) or ray (a Ray task per cell)")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address [default: a local Ray head]")
    ] = None,
    retry_failed: Annotated[bool, typer.Option(help="run failed cells again")] = False,
    device: Annotated[str, typer.Option()] = "auto",
    data_dir: Annotated[Path | None, typer.Option()] = None,
    store: StoreOpt = None,
    report: Annotated[Path | None, typer.Option(help="write the report to this folder")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    baseline: Annotated[str, typer.Option(help="the rule every ratio is taken against")] = "bp",
    config: dict[str, Any] | None = None,
):
    """Compare rules on a grid (rules × datasets × nets × seeds), each cell in its own process.

    Finished cells are never recomputed: kill the grid at any time and start it again."""
    from rich.progress import Progress

    from beyondbp.bench.grid import load_grid_file

    get_rule(baseline)
    if grid is not None:
        plan = api.plan_grid(load_grid_file(grid))
    elif preset is not None:
        from beyondbp.bench.presets import get_preset

        if rules or set_ or options_file:
            raise BeyondBPError(
                "--preset sets the rules and their options; drop --rules/--set/--options "
                "(or use `beyondbp reproduce PRESET --rules ...`)"
            )
        update: dict[str, Any] = {"data_dir": str(data_dir)} if data_dir else {}
        if target_acc is not None:
            update["target_acc"] = target_acc
        plan = api.plan_grid(
            [  # the harness flags given override the preset's
                g.model_copy(
                    update={"config": {**g.config, **(config or {}), "device": device}, **update}
                )
                for g in get_preset(preset).grids
            ]
        )
    else:
        rule_options: dict[str, dict[str, Any]] = {}
        if options_file is not None:
            from beyondbp.bench.tune import read_options

            rule_options = {
                k: v for k, v in read_options(options_file).items() if isinstance(v, dict)
            }
        for rule_name, opts in _rule_options(set_ or []).items():
            rule_options.setdefault(rule_name, {}).update(opts)
        plan = api.plan_grid(
            rules=_split(rules),  # None: every rule that fits; unfit cells are left out
            data=_split(data) or ["digits"],
            nets=_split(nets) or ["mlp:1000x2"],
            seeds=list(range(seeds)),
            options=rule_options,
            data_dir=data_dir,
            target_acc=target_acc,
            **{**(config or {}), "device": device},
        )
    for spec in plan.grids:
        for r in spec.rules:
            get_rule(r)
    for what, why in plan.skipped.items():
        if not as_json:
            console.print(
                f"[dim]left out {escape(what)}: {escape(why)}[/]", highlight=False, markup=True
            )
    cells = plan.cells
    n = len(cells)
    with Progress(console=Console(stderr=True, markup=False, emoji=False), disable=as_json) as bar:
        task = bar.add_task(f"grid of {n} cells", total=n)

        def done(cell, record) -> None:  # type: ignore[no-untyped-def]
            status = record.status if record else "missing"
            bar.console.print(
                f"{cell.rule} {cell.dataset} {cell.net} seed {cell.seed}: {status}", highlight=False
            )
            bar.advance(task)

        result = api.bench(
            plan,
            baseline=baseline,
            store=store if store is not None else True,
            jobs=jobs,
            retry_failed=retry_failed,
            on_done=done,
            backend=backend,
            address=address,
        )
    if as_json:
        print(json.dumps(result.rows, indent=1))
    else:
        datasets = sorted({d for s in plan.grids for d in s.datasets})
        seeds_n = max(len(s.seeds) for s in plan.grids)
        title = f"{', '.join(datasets)}: mean ± std over {seeds_n} seeds (ratios vs {baseline})"
        console.print(summary_table(result.rows, title, baseline))
        for row in result.rows:
            for err in row["errors"]:
                console.print(
                    f"[yellow]{escape(row['rule'])} {escape(row['net'])}: {escape(err)}[/]",
                    highlight=False,
                    markup=True,
                )
    if report is not None:
        from beyondbp.bench.report import write_report

        paths = write_report(result.store, report, records=result.records, baseline=baseline)
        console.print(f"report: {paths['html']} and {paths['md']}", highlight=False)
    _exit_if_failed(result.records)


def _exit_if_failed(records: list[RunRecord]) -> None:
    """Exit 1 when a cell failed (its error is printed above; a rerun retries it)."""
    failed = [r for r in records if r.status == "failed"]
    if failed:
        Console(stderr=True, markup=False).print(
            f"{len(failed)} of {len(records)} runs failed (errors above)", highlight=False
        )
        raise typer.Exit(1)


def summary_table(rows: list[dict[str, Any]], title: str, baseline: str) -> Table:
    from beyondbp.bench.report import table_header, table_rows

    t = Table(title=title)
    for c in table_header(baseline):
        t.add_column(c, justify="left" if c in ("rule", "dataset", "net") else "right")
    for row in table_rows(rows, baseline):
        t.add_row(*row)
    return t


@app.command()
@interruptible
def reproduce(
    preset: Annotated[str | None, typer.Argument(help="preset name (see --list)")] = None,
    list_: Annotated[bool, typer.Option("--list", help="list the presets")] = False,
    quick: Annotated[bool, typer.Option(help="reduced budget, one seed: minutes")] = False,
    data: Annotated[str | None, typer.Option("--data", "-d", help="only these datasets")] = None,
    nets: Annotated[str | None, typer.Option(help="only these nets")] = None,
    rules: Annotated[str | None, typer.Option(help="only these rules")] = None,
    seeds: Annotated[int | None, typer.Option(help="number of seeds (0..N-1)")] = None,
    seed_list: Annotated[
        str | None, typer.Option(help="these seeds only, e.g. 1,2 (instead of --seeds)")
    ] = None,
    jobs: Annotated[int, typer.Option(help="cells run in parallel")] = 1,
    data_dir: Annotated[Path | None, typer.Option()] = None,
    store: StoreOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="a folder: write PRESET.md (the table) and PRESET.json (rows, runs), each with "
            "the command, machine, versions and commit; a .md file: the table alone",
        ),
    ] = None,
    no_run: Annotated[bool, typer.Option("--no-run", help="only tabulate stored runs")] = False,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:N or auto [the preset's: cpu]")
    ] = None,
    max_seconds: Annotated[
        float | None, typer.Option(help="training-time budget of each run (its own cells)")
    ] = None,
    note: Annotated[
        list[str] | None,
        typer.Option(help="a paragraph printed under the table (what you observed); repeatable"),
    ] = None,
):
    """Run a paper's setup and print our numbers next to the paper's, with the gap."""
    from rich.markdown import Markdown

    from beyondbp.bench.presets import PRESETS

    if list_ or preset is None:
        for name, p in PRESETS.items():
            n = sum(len(g.cells()) for g in p.grids)
            console.print(f"{name:<16} {p.description} ({n} runs)", highlight=False)
        return
    result = api.reproduce(
        preset,
        quick=quick,
        datasets=_split(data),
        nets=_split(nets),
        rules=_split(rules),
        seeds=_seed_list(seeds, seed_list),
        data_dir=data_dir,
        store=store if store is not None else True,
        jobs=jobs,
        run=not no_run,
        device=device,
        max_seconds=max_seconds,
        on_done=lambda c, r: console.print(
            f"{c.rule} {c.dataset} {c.net} seed {c.seed}: {r.status if r else 'missing'}",
            highlight=False,
        ),
    )
    text = api.reproduce_markdown(result, note or ())
    console.print(Markdown(text))
    if out is not None:
        command = f"beyondbp {shlex.join(sys.argv[1:])}"
        for path in api.write_reproduction(result, out, command, note or ()):
            console.print(f"wrote {path}", highlight=False)
    _exit_if_failed(result.records)


@app.command()
@harness_flags(exclude=("progress", "checkpoint"))
@interruptible
def tune(
    rule: Annotated[str, typer.Argument(help="learning rule")],
    data: Annotated[str, typer.Option("--data", "-d")] = "digits",
    net: Annotated[str, typer.Option("--net", "-n")] = "mlp:1000x2",
    trials: Annotated[int, typer.Option(help="finished trials the study should hold")] = 20,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="fixed option key=value")
    ] = None,
    metric: Annotated[str, typer.Option(help="val_acc (maximised) or val_loss")] = "val_acc",
    storage: Annotated[
        str | None, typer.Option(help="Optuna storage URL [sqlite in the store's folder]")
    ] = None,
    study: Annotated[str | None, typer.Option(help="study name [RULE.DATA.NET]")] = None,
    heartbeat: Annotated[
        float,
        typer.Option(
            help="seconds between a trial's heartbeats; a trial silent for two "
            "is failed (its process died) and retried"
        ),
    ] = 60.0,
    seed: Annotated[int, typer.Option(help="sampler seed")] = 0,
    device: Annotated[str, typer.Option()] = "auto",
    data_dir: Annotated[Path | None, typer.Option()] = None,
    store: StoreOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="write the best options (JSON)")
    ] = None,
    config: dict[str, Any] | None = None,
):
    """Optuna search (TPE, median pruning) over the rule's search space; resumable."""
    from beyondbp.bench.tune import best_options, write_options
    from beyondbp.bench.tune import tune as run_tune

    fixed = parse_assignments(set_ or [])
    config = dict(config or {})
    result = run_tune(
        rule,
        data,
        net,
        trials,
        options=fixed,
        storage=storage,
        study_name=study,
        heartbeat=heartbeat,
        metric=metric,
        data_dir=data_dir,
        store=store,
        seed=seed,
        device=device,
        **config,
    )
    best = best_options(result, rule, fixed)
    states = [t.state.name for t in result.trials]
    console.print(
        f"study {result.study_name}: {states.count('COMPLETE')} complete, "
        f"{states.count('PRUNED')} pruned; best {metric} {result.best_value:.4f} "
        f"(trial {result.best_trial.number})",
        highlight=False,
    )
    console.print_json(json.dumps(best))
    if out is not None:
        write_options(out, best)
        console.print(f"wrote {out}: use it with `beyondbp train {rule} --options {out}`")


@app.command()
def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for report.md/.html")] = Path(
        "beyondbp-report"
    ),
    store: StoreOpt = None,
    baseline: Annotated[str, typer.Option(help="the rule every ratio is taken against")] = "bp",
):
    """Markdown summary and a self-contained HTML page with plots, from the run store."""
    from beyondbp.bench.report import write_report

    get_rule(baseline)
    paths = write_report(RunStore(store), out, baseline=baseline)
    console.print(f"wrote {paths['md']} and {paths['html']}", highlight=False)


@runs_app.command("list")
def runs_list(
    store: StoreOpt = None,
    rule: Annotated[str | None, typer.Option()] = None,
    status: Annotated[str | None, typer.Option()] = None,
):
    """One line per stored run."""
    where = {k: v for k, v in (("rule", rule), ("status", status)) if v}
    records = RunStore(store).list(**where)
    t = Table()
    for c in ("id", "status", "rule", "dataset", "net", "seed", "test acc %", "train s"):
        t.add_column(c)
    for r in records:
        acc = r.metrics.get("test_acc")
        t.add_row(
            r.id,
            r.status,
            r.rule,
            r.dataset,
            r.net,
            str(r.seed),
            "-" if acc is None else f"{100 * acc:.2f}",
            _fmt(r.metrics.get("train_time_s"), "{:.1f}"),
        )
    console.print(t)


@runs_app.command("show")
def runs_show(run_id: str, store: StoreOpt = None):
    """Everything stored about one run (id or unique prefix)."""
    r = RunStore(store).get(run_id)
    console.print(_result_table(r))
    console.print_json(
        json.dumps(
            {
                "options": r.options,
                "config": r.config,
                "env": r.env,
                "error": r.error,
                "epochs": r.history,
            }
        )
    )


@runs_app.command("delete")
def runs_delete(
    run_ids: Annotated[list[str], typer.Argument(help="run ids (or unique prefixes)")],
    store: StoreOpt = None,
):
    """Remove runs from the store (a grid then runs those cells again)."""
    run_store = RunStore(store)
    for run_id in run_ids:
        r = run_store.delete(run_id)
        console.print(f"deleted {r.id} ({r.rule} {r.dataset} {r.net} seed {r.seed})")


@runs_app.command("export")
def runs_export(
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or json")] = "csv",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="file (default: stdout)")] = None,
    store: StoreOpt = None,
):
    """All runs as CSV (one row per run) or JSON (full records)."""
    text = RunStore(store).export(fmt)  # type: ignore[arg-type]
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


@runs_app.command("import")
def runs_import(
    files: Annotated[
        list[Path], typer.Argument(help="JSON files: `runs export --format json`, results/*.json")
    ],
    store: StoreOpt = None,
):
    """Add runs from JSON files to the store (e.g. rebuild a store from committed results)."""
    run_store = RunStore(store)
    for path in files:
        records = records_from_json(path)
        added = run_store.add(records)
        unfinished = sum(r.unfinished for r in added)
        note = (
            f"; {unfinished} unfinished (their checkpoints are not in the file: a grid runs them "
            "again from the start)"
            if unfinished
            else ""
        )
        console.print(
            f"{path}: added {len(added)} of {len(records)} runs to {run_store.path} "
            f"({len(records) - len(added)} already there){note}",
            highlight=False,
        )


ResultsDir = Annotated[
    Path, typer.Option("--folder", help="the committed results (default benchmarks/results)")
]


@results_app.command("status")
def results_status(
    folder: ResultsDir = Path("benchmarks/results"),
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="list the commits")] = False,
):
    """Each results file's commit, and the later commits that touched the code it measures."""
    from beyondbp.bench.freshness import status

    for s in status(folder):
        console.print(s.line(), highlight=False)
        for c in (s.later or []) if verbose else []:
            console.print(f"    {c}", highlight=False)


@results_app.command("check")
def results_check(
    spec: Annotated[
        Path, typer.Option("--spec", help="which runs to re-make, and their numbers' noise")
    ] = Path("benchmarks/checks.yaml"),
    folder: ResultsDir = Path("benchmarks/results"),
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="datasets folder")] = None,
):
    """Train the cheap tables' runs again and fail if a committed number moved beyond its noise."""
    from beyondbp.bench.freshness import check, load_checks

    drifts = []
    for c in load_checks(spec):
        n, found = check(c, folder, data_dir)
        drifts += found
        verdict = "as committed" if not found else f"{len(found)} numbers moved"
        console.print(f"{c.file} ({n} runs, {', '.join(c.metrics)}): {verdict}", highlight=False)
    for d in drifts:
        console.print(f"  {d}", highlight=False)
    if drifts:
        raise typer.Exit(1)


def main() -> None:
    if os.environ.get("BEYONDBP_THREADS"):  # e.g. one thread per run pinned to a core
        import torch

        torch.set_num_threads(int(os.environ["BEYONDBP_THREADS"]))
    try:
        app()
    except BeyondBPError as e:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        Console(stderr=True).print(
            "interrupted: finished runs are stored; run the same command again to continue"
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
