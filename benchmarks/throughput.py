"""Training throughput of BP against this machine's fp32 matmul peak.

    python benchmarks/throughput.py --data-dir ../shared/data

BP on the Fashion-MNIST MLP 784-1000-1000-10 at batch 128 for 3 epochs (no early stopping, no
energy tracker running beside it); achieved GFLOP/s = FLOPs per example (counted by
torch.utils.flop_counter on a real step) × examples trained / training wall time. The matmul
peak is measured afresh (best of 5 fp32 2048² matmuls). Writes benchmarks/results/throughput.{json,md}.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import beyondbp as bb
from beyondbp.bench.results import write_result
from beyondbp.measure.flops import matmul_peak_gflops

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--net", default="mlp:1000x2")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    peak_before = _fresh_peak()
    res = bb.train(
        "bp",
        "fashion-mnist",
        args.net,
        data_dir=args.data_dir,
        epochs=args.epochs,
        patience=None,
        batch_size=args.batch_size,
        store=False,
        progress=False,
        energy=False,
        device="cpu",
    )
    peak_after = _fresh_peak()
    m = res.metrics
    peak = max(peak_before, peak_after)
    data = {
        "net": args.net,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "steps": m["steps"],
        "train_time_s": m["train_time_s"],
        "flops_per_step": m["flops_per_step"],
        "achieved_gflops": m["gflops_per_s"],
        "matmul_peak_gflops": peak,
        "matmul_peak_before_after": [peak_before, peak_after],
        "fraction_of_peak": m["gflops_per_s"] / peak,
        "test_acc": m["test_acc"],
    }
    md = [
        "# BP training throughput vs fp32 matmul peak",
        "",
        "| net | batch | steps | train time s | FLOPs/step | achieved GFLOP/s | matmul peak GFLOP/s | fraction |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.net} (Fashion-MNIST) | {args.batch_size} | {m['steps']} | {m['train_time_s']:.2f} | "
        f"{m['flops_per_step']:.3g} | {m['gflops_per_s']:.1f} | {peak:.1f} | "
        f"{100 * data['fraction_of_peak']:.0f} % |",
        "",
        "The matmul peak is the best of 5 fp32 2048x2048 matmuls, measured before and after the "
        f"run ({peak_before:.1f} and {peak_after:.1f} GFLOP/s); the higher is used. Training "
        "time covers the whole step (batch gather, forward, backward, fused Adam update).",
    ]
    write_result("throughput", md, data)
    print("\n".join(md))


def _fresh_peak() -> float:
    return matmul_peak_gflops(torch.device("cpu"), refresh=True)


if __name__ == "__main__":
    main()
