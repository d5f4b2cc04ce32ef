"""LoRA (Hu et al., ICLR 2022) through Hugging Face ``peft``: W + (α/r)·B A on chosen layers.

The baseline S²FT is compared with. ``modules`` names the adapted layers: ``q_proj,v_proj``
(the LoRA paper's choice), ``all-linear`` (every linear layer of the blocks), or a list; rank
``r``, ``alpha`` (2r by default, as the S²FT repository's LoRA runs) and dropout 0.05. Trained
as full fine-tuning is (AdamW, per-step warm-up and decay), the adapters only.
"""

from __future__ import annotations

from pydantic import Field
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.rules.finetune import FineTune
from beyondbp.rules.finetune import Options as FTOptions
from beyondbp.rules.registry import register


class Options(FTOptions):
    lr: float = Field(2e-4, gt=0)
    r: int = Field(8, ge=1, description="rank of each adapter")
    alpha: float | None = Field(None, gt=0, description="scale numerator; None: 2r")
    dropout: float = Field(0.05, ge=0, lt=1)
    modules: str = Field("q_proj,v_proj", description="adapted layers: names, or all-linear")


@register("lora", "LoRA through peft: low-rank adapters on chosen linear layers (the baseline)")
class LoRA(FineTune):
    Options = Options
    options: Options
    tasks = ("lm",)

    def _trained(self, net: nn.Module) -> list[nn.Parameter]:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as e:
            raise BeyondBPError("lora needs peft: pip install 'beyondbp[llm]'") from e
        if not hasattr(net, "model"):
            raise BeyondBPError("lora adapts a language-model net (--net lm)")
        o = self.options
        modules = "all-linear" if o.modules == "all-linear" else o.modules.split(",")
        config = LoraConfig(r=o.r, lora_alpha=o.alpha or 2 * o.r, lora_dropout=o.dropout,
                            target_modules=modules, task_type="CAUSAL_LM")  # fmt: skip
        net.model = get_peft_model(net.model, config)
        return [p for p in net.parameters() if p.requires_grad]
