"""Forward-Forward's two prediction rules on one trained net (issue 4): the softmax head on a
neutral-label pass vs goodness accumulated over the 10 labels (from layer 0 or 1), and the
softmax head refitted to convergence on the frozen features (L2 logistic regression by L-BFGS on
the training split, ``beyondbp.linear_probe.fit_head``): what the representation supports when
the head is not the limit.

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
from torch import nn

from beyondbp.data import load_dataset
from beyondbp.linear_probe import fit_head
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
    rule.set_phase("test")

    def score(label: str) -> None:
        for split_name in ("val", "test"):
            split = getattr(data, split_name)
            t0, correct = time.perf_counter(), 0
            with torch.no_grad():
                for i in range(0, len(split), 1000):
                    scores = rule.predict(split.x[i : i + 1000])
                    correct += int((scores.argmax(1) == split.y[i : i + 1000]).sum())
            print(f"{split_name} {label}: {100 * correct / len(split):.2f} % "
                  f"({time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip

    for how, start in (("softmax", None), ("goodness", 0), ("goodness", 1)):
        rule.options.predict = how
        if start is not None:
            rule.options.goodness_from = start
        score(f"{how} from layer {start}")
    rule.options.predict = "softmax"
    t0 = time.perf_counter()
    fit = fit_head(_HeadOnFeatures(rule), data.train.x, data.train.y, batch_size=1000)
    print(f"head refit by L-BFGS: train loss {fit['head_probe_loss']:.4f}, "
          f"train acc {100 * fit['head_probe_train_acc']:.2f} % "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)  # fmt: skip
    score("softmax head refitted")


class _HeadOnFeatures(nn.Module):
    """The rule's softmax head on its neutral-pass features, as a net whose ``head`` the probe
    refits."""

    def __init__(self, rule) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.head = rule.head
        self.features = rule._head_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


if __name__ == "__main__":
    main()
