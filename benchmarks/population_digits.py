"""The zeroth-order and population rules on digits (mlp:32, 2,410 weights; CMA-ES on mlp:4), a
few seeds each: a smoke-scale comparison that backs the numbers quoted in the tests' bars.

    python benchmarks/population_digits.py [--seeds 0,1,2,3]

writes benchmarks/results/population_digits.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

import beyondbp as bb
from beyondbp.measure import provenance_markdown

HERE = Path(__file__).resolve().parent

# (label, rule, net, options, epochs); batch 128 → 11 generations / steps per epoch
SETTINGS = [
    ("backprop (Adam 1e-3)", "bp", "mlp:32", {}, 5),
    ("MeZO (lr 3e-3), batch 16", "mezo", "mlp:32", {"lr": 3e-3}, 20),
    ("ZO-Adam + subspace, batch 16", "zo-adam", "mlp:32", {}, 20),
    ("ZO-Adam, no subspace, batch 16", "zo-adam", "mlp:32", {"subspace": False}, 20),
    ("Deep GA (N 100, T 10, σ 0.02)", "deep-ga", "mlp:32", {"population": 100, "truncation": 10, "sigma": 0.02, "elite_evals": 5}, 5),
    ("random search (N 100)", "deep-ga", "mlp:32", {"population": 100, "truncation": 0, "elite_evals": 5}, 5),
    ("OpenAI-ES (100)", "es", "mlp:32", {}, 5),
    ("PGPE (100)", "es", "mlp:32", {"algorithm": "pgpe"}, 5),
    ("SNES (100)", "es", "mlp:32", {"algorithm": "snes"}, 5),
    ("CEM (100)", "es", "mlp:32", {"algorithm": "cem"}, 5),
    ("CMA-ES (100, σ 0.1), mlp:4", "es", "mlp:4", {"algorithm": "cmaes", "sigma": 0.1}, 5),
    ("DE/rand/1/bin (NP 50)", "de", "mlp:32", {}, 5),
    ("Clu-DE (NP 50)", "de", "mlp:32", {"variant": "clu"}, 5),
    ("DE init (10 generations), then backprop", "de-init", "mlp:32", {"generations": 10}, 5),
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2,3")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for label, rule, net, options, epochs in SETTINGS:
        batch = 16 if "batch 16" in label else 128
        accs, times = [], []
        for seed in seeds:
            m = bb.train(rule, "digits", net, options=options, epochs=epochs, batch_size=batch,
                         patience=None, seed=seed, store=False, progress=False,
                         energy=False).metrics  # fmt: skip
            accs.append(100 * m["test_acc"])
            times.append(m["train_time_s"])
        rows.append({"setting": label, "rule": rule, "net": net, "options": options,
                     "epochs": epochs, "batch_size": batch, "steps": m["steps"], "test_acc": accs,
                     "train_time_s": times})  # fmt: skip
        print(label, [f"{a:.1f}" for a in accs], flush=True)
    md = [
        f"# Zeroth-order and population rules on digits (seeds {args.seeds})",
        "",
        "| setting | net | steps / generations | test acc % (min-max over seeds) | mean | "
        "train time s (mean) |",
        "|---|---|---:|---:|---:|---:|",
        *[
            f"| {r['setting']} | {r['net']} | {r['steps']} | {min(r['test_acc']):.1f}-"
            f"{max(r['test_acc']):.1f} | {statistics.mean(r['test_acc']):.1f} | "
            f"{statistics.mean(r['train_time_s']):.1f} |"
            for r in rows
        ],
        "",
        "Digits: 1,797 8x8 images, fixed 20 % test split; chance is 10 %. Small budgets on "
        "purpose (these are the tests' settings scaled up a little): the point is which rules "
        "learn and how they rank, not converged accuracy.",
        "",
        *provenance_markdown(" ".join(["python", *sys.argv])),
    ]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "population_digits.md").write_text("\n".join(md) + "\n")
    (HERE / "results" / "population_digits.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
