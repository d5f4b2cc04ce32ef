"""A least-squares linear classifier (ridge 1e-3 on one-hot targets, with a bias) on the pixels:
the ceiling we expect for rules whose first layer regresses a linear image of the label
(tpSGD's ℓ2 targets; see issue 5's note).

    python benchmarks/least_squares.py [--data-dir ../shared/data]

writes benchmarks/results/least_squares.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from beyondbp.bench.results import write_result
from beyondbp.data import load_dataset

HERE = Path(__file__).resolve().parent


def accuracy(name: str, data_dir: str, ridge: float = 1e-3) -> float:
    d = load_dataset(name, data_dir)

    def design(x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).double()
        return torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)

    x = design(d.train.x)
    y = torch.nn.functional.one_hot(d.train.y, d.meta.classes).double()
    w = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    return float(((design(d.test.x) @ w).argmax(1) == d.test.y).double().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    args = ap.parse_args()
    rows = [(n, accuracy(n, args.data_dir)) for n in ("mnist", "fashion-mnist")]
    md = [
        "# Least-squares linear classifier on the pixels (ridge 1e-3, one-hot targets)",
        "",
        "| data | test acc % |",
        "|---|---:|",
        *[f"| {n} | {100 * a:.2f} |" for n, a in rows],
        "",
        "Trained on the training split (validation held out as in every run), tested on the "
        "official test set.",
    ]
    write_result("least_squares", md, dict(rows))
    print("\n".join(md))


if __name__ == "__main__":
    main()
