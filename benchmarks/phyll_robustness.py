"""Accuracy of each rule as the physical system's conditions worsen (issue 31): measurement
noise, drift during training, and the digital twin's mismatch, on vowels-synth; and each rule's
cost per epoch on the clean systems (physical passes and wall time).

Reads the rows of a ``phyll2023`` reproduction (``benchmarks/results/phyll2023.json``, written by
``beyondbp reproduce phyll2023 --out benchmarks/results``) and writes
``benchmarks/results/phyll2023-robustness.{png,md}``: one panel per condition and system, test
accuracy (mean ± std over seeds) against its strength, a line per rule; below it, the cost table.

    python benchmarks/phyll_robustness.py [--results benchmarks/results/phyll2023.json]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from beyondbp.bench.reproduce import read_reproduction

HERE = Path(__file__).resolve().parent
RULES = {"phyll": "PhyLL", "pat": "PAT", "bp-twin": "in silico (bp-twin)", "bp": "ideal bp"}
CONDITIONS = {
    "noise": "measurement noise (× output RMS)",
    "drift": "drift (relative, per 1,000 batches)",
    "mismatch": "twin mismatch (relative)",
}


def points(rows: list[dict], dataset: str) -> dict[tuple[str, str, str], list[tuple]]:
    """(condition, system, rule) -> [(strength, mean %, std %)] from the table's rows."""
    out: dict[tuple[str, str, str], list[tuple]] = {}
    for r in rows:
        if r["dataset"] != dataset or not r["runs"]:
            continue
        m = re.match(r"phys:(\w+):[\dx]+((?::noise-[\d.]+)|(?::drift-[\d.]+))?(:ideal)?$", r["net"])
        if m is None:
            continue
        system, extra = m[1], m[2] or ""
        mismatch = re.search(r"mismatch=([\d.]+)", r.get("variant") or "")
        value = (100 * r["test_acc"], 100 * (r.get("test_acc_std") or 0.0))
        if extra:
            kind, strength = extra[1:].split("-")
            out.setdefault((kind, system, r["rule"]), []).append((float(strength), *value))
        elif mismatch:
            out.setdefault(("mismatch", system, r["rule"]), []).append((float(mismatch[1]), *value))
        else:  # the clean system: strength 0 of every condition
            for kind in CONDITIONS:
                if kind != "mismatch" or r["rule"] in ("pat", "bp-twin"):
                    out.setdefault((kind, system, r["rule"]), []).append((0.0, *value))
    return {k: sorted(v) for k, v in out.items()}


def cost_lines(rows: list[dict]) -> list[str]:
    """Markdown rows: per epoch, the physical passes in training and the training wall time, for
    each rule on each clean system (``:ideal`` for bp) and the digital layers alone."""
    lines = []
    for r in sorted(rows, key=lambda r: (r["dataset"], r["net"], r["rule"])):
        clean = re.fullmatch(
            r"phys:\w+:[\dx]+(:ideal)?|mlp:[\dx]+(:identity)?", r["net"]
        ) and not r.get("variant")
        if not (clean and r["runs"] and r.get("epochs")):
            continue
        passes = r.get("physical_passes")
        per_epoch = "-" if passes is None else f"{passes / r['epochs']:,.0f}"
        lines.append(
            f"| {r['dataset']} | {r['net']} | {r['rule']} | {r['epochs']:g} | {per_epoch} "
            f"| {r['train_time_s'] / r['epochs']:.2f} | {100 * r['test_acc']:.1f} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=HERE / "results" / "phyll2023.json")
    ap.add_argument("--dataset", default="vowels-synth")
    args = ap.parse_args()
    data = read_reproduction(args.results)
    curves = points(data["rows"], args.dataset)
    systems = sorted({s for _, s, _ in curves})
    if not systems:
        raise SystemExit(f"{args.results}: no finished {args.dataset} rows of physical nets")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from beyondbp.bench.report import PALETTE

    digital = [r for r in data["rows"] if r["dataset"] == args.dataset and r["runs"]
               and r["net"].endswith(":identity")]  # fmt: skip
    fig, axes = plt.subplots(len(systems), 3, figsize=(13, 3.6 * len(systems)), squeeze=False)
    lines = [f"# phyll2023 robustness on {args.dataset}", "",
             f"From `{args.results.name}` (command: `{data['command'].split(' --note')[0]}`).", "",
             "| system | condition | rule | strength: test acc % (mean ± std over seeds) |",
             "|---|---|---|---|"]  # fmt: skip
    for i, system in enumerate(systems):
        for j, (kind, title) in enumerate(CONDITIONS.items()):
            ax = axes[i][j]
            for k, (rule, name) in enumerate(RULES.items()):
                pts = curves.get((kind, system, rule))
                colour = PALETTE[k % len(PALETTE)]
                clean = [p for p in curves.get(("noise", system, rule), []) if p[0] == 0][:1]
                if kind == "mismatch" and not pts and clean:  # no twin: its clean value
                    ax.axhline(clean[0][1], ls="--", color=colour, label=f"{name} (no twin)")
                    continue
                if not pts:
                    continue
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name, color=colour)
                cells = ", ".join(f"{x:g}: {y:.1f} ± {e:.1f}" for x, y, e in pts)
                lines.append(f"| {system} | {kind} | {rule} | {cells} |")
            for r in digital:  # the digital layers alone: where a rule that loses the physics lands
                ax.axhline(
                    100 * r["test_acc"], ls=":", color="grey", label=f"no physics ({r['net']})"
                )
            ax.set_title(f"{system}: {kind}")
            ax.set_xlabel(title)
            ax.set_ylabel("test accuracy %")
            ax.grid(alpha=0.3)
        axes[i][0].legend(fontsize=8)
        axes[i][2].legend(fontsize=8)
    fig.tight_layout()
    out = HERE / "results" / "phyll2023-robustness"
    fig.savefig(out.with_suffix(".png"), dpi=110)
    cost = [
        "", "## Cost per epoch on the clean systems",
        "",
        "Training passes include the twins' fitting (pat, bp-twin); bp's are passes through the",
        "ideal differentiable copy (a simulation a physical system could not offer).",
        "",
        "| data | net | rule | epochs | physical passes / epoch | train s / epoch | test acc % |",
        "|---|---|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    out.with_suffix(".md").write_text(
        "\n".join(lines + cost + cost_lines(data["rows"]))
        + "\n\n![robustness](phyll2023-robustness.png)\n"
    )
    print(f"wrote {out}.png and .md")


if __name__ == "__main__":
    main()
