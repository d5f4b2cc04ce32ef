"""S²FT: structured sparse fine-tuning (Yang et al., NeurIPS 2024; :mod:`beyondbp.s2ft`).

Selects a few FFN channels and attention heads (the released recipe: 3 % of the FFN channels,
trained in down_proj), co-permutes the coupled weights so each selection is a dense slice, and
trains only those slices with partial backprop. Trained as full fine-tuning is (AdamW, per-step
warm-up and decay; lr 1e-3 as released). Data-driven selections score units on the first
training batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.rules.base import SetupContext
from beyondbp.rules.finetune import FineTune
from beyondbp.rules.finetune import Options as FTOptions
from beyondbp.rules.registry import register
from beyondbp.s2ft import S2FTConfig, get_model


class Options(FTOptions):
    lr: float = Field(1e-3, gt=0)
    down_proj: float = Field(0.03, ge=0, le=1, description="fraction of FFN channels, down_proj")
    up_proj: float = Field(0.0, ge=0, le=1, description="fraction of FFN channels, up_proj")
    o_proj: float = Field(0.0, ge=0, le=1, description="fraction of heads, o_proj")
    v_proj: float = Field(0.0, ge=0, le=1, description="fraction of key-value heads, v_proj")
    selection: str = Field("random", description="random, weight, activation, gradient, combined")
    order: str = Field("largest", description="largest or smallest scores")
    allocation: str = Field("global", description="global (over all blocks) or per-layer")
    calibration: int = Field(8, ge=1, description="training examples the selection scores on")


@register("s2ft", "S²FT: train co-permuted dense slices (FFN channels, heads), partial backprop")
class S2FT(FineTune):
    Options = Options
    options: Options
    tasks = ("lm",)

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.calibration = ctx.train
        super().setup(net, meta, ctx)

    def _trained(self, net: nn.Module) -> list[nn.Parameter]:
        if not hasattr(net, "model"):
            raise BeyondBPError("s2ft fine-tunes a language-model net (--net lm)")
        o = self.options
        fractions = {t: getattr(o, t) for t in ("down_proj", "up_proj", "o_proj", "v_proj")}
        try:
            config = S2FTConfig(
                targets={t: f for t, f in fractions.items() if f > 0},
                selection=o.selection, order=o.order, allocation=o.allocation,
            )  # fmt: skip
        except ValueError as e:
            raise BeyondBPError(f"s2ft: {e}") from None
        if not config.targets:
            raise BeyondBPError("s2ft: every fraction is 0; set down_proj (e.g. 0.03)")
        calibrate = None
        if o.selection != "random" and self.calibration is not None:
            from beyondbp.tasks.lm import trim

            x, y = self.calibration.x[: o.calibration], self.calibration.y[: o.calibration]
            device = next(net.parameters()).device
            x, y = trim(x.to(device), y.to(device))

            def calibrate() -> torch.Tensor:
                return F.cross_entropy(net(x), y)

        net.model = get_model(net.model, config, calibrate)
        return list(net.model.trainable_parameters())
