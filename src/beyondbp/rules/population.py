"""Population machinery shared by the population rules (Deep GA, ES, DE): a net's weights as one
flat vector, seeded initialisation and noise, and evaluating many weight vectors at once.

Evaluation is vectorised over individuals with ``torch.func.vmap`` over ``functional_call``: a
chunk of individuals runs as one batched forward pass, never a Python loop over individuals.
Plain MLPs (Flatten, Linear and elementwise activations in a row) skip vmap's per-call overhead
(milliseconds, which dominate the many small calls of an episode) and run as batched matmuls.

The fitness data is either a labelled batch (loss: mean cross-entropy) or, for an episodic task
(``meta.env``), a batch of episode seeds (loss: minus the mean return of those episodes, every
individual playing the same seeds; behaviour: the mean final state of its episodes).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from beyondbp.data.envs import BatchEnv, EnvSpec, rollout
from beyondbp.rules.zo import mix_seed


class FlatNet:
    """A net seen as a flat fp32 vector of its parameters (buffers stay as they are)."""

    def __init__(self, net: nn.Module, env: EnvSpec | None = None) -> None:
        self.net = net
        self.env = env
        self._pool: dict[int, BatchEnv] = {}  # environment copies, reused between generations
        self.names = [n for n, _ in net.named_parameters()]
        self.shapes = [p.shape for _, p in net.named_parameters()]
        self.sizes = [p.numel() for _, p in net.named_parameters()]
        self.d = sum(self.sizes)
        self.device = next(net.parameters()).device
        self.layers = _mlp_program(net)  # the batched-matmul program of a plain MLP, or None

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

    def _mlp(self, flats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The MLP fast path on flat inputs: x (N, F) shared by all, or (P, N, F) each its own."""
        params = self._params(flats)
        h = x if x.dim() == 3 else x.expand(len(flats), *x.shape)
        for kind, what in self.layers or ():
            if kind == "act":
                h = what(h)
                continue
            w = params[what[0]].transpose(1, 2)
            h = h @ w if what[1] is None else torch.baddbmm(params[what[1]][:, None, :], h, w)
        return h

    @torch.no_grad()
    def scores(self, flats: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Class scores (P, N, classes) of P weight vectors (P, d) on one batch x (N, ...); the
        caller chunks P so that P copies of the activations fit."""
        if self.layers is not None:
            return self._mlp(flats, x.flatten(1))
        buffers = dict(self.net.named_buffers())

        def one(params: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.net, (params, buffers), (x,))

        return vmap(one)(self._params(flats))

    @torch.no_grad()
    def act(self, flats: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Outputs (P, E, A) of P weight vectors, each on its own observations (P, E, ...)."""
        if self.layers is not None:
            return self._mlp(flats, obs.flatten(2))
        buffers = dict(self.net.named_buffers())

        def one(params: dict[str, torch.Tensor], o: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, (params, buffers), (o,))

        return vmap(one)(self._params(flats), obs)

    @torch.no_grad()
    def play(self, flats: torch.Tensor, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (P, E) and behaviours (P, E, k) of P weight vectors on E episode seeds."""
        assert self.env is not None
        returns, behaviours = [], []
        for part in flats.split(self.chunk):
            r, b = rollout(lambda o, w=part: self.act(w, o), self.env, seeds, len(part),
                           self.device, self._pool)  # fmt: skip
            returns.append(r)
            behaviours.append(b)
        return torch.cat(returns).to(flats.device), torch.cat(behaviours).to(flats.device)

    @torch.no_grad()
    def losses(self, flats: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy on (x, y) of each of P weight vectors: (P,), in chunks of
        :attr:`chunk` individuals; for an episodic task, minus the mean return on the episode
        seeds x."""
        return self.evaluate(flats, x, y)[0]

    @torch.no_grad()
    def evaluate(
        self,
        flats: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        probe: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Losses (P,) and, given a probe batch (labelled data) or for an episodic task,
        behaviours (P, k): the class probabilities on the probe examples, or the mean final
        state of the episodes."""
        if self.env is not None:
            returns, behaviours = self.play(flats, x)
            return -returns.mean(1), behaviours.mean(1)
        out, seen = [], []
        for part in flats.split(self.chunk):
            s = self.scores(part, x)
            p, n, c = s.shape
            ce = F.cross_entropy(s.reshape(p * n, c), y.repeat(p), reduction="none")
            out.append(ce.view(p, n).mean(1))
            if probe is not None:
                seen.append(self.scores(part, probe).softmax(-1).flatten(1))
        return torch.cat(out), (torch.cat(seen) if probe is not None else None)


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


_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU)


def _mlp_program(net: nn.Module) -> list[tuple[str, Any]] | None:
    """The layers of a plain MLP in forward order (a BlockNet or Sequential of Flatten, Linear
    and elementwise activations, no buffers), or None for anything else."""
    from beyondbp.nets import BlockNet

    if not isinstance(net, BlockNet | nn.Sequential) or any(True for _ in net.buffers()):
        return None
    parts = [*net.blocks, net.head] if isinstance(net, BlockNet) else [net]
    names = {id(m): n for n, m in net.named_modules()}
    program: list[tuple[str, Any]] = []
    for part in parts:
        for m in part.modules():  # pre-order: containers, then their layers in order
            if isinstance(m, nn.Linear):
                n = names[id(m)]
                program.append(("linear", (f"{n}.weight", f"{n}.bias" if m.bias is not None else None)))  # fmt: skip
            elif isinstance(m, _ELEMENTWISE):
                program.append(("act", m))
            elif not isinstance(m, nn.Sequential | nn.Flatten | nn.Identity):
                return None
    return program
