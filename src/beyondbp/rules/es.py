"""Evolution strategies: OpenAI-ES (Salimans et al. 2017) written here, and the standard ES of
EvoTorch (PGPE, SNES, XNES, CEM, CMA-ES) through its searchers.

Every algorithm searches the net's flattened weights; one ES generation per training batch, the
fitness of a sample being its mean cross-entropy on that batch (minimised); the net carries the
search distribution's centre, which validation and prediction use.

OpenAI-ES: m seeds per generation, each giving ε_i and the mirrored pair θ ± σε_i (popsize = 2m);
fitnesses are replaced by centred ranks in [−0.5, 0.5]; the gradient estimate
ĝ = Σ (r⁺_i − r⁻_i) ε_i / (2mσ) drives Adam on θ with L2 weight decay (paper: σ = 0.02, Adam lr
0.01, decay 0.005). Noise is regenerated from seeds, never stored.

EvoTorch's algorithms take ``sigma`` as their initial standard deviation and ``lr`` as their centre
learning rate (PGPE, SNES, XNES); CEM keeps the best ``parenthood_ratio`` of each generation.
CMA-ES and XNES keep a d × d covariance: O(d²) memory and O(d²) (CMA-ES) to O(d³) (XNES) time per
generation; both are refused above 1,000 weights unless ``allow_large=true`` (or, for CMA-ES,
``separable=true``: a diagonal covariance). XNES did not finish 55 generations of a 2,410-weight
net in 9 minutes on one core; SNES (diagonal) took 10 s.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np
import torch
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
)
from beyondbp.rules.population import FlatNet
from beyondbp.rules.registry import register
from beyondbp.rules.zo import mix_seed

FULL_COVARIANCE_LIMIT = 1_000  # weights; CMA-ES/XNES above it need allow_large


class Options(RuleOptions):
    algorithm: Literal["openai-es", "pgpe", "snes", "xnes", "cem", "cmaes"] = "openai-es"
    popsize: int = Field(
        100, ge=2, description="samples per generation (OpenAI-ES: even, mirrored)"
    )
    sigma: float = Field(0.02, gt=0, description="noise std (OpenAI-ES) / initial std (EvoTorch)")
    lr: float | None = Field(
        None,
        gt=0,
        description="Adam lr (OpenAI-ES; None: 0.01) / centre lr (PGPE: None = 0.1 with ClipUp; "
        "SNES, XNES: None = EvoTorch's natural-gradient default)",
    )
    weight_decay: float = Field(0.005, ge=0, description="OpenAI-ES L2 coefficient")
    stdev_lr: float = Field(0.1, gt=0, description="PGPE's standard-deviation learning rate")
    parenthood_ratio: float = Field(0.5, gt=0, lt=1, description="CEM: elite fraction")
    separable: bool = Field(False, description="CMA-ES with a diagonal covariance (sep-CMA-ES)")
    allow_large: bool = Field(False, description="run CMA-ES / XNES above 1,000 weights anyway")


@register(
    "es",
    "Evolution strategies: OpenAI-ES (mirrored, rank-shaped) and EvoTorch's PGPE/SNES/XNES/CEM/CMA-ES",
)
class EvolutionStrategy(Rule):
    Options = Options
    default_grid = False  # zeroth-order / population: not in a bench without --rules
    evaluates_only = True
    tasks = ("classification", "episodic")
    search_space: ClassVar[dict[str, Distribution]] = {
        "sigma": LogUniform(1e-3, 0.5),
        "lr": LogUniform(1e-3, 0.3),
        "popsize": IntUniform(10, 1000, log=True),
        "algorithm": Categorical(("openai-es", "pgpe", "snes", "cem")),
    }
    options: Options
    stateful = ("t", "theta", "opt", "searcher")  # OpenAI-ES: θ and Adam; EvoTorch: searcher

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        o = self.options
        self.net = net
        self.flat = FlatNet(net, meta.env)
        self.seed, self.t = ctx.seed, 0
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None
        if o.algorithm == "openai-es":
            if o.popsize % 2:
                raise BeyondBPError("openai-es samples mirrored pairs: popsize must be even")
            self.theta = self.flat.get().requires_grad_()
            lr = o.lr if o.lr is not None else 0.01
            self.opt = torch.optim.Adam([self.theta], lr=lr, weight_decay=o.weight_decay)
        else:
            self.searcher = Searcher(self._evotorch_searcher)

    # -- OpenAI-ES ----------------------------------------------------------------------------
    def _openai_es_step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o = self.options
        m = o.popsize // 2
        seeds = [mix_seed(self.seed, self.t, i) for i in range(m)]
        theta = self.theta.detach()
        losses = []
        chunk = max(1, self.flat.chunk // 2)  # ± pairs: two vectors per seed
        for i in range(0, m, chunk):
            eps = torch.stack([self.flat.noise(s) for s in seeds[i : i + chunk]])
            pop = torch.cat([theta + o.sigma * eps, theta - o.sigma * eps])
            lo = self.flat.losses(pop, x, y)
            losses.append(lo.view(2, -1))
        loss = torch.cat(losses, 1)  # (2, m): row 0 at θ+σε, row 1 at θ−σε
        fitness = -torch.nan_to_num(loss, nan=float("inf"))
        ranks = torch.empty_like(fitness.flatten())
        ranks[fitness.flatten().argsort()] = torch.arange(
            2 * m, dtype=ranks.dtype, device=ranks.device
        )
        ranks = (ranks / (2 * m - 1) - 0.5).view(2, m)
        weights = ranks[0] - ranks[1]
        g = torch.zeros_like(theta)
        for i in range(0, m, chunk):
            eps = torch.stack([self.flat.noise(s) for s in seeds[i : i + chunk]])
            g += weights[i : i + chunk] @ eps
        g /= 2 * m * o.sigma
        self.opt.zero_grad(set_to_none=True)
        self.theta.grad = -g  # ascend the shaped fitness
        self.opt.step()
        self.flat.set_(self.theta.detach())
        return {"loss": float(loss.mean()), "best_sample_loss": float(loss.min())}

    # -- EvoTorch ------------------------------------------------------------------------------
    def _objective(self, solutions: torch.Tensor) -> torch.Tensor:
        assert self.batch is not None
        return self.flat.losses(solutions, *self.batch)

    def _evotorch_searcher(self):  # type: ignore[no-untyped-def]
        o, d = self.options, self.flat.d
        try:
            from evotorch import Problem
            from evotorch.algorithms import CEM, CMAES, PGPE, SNES, XNES
        except ImportError as e:  # pragma: no cover - depends on the install
            raise BeyondBPError(
                f"es algorithm={o.algorithm} needs EvoTorch: pip install 'beyondbp[population]'"
            ) from e
        logging.getLogger("evotorch").setLevel(logging.WARNING)
        full = o.algorithm == "xnes" or (o.algorithm == "cmaes" and not o.separable)
        if full and d > FULL_COVARIANCE_LIMIT and not o.allow_large:
            raise BeyondBPError(
                f"{o.algorithm} keeps a {d:,} x {d:,} covariance (O(d²) memory, O(d²)-O(d³) time "
                "per generation); use snes/pgpe/openai-es, cmaes with separable=true, or "
                "allow_large=true to run it anyway"
            )
        problem = Problem(
            "min", self._objective, solution_length=d, initial_bounds=(-1.0, 1.0),
            vectorized=True, device=self.flat.device, seed=self.seed,
        )  # fmt: skip
        center = self.flat.get()
        common = {"stdev_init": o.sigma, "center_init": center}
        if o.algorithm == "pgpe":
            return PGPE(problem, popsize=o.popsize, center_learning_rate=o.lr or 0.1,
                        stdev_learning_rate=o.stdev_lr, **common)  # fmt: skip
        if o.algorithm in ("snes", "xnes"):
            cls = SNES if o.algorithm == "snes" else XNES
            return cls(problem, popsize=o.popsize, center_learning_rate=o.lr, **common)
        if o.algorithm == "cem":
            return CEM(problem, popsize=o.popsize, parenthood_ratio=o.parenthood_ratio, **common)
        return CMAES(problem, popsize=o.popsize, separable=o.separable, **common)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if self.options.algorithm == "openai-es":
            logs = self._openai_es_step(x, y)
        else:
            self.batch = (x, y)
            self.searcher.algorithm.step()
            self.flat.set_(self._center())
            status = self.searcher.algorithm.status
            logs = {"loss": float(status["mean_eval"]),
                    "best_sample_loss": float(status["pop_best_eval"])}  # fmt: skip
        self.t += 1
        return logs

    # -- checkpoints ---------------------------------------------------------------------------
    def restored(self) -> None:
        """The net carries the search's centre again (θ, or the searcher's centre)."""
        self.flat.set_(self.theta.detach() if hasattr(self, "theta") else self._center())

    def _center(self) -> torch.Tensor:
        return torch.as_tensor(self.searcher.algorithm.status["center"]).float()


class Searcher:
    """An EvoTorch searcher whose checkpoint state is its data (:func:`searcher_state`), never
    the pickled object: loading builds a fresh searcher and puts the data back."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make
        self.algorithm = make()

    def state_dict(self) -> dict[str, Any]:
        return searcher_state(self.algorithm)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict) or "__object__" not in state:
            raise BeyondBPError("es: this checkpoint holds a pickled EvoTorch searcher (an "
                                "older beyondbp); it is not loaded: start the run anew")  # fmt: skip
        self.algorithm = load_searcher_state(self.make(), state)


