"""Forward-Forward's two prediction rules on one trained net (issue 4): the softmax head on a
neutral-label pass vs goodness accumulated over the 10 labels (from layer 0 or 1).

Loads a run's best checkpoint (``best.pt``: the net and the head at the best validation epoch)
and scores the validation and test splits both ways, with the time each takes.

    python benchmarks/ff_predict.py fashion-mnist mlp:2000x4 \\
        benchmarks/runs/checkpoints/ff.fashion-mnist.mlp_2000x4.s0.f1dce0ab3243/best.pt

Prints one line per split, rule and start layer. One torch thread.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from beyondbp.data import load_dataset
from beyondbp.nets import build_net
from beyondbp.rules import make_rule
from beyondbp.rules.base import SetupContext

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("net")
    ap.add_argument("checkpoint")
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load_dataset(args.data, args.data_dir)
    net = build_net(args.net, data.meta.input_shape, data.meta.classes)
    rule = make_rule("ff")
    rule.setup(net, data.meta, SetupContext(torch.device("cpu"), 0, 1, 1, 100, train=data.train))
    state = torch.load(args.checkpoint, weights_only=False, map_location="cpu")
    for name, module in rule.modules().items():
        module.load_state_dict(state[name])
    rule.train_mode(False)
    for split_name in ("val", "test"):
        split = getattr(data, split_name)
        for how, start in (("softmax", None), ("goodness", 0), ("goodness", 1)):
            rule.options.predict = how
            if start is not None:
                rule.options.goodness_from = start
            t0, correct = time.perf_counter(), 0
            with torch.no_grad():
                for i in range(0, len(split), 1000):
                    scores = rule.predict(split.x[i : i + 1000])
                    correct += int((scores.argmax(1) == split.y[i : i + 1000]).sum())
            print(f"{split_name} {how} from layer {start}: {100 * correct / len(split):.2f} % "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
