"""The rule contract: what every learning rule implements, and nothing more.

A rule owns its learning logic only: which parameters it updates and how. The harness owns the
loop (which data, when to evaluate, when to stop, what to measure, where to store).

A rule's unit of work is one :meth:`Rule.step`. What a step consumes is declared by ``unit``:

- ``"batch"``: a mini-batch ``(x, y)``; an epoch is one pass over the shuffled training set.
- ``"dataset"``: the whole training set (a population generation, a solver iteration, a
  full-batch graph step); an epoch is ``steps_per_epoch`` such steps.

Either way the harness budgets work by epochs, steps, examples seen or wall time, and evaluates,
stops early and checkpoints the same way. A rule says which task kinds it learns (``tasks``);
the task (:mod:`beyondbp.tasks`) draws the data and scores the predictions.
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
from beyondbp.errors import BeyondBPError
from beyondbp.nets import layered


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
    max_steps: int | None = None  # the run's step budget, if it has one

    @property
    def total_steps(self) -> int:
        """The steps the run will take at most (per-step schedules end there)."""
        steps = self.steps_per_epoch * self.max_epochs
        return min(steps, self.max_steps) if self.max_steps else steps


Phase = Literal["train", "val", "test"]


class Rule:
    """Base class of every learning rule. Subclass, set the class variables, register.

    The core is three methods: :meth:`setup` (build learning state), :meth:`step` (one update)
    and :meth:`predict`. Learning state beyond the modules (optimisers, schedules, feedback
    matrices, counters) is *declared* by name in ``stateful``; the base class saves and loads
    it, so checkpoints resume exactly without a hand-written ``state_dict``. Everything below
    "optional hooks" has a default that most rules keep.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Options: ClassVar[type[RuleOptions]] = RuleOptions
    search_space: ClassVar[dict[str, Distribution]] = {}
    # attributes holding learning state: objects with state_dict()/load_state_dict() (optimisers,
    # schedules, modules outside modules(), Patience), tensors, numbers, strings, None, and lists
    # or dicts of those
    stateful: ClassVar[tuple[str, ...]] = ()
    unit: ClassVar[Literal["batch", "dataset"]] = "batch"
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the task kinds it can learn
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    # False: left out of a grid that names no rules (``bench`` without --rules). For rules whose
    # defaults target another regime (LLM fine-tuning, populations for RL) and that would take
    # hours and learn little on the default MLPs.
    default_grid: ClassVar[bool] = True
    # True: the rule only evaluates its net (zeroth-order, populations): eval mode throughout,
    # no dropout, fixed norm statistics
    evaluates_only: ClassVar[bool] = False
    # False: the rule never changes the net (the pretrained row): no step time or throughput
    trains: ClassVar[bool] = True
    # True: the rule trains a net's blocks one by one (a BlockNet: layer-local rules); a grid
    # that picks rules leaves it out for nets of other shapes
    needs_blocks: ClassVar[bool] = False
    # True: the rule relaxes the net's state with the harness's neuron noise (state_noise)
    noisy_relaxation: ClassVar[bool] = False

    def __init__(self, options: RuleOptions | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.net: nn.Module | None = None
        # what the harness is doing: training, validating between epochs, or the final test (a
        # rule whose inference is costly may validate more cheaply: NoProp's val_steps)
        self.phase: Phase = "train"

    # -- the core -----------------------------------------------------------------------------
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

    # -- optional hooks -----------------------------------------------------------------------
    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        """Called after each epoch's validation (learning-rate schedules live here)."""

    def modules(self) -> dict[str, nn.Module]:
        """Everything that predicts: the net plus any rule-owned modules that ``predict`` uses
        (projections, heads). The harness checkpoints these and restores the best epoch's."""
        assert self.net is not None, "setup() was not called"
        return {"net": self.net}

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed loss of a batch of scores, for validation metrics and early stopping."""
        return F.cross_entropy(scores, y, reduction="sum")

    def finish_epoch(self) -> None:
        """Called when an epoch's steps are done, before validation (e.g. a closed-form solve
        over statistics gathered during the epoch)."""

    def done(self) -> str | None:
        """Checked after ``end_epoch``: a reason to stop training that the rule itself decides
        (e.g. its last layer-wise stage has finished), or None to go on."""
        return None

    def part_scores(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """Class scores of the rule's local predictors (per-block heads), validated like the
        whole model: their mean losses reach ``end_epoch`` as ``val["part_losses"]`` (CaFo stops
        each predictor on its own). None: none to validate. Validation batches only."""
        return None

    def warming_up(self) -> bool:
        """True while the rule trains something other than the model it is tested with (e.g.
        CaFo's DFA phase, which predicts through an auxiliary head): the harness logs that
        epoch's validation but never keeps it as the best epoch nor counts it for early
        stopping. Checked after validation, before ``end_epoch``."""
        return False

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        """Whether the rule can train the net of this spec (rules that need a special net, like
        NoProp, say no to the others; a grid over "all rules" leaves them out)."""
        return not cls.needs_blocks or layered(net_spec)

    def step_stage(self) -> object:
        """What a step's cost depends on besides the batch (a layer-wise rule's layer in
        training): the step probe measures each stage's step and keeps the largest. Default:
        one stage."""
        return None

    def metrics(self) -> dict[str, Any]:
        """Numbers about the trained model the rule alone can give (e.g. how far a vector field
        is from symmetric), of the weights tested: stored with the run's metrics after the
        test. Default: none."""
        return {}

    def restored(self) -> None:
        """Called after :meth:`load_state_dict`: rebuild what derives from the loaded state."""

    # -- run by the harness -------------------------------------------------------------------
    def set_phase(self, phase: Phase) -> None:
        """Train or eval behaviour (dropout, batch norm) of everything the rule drives."""
        self.phase = phase
        for m in self.modules().values():
            m.train(phase == "train" and not self.evaluates_only)
            for sub in m.modules():  # modules of hardware follow the run, not the train flag
                if hasattr(sub, "run_phase"):
                    sub.run_phase = phase

    def state_dict(self) -> dict[str, Any]:
        """The declared learning state (``stateful``; an attribute the rule never set is left
        out, one set to None is kept, so loading restores it as None).
        Like ``nn.Module.state_dict`` it holds references to the live tensors (the step probe
        counts them as resident): ``copy.deepcopy`` it for a snapshot to keep in memory."""
        return {name: _dump(getattr(self, name)) for name in self.stateful if hasattr(self, name)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = sorted(set(state) - set(self.stateful))
        if unknown:
            raise BeyondBPError(
                f"rule {self.name!r}: the checkpoint holds state {unknown} this version does not "
                "know; resume it with the beyondbp version that wrote it, or start the run anew"
            )
        device = next((p.device for m in self.modules().values() for p in m.parameters()), None)
        for name, value in state.items():
            value = _to(value, device) if device is not None else value
            setattr(self, name, _load(getattr(self, name, None), value))
        self.restored()


def _dump(obj: Any) -> Any:
    if hasattr(obj, "state_dict"):
        return obj.state_dict()
    if isinstance(obj, list | tuple):
        return [_dump(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _dump(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    return obj


def _to(value: Any, device: torch.device) -> Any:
    """Tensors of a checkpoint (read onto the CPU) moved to the rule's device."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _load(current: Any, value: Any) -> Any:
    """``value`` loaded into ``current`` where that has state (returned as is), else ``value``."""
    if value is None:
        return None
    if hasattr(current, "load_state_dict"):
        current.load_state_dict(value)
        return current
    if isinstance(current, list | tuple) and isinstance(value, list) and len(current) == len(value):
        return type(current)(_load(c, v) for c, v in zip(current, value, strict=True))
    if isinstance(current, dict) and isinstance(value, dict) and current.keys() == value.keys():
        return {k: _load(current[k], v) for k, v in value.items()}
    if isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor):
        same = current.shape == value.shape and current.dtype == value.dtype
        if same and current._base is None:  # never into a view (of the data, say)
            with torch.no_grad():  # in place: views of it (a flat parameter vector) follow
                return current.copy_(value)
        return value.to(current.device)
    return value


def is_diverged(logs: dict[str, float], limit: float) -> bool:
    loss = logs.get("loss")
    return loss is not None and (not math.isfinite(loss) or abs(loss) > limit)
