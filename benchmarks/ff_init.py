"""Forward-Forward with another weight initialisation (issue 4, results/ff_sweep.md).

Builds the net, optionally re-initialises every linear layer as N(0, 1/out_features) with zero
bias (the initialisation of a popular FF reimplementation, under which a layer's goodness starts
near units/2.5 to units/2 rather than PyTorch's units/6), and trains it with the spyra2025 FF
recipe:

    python benchmarks/ff_init.py normal 10 '{"threshold": 300}' --store runs.sqlite

Prints one line: validation and test accuracy, training time. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

import beyondbp as bb
from beyondbp.bench.presets import FF_RECIPE  # the spyra2025 preset's FF options
from beyondbp.nets import build_net

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("init", choices=("default", "normal"))
    ap.add_argument("epochs", type=int)
    ap.add_argument("options", nargs="?", default="{}", help="more FF options (JSON)")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--net", default="mlp:1000x2")
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--store", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # as measured: the thread count changes the last digits
    torch.manual_seed(0)
    data = bb.load_dataset(args.data, args.data_dir)
    net = build_net(args.net, data.meta.input_shape, data.meta.classes)
    if args.init == "normal":
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                torch.nn.init.normal_(m.weight, 0.0, 1 / math.sqrt(m.weight.shape[0]))
                torch.nn.init.zeros_(m.bias)
    res = bb.train("ff", data, net, options={**FF_RECIPE, **json.loads(args.options)},
                   store=args.store or False, epochs=args.epochs, patience=None,
                   batch_size=100, progress=False, energy=False)  # fmt: skip
    m = res.metrics
    print(f"init={args.init} epochs={args.epochs} {args.options}: val {100 * m['val_acc']:.2f} %, "
          f"test {100 * m['test_acc']:.2f} %, train {m['train_time_s']:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
