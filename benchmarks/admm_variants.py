"""ADMM variants on a subset of MNIST (issue 7): the constraint scale κ and over-relaxation α.

Runs ``convex-admm`` directly (no harness: no validation passes) on the first N training
examples with P = 10 patterns (mlp:200), β = ρ = λ·n·c (λ = 1e-4), and prints the objective / n,
the cone violation and the relative residuals every 50 iterations, one line per variant.

    python benchmarks/admm_variants.py --n 10000 --iterations 400 \\
        --variants "fixed,fixed a1.6,k0.316 a1.6,k0.1 a1.6"

Appends the lines and the provenance to benchmarks/results/admm_variants.md. One torch thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from beyondbp.data import load_dataset
from beyondbp.measure import provenance_markdown
from beyondbp.nets import build_net
from beyondbp.rules import make_rule
from beyondbp.rules.base import SetupContext

HERE = Path(__file__).resolve().parent
VARIANTS = {
    "fixed": {},
    "fixed a1.6": {"relaxation": 1.6},
    "k0.316": {"constraint_scale": 0.316},
    "k0.316 a1.6": {"constraint_scale": 0.316, "relaxation": 1.6},
    "k0.1 a1.6": {"constraint_scale": 0.1, "relaxation": 1.6},
    "k0.1 a1.6 f32": {"constraint_scale": 0.1, "relaxation": 1.6, "dtype": "float32"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="mnist")
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--dry", action="store_true", help="print only, append nothing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data, args.data_dir)
    x, y = data.train.x[: args.n].flatten(1), data.train.y[: args.n]
    c = data.meta.classes
    beta = 1e-4 * len(x) * c
    lines = [f"## {args.data}, first {len(x)} training examples, β = ρ = {beta:g}", "",
             "| variant | iterations | time s | objective / n | violation | primal res. | dual res. |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label in args.variants.split(","):
        net = build_net("mlp:200", (x.shape[1],), c).double()
        opts = {"patterns": 10, "beta": beta, "rho": beta, "tol": 1e-4, **VARIANTS[label]}
        rule = make_rule("convex-admm", opts)
        rule.setup(net, data.meta, SetupContext(torch.device("cpu"), 0, 1, 100, len(x)))
        t0, k = time.perf_counter(), 0
        while k * 10 < args.iterations and rule.done() is None:
            logs = rule.step(x, y)
            k += 1
            if k % 5 == 0 or rule.done():
                lines.append(
                    f"| {label} | {k * 10} | {time.perf_counter() - t0:.1f} | "
                    f"{logs['objective'] / len(x):.6f} | {logs['violation']:.1e} | "
                    f"{logs['primal_residual']:.1e} | {logs['dual_residual']:.1e} |"
                )
                print(lines[-1], flush=True)
    if args.dry:
        return
    command = "python benchmarks/admm_variants.py " + " ".join(sys.argv[1:])
    out = HERE / "results" / "admm_variants.md"
    head = "" if out.exists() else "# convex-admm variants on a data subset (issue 7)\n\n"
    with open(out, "a") as f:
        f.write(head + "\n".join([*lines, "", *provenance_markdown(command), ""]) + "\n")


if __name__ == "__main__":
    main()
