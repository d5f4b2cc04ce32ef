"""Learning curves of the `mezo2023` runs (issue 6): zeroth-order vs backprop fine-tuning of
MiniLM-L6 on MSRP, and the Subspace Gradient's effect on ZO soft-prompt tuning.

Reads the finished MSRP runs from a run store (``beyondbp reproduce mezo2023 --store S``) and
plots, per setting, the validation accuracy and the training loss against training steps and
against training time; writes benchmarks/results/zo_curves.{png,md}.

    beyondbp reproduce mezo2023 --store benchmarks/runs/mezo2023.sqlite \\
        -o benchmarks/results/mezo2023.md
    python benchmarks/zo_curves.py --store benchmarks/runs/mezo2023.sqlite
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from beyondbp.api import reproduce
from beyondbp.bench.report import PALETTE
from beyondbp.bench.results import results_folder, write_result
from beyondbp.runs import RunRecord, RunStore

HERE = Path(__file__).resolve().parent


def label(r: RunRecord) -> str:
    """A setting's name: the rule, what it trains, and the subspace switch of ZO-Adam."""
    if "prompt" not in r.net:
        what = "all weights"
    else:
        what = "soft prompt" if r.options.get("params") == "prompt" else "soft prompt + head"
    if r.config.get("head_init") == "probe":
        what += f" (probe head, lr {r.options['lr']:g})"
    name = {"bp": "backprop", "mezo": "MeZO", "zo-adam": "ZO-Adam"}.get(r.rule, r.rule)
    if r.rule == "zo-adam":
        name += " + subspace" if r.options.get("subspace", True) else " (no subspace)"
    return f"{name}, {what}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", default=str(HERE / "runs" / "mezo2023.sqlite"))
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # the preset's own cells (not --quick ones, nor other runs the store may hold)
    records = reproduce("mezo2023", store=RunStore(args.store), run=False).records
    runs = [r for r in records if r.status == "finished" and r.history]
    if not runs:
        sys.exit(f"no finished mezo2023 runs in {args.store}: run the preset first")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    md = [
        "# Learning curves on MSRP: zeroth-order vs backprop fine-tuning of MiniLM-L6",
        "",
        "Validation accuracy after each epoch (the harness validates once per epoch); "
        "training loss is the epoch's mean. Plot: zo_curves.png.",
        "",
        "| setting | steps | val acc % per epoch | test acc % | train time s |",
        "|---|---:|---|---:|---:|",
    ]
    for i, r in enumerate(sorted(runs, key=label)):
        colour = PALETTE[i % len(PALETTE)]
        steps = [h["steps"] for h in r.history]
        secs = [h["train_time_s"] for h in r.history]
        acc = [100 * h["val_acc"] for h in r.history]
        loss = [h.get("train_loss") for h in r.history]
        axes[0].plot(steps, acc, marker="o", color=colour, label=label(r))
        axes[1].plot(secs, acc, marker="o", color=colour)
        axes[2].plot(steps, loss, marker="o", color=colour)
        md.append(
            f"| {label(r)} | {steps[-1]} | {' '.join(f'{a:.1f}' for a in acc)} | "
            f"{100 * r.metrics['test_acc']:.2f} | {r.metrics['train_time_s']:.0f} |"
        )
    titles = [
        ("training steps", "val acc %"),
        ("training time s", "val acc %"),
        ("training steps", "training loss"),
    ]
    for ax, (x, y) in zip(axes, titles, strict=True):
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("MiniLM-L6 on MSRP (batch 16, one CPU thread)")
    fig.tight_layout()
    fig.savefig(results_folder() / "zo_curves.png", dpi=110)
    write_result("zo_curves", md, runs=[r.env for r in runs])
    print("\n".join(md))


if __name__ == "__main__":
    main()
