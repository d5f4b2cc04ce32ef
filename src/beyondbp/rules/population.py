"""Population machinery shared by the population rules (Deep GA, ES, DE): a net's weights as one
flat vector, seeded initialisation and noise, and evaluating many weight vectors at once.

Evaluation is vectorised over individuals with ``torch.func.vmap`` over ``functional_call``: a
chunk of individuals runs as one batched forward pass, never a Python loop over individuals.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from beyondbp.rules.zo import mix_seed


class FlatNet:
    """A net seen as a flat fp32 vector of its parameters (buffers stay as they are)."""

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.sizes = [p.numel() for _, p in net.named_parameters()]
        self.d = sum(self.sizes)
        self.device = next(net.parameters()).device

    @property
    def chunk(self) -> int:
        """Individuals per batched pass: their weights stay within 64 MiB."""
        return max(1, (64 << 20) // (4 * self.d))

    def get(self) -> torch.Tensor:
        return torch.nn.utils.parameters_to_vector(self.net.parameters()).detach().float()

    @torch.no_grad()
    def set_(self, flat: torch.Tensor) -> None:
        torch.nn.utils.vector_to_parameters(flat, self.net.parameters())

    @torch.no_grad()
    def init(self, seeds: list[int]) -> torch.Tensor:
        """(len(seeds), d): the weights the net's own initialisers draw under each seed (the
        net is left as it was)."""
        keep, out = self.get(), []
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for seed in seeds:
                torch.manual_seed(mix_seed(seed, 0x1217) & 0xFFFFFFFF)
                for m in self.net.modules():
                    if m is not self.net and hasattr(m, "reset_parameters"):
                        m.reset_parameters()
                out.append(self.get())
        self.set_(keep)
        return torch.stack(out)

    def noise(self, seed: int) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(mix_seed(seed))
        return torch.randn(self.d, generator=g, device=self.device)

    def _params(self, flats: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = flats.split(self.sizes, dim=1)
        return {
            n: p.view(len(flats), *s)
            for n, p, s in zip(self.names, parts, self.shapes, strict=True)
        }

    @torch.no_grad()
    def scores(self, flats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Class scores (P, N, classes) of P weight vectors (P, d) on one batch x (N, ...); the
        caller chunks P so that P copies of the activations fit."""
        buffers = dict(self.net.named_buffers())

        def one(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.net, (params, buffers), (x,))

        return vmap(one)(self._params(flats))

    @torch.no_grad()
    def losses(self, flats: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy on (x, y) of each of P weight vectors: (P,), in chunks of
        :attr:`chunk` individuals."""
        out = []
        for part in flats.split(self.chunk):
            s = self.scores(part, x)
            p, n, c = s.shape
            ce = F.cross_entropy(s.reshape(p * n, c), y.repeat(p), reduction="none")
            out.append(ce.view(p, n).mean(1))
        return torch.cat(out)


Genome = tuple[tuple[int, float], ...]  # ((init seed, 0), (mutation seed, σ), ...)


def mutate(flat: FlatNet, theta: torch.Tensor, seed: int, sigma: float) -> torch.Tensor:
    """θ + σ·ε(seed): one Deep GA mutation (the same ops wherever it runs: bit-identical)."""
    return theta + sigma * flat.noise(seed)


def rebuild(flat: FlatNet, genome: Genome, base: torch.Tensor | None = None) -> torch.Tensor:
    """A genome's weights from its seeds: the init seed's weights, then each mutation in order;
    or, given ``base`` (the weights of ``genome[:-1]``), just the last mutation."""
    if base is not None:
        return mutate(flat, base, *genome[-1])
    theta = flat.init([genome[0][0]])[0]
    for s, sigma in genome[1:]:
        theta = mutate(flat, theta, s, sigma)
    return theta