_SKIP = {"_objective_func"}  # our objective: the fresh searcher's own stays


def searcher_state(obj: Any, _memo: dict[int, int] | None = None) -> Any:
    """The data of an EvoTorch object graph: its tensors, numbers, strings, slices and
    generators' states, walked through its attributes, lists and dicts (an object met again is
    a reference to its first visit, so shared objects stay shared); methods, hooks and other
    objects are left out (a freshly built searcher has them)."""
    memo = {} if _memo is None else _memo
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if obj is None or isinstance(obj, str | bool):
        return obj
    if isinstance(obj, numbers.Integral):  # NumPy's scalars too, as Python numbers
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(obj.copy())}
    if isinstance(obj, torch.Generator):
        return {"__generator__": obj.get_state()}
    if isinstance(obj, slice):
        return {"__slice__": [obj.start, obj.stop, obj.step]}
    cls = type(obj)
    evotorch = cls.__module__.startswith("evotorch.") and hasattr(obj, "__dict__")
    if not (isinstance(obj, list | tuple | dict) or evotorch):
        return {"__skipped__": True}
    if id(obj) in memo:
        return {"__ref__": memo[id(obj)]}
    memo[id(obj)] = len(memo)
    if isinstance(obj, list | tuple):
        return [searcher_state(v, memo) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"__dict__": {k: searcher_state(v, memo) for k, v in obj.items()}}
        return {"__skipped__": True}
    return {"__class__": f"{cls.__module__}:{cls.__qualname__}",
            "__object__": {k: searcher_state(v, memo) for k, v in vars(obj).items()
                           if k not in _SKIP and not callable(v)}}  # fmt: skip


