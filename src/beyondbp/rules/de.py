"""Differential evolution: DE/rand/1/bin and the clustering-based Clu-DE, to train small nets and
to initialise a net before backprop (``de-init``: Moravvej et al. 2023, arXiv 2305.02374).

DE/rand/1/bin, one generation per training batch: for each member x_i, three other members r1,
r2, r3 give the mutant v = x_r1 + F·(x_r2 − x_r3); binomial crossover takes each coordinate from
v with probability CR (and one coordinate, j_rand, always); the trial replaces x_i if its loss on
the batch is no worse (greedy selection). Members and trials are scored on the same batch.

Clu-DE (``variant=clu``) adds a clustering step after each generation: k-means splits the
population into k clusters (k drawn from 2..⌊√NP⌋), the cluster with the best mean fitness wins,
and k new candidates are made with the winning cluster's best member as the base vector,
v = x_win,best + F·(x_r2 − x_r3), crossed over with random members; each candidate replaces the
population's worst member if it is better (the update step). Our reading of the clustering-based
DE the paper uses; the number of candidates (k) and the draw of k are our choices.

Unlike the seed-encoded rules, DE's population is stored (NP × d): it is for small nets.
The net carries the best member (what validation and prediction use).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.rules.base import (
    Categorical,
    Distribution,
    IntUniform,
    LogUniform,
    Rule,
    RuleOptions,
    SetupContext,
    Uniform,
)
from beyondbp.rules.optim import OptimOptions, make_optimizer
from beyondbp.rules.population import FlatNet
from beyondbp.rules.registry import register
from beyondbp.rules.zo import mix_seed

MAX_POPULATION_BYTES = 2 << 30


class Options(RuleOptions):
    variant: Literal["rand1bin", "clu"] = Field("rand1bin", description="DE/rand/1/bin or Clu-DE")
    population: int = Field(50, ge=4, description="NP")
    f: float = Field(0.5, gt=0, le=2, description="differential weight F")
    cr: float = Field(0.9, ge=0, le=1, description="crossover rate CR")
    init_std: float | None = Field(
        None, gt=0, description="members = the net's init under NP seeds (None), or the net's "
        "weights + N(0, init_std²)"
    )  # fmt: skip


@register(
    "de", "Differential evolution (DE/rand/1/bin, clustering-based Clu-DE) on the net's weights"
)
class DifferentialEvolution(Rule):
    Options = Options
    default_grid = False  # zeroth-order / population: not in a bench without --rules
    evaluates_only = True
    tasks = ("classification", "episodic")
    search_space: ClassVar[dict[str, Distribution]] = {
        "f": Uniform(0.1, 1.0),
        "cr": Uniform(0.0, 1.0),
        "population": IntUniform(10, 200, log=True),
        "variant": Categorical(("rand1bin", "clu")),
    }
    options: Options
    stateful = ("t", "pop", "best")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        o = self.options
        self.net = net
        self.flat = FlatNet(net, meta.env)
        if 4 * o.population * self.flat.d > MAX_POPULATION_BYTES:
            raise BeyondBPError(
                f"de would store {o.population} x {self.flat.d:,} weights "
                f"({4 * o.population * self.flat.d / 2**30:.1f} GiB); use a smaller net or "
                "population, or a seed-encoded rule (deep-ga, es)"
            )
        self.seed, self.t = ctx.seed, 0
        if o.init_std is None:
            self.pop = self.flat.init([mix_seed(ctx.seed, i, 5) for i in range(o.population)])
        else:
            g = torch.Generator(device=self.flat.device).manual_seed(mix_seed(ctx.seed, 6))
            base = self.flat.get()
            noise = torch.randn(o.population, self.flat.d, generator=g, device=self.flat.device)
            self.pop = base + o.init_std * noise
        self.best = 0

    def _gen(self, tag: int) -> torch.Generator:
        return torch.Generator(device=self.flat.device).manual_seed(
            mix_seed(self.seed, self.t, tag)
        )

    def _others(self, n: int, exclude: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(n, 3) member indices, distinct within a row and different from ``exclude``."""
        np_ = len(self.pop)
        # sample 3 distinct from the NP − 1 others by ranking random keys
        keys = torch.rand(n, np_, generator=g, device=self.pop.device)
        keys[torch.arange(n), exclude] = 2.0  # never pick the excluded one
        return keys.argsort(1)[:, :3]

    def _crossover(
        self, target: torch.Tensor, mutant: torch.Tensor, g: torch.Generator
    ) -> torch.Tensor:
        n, d = target.shape
        take = torch.rand(n, d, generator=g, device=target.device) < self.options.cr
        jrand = torch.randint(d, (n,), generator=g, device=target.device)
        take[torch.arange(n), jrand] = True
        return torch.where(take, mutant, target)

    def _losses(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(self.flat.losses(w, x, y), nan=float("inf"))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o, pop = self.options, self.pop
        n = len(pop)
        g = self._gen(1)
        r = self._others(n, torch.arange(n, device=pop.device), g)
        mutant = pop[r[:, 0]] + o.f * (pop[r[:, 1]] - pop[r[:, 2]])
        trial = self._crossover(pop, mutant, g)
        both = self._losses(torch.cat([pop, trial]), x, y)
        fit, trial_fit = both[:n], both[n:]
        better = trial_fit <= fit
        self.pop = torch.where(better[:, None], trial, pop)
        fit = torch.where(better, trial_fit, fit)
        if o.variant == "clu":
            fit = self._cluster_step(fit, x, y)
        self.best = int(fit.argmin())
        self.flat.set_(self.pop[self.best])
        self.t += 1
        return {"loss": float(fit[self.best]), "mean_member_loss": float(fit[fit.isfinite()].mean()),
                "replaced": float(better.float().mean())}  # fmt: skip

    def _cluster_step(self, fit: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from sklearn.cluster import KMeans

        n = len(self.pop)
        g = self._gen(2)
        k = int(
            torch.randint(2, max(3, int(n**0.5) + 1), (1,), generator=g, device=self.pop.device)
        )
        labels = KMeans(n_clusters=k, n_init=1, random_state=mix_seed(self.seed, self.t) % 2**31)
        labels = torch.as_tensor(labels.fit_predict(self.pop.cpu().numpy()), device=self.pop.device)
        means = torch.stack([fit[labels == c].mean() if (labels == c).any() else fit.new_tensor(float("inf"))
                             for c in range(k)])  # fmt: skip
        members = (labels == int(means.argmin())).nonzero().flatten()
        base = int(members[fit[members].argmin()])
        partners = torch.randint(n, (k,), generator=g, device=self.pop.device)
        r = self._others(k, torch.full((k,), base, device=self.pop.device), g)
        mutant = self.pop[base] + self.options.f * (self.pop[r[:, 0]] - self.pop[r[:, 1]])
        cand = self._crossover(self.pop[partners], mutant, g)
        cand_fit = self._losses(cand, x, y)
        for i in cand_fit.argsort().tolist():  # best candidates first, each against the worst
            worst = int(fit.argmax())
            if cand_fit[i] < fit[worst]:
                self.pop[worst], fit[worst] = cand[i], cand_fit[i]
        return fit

    def restored(self) -> None:
        self._carry_best()

    def _carry_best(self) -> None:
        self.flat.set_(self.pop[self.best])


class InitOptions(Options, OptimOptions):
    generations: int = Field(100, ge=1, description="DE generations before backprop takes over")


@register("de-init", "DE (or Clu-DE) initialisation, then backprop from the best member")
class DEInit(DifferentialEvolution):
    """``generations`` DE generations (one per batch), then backprop (the ``bp`` optimiser
    options) from the best member, on the following batches. Moravvej et al. train with focal
    loss; this uses cross-entropy like ``bp``."""

    Options = InitOptions  # type: ignore[assignment]
    search_space: ClassVar[dict[str, Distribution]] = {
        **DifferentialEvolution.search_space,
        "lr": LogUniform(1e-5, 1e-1),
        "generations": IntUniform(10, 1000, log=True),
    }
    options: InitOptions  # type: ignore[assignment]
    stateful = (*DifferentialEvolution.stateful, "opt")
    tasks = ("classification",)  # backprop on labels after the DE phase

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        super().setup(net, meta, ctx)
        self.opt: torch.optim.Optimizer | None = None

    def _carry_best(self) -> None:
        if self.t < self.options.generations:  # once backprop runs, the net has moved on
            super()._carry_best()

    @property
    def evaluates_only(self) -> bool:  # type: ignore[override]
        return self.t < self.options.generations  # backprop trains in train mode

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if self.t < self.options.generations:
            return super().step(x, y)
        assert self.net is not None
        if self.opt is None:  # backprop starts from the best member (the net carries it)
            self.net.train()
            self.flat.set_(self.pop[self.best].clone())  # the net's weights: its own storage,
            self.pop = None  # so the population is freed (they were views of its best row)
            self.opt = make_optimizer(self.net.parameters(), self.options)
        self.opt.zero_grad(set_to_none=True)
        scores = self.net(x)
        loss = F.cross_entropy(scores, y)
        loss.backward()
        self.opt.step()
        self.t += 1
        return {"loss": loss.detach(), "correct": (scores.detach().argmax(1) == y).sum()}

    def restored(self) -> None:
        if isinstance(self.opt, dict):  # backprop had started: its optimiser's state
            assert self.net is not None
            state, self.opt = self.opt, make_optimizer(self.net.parameters(), self.options)
            self.opt.load_state_dict(state)
        super().restored()
