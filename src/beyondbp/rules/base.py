"""The rule contract: what every learning rule implements, and nothing more.

A rule owns its learning logic only: which parameters it updates and how. The harness owns the
loop (which data, when to evaluate, when to stop, what to measure, where to store).

A rule's unit of work is one :meth:`Rule.step`. What a step consumes is declared by ``unit``:

- ``"batch"``: a mini-batch ``(x, y)``; an epoch is one pass over the shuffled training set.
- ``"dataset"``: the whole training set (a population generation, a solver iteration, a
  full-batch graph step); an epoch is ``steps_per_epoch`` such steps.

Either way the harness budgets work by epochs, steps, examples seen or wall time, and evaluates,
stops early and checkpoints the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict
from torch import nn

from beyondbp.data.core import DatasetMeta, Split


class RuleOptions(BaseModel):
    """A rule's options; defaults are the paper's. Unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Search-space declarations, read by the tuner (an Optuna adapter maps them to distributions).
@dataclass(frozen=True)
class LogUniform:
    low: float
    high: float


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float


@dataclass(frozen=True)
class IntUniform:
    low: int
    high: int
    log: bool = False


@dataclass(frozen=True)
class Categorical:
    choices: tuple[Any, ...]


Distribution = LogUniform | Uniform | IntUniform | Categorical


@dataclass(frozen=True)
class SetupContext:
    """What the harness tells a rule before training starts."""

    device: torch.device
    seed: int
    steps_per_epoch: int
    max_epochs: int
    batch_size: int
    train: Split | None = None  # the training split, for data-dependent initialisation


class Rule:
    """Base class of every learning rule. Subclass, set the class variables, register.

    Subclasses implement :meth:`setup`, :meth:`step` and :meth:`predict`; they override
    :meth:`state_dict` / :meth:`load_state_dict` when they keep learning state beyond the net's
    parameters (optimisers, feedback matrices, schedulers), so checkpoints resume exactly.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[RuleOptions]] = RuleOptions
    search_space: ClassVar[dict[str, Distribution]] = {}
    unit: ClassVar[Literal["batch", "dataset"]] = "batch"
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    # False: left out of a grid that names no rules (``bench`` without --rules). For rules whose
    # defaults target another regime (LLM fine-tuning, populations for RL) and that would take
    # hours and learn little on the default MLPs.
    default_grid: ClassVar[bool] = True
    # True: the rule only evaluates its net (zeroth-order, populations): eval mode throughout,
    # no dropout, fixed norm statistics
    evaluates_only: ClassVar[bool] = False

    def __init__(self, options: RuleOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.net: nn.Module | None = None
        # True while the harness validates between epochs (False for the test): a rule whose
        # inference is costly may validate more cheaply (NoProp's val_steps)
        self.validating = False

    # -- learning logic ---------------------------------------------------------------------
    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        """Attach to the net and build learning state (optimisers, projections, ...)."""
        self.net = net

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        """One update. Returns scalars to log (floats or 0-d tensors, read lazily by the harness):
        ``loss`` (the mean over the batch) is checked for divergence, ``correct`` (a count)
        gives the running training accuracy."""
        raise NotImplementedError

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, classes); argmax is the prediction. Called under ``no_grad``."""
        assert self.net is not None
        return self.net(x)

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed loss of a batch of scores, for validation metrics and early stopping."""
        return F.cross_entropy(scores, y, reduction="sum")

    def part_scores(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """Class scores of each of the rule's local predictors (e.g. CaFo's per-block ones), for
        their own validation losses (``val_part_losses``, seen by ``end_epoch``); None: none to
        validate. Called under ``no_grad`` on validation batches only."""
        return None

    def finish_epoch(self) -> None:
        """Called when an epoch's steps are done, before validation (e.g. a closed-form solve
        over statistics gathered during the epoch)."""

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        """Called after each epoch's validation (learning-rate schedules live here)."""

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        """Whether the rule can train the net of this spec (rules that need a special net, like
        NoProp, say no to the others; a grid over "all rules" leaves them out)."""
        return True

    def warming_up(self) -> bool:
        """True while the rule trains something other than the model it is tested with (e.g.
        CaFo's DFA phase, which predicts through an auxiliary head that the final model does not
        use): the harness logs that epoch's validation but neither keeps it as the best epoch
        nor counts it towards early stopping. Checked after validation, before ``end_epoch``."""
        return False

    def done(self) -> str | None:
        """Checked after ``end_epoch``: a reason to stop training that the rule itself decides
        (e.g. its last layer-wise stage has finished), or None to go on."""
        return None

    def modules(self) -> dict[str, nn.Module]:
        """Everything that predicts: the net plus any rule-owned modules that ``predict`` uses
        (projections, heads). The harness checkpoints these and restores the best epoch's."""
        assert self.net is not None, "setup() was not called"
        return {"net": self.net}

    def train_mode(self, training: bool) -> None:
        """Switch train/eval behaviour (dropout, batch norm) of everything the rule drives."""
        for m in self.modules().values():
            m.train(training and not self.evaluates_only)

    # -- learning state beyond modules() (optimisers, fixed random matrices, counters) ---------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise NotImplementedError(f"{type(self).__name__} saved state it cannot load")


def is_diverged(logs: dict[str, float], limit: float) -> bool:
    loss = logs.get("loss")
    return loss is not None and (not math.isfinite(loss) or abs(loss) > limit)
