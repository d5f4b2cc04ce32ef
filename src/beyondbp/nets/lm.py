"""A causal language model as a net of the ``lm`` task kind.

:class:`CausalLM` holds a Hugging Face causal LM (``.model``: SmolLM2-135M-Instruct offline, or
the folder ``$BEYONDBP_LM`` names) and returns scores with the class axis at 1, as
``F.cross_entropy`` takes them (see :mod:`beyondbp.tasks.lm`): next-token logits ``(N, V, K)``
at the K positions the inputs' third row lists (the LM head, 49,152 words wide, runs nowhere
else), or, once the task binds label words, the logits of those words after each prompt
``(N, C)`` (only the label words' rows of the output layer).

Fine-tuning methods wrap or edit ``.model`` in place (LoRA through ``peft``, S²FT's layers);
the net's interface stays the same.
"""

from __future__ import annotations

import torch
from torch import nn

TINY = {  # lm:tiny: a randomly initialised LLaMA with grouped-query attention, for quick checks
    "hidden_size": 96, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 16,
}  # fmt: skip


class CausalLM(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("label_ids", torch.zeros(0, dtype=torch.int64), persistent=False)

    @classmethod
    def pretrained(cls, folder: str | None = None) -> CausalLM:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging

        from beyondbp.data.lm import lm_dir

        logging.disable_progress_bar()  # a progress bar over 272 tensors loaded in 0.2 s
        model = AutoModelForCausalLM.from_pretrained(str(folder or lm_dir()), dtype=torch.float32)
        model.config.use_cache = False  # training and scoring need no KV cache
        return cls(model)

    @classmethod
    def random(cls, seed: int = 0, folder: str | None = None, **sizes: int) -> CausalLM:
        """A LLaMA of the model's vocabulary with the given sizes (default: ``TINY``), freshly
        initialised from ``seed``."""
        from transformers import AutoConfig, AutoModelForCausalLM

        from beyondbp.data.lm import lm_dir

        config = AutoConfig.from_pretrained(str(folder or lm_dir()))
        for k, v in {**TINY, **sizes}.items():
            setattr(config, k, v)
        config.use_cache = False
        torch.manual_seed(seed)
        return cls(AutoModelForCausalLM.from_config(config, dtype=torch.float32))

    def bind_text(self, info) -> None:  # info: beyondbp.data.lm.LMData
        device = self.label_ids.device
        self.label_ids = torch.tensor(info.label_ids, dtype=torch.int64, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = int(x[:, 1].sum(1).max())  # right-padded: cut to the longest sequence
        ids, mask, scored = x[:, 0, :length], x[:, 1, :length], x[:, 2, :length]
        hidden = self.model.get_decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        head = self.model.get_output_embeddings()
        if len(self.label_ids):  # the label words after each prompt's last token
            last = hidden[torch.arange(len(ids), device=ids.device), mask.sum(1) - 1]
            return nn.functional.linear(last, head.weight[self.label_ids])
        k = int((scored >= 0).sum(1).max())  # the LM head runs at the scored positions only
        where = scored[:, :k].clamp_min(0)
        picked = hidden.gather(1, where[..., None].expand(-1, -1, hidden.shape[-1]))
        return head(picked).transpose(1, 2)
