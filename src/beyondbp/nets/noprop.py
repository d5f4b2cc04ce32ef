"""The NoProp network (Li, Teh, Pascanu 2025, arXiv 2503.24322): T denoising blocks, a class
embedding matrix and a classifier on the last latent, with the noise schedule they share.

Latents run from ``z_0`` (noise) to ``z_T`` (close to the label's embedding ``u_y``):
``q(z_t | y) = N(sqrt(ᾱ_t) u_y, (1 − ᾱ_t) I)`` with ᾱ increasing in t. Block t sees the image and
``z_{t−1}`` and predicts the clean embedding, ``û_t = softmax(logits) · W_embed``. Inference walks
the chain ``z_t = a_t û_t + b_t z_{t−1} + sqrt(c_t) ε`` (the Gaussian posterior
``q(z_t | z_{t−1}, u)``), then the classifier reads ``z_T``.

Schedule: the cosine schedule (Nichol & Dhariwal 2021, offset 0.008) evaluated at the noise levels
``(T + 1 − t) / (T + 1)``, so ``z_0`` is nearly pure noise and ``z_T`` keeps a little (its SNR is
finite, which the DT loss weights need).

``forward(x)`` is the deterministic chain (means, no sampled noise, ``z_0 = 0``) followed by the
classifier, so backprop can train the very same architecture end to end as the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from beyondbp.errors import BeyondBPError

COSINE_OFFSET = 0.008


def cosine_alpha_bar(noise_level: torch.Tensor) -> torch.Tensor:
    """ᾱ at noise level u ∈ [0, 1] (0: clean, 1: pure noise) of the cosine schedule."""
    f = torch.cos((noise_level + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    f0 = math.cos(COSINE_OFFSET / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
    return (f / f0).clamp(0.0, 1.0)


def noprop_alpha_bar(steps: int) -> torch.Tensor:
    """ᾱ_0..ᾱ_T (increasing) for T = ``steps`` blocks, in float64."""
    t = torch.arange(steps + 1, dtype=torch.float64)
    return cosine_alpha_bar((steps + 1 - t) / (steps + 1))


def posterior_coefficients(alpha_bar: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(a_t, b_t, c_t) for t = 1..T: ``q(z_t | z_{t−1}, u) = N(a_t u + b_t z_{t−1}, c_t I)``."""
    prev, cur = alpha_bar[:-1], alpha_bar[1:]
    rho = prev / cur  # z_{t−1} = sqrt(ρ_t) z_t + sqrt(1 − ρ_t) ε: the noising step
    a = cur.sqrt() * (1 - rho) / (1 - prev)
    b = rho.sqrt() * (1 - cur) / (1 - prev)
    c = (1 - cur) * (1 - rho) / (1 - prev)
    return a, b, c


def snr(alpha_bar: torch.Tensor) -> torch.Tensor:
    return alpha_bar / (1 - alpha_bar)


class DenoiseBlock(nn.Module):
    """One NoProp block (the paper's Fig. 6): an image path (three conv 3x3 → ReLU → max-pool 2 →
    dropout 0.2 stages of 32/64/128 channels, then a linear layer), a latent path (two linear →
    batch norm → ReLU layers with a skip), joined by two more such layers and a linear map to
    class logits."""

    def __init__(
        self, input_shape: Sequence[int], embed_dim: int, classes: int, width: int = 256
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        convs: list[nn.Module] = []
        for out in (32, 64, 128):
            convs += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2)]
            c, h, w = out, h // 2, w // 2
        self.image = nn.Sequential(*convs, nn.Flatten(), _dense(c * h * w, width))
        self.latent_in = _dense(embed_dim, width)
        self.latent_hidden = _dense(width, width)
        self.joint = nn.Sequential(_dense(2 * width, width), _dense(width, 128))
        self.out = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = self.latent_in(z)
        h = h + self.latent_hidden(h)  # the skip connection of the latent path
        return self.out(self.joint(torch.cat([self.image(x), h], 1)))


def _dense(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU())


class NoPropNet(nn.Module):
    """T denoising blocks, the class embeddings ``W_embed`` (classes × d) and the classifier."""

    def __init__(
        self,
        input_shape: Sequence[int],
        classes: int,
        steps: int = 10,
        embedding: str = "onehot",
        embed_dim: int | None = None,
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise BeyondBPError(
                f"the NoProp net needs image input (C, H, W), got shape {tuple(input_shape)}"
            )
        if embedding not in ("onehot", "learned"):
            raise BeyondBPError(f"unknown NoProp embedding {embedding!r}; valid: onehot, learned")
        d = classes if embedding == "onehot" else (embed_dim or classes)
        self.steps, self.classes, self.embedding = steps, classes, embedding
        self.blocks = nn.ModuleList(DenoiseBlock(input_shape, d, classes) for _ in range(steps))
        w = torch.eye(classes) if embedding == "onehot" else torch.randn(classes, d) * 0.1
        self.embed = nn.Parameter(w, requires_grad=embedding == "learned")
        self.classifier = nn.Linear(d, classes)
        alpha_bar = noprop_alpha_bar(steps)
        a, b, c = posterior_coefficients(alpha_bar)
        for name, value in (("alpha_bar", alpha_bar), ("a", a), ("b", b), ("c", c)):
            self.register_buffer(name, value.float(), persistent=False)

    def denoise(
        self, t: int, x: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Block t (1-based): (logits, û) for the clean embedding from ``x`` and ``z_{t−1}``."""
        logits = self.blocks[t - 1](x, z)
        return logits, logits.softmax(1) @ self.embed

    def noised(
        self, y: torch.Tensor, t: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A draw of ``z_t ~ q(z_t | y) = N(sqrt(ᾱ_t) u_y, (1 − ᾱ_t) I)``."""
        u = self.embed[y]
        eps = torch.randn(u.shape, generator=generator, device=u.device, dtype=u.dtype)
        return self.alpha_bar[t].sqrt() * u + (1 - self.alpha_bar[t]).sqrt() * eps

    def chain(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """Run the inference chain; returns ``z_T``. ``sample=False``: means only (``z_0 = 0``,
        no noise), deterministic and differentiable end to end."""
        n, d = len(x), self.embed.shape[1]
        z = torch.randn(n, d, device=x.device) if sample else x.new_zeros(n, d)
        for t in range(1, self.steps + 1):
            _, u_hat = self.denoise(t, x, z)
            z = self.a[t - 1] * u_hat + self.b[t - 1] * z
            if sample:
                z = z + self.c[t - 1].sqrt() * torch.randn_like(z)
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.chain(x))
