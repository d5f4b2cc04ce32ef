"""Time per ADMM iteration (and the one-off set-up) of ``convex-admm`` against the number of
samples n and of sampled patterns P, on MNIST subsets (10 classes, d = 785 with the bias).

Bai et al. (2022) claim a per-iteration cost quadratic for the approximate program once the
system is factorised. Our iteration is two triangular solves with the (P d)² factor plus products
with X, i.e. O((P d)² c + n P d c): linear in n and between linear and quadratic in P. The
set-up (Gram blocks and Cholesky) is O(P² n d² + (P d)³). This measures the exponents.

    python benchmarks/convex_scaling.py [--data-dir ../shared/data]

writes benchmarks/results/convex_scaling.{json,md,png}. One torch thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from beyondbp.bench.results import results_folder, write_result
from beyondbp.data import load_dataset
from beyondbp.nets import build_net
from beyondbp.rules import make_rule
from beyondbp.rules.base import SetupContext

HERE = Path(__file__).resolve().parent


def measure(x: torch.Tensor, y: torch.Tensor, meta, P: int, iters: int) -> tuple[float, float]:
    rule = make_rule("convex-admm", {"patterns": P, "rho": 1.0, "iterations_per_step": iters})
    rule.setup(build_net(f"mlp:{2 * P * 10}", meta.input_shape, 10), meta,
               SetupContext(torch.device("cpu"), 0, 1, 1, len(x)))  # fmt: skip
    t0 = time.perf_counter()
    rule._prep = rule._prepare(x, y)
    rule.it = rule._init_iterates()
    setup = time.perf_counter() - t0
    rule.step(x, y)  # warm-up
    t0 = time.perf_counter()
    rule.step(x, y)
    return setup, (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--ns", default="1000,2000,4000,8000,16000,32000")
    ap.add_argument("--ps", default="2,4,8,12,16")
    ap.add_argument("--n-fixed", type=int, default=8000)
    ap.add_argument("--p-fixed", type=int, default=8)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("mnist", args.data_dir)
    x_all, y_all, meta = data.train.x, data.train.y, data.meta
    rows = []
    for n in map(int, args.ns.split(",")):
        s, it = measure(x_all[:n], y_all[:n], meta, args.p_fixed, args.iters)
        rows.append({"vary": "n", "n": n, "P": args.p_fixed, "setup_s": s, "iter_s": it})
        print(rows[-1], flush=True)
    for P in map(int, args.ps.split(",")):
        s, it = measure(x_all[: args.n_fixed], y_all[: args.n_fixed], meta, P, args.iters)
        rows.append({"vary": "P", "n": args.n_fixed, "P": P, "setup_s": s, "iter_s": it})
        print(rows[-1], flush=True)

    def slope(kind: str, key: str, col: str) -> float:
        pts = [(r[key], r[col]) for r in rows if r["vary"] == kind]
        return float(np.polyfit(np.log([p[0] for p in pts]), np.log([p[1] for p in pts]), 1)[0])

    slopes = {f"{col} vs {key}": slope(kind, key, col)
              for kind, key in (("n", "n"), ("P", "P")) for col in ("iter_s", "setup_s")}  # fmt: skip
    out = results_folder()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, (kind, key, fixed) in zip(
        axes, (("n", "n", f"P = {args.p_fixed}"), ("P", "P", f"n = {args.n_fixed}")), strict=True
    ):
        pts = [r for r in rows if r["vary"] == kind]
        for col, label in (("iter_s", "per iteration"), ("setup_s", "set-up (once)")):
            k = slope(kind, key, col)
            ax.loglog([r[key] for r in pts], [r[col] for r in pts], "o-",
                      label=f"{label}: slope {k:.2f}")  # fmt: skip
        ax.set_xlabel(key)
        ax.set_ylabel("seconds")
        ax.set_title(f"convex-admm on MNIST, {fixed}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "convex_scaling.png", dpi=120)

    md = [
        "# convex-admm: time per iteration and set-up vs n and P (MNIST subsets, 10 classes)",
        "",
        "![scaling](convex_scaling.png)",
        "",
        "| varied | n | P | set-up s | per iteration s |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {r['vary']} | {r['n']} | {r['P']} | {r['setup_s']:.3f} | {r['iter_s']:.4f} |"
            for r in rows
        ],
        "",
        "Log-log slopes (cost ∝ size^slope): "
        + ", ".join(f"{k}: {v:.2f}" for k, v in slopes.items()),
        "",
        "Per iteration after the set-up: O((P d)² c + n P d c) expected, i.e. slope 1 in n and "
        "between 1 and 2 in P; the set-up is O(P² n d² + (P d)³).",
    ]
    write_result("convex_scaling", md, {"rows": rows, "slopes": slopes})
    print("\n".join(md))


if __name__ == "__main__":
    main()
