"""Deep GA and novelty search (Such et al. 2017, arXiv 1712.06567).

A genome is a list of seeds: ``((init seed, 0), (mutation seed, σ), ...)``; its weights are the
net's initialisation under the first seed plus σ·ε(seed) for each mutation, in order. Only the
current parents' weights are cached, so a child costs one vector add; any genome can be rebuilt
from its seeds (bit-identical to the cached weights), which is how a checkpoint stores the
population and how a run would send individuals to other machines.

One generation per training batch (the batch is the fitness data; ``batch_size`` sets its size):

1. offspring: the elite, unchanged, plus N − 1 children, each a uniformly drawn parent (one of the
   top T of the last generation) plus Gaussian noise of scale σ. No crossover. With T = 0 every
   generation is N fresh initialisations: random search, the paper's baseline.
2. fitness: −(mean cross-entropy) on the batch, every offspring evaluated in one batched pass.
3. selection: the top T by fitness (truncation), or, with ``novelty`` > 0, by a mix of fitness rank
   and novelty rank (novelty = mean distance of an offspring's behaviour to its k nearest
   neighbours among the archive and this generation; 1 = novelty alone, 0.5 = the paper's
   50/50 mix). Behaviour of a classifier: its class probabilities on a fixed probe batch.
4. elitism with re-evaluation: the ``elite_candidates`` fittest are evaluated again on the last
   ``elite_evals`` batches (the paper: 10 candidates, 30 episodes); the best mean is the elite,
   and the net carries the elite's weights (what validation and prediction use).

Paper defaults (Atari): N = 1000, T = 20, σ = 0.002.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.rules.base import (
    Distribution,
    IntUniform,
    LogUniform,
    Rule,
    RuleOptions,
    SetupContext,
    Uniform,
)
from beyondbp.rules.population import FlatNet, Genome, rebuild
from beyondbp.rules.registry import register
from beyondbp.rules.zo import mix_seed


class Options(RuleOptions):
    population: int = Field(1000, ge=2, description="N: offspring per generation (elite included)")
    truncation: int = Field(
        20, ge=0, description="T: parents kept per generation; 0 = random search"
    )
    sigma: float = Field(0.002, gt=0, description="mutation scale σ")
    elite_candidates: int = Field(10, ge=1, description="the fittest re-evaluated for the elite")
    elite_evals: int = Field(
        30, ge=1, description="batches the elite candidates are re-evaluated on"
    )
    novelty: float = Field(0.0, ge=0, le=1, description="weight of novelty rank in selection")
    k: int = Field(10, ge=1, description="nearest neighbours for novelty")
    archive_prob: float = Field(
        0.01, ge=0, le=1, description="chance that an offspring's behaviour joins the archive"
    )
    probe: int = Field(64, ge=1, description="examples whose class probabilities are a behaviour")
    workers: int = Field(
        0, ge=0, description="Ray actors evaluating the population (0: in this process); only "
        "seeds and losses travel"
    )  # fmt: skip

    @model_validator(mode="after")
    def _fits(self) -> Options:
        if self.truncation >= self.population:
            raise ValueError("truncation T must be below the population N")
        return self


@register("deep-ga", "Deep GA: seed-list genomes, truncation selection, elitism; novelty search")
class DeepGA(Rule):
    Options = Options
    default_grid = False  # zeroth-order / population: not in a bench without --rules
    evaluates_only = True
    tasks = ("classification", "episodic")
    search_space: ClassVar[dict[str, Distribution]] = {
        "sigma": LogUniform(1e-4, 1e-1),
        "truncation": IntUniform(2, 100, log=True),
        "population": IntUniform(50, 2000, log=True),
        "novelty": Uniform(0.0, 1.0),
    }
    options: Options
    # genomes (seed lists), never weights
    stateful = ("gen", "parents", "elite", "archive", "recent", "probe_x")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = net
        self.flat = FlatNet(net, meta.env)
        self.seed = ctx.seed
        self.gen = 0
        self.parents: list[Genome] = []
        self.parent_flats = torch.zeros(0, self.flat.d, device=self.flat.device)
        self.elite: Genome | None = None
        self.recent: list[tuple[torch.Tensor, torch.Tensor]] = []  # the elite's re-evaluation data
        self.archive = torch.zeros(0, 0, device=self.flat.device)
        self.probe_x = (  # a copy: never a view of the training data
            ctx.train.x[: self.options.probe].to(self.flat.device).clone() if ctx.train else None
        )
        self.remote = None  # Ray actors, started on the first generation when workers > 0

    # -- genomes -------------------------------------------------------------------------------
    def rebuild(self, genome: Genome) -> torch.Tensor:
        """A genome's weights from its seeds alone."""
        return rebuild(self.flat, genome)

    def _offspring(self) -> list[tuple[Genome, int]]:
        """(genome, parent index or -1 for a fresh initialisation or the elite) of this generation."""
        o, n = self.options, self.options.population
        if self.gen == 0 or o.truncation == 0:
            fresh = [(((mix_seed(self.seed, self.gen, i, 1), 0.0),), -1) for i in range(n)]
            return [(self.elite, -2), *fresh[1:]] if self.elite is not None else fresh
        g = torch.Generator().manual_seed(mix_seed(self.seed, self.gen, 2))
        picks = torch.randint(len(self.parents), (n - 1,), generator=g).tolist()
        children = [
            (self.parents[p] + ((mix_seed(self.seed, self.gen, i, 3), o.sigma),), p)
            for i, p in enumerate(picks)
        ]
        assert self.elite is not None
        return [(self.elite, -2), *children]

    def _weights(self, items: list[tuple[Genome, int]]) -> torch.Tensor:
        fresh = [i for i, (_, parent) in enumerate(items) if parent == -1]
        inits = self.flat.init([items[i][0][0][0] for i in fresh]) if fresh else None
        rows = []
        for genome, parent in items:
            if parent >= 0:
                rows.append(rebuild(self.flat, genome, base=self.parent_flats[parent]))
            elif parent == -2:
                rows.append(self.elite_flat)
            else:
                assert inits is not None
                rows.append(inits[fresh.index(len(rows))])
        return torch.stack(rows)

    # -- one generation ------------------------------------------------------------------------
    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o = self.options
        if self.probe_x is None:  # no training split given: the first batch's examples
            self.probe_x = x[: o.probe]
        pop = self._offspring()
        logs: dict[str, Any] = {}
        if o.workers > 0:
            if self.remote is None:
                from beyondbp.rules.remote import RayPopulation

                self.remote = RayPopulation(self.net, o.workers, self.flat.env)
            sent = self.remote.bytes_sent
            loss, b = self.remote.evaluate(
                [g for g, _ in pop], x, y, self.probe_x if o.novelty > 0 else None
            )
            b = b if o.novelty > 0 else None
            logs["genome_bytes_sent"] = float(self.remote.bytes_sent - sent)
            behaviours = [b] if b is not None else []
        else:
            losses, behaviours = [], []
            chunk = self.flat.chunk
            for i in range(0, len(pop), chunk):
                w = self._weights(pop[i : i + chunk])
                lo, be = self.flat.evaluate(w, x, y, self.probe_x if o.novelty > 0 else None)
                losses.append(lo)
                if o.novelty > 0 and be is not None:
                    behaviours.append(be)
            loss = torch.cat(losses)
        if not torch.isfinite(loss).all():
            loss = torch.nan_to_num(loss, nan=math.inf)
        fitness = -loss
        score = fitness
        if o.novelty > 0:
            b = torch.cat(behaviours)
            nov = self._novelty(b)
            score = (1 - o.novelty) * _ranks(fitness) + o.novelty * _ranks(nov)
            g = torch.Generator().manual_seed(mix_seed(self.seed, self.gen, 4))
            join = torch.rand(len(b), generator=g) < o.archive_prob
            self.archive = b[join.to(b.device)] if len(self.archive) == 0 else torch.cat(
                [self.archive, b[join.to(b.device)]]
            )  # fmt: skip

        self.recent = [*self.recent, (x, y)][-o.elite_evals :]
        top = fitness.topk(min(o.elite_candidates, len(pop))).indices.tolist()
        cand = self._weights([pop[i] for i in top])
        if self.flat.env is not None:  # one rollout of all the recent episodes
            xs, ys = zip(*self.recent, strict=True)
            reeval = self.flat.losses(cand, torch.cat(xs), torch.cat(ys))
        else:
            reeval = torch.stack([self.flat.losses(cand, bx, by) for bx, by in self.recent]).mean(0)
        best = int(reeval.argmin())
        if o.truncation > 0:  # (pop's elite entry still means the previous elite here)
            keep = score.topk(o.truncation).indices.tolist()
            self.parent_flats = self._weights([pop[i] for i in keep])
            self.parents = [pop[i][0] for i in keep]
        self.elite, self.elite_flat = pop[top[best]][0], cand[best].clone()
        self.flat.set_(self.elite_flat)
        self.gen += 1
        return {"loss": float(reeval[best]), "best_batch_loss": float(loss.min()),
                "mean_batch_loss": float(loss[torch.isfinite(loss)].mean()), **logs}  # fmt: skip

    def _novelty(self, b: torch.Tensor) -> torch.Tensor:
        """Mean distance to the k nearest behaviours among the archive and the others here."""
        ref = torch.cat([self.archive, b]) if len(self.archive) else b
        d = torch.cdist(b, ref)
        d[torch.arange(len(b)), len(ref) - len(b) + torch.arange(len(b))] = math.inf  # not itself
        k = min(self.options.k, len(ref) - 1)
        return d.topk(k, largest=False).values.mean(1)

    def restored(self) -> None:
        """Genomes back as tuples, and the weights of the elite and the parents from their seeds."""
        self.parents = [tuple((int(s), float(sg)) for s, sg in g) for g in self.parents]
        if self.elite is not None:
            self.elite = tuple((int(s), float(sg)) for s, sg in self.elite)
            self.elite_flat = self.rebuild(self.elite)
        self.parent_flats = (
            torch.stack([self.rebuild(g) for g in self.parents])
            if self.parents
            else torch.zeros(0, self.flat.d, device=self.flat.device)
        )
        self.recent = [tuple(r) for r in self.recent]


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks in [0, 1], higher value → higher rank."""
    r = torch.empty_like(v)
    r[v.argsort()] = torch.arange(len(v), dtype=v.dtype, device=v.device)
    return r / max(1, len(v) - 1)