def load_searcher_state(obj: Any, state: Any, _memo: list[Any] | None = None) -> Any:
    """``state`` (from :func:`searcher_state`) put back into a fresh object graph (``obj``);
    returns the value to assign where ``obj`` was. What the fresh graph lacks (a population
    made by the first generation) is built from the state."""
    memo = [] if _memo is None else _memo
    if isinstance(state, dict):
        if "__skipped__" in state:
            return obj
        if "__ref__" in state:
            return memo[state["__ref__"]]
        if "__generator__" in state:
            if not isinstance(obj, torch.Generator):
                obj = torch.Generator()
            obj.set_state(state["__generator__"])
            return obj
        if "__ndarray__" in state:
            return state["__ndarray__"].numpy()
        if "__slice__" in state:
            return slice(*state["__slice__"])
        if "__object__" in state:
            cls = _evotorch_class(state["__class__"])
            if type(obj) is not cls:
                obj = cls.__new__(cls)
            memo.append(obj)
            for k, v in state["__object__"].items():
                setattr(obj, k, load_searcher_state(getattr(obj, k, None), v, memo))
            return obj
        old = obj if isinstance(obj, dict) else {}
        out: dict[str, Any] = {}
        memo.append(out)
        for k, v in state["__dict__"].items():
            out[k] = load_searcher_state(old.get(k), v, memo)
        return out
    if isinstance(state, list):
        same = isinstance(obj, list | tuple) and len(obj) == len(state)
        olds = obj if same else [None] * len(state)
        items: list[Any] = []
        slot = len(memo)
        memo.append(items)
        items += [load_searcher_state(o, v, memo) for o, v in zip(olds, state, strict=True)]
        if same and isinstance(obj, tuple):
            memo[slot] = tuple(items)
            return memo[slot]
        return items
    if isinstance(state, torch.Tensor) and isinstance(obj, torch.Tensor):
        return state.to(obj.device)
    return state


def _evotorch_class(name: str) -> type:
    """An EvoTorch class named ``module:qualname`` in a checkpoint; any other name is refused."""
    import importlib

    module, _, qualname = name.partition(":")
    refused = BeyondBPError(f"es: the checkpoint names {name!r}, not an EvoTorch class: refused")
    if not module.startswith("evotorch."):
        raise refused
    cls: Any = importlib.import_module(module)
    for part in qualname.split("."):  # a class, or a class nested in one
        cls = getattr(cls, part, None)
        if not isinstance(cls, type):
            raise refused
    return cls
