"""Robust accuracy under ℓ∞ attacks: robust convex training against PGD adversarial training
with backprop, on the same two-layer ReLU net.

    python benchmarks/robust_compare.py [--data digits] [--eps 0.05,0.1] [--width 100]

For each ε (pixel units): plain bp, bp with PGD adversarial training (PGD-10 at ε, Madry et al.),
convex-admm (nominal convex training) and convex-robust (robust convex program at ε), all on
``mlp:WIDTH``, each tested clean, under FGSM and under PGD-20 at the same ε (``attack_eps``).
Seeds: ``--seeds`` (bp's initialisation and batch order; the convex rules' sampled patterns).
Writes benchmarks/results/robust_compare.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import beyondbp as bb
from beyondbp.measure import provenance_markdown

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--eps", default="0.05,0.1")
    ap.add_argument("--width", type=int, default=100)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--bp-epochs", type=int, default=30)
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for eps in (float(e) for e in args.eps.split(",")):
        methods = [
            ("bp", {}, args.bp_epochs),
            (f"bp + PGD-10 training at ε={eps:g}", {"adversarial": "pgd", "adv_eps": eps},
             args.bp_epochs),
            ("convex-admm (nominal)", {"rho": 1.0}, 30),
            (f"convex-robust at ε={eps:g}", {"eps": eps}, 1),
        ]  # fmt: skip
        for label, options, epochs in methods:
            rule = label.split(" ")[0]
            runs = []
            for seed in seeds:
                r = bb.train(rule, data=args.data, net=f"mlp:{args.width}", options=options,
                             epochs=epochs, seed=seed, data_dir=args.data_dir, store=False,
                             progress=False, attack_eps=eps, attack_steps=20)  # fmt: skip
                runs.append(r.metrics)
            row = {"data": args.data, "eps": eps, "method": label, "seeds": seeds}
            for k in ("test_acc", "test_fgsm_acc", "test_pgd_acc", "train_time_s"):
                vals = [m[k] for m in runs]
                row[k] = statistics.mean(vals)
                row[k + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = HERE / "results"
    (out / "robust_compare.json").write_text(json.dumps(rows, indent=1))
    md = [
        f"# Robust accuracy: robust convex training vs PGD adversarial training ({args.data}, "
        f"mlp:{args.width})",
        "",
        "Mean ± std over seeds " + ", ".join(map(str, seeds)) + ". ε in pixel units (inputs in "
        "[0, 1]); the attacks at test time use the rule's own loss (cross-entropy for bp, the "
        "squared loss the convex rules train) and stay in the pixel box; PGD: 20 steps of "
        "2.5ε/20 from a random start.",
        "",
        "| ε | method | clean % | FGSM % | PGD-20 % | train time s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            f"{100 * r[k]:.1f} ± {100 * r[k + '_std']:.1f}"
            for k in ("test_acc", "test_fgsm_acc", "test_pgd_acc")
        ]
        md.append(f"| {r['eps']:g} | {r['method']} | " + " | ".join(cells)
                  + f" | {r['train_time_s']:.1f} |")  # fmt: skip
    md += ["", *provenance_markdown(" ".join(["python", *sys.argv]))]
    (out / "robust_compare.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
