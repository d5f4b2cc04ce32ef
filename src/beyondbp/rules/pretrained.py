"""No training: the pretrained model as it is, scored like every trained one.

The zero-shot row of a fine-tuning table, and the in-context row when the dataset's prompts
carry demonstrations (``msrp-yesno:16:icl-2``). Its one "step" leaves every weight alone.
"""

from __future__ import annotations

from typing import Any

import torch

from beyondbp.rules.base import Rule
from beyondbp.rules.registry import register


@register("pretrained", "No training: the pretrained model as it is (zero-shot, in-context rows)")
class Pretrained(Rule):
    unit = "dataset"
    tasks = ("lm", "classification")
    default_grid = False
    evaluates_only = True
    trains = False

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        return {}
