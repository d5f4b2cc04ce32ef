"""Population evaluation on Ray actors: only seeds travel, never weights.

Each actor holds a copy of the net's architecture (sent once) and rebuilds any genome from its
seeds (the Deep GA encoding: an initialisation seed, then mutation seeds with their σ). It caches
the weights of the genomes it evaluated and keeps, at each call, those that are parents (prefixes)
of the genomes asked for, so a child costs one vector add, as in the driver process. The results
are bit-identical to in-process evaluation.

Per generation the driver sends each actor its genomes (seed lists) and a reference to the batch
(put once in Ray's object store), and gets back one loss (and, for novelty search, one behaviour
vector) per genome. :attr:`RayPopulation.bytes_sent` counts the pickled genomes and
:attr:`bytes_received` the results; the data batch is counted apart in :attr:`batch_bytes`.

Ray starts a local head on first use (``ray.init()``: honours ``RAY_ADDRESS`` to join a cluster).
"""

from __future__ import annotations

import pickle
from typing import Any

import torch
from torch import nn

from beyondbp.data.envs import EnvSpec
from beyondbp.errors import BeyondBPError
from beyondbp.rules.population import FlatNet, Genome, rebuild


class GenomeBuilder:
    """Weights of genomes from their seeds, with a cache of recently built ones."""

    def __init__(self, net: nn.Module, env: EnvSpec | None = None) -> None:
        self.flat = FlatNet(net, env)
        self.cache: dict[Genome, torch.Tensor] = {}

    def build(self, genome: Genome) -> torch.Tensor:
        hit = self.cache.get(genome)
        if hit is not None:
            return hit
        return rebuild(
            self.flat, genome, base=self.cache.get(genome[:-1]) if len(genome) > 1 else None
        )

    def evaluate(
        self, genomes: list[Genome], x: torch.Tensor, y: torch.Tensor, probe: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        keep = {g for g in genomes} | {g[:-1] for g in genomes}
        self.cache = {g: w for g, w in self.cache.items() if g in keep}
        losses, behaviours = [], []
        chunk = self.flat.chunk
        for i in range(0, len(genomes), chunk):
            part = genomes[i : i + chunk]
            w = torch.stack([self.build(g) for g in part])
            for g, row in zip(part, w, strict=True):
                self.cache[g] = row
            lo, be = self.flat.evaluate(w, x, y, probe)
            losses.append(lo)
            if be is not None:
                behaviours.append(be)
        return torch.cat(losses), (torch.cat(behaviours) if behaviours else None)


class RayPopulation:
    """``workers`` Ray actors evaluating genomes for one net architecture."""

    def __init__(self, net: nn.Module, workers: int, env: EnvSpec | None = None) -> None:
        try:
            import ray
        except ImportError as e:  # pragma: no cover - depends on the install
            raise BeyondBPError("workers > 0 needs Ray: pip install 'beyondbp[population]'") from e
        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
        self.ray = ray
        actor = ray.remote(num_cpus=1)(_Worker)
        self.actors = [actor.remote(net, env) for _ in range(workers)]
        self.bytes_sent = self.bytes_received = self.batch_bytes = 0

    def evaluate(
        self, genomes: list[Genome], x: torch.Tensor, y: torch.Tensor, probe: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        ray = self.ray
        batch = ray.put((x.cpu(), y.cpu(), None if probe is None else probe.cpu()))
        self.batch_bytes += _nbytes(x) + _nbytes(y) + (_nbytes(probe) if probe is not None else 0)
        # contiguous shares keep children of one parent together (one rebuild per parent)
        order = sorted(range(len(genomes)), key=lambda i: genomes[i][:-1])
        shares = [order[k :: len(self.actors)] for k in range(len(self.actors))]
        shares = [sorted(s, key=lambda i: genomes[i][:-1]) for s in shares]
        calls = []
        for a, share in zip(self.actors, shares, strict=True):
            part = [genomes[i] for i in share]
            self.bytes_sent += len(pickle.dumps(part))
            calls.append(a.evaluate.remote(part, batch))
        losses = torch.empty(len(genomes))
        behaviours: torch.Tensor | None = None
        for share, (lo, be) in zip(shares, ray.get(calls), strict=True):
            self.bytes_received += len(pickle.dumps((lo, be)))
            losses[share] = lo
            if be is not None:
                if behaviours is None:
                    behaviours = torch.empty(len(genomes), be.shape[1])
                behaviours[share] = be
        return losses.to(x.device), None if behaviours is None else behaviours.to(x.device)

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []


class _Worker:
    def __init__(self, net: nn.Module, env: EnvSpec | None = None) -> None:
        torch.set_num_threads(1)
        self.builder = GenomeBuilder(net.eval(), env)

    def evaluate(self, genomes: list[Genome], batch: Any) -> tuple[torch.Tensor, Any]:
        x, y, probe = batch
        return self.builder.evaluate([tuple(map(tuple, g)) for g in genomes], x, y, probe)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
