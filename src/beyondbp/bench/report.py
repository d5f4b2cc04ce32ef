"""Reports from the run store: a Markdown summary and one self-contained HTML page.

The page embeds its plots as PNG data URIs and its style inline: no external URL, so it opens
offline in any browser. Plots: accuracy vs training time, energy per run, peak memory vs depth
for each rule, learning curves. Each rule keeps one colour throughout.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from beyondbp.bench.grid import natural_key, setup_key
from beyondbp.bench.summary import BASELINE, options_diff, summarize
from beyondbp.runs import RunRecord, RunStore

PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
)  # fmt: skip
PLOTS = ("accuracy_vs_time", "energy_per_run", "memory_vs_depth", "learning_curves")
_DEPTH = re.compile(r"^mlp:(\d+)x(\d+)")


def rule_colours(rules: Sequence[str], baseline: str = BASELINE) -> dict[str, str]:
    """One colour per rule, stable across plots (the baseline first, then alphabetical)."""
    order = sorted(set(rules), key=lambda r: (r != baseline, r))
    return {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(order)}


def _fig_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def make_plots(records: list[RunRecord], baseline: str = BASELINE) -> dict[str, bytes]:
    """The report's figures as PNG bytes, keyed by name (see ``PLOTS``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.status == "finished"]
    colours = rule_colours([r.rule for r in records], baseline)
    out: dict[str, bytes] = {}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen: set[str] = set()
    for r in done:
        ax.scatter(
            r.metrics["train_time_s"],
            100 * r.metrics["test_acc"],
            color=colours[r.rule],
            label=None if r.rule in seen else r.rule,
            alpha=0.8,
        )
        seen.add(r.rule)
    if done:
        ax.set_xscale("log")
        ax.legend(title="rule")
    else:
        _empty(ax, "no finished runs")
    ax.set_xlabel("training time (s, log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy vs training time (one point per run)")
    ax.grid(alpha=0.3)
    out["accuracy_vs_time"] = _fig_png(fig)

    # one horizontal bar per setup (rule, dataset, net, options): the mean over its seeds, each
    # seed a dot; a label per bar, in one line, so none overlap however many setups there are
    with_energy = [r for r in done if r.metrics.get("energy_wh") is not None]
    groups: dict[tuple[str, str, str, str], list[RunRecord]] = {}
    for r in sorted(with_energy, key=lambda r: (r.rule != baseline, r.rule, r.dataset, r.net)):
        groups.setdefault((r.rule, r.dataset, r.net, setup_key(r)), []).append(r)
    many_data = len({k[1] for k in groups}) > 1
    many_nets = len({k[2] for k in groups}) > 1
    rule_setups = [k[0] for k in groups]  # a rule under several options: name its variant
    fig, ax = plt.subplots(figsize=(7, max(2.5, 1.2 + 0.32 * len(groups))))
    if groups:
        labels = []
        for i, ((rule, dataset, net, _), rs) in enumerate(groups.items()):
            mwh = [1000 * r.metrics["energy_wh"] for r in rs]
            ax.barh(i, sum(mwh) / len(mwh), color=colours[rule], alpha=0.85)
            ax.scatter(mwh, [i] * len(mwh), color="black", s=10, zorder=3)
            variant = options_diff(rs[0]) if rule_setups.count(rule) > 1 else ""
            parts = [rule, *([dataset] if many_data else []), *([net] if many_nets else [])]
            label = " · ".join(parts) + (f" ({variant})" if variant else "")
            labels.append(label if len(label) <= 48 else label[:47] + "…")
        ax.set_yticks(range(len(groups)), labels, fontsize=8)
        ax.invert_yaxis()
        kinds = sorted({r.metrics.get("energy_label", "?") for r in with_energy})
        ax.set_title(f"Energy per run ({' / '.join(kinds)}; dots: seeds)")
    else:
        _empty(ax, "no run with an energy reading")
        ax.set_title("Energy per run")
    ax.set_xlabel("energy (mWh)")
    ax.grid(alpha=0.3, axis="x")
    out["energy_per_run"] = _fig_png(fig)

    # one line per (rule, options and budget, dataset, width): the depth sweep of one setup
    series: dict[tuple[str, str, str, int], dict[int, list[RunRecord]]] = {}
    for r in done:
        m = _DEPTH.match(r.net)
        if m and r.metrics.get("peak_step_bytes"):
            key = (r.rule, setup_key(r), r.dataset, int(m[1]))
            series.setdefault(key, {}).setdefault(int(m[2]), []).append(r)
    series = {k: v for k, v in series.items() if len(v) >= 2}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    if series:
        setups: dict[str, list[str]] = {}
        for rule, setup, _, _ in series:
            setups.setdefault(rule, [])
            if setup not in setups[rule]:
                setups[rule].append(setup)
        for (rule, setup, dataset, width), points in sorted(series.items()):
            depths = sorted(points)
            runs = points[depths[0]]
            label = (
                f"{rule}{_options_label(runs[0], len(setups[rule]) > 1)} ({dataset}, width {width})"
            )
            style = "-" if setups[rule].index(setup) == 0 else "--"
            for ax, key in zip(axes, ("peak_step_bytes", "step_transient_bytes"), strict=True):
                vals = [
                    sum(r.metrics.get(key) or 0 for r in points[d]) / len(points[d]) / 2**20
                    for d in depths
                ]
                ax.plot(depths, vals, style, marker="o", color=colours[rule], label=label)
        for ax in axes:
            ax.set_xticks(sorted({d for p in series.values() for d in p}))
        axes[0].legend(fontsize=8)
    else:
        _empty(axes[0], "no depth sweep in the store\n(run `beyondbp reproduce depth-sweep`)")
    for ax in axes:
        ax.set_xlabel("hidden layers")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("peak live-tensor memory in a training step (MiB)")
    axes[0].set_title("Whole step: weights, optimiser state, batch, step")
    axes[1].set_ylabel("allocated by the step at its peak (MiB)")
    axes[1].set_title("Step only: activations, gradients, temporaries")
    fig.suptitle("Peak training memory vs depth (MLP)")
    out["memory_vs_depth"] = _fig_png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    seen = set()
    for r in done:
        epochs = [h["epoch"] for h in r.history]
        label = None if r.rule in seen else r.rule
        seen.add(r.rule)
        for ax, key in zip(axes, ("train_loss", "val_acc"), strict=True):
            vals = [h.get(key) for h in r.history]
            if any(v is not None for v in vals):
                scale = 100 if key == "val_acc" else 1
                ax.plot(
                    epochs,
                    [v * scale if v is not None else None for v in vals],
                    color=colours[r.rule],
                    alpha=0.6,
                    label=label,
                )
    axes[0].set_ylabel("training loss")
    axes[0].set_yscale("log")
    axes[1].set_ylabel("validation accuracy (%)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if done:
        axes[1].legend(title="rule")
    fig.suptitle("Learning curves (one line per run)")
    out["learning_curves"] = _fig_png(fig)
    return out


def _options_label(r: RunRecord, needed: bool) -> str:
    """' [k=v, ...]': the options that differ from the rule's defaults, where runs of one rule
    need telling apart."""
    if not needed:
        return ""
    return f" [{options_diff(r) or 'defaults'}]"


def _fmt(v: Any, scale: float = 1, digits: int = 2) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def _pm(row: dict[str, Any], key: str, scale: float = 1, digits: int = 2) -> str:
    if row.get(key) is None:
        return "-"
    return f"{row[key] * scale:.{digits}f} ± {(row.get(key + '_std') or 0) * scale:.{digits}f}"


def table_header(baseline: str = BASELINE) -> tuple[str, ...]:
    """The summary table's columns; ratios are against ``baseline``."""
    return (
        "rule", "dataset", "net", "runs", "test acc %", f"Δacc vs {baseline}", "train time s",
        f"time ×{baseline}", "energy Wh", f"energy ×{baseline}", "step memory MiB",
        f"memory ×{baseline}", "GFLOP/s",
    )  # fmt: skip


def table_rows(rows: list[dict[str, Any]], baseline: str = BASELINE) -> list[list[str]]:
    """Table cells per summary row. Where the same rule, data and net were run under several
    setups, the rule shows its non-default options (or the net a setup id, for budgets)."""
    count: dict[tuple[str, str, str], int] = {}
    for r in rows:
        count[(r["rule"], r["dataset"], r["net"])] = (
            count.get((r["rule"], r["dataset"], r["net"]), 0) + 1
        )
    out = []

    def order(r: dict[str, Any]) -> tuple:
        return r["dataset"], natural_key(r["net"]), r["rule"] != baseline, r["rule"]

    for r in sorted(rows, key=order):
        ambiguous = count[(r["rule"], r["dataset"], r["net"])] > 1
        rule = r["rule"] + (f" [{r['variant'] or 'defaults'}]" if ambiguous else "")
        net = r["net"] + (f" [setup {r['setup']}]" if ambiguous and not r["variant"] else "")
        out.append([
            rule, r["dataset"], net,
            f"{r['runs']}" + (f" (+{r['not_finished']} not finished)" if r["not_finished"] else ""),
            _pm(r, "test_acc", 100), _fmt(r["delta_acc"], 100, 2),
            _pm(r, "train_time_s", 1, 1), _fmt(r["time_ratio"]),
            _pm(r, "energy_wh", 1, 4) + (f" ({r['energy_label']})" if r["energy_wh"] else ""),
            _fmt(r["energy_ratio"]),
            _fmt(r["peak_step_bytes"], 1 / 2**20, 1), _fmt(r["memory_ratio"]),
            _fmt(r["gflops_per_s"], 1, 1),
        ] + ([f"{_pm(r, 'time_to_target_s', 1, 1)} ({r['reached_target']}/{r['runs']})"]
             if "target_acc" in r else []))  # fmt: skip
    return out


def write_report(
    store: RunStore,
    out_dir: str | Path,
    records: list[RunRecord] | None = None,
    baseline: str = BASELINE,
) -> dict[str, Path]:
    """Write ``report.md`` (+ PNGs beside it) and the self-contained ``report.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = store.list() if records is None else records
    rows = summarize(records, baseline=baseline)
    plots = make_plots(records, baseline)
    table = table_rows(rows, baseline)
    header = table_header(baseline)

    md = ["# beyondbp report", "", f"{len(records)} runs from `{store.path}`.", ""]
    md.append("| " + " | ".join(header) + " |")
    md.append("|" + "---|" * len(header))
    md += ["| " + " | ".join(r) + " |" for r in table]
    notes = sorted({r.metrics["data_notes"] for r in records if r.metrics.get("data_notes")})
    md += ["", *[f"Data note: {n}" for n in notes], ""]
    for name in PLOTS:
        (out / f"{name}.png").write_bytes(plots[name])
        md.append(f"![{name.replace('_', ' ')}]({name}.png)")
        md.append("")
    (out / "report.md").write_text("\n".join(md))

    def img(name: str) -> str:
        data = base64.b64encode(plots[name]).decode()
        return f'<figure><img alt="{name}" src="data:image/png;base64,{data}"></figure>'

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>beyondbp report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th {{ background: #f3f3f3; }} td:nth-child(-n+3) {{ text-align: left; }}
figure {{ display: inline-block; margin: 1em 0.5em; }} img {{ max-width: 100%; }}
.note {{ color: #555; font-size: 13px; }}
</style></head><body>
<h1>beyondbp report</h1>
<p class="note">{len(records)} runs from {html.escape(str(store.path))}. Mean ± std over seeds;
ratios against {html.escape(baseline)} on the same dataset and net. Energy is labelled measured or estimated.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
{"".join(f'<p class="note">Data note: {html.escape(n)}</p>' for n in notes)}
<h2>Accuracy and cost</h2>{img("accuracy_vs_time")}{img("energy_per_run")}
<h2>Memory vs depth</h2>{img("memory_vs_depth")}
<h2>Learning curves</h2>{img("learning_curves")}
</body></html>
"""
    (out / "report.html").write_text(page)
    return {"md": out / "report.md", "html": out / "report.html"}
