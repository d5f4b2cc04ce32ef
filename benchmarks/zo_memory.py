"""Training-step memory of zeroth-order vs backprop fine-tuning of MiniLM on MSRP (issue 6).

For each setting a few training steps run (memory is probed on the second step; accuracy is not
the point here and is not reported) and the peak bytes of live tensors during a step are set
against the peak bytes of predicting the same batch (inference): MeZO's claim is training memory
≈ inference memory, against several times that for backprop.

    python benchmarks/zo_memory.py [--data-dir ../shared/data] [--batch 16]

writes benchmarks/results/zo_memory.{md,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

import beyondbp as bb
from beyondbp.data.core import Split
from beyondbp.measure import provenance_markdown

HERE = Path(__file__).resolve().parent

SETTINGS = [  # (label, rule, net, options)
    ("backprop fine-tuning (AdamW)", "bp", "minilm", {"optimizer": "adamw", "lr": 2e-5}),
    ("backprop fine-tuning (SGD, no momentum)", "bp", "minilm", {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.0}),
    ("MeZO, all weights", "mezo", "minilm", {}),
    ("MeZO, soft prompt (16) + head", "mezo", "minilm:prompt-16", {"params": "prompt,head.*"}),
    ("ZO-Adam + subspace, soft prompt (16) + head", "zo-adam", "minilm:prompt-16", {"params": "prompt,head.*"}),
    ("backprop, soft prompt (16) + head only", "bp", "minilm:prompt-16", {"lr": 1e-3}),
]  # fmt: skip


def _head(split: Split, n: int) -> Split:
    return Split(split.x[:n], split.y[:n])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(int(__import__("os").environ.get("BEYONDBP_THREADS", "1")))
    full = bb.load_dataset("msrp", args.data_dir)
    # memory needs a few training steps, not the 2,133 validation and test pairs: keep 32 of each
    data = dataclasses.replace(full, val=_head(full.val, 32), test=_head(full.test, 32))
    rows = []
    for label, rule, net, options in SETTINGS:
        net_arg: str | torch.nn.Module = net
        if label.startswith("backprop, soft prompt"):  # freeze the encoder: bp trains the rest
            module = bb.build_net(net, data.meta.input_shape, data.meta.classes)
            module.encoder.requires_grad_(False)
            net_arg = module
        res = bb.train(rule, data, net_arg, options=options,
                       batch_size=args.batch, max_steps=3, epochs=1, store=False,
                       progress=False, energy=False)  # fmt: skip
        m = res.metrics
        rows.append({"setting": label, "rule": rule, "net": net, "options": options,
                     "peak_step_bytes": m["peak_step_bytes"],
                     "step_resident_bytes": m["step_resident_bytes"],
                     "inference_step_bytes": m["inference_step_bytes"],
                     "ratio": m["step_to_inference_memory"]})  # fmt: skip
        print(f"{label}: {m['peak_step_bytes'] / 2**20:.1f} MiB, "
              f"{m['step_to_inference_memory']:.2f}x inference", flush=True)  # fmt: skip
    mib = 2**-20
    md = [
        f"# Training-step memory on MiniLM-L6 / MSRP (batch {args.batch})",
        "",
        "| setting | peak step (MiB) | resident: weights, optimiser state, batch (MiB) | "
        "inference, same batch (MiB) | step / inference |",
        "|---|---|---|---|---|",
        *[
            f"| {r['setting']} | {r['peak_step_bytes'] * mib:.1f} | "
            f"{r['step_resident_bytes'] * mib:.1f} | {r['inference_step_bytes'] * mib:.1f} | "
            f"{r['ratio']:.2f}x |"
            for r in rows
        ],
        "",
        "Peak bytes of tensors alive during the second training step (the first builds the "
        "optimiser state), against predicting the same batch under no_grad. Batches are cut to "
        "their longest pair, so both columns depend on the batch drawn; both use the same batch. "
        "Memory only: accuracies need the long runs of the `mezo2023` preset.",
        "",
        *provenance_markdown(" ".join(["python", *sys.argv])),
    ]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "zo_memory.md").write_text("\n".join(md) + "\n")
    (HERE / "results" / "zo_memory.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
