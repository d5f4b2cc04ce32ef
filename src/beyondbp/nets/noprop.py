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

Continuous time (``kind="ct"`` or ``"fm"``): one block, told the time t ∈ [0, 1] by a sinusoidal
feature, predicts the clean embedding at every t; inference integrates an ODE from t = 0 to 1 in
``steps`` Euler or Heun steps. CT: ``z_t = sqrt(ᾱ(t)) u_y + sqrt(1 − ᾱ(t)) ε`` with a learnable
schedule, log SNR(t) = γ(t) = γ_0 + softplus(θ)·t (increasing), and the deterministic (DDIM) flow
of that family as the ODE. FM (flow matching): ``z_t = t u_y + (1 − t) z_0``, ``z_0 ~ N(0, I)``,
velocity ``(û − z_t) / (1 − t)``; the prediction is the class whose embedding is nearest ``z_1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
        self,
        input_shape: Sequence[int],
        embed_dim: int,
        classes: int,
        width: int = 256,
        time_dim: int = 0,
    ) -> None:
        super().__init__()
        self.time_dim = time_dim
        c, h, w = input_shape
        convs: list[nn.Module] = []
        for out in (32, 64, 128):
            convs += [nn.Conv2d(c, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.2)]
            c, h, w = out, h // 2, w // 2
        self.image = nn.Sequential(*convs, nn.Flatten(), _dense(c * h * w, width))
        self.latent_in = _dense(embed_dim + time_dim, width)
        self.latent_hidden = _dense(width, width)
        self.joint = nn.Sequential(_dense(2 * width, width), _dense(width, 128))
        self.out = nn.Linear(128, classes)

    def forward(
        self,
        x: torch.Tensor,
        z: torch.Tensor,
        t: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits. ``image``: ``self.image(x)`` when the caller has it already (it
        depends on neither z nor t)."""
        if self.time_dim:
            assert t is not None, "a continuous-time block needs the time t"
            z = torch.cat([z, time_features(t, self.time_dim).expand(len(z), -1)], 1)
        h = self.latent_in(z)
        h = h + self.latent_hidden(h)  # the skip connection of the latent path
        return self.out(self.joint(torch.cat([self.image(x) if image is None else image, h], 1)))


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features of t ∈ [0, 1] (shape (N,) or scalar) → (N, dim)."""
    freqs = torch.exp(torch.linspace(0, math.log(1000.0), dim // 2, device=t.device))
    angles = t.reshape(-1, 1).to(freqs.dtype) * freqs * math.pi
    return torch.cat([angles.sin(), angles.cos()], 1)


def _dense(n_in: int, n_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU())


class NoPropNet(nn.Module):
    """T denoising blocks, the class embeddings ``W_embed`` (classes × d) and the classifier.

    ``head="embed"`` starts the classifier at ``W_embed`` (bias 0), so it scores class k by
    ``u_k · z_T``. Backprop through the deterministic chain needs it: ``z_T`` lies in the hull of
    the embeddings, and a randomly initialised classifier maps that hull onto only some classes
    (the argmax of each vertex), so end-to-end training stalls with the others never predicted.
    NoProp itself trains the classifier on noisy ``z_T`` and does not care.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        classes: int,
        steps: int = 10,
        embedding: str = "onehot",
        embed_dim: int | None = None,
        kind: str = "dt",
        time_dim: int = 16,
        head: str = "random",
    ) -> None:
        super().__init__()
        if head not in ("random", "embed"):
            raise BeyondBPError(f"unknown NoProp classifier start {head!r}; valid: random, embed")
        if kind not in ("dt", "ct", "fm"):
            raise BeyondBPError(f"unknown NoProp kind {kind!r}; valid: dt, ct, fm")
        if len(input_shape) != 3:
            raise BeyondBPError(
                f"the NoProp net needs image input (C, H, W), got shape {tuple(input_shape)}"
            )
        if embedding not in ("onehot", "learned", "prototype"):
            raise BeyondBPError(
                f"unknown NoProp embedding {embedding!r}; valid: onehot, learned, prototype"
            )
        d = {"onehot": classes, "learned": embed_dim or classes,
             "prototype": math.prod(input_shape)}[embedding]  # fmt: skip
        self.steps, self.classes, self.embedding, self.kind = steps, classes, embedding, kind
        if kind == "dt":
            self.blocks = nn.ModuleList(DenoiseBlock(input_shape, d, classes) for _ in range(steps))
        else:  # one time-conditioned block; ``steps`` are ODE steps at inference
            self.blocks = nn.ModuleList([DenoiseBlock(input_shape, d, classes, time_dim=time_dim)])
        # CT's learnable schedule: log SNR(t) = gamma0 + softplus(gamma_slope) · t
        self.gamma0 = nn.Parameter(torch.tensor(-7.0), requires_grad=kind == "ct")
        self.gamma_slope = nn.Parameter(torch.tensor(math.log(math.expm1(12.0))),
                                        requires_grad=kind == "ct")  # fmt: skip
        # prototype: learned, initialised by init_prototypes() from the training images
        w = torch.eye(classes) if embedding == "onehot" else torch.randn(classes, d) * 0.1
        self.embed = nn.Parameter(w, requires_grad=embedding != "onehot")
        self.classifier = nn.Linear(d, classes)
        self.head = head
        self._start_head()
        alpha_bar = noprop_alpha_bar(steps)
        a, b, c = posterior_coefficients(alpha_bar)
        for name, value in (("alpha_bar", alpha_bar), ("a", a), ("b", b), ("c", c)):
            self.register_buffer(name, value.float(), persistent=False)

    @torch.no_grad()
    def _start_head(self) -> None:
        if self.head == "embed":  # score each class by its embedding: argmax_k u_k · z_T
            self.classifier.weight.copy_(self.embed)
            self.classifier.bias.zero_()

    @torch.no_grad()
    def init_prototypes(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Set each class's embedding to a prototype: the training image of that class nearest
        to the class mean (a real image, flattened)."""
        flat = x.flatten(1).to(self.embed.dtype)
        for c in range(self.classes):
            members = flat[y == c]
            if len(members) == 0:
                raise BeyondBPError(f"class {c} has no training example to be its prototype")
            nearest = (members - members.mean(0)).pow(2).sum(1).argmin()
            self.embed[c] = members[nearest]
        self._start_head()

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

    # -- continuous time ------------------------------------------------------------------------
    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """γ(t), increasing: ᾱ(t) = sigmoid(γ(t)) (CT)."""
        return self.gamma0 + F.softplus(self.gamma_slope) * t

    def denoise_at(self, t: torch.Tensor, x: torch.Tensor, z: torch.Tensor, image=None):  # type: ignore[no-untyped-def]
        """The time-conditioned block: (logits, û) at time(s) t (``image``: its image path's
        output for x, if at hand)."""
        logits = self.blocks[0](x, z, t, image)
        return logits, logits.softmax(1) @ self.embed

    def velocity(
        self, t: torch.Tensor, x: torch.Tensor, z: torch.Tensor, image: torch.Tensor | None = None
    ) -> torch.Tensor:
        """dz/dt of the inference ODE at time t (a scalar tensor in [0, 1))."""
        _, u_hat = self.denoise_at(t, x, z, image)
        if self.kind == "fm":
            return (u_hat - z) / (1 - t)
        ab = torch.sigmoid(self.log_snr(t))
        d_ab = ab * (1 - ab) * F.softplus(self.gamma_slope)  # dᾱ/dt
        eps_hat = (z - ab.sqrt() * u_hat) / (1 - ab).sqrt()
        return d_ab / (2 * ab.sqrt()) * u_hat - d_ab / (2 * (1 - ab).sqrt()) * eps_hat

    def integrate(
        self,
        x: torch.Tensor,
        solver: str = "heun",
        sample: bool = False,
        steps: int | None = None,
    ) -> torch.Tensor:
        """z_1 from z_0 (N(0, I) draws, or 0 when ``sample`` is False) in ``steps`` steps
        (default: the net's T)."""
        n, d = len(x), self.embed.shape[1]
        steps = steps or self.steps
        z = torch.randn(n, d, device=x.device) if sample else x.new_zeros(n, d)
        grid = torch.linspace(0, 1, steps + 1, device=x.device)
        # The image path sees neither z nor t: out of training (no dropout, fixed batch-norm
        # statistics) one pass of it serves all the steps, and a step costs only the small
        # latent and joint layers (T = 1,000 Heun steps are then affordable on a CPU).
        image = None if self.training else self.blocks[0].image(x)
        for k in range(steps):
            t0, t1 = grid[k], grid[k + 1]
            h = t1 - t0
            f0 = self.velocity(t0, x, z, image)
            if solver == "euler" or (self.kind == "fm" and k == steps - 1):
                z = z + h * f0  # (FM's velocity is singular at t = 1: the last step is Euler)
            else:
                z_pred = z + h * f0
                z = z + h / 2 * (f0 + self.velocity(t1.clamp(max=1 - 1e-4), x, z_pred, image))
        return z

    def scores(
        self,
        x: torch.Tensor,
        solver: str = "heun",
        sample: bool = False,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Class scores: the classifier on z_T / z_1 (DT, CT), or minus the squared distance
        of z_1 to each class embedding (FM). ``steps``: ODE steps of CT/FM (default: T)."""
        if self.kind == "dt":
            return self.classifier(self.chain(x, sample=sample))
        z = self.integrate(x, solver, sample, steps)
        if self.kind == "fm":
            return -torch.cdist(z, self.embed).pow(2)
        return self.classifier(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores(x)
