"""S²FT's options (the PEFT-style config object)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# module name in a LLaMA block: (which side of W trains, the unit selected)
TARGETS: dict[str, tuple[str, str]] = {
    "down_proj": ("in", "channel"),  # FFN channels: columns of down_proj
    "up_proj": ("out", "channel"),  # FFN channels: rows of up_proj
    "o_proj": ("in", "head"),  # attention (query) heads: columns of o_proj
    "v_proj": ("out", "kv-head"),  # key-value heads: rows of v_proj
}


class S2FTConfig(BaseModel):
    """Which coupled structures to train and how to pick them.

    ``targets`` maps a module to the fraction of its units trained, counted over all blocks
    (``allocation="global"``: the released code samples that many units from all layers
    together) or in every block (``"per-layer"``). The default is the released recipe: 3 % of
    the FFN channels, trained in down_proj only.
    """

    model_config = ConfigDict(extra="forbid")

    targets: dict[str, float] = Field(default_factory=lambda: {"down_proj": 0.03})
    selection: Literal["random", "weight", "activation", "gradient", "combined"] = Field(
        "random", description="how units are scored: at random, by the norm of their weights, "
        "of their activations or of their loss gradient on calibration data, or weight × "
        "activation (combined)"
    )  # fmt: skip
    order: Literal["largest", "smallest"] = Field(
        "largest", description="keep the units of largest or of smallest score"
    )
    allocation: Literal["global", "per-layer"] = "global"
    seed: int = Field(0, description="the random selection's seed")

    @field_validator("targets")
    @classmethod
    def _known(cls, v: dict[str, float]) -> dict[str, float]:
        for name, frac in v.items():
            if name not in TARGETS:
                raise ValueError(f"unknown S²FT target {name!r}; choose from {', '.join(TARGETS)}")
            if not 0 < frac <= 1:
                raise ValueError(f"the fraction of {name} must be in (0, 1], got {frac}")
        return v
