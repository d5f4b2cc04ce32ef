"""The training harness: the loop every rule runs in.

It owns batching, evaluation, early stopping, checkpoints (atomic, every epoch, and on Ctrl-C),
exact resume, divergence detection, progress display and measurement. Rules only learn.

Resume is exact: the batch order of epoch ``e`` is a permutation drawn from a generator seeded by
``(seed, e)``, and a checkpoint holds the position inside the epoch, every RNG state, the modules,
the rule's learning state and the harness counters. A run resumed from any checkpoint therefore
produces the same weights as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import copy
import math
import random
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from beyondbp.data import Dataset, Split
from beyondbp.data.augment import Augmentation, augment_batch
from beyondbp.data.envs import rollout
from beyondbp.errors import BeyondBPError, describe_validation
from beyondbp.linear_probe import fit_head
from beyondbp.measure import (
    EnergyMeter,
    StepProbe,
    Stopwatch,
    matmul_peak_gflops,
    peak_rss_bytes,
    tensor_bytes,
)
from beyondbp.measure.robustness import ATTACK_LOSSES, input_box, robust_accuracy
from beyondbp.rules.base import Rule, SetupContext, is_diverged
from beyondbp.runs import RunRecord, RunStore, atomic_save, load_checkpoint

EpochCallback = Callable[[dict[str, Any]], str | None]
"""Called with each epoch's history row; a returned string stops training with that reason."""


class TrainConfig(BaseModel):
    """Harness settings: the budget, evaluation, early stopping, seeds and device."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(100, ge=1, description="maximum epochs")
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(2048, ge=1)
    patience: int | None = Field(10, ge=1, description="epochs without improvement; None: off")
    monitor: Literal["val_loss", "val_acc"] = "val_loss"
    min_delta: float = Field(0.0, ge=0)
    restore_best: bool = Field(True, description="test the best-validation epoch's weights")
    max_steps: int | None = Field(None, ge=1)
    max_examples: int | None = Field(None, ge=1)
    max_seconds: float | None = Field(None, gt=0, description="training wall-time budget")
    steps_per_epoch: int = Field(1, ge=1, description="for rules whose step uses all the data")
    augment: Augmentation = Field(
        "none",
        description="training-batch augmentation: crop-flip = random crop (pad 4, reflect) and "
        "horizontal flip (the CIFAR protocol)",
    )
    diverge_loss: float = Field(1e6, gt=0, description="a training loss above this diverged")
    attack_eps: float | None = Field(
        None, gt=0, description="also test under ℓ∞ attacks (FGSM, PGD) of this radius, in "
        "raw input units (pixels in [0, 1])"
    )  # fmt: skip
    attack_steps: int = Field(20, ge=1, description="PGD steps of the robust test")
    attack_loss: Literal["margin", "ce", "rule"] = Field(
        "margin", description="the loss the attacks ascend: the margin max_{k≠y} s_k − s_y "
        "(the same for every rule), cross-entropy on the scores, or the rule's own loss"
    )  # fmt: skip
    head_init: Literal["random", "probe"] = Field(
        "random",
        description="the head's start: 'random' (the net's initialisation) or 'probe': fit the "
        "head's last linear layer on the frozen net's features of the training split (logistic "
        "regression; LP-FT's first stage) before the rule trains; timed as training",
    )
    seed: int = 0
    data_seed: int = 0
    device: str = "cpu"
    energy: bool = True
    probe: bool = Field(
        True, description="count FLOPs and live-tensor memory of the second training step"
    )
    checkpoint: bool = True
    progress: bool = True


def make_config(settings: dict[str, Any]) -> TrainConfig:
    """Validate harness settings; an unknown setting or a bad value is a clear error."""
    try:
        return TrainConfig(**settings)
    except ValidationError as e:
        raise BeyondBPError(f"bad training setting: {describe_validation(e)}") from None


@dataclass
class HarnessState:
    """Counters that a checkpoint carries so a run resumes exactly where it stopped."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # the next batch of that epoch
    steps: int = 0
    examples: int = 0
    sums: dict[str, float] = field(default_factory=dict)  # running sums of the epoch in progress
    seen: int = 0  # examples in those sums
    train_time: float = 0.0
    val_time: float = 0.0
    checkpoint_time: float = 0.0
    energy_j: float | None = None
    energy_label: str = "unavailable"
    energy_method: str = ""
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    probe: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The batch order of an epoch: a function of (seed, epoch) only, so resume is exact."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


@contextmanager
def _graceful_interrupt(flag: dict[str, bool]) -> Iterator[None]:
    """First Ctrl-C / SIGTERM asks the loop to save and stop; a second one aborts at once."""

    def handler(signum: int, frame: object) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    try:
        old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not in the main thread: no signal handling
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class Trainer:
    """Runs one rule on one dataset under a :class:`TrainConfig`, recording into a store."""

    def __init__(
        self,
        rule: Rule,
        net: torch.nn.Module,
        data: Dataset,
        config: TrainConfig,
        record: RunRecord,
        store: RunStore | None,
        checkpoint_dir: Path | None,
        callbacks: Sequence[EpochCallback] = (),
    ) -> None:
        self.rule, self.net, self.config = rule, net, config
        self.device = torch.device(config.device)
        self.data = data.to(self.device)
        self.record, self.store = record, store
        self.ckpt_dir = checkpoint_dir if config.checkpoint else None
        self.state = HarnessState()
        self.best_modules: dict[str, Any] | None = None
        self._stop = {"stop": False}
        self.callbacks = list(callbacks)
        self._env_pool: dict[int, Any] = {}  # an episodic task's environment copies

    @property
    def _data_bytes(self) -> int:
        """Bytes of the dataset's tensors (all splits), kept on the training device."""
        d = self.data
        return tensor_bytes([d.train.x, d.train.y, d.val.x, d.val.y, d.test.x, d.test.y])

    # -- public ---------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> RunRecord:
        cfg, train = self.config, self.data.train
        if self.rule.unit == "batch":
            steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        else:
            steps_per_epoch = cfg.steps_per_epoch
        seed_everything(cfg.seed)
        self.net.to(self.device)
        if cfg.head_init == "probe" and not resume:  # a resumed run loads its head
            if self.data.meta.env is not None:
                raise BeyondBPError("head_init='probe' needs labelled data, not an episodic task")
            watch = Stopwatch(self.device, self.state.train_time)
            with watch:
                fitted = fit_head(self.net, train.x, train.y, cfg.eval_batch_size)
            self.state.train_time = watch.total
            self.record.metrics.update(fitted)
        ctx = SetupContext(
            self.device, cfg.seed, steps_per_epoch, cfg.epochs, cfg.batch_size, train=train
        )
        self.rule.setup(self.net, self.data.meta, ctx)
        for m in self.rule.modules().values():
            m.to(self.device)
        if _has_conv(self.rule.modules().values()):  # NHWC convolutions are faster on CPU and GPU
            for m in self.rule.modules().values():
                m.to(memory_format=torch.channels_last)
            self.data = self.data.to_channels_last()
        if resume:
            self._load()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.record.status = "running"
        self._save_record()
        t_start = time.perf_counter()
        status: str = "finished"
        energy = EnergyMeter(self.device, enabled=cfg.energy)
        try:
            with _graceful_interrupt(self._stop), energy:
                status = self._loop(steps_per_epoch)
        except Exception as e:
            self.record.status, self.record.error = "failed", f"{type(e).__name__}: {e}"
            self._finish_metrics(time.perf_counter() - t_start, energy)
            self._save_record()
            raise
        self._finish_metrics(time.perf_counter() - t_start, energy)
        self._save_checkpoint()  # the final state: resumable if interrupted, inspectable otherwise
        if status == "finished":
            self._test()
        self.record.status = status  # type: ignore[assignment]
        self._save_record()
        return self.record

    # -- the loop -------------------------------------------------------------------------------
    def _loop(self, steps_per_epoch: int) -> str:
        cfg, st = self.config, self.state
        train = self.data.train
        with self._progress() as progress:
            while st.epoch < cfg.epochs:
                task = progress.add_task(
                    f"epoch {st.epoch + 1}/{cfg.epochs}",
                    total=steps_per_epoch,
                    completed=st.batch,
                    info="",
                )
                outcome = self._train_epoch(train, steps_per_epoch, progress, task)
                progress.remove_task(task)
                if outcome != "epoch-done":
                    return outcome
                row = self._end_epoch()
                if row.get("val_loss") is not None and not math.isfinite(row["val_loss"]):
                    st.stop_reason = "validation loss is not finite"
                    return "diverged"
                if cfg.progress:
                    progress.console.print(_epoch_line(row), highlight=False)
                self.record.history = list(st.history)  # visible in the store while running
                self._save_record()
                for callback in self.callbacks:  # e.g. a tuner's pruner
                    reason = callback(row)
                    if reason and st.stop_reason is None:
                        st.stop_reason = reason
                if st.stop_reason:  # early stopping, a budget or a callback
                    break
                self._save_checkpoint()
        if st.stop_reason is None:
            st.stop_reason = f"reached {cfg.epochs} epochs"
        return "finished"

    def _train_epoch(self, train: Split, steps_per_epoch: int, progress, task) -> str:  # type: ignore[no-untyped-def]
        cfg, st, rule = self.config, self.state, self.rule
        order = epoch_order(len(train), cfg.seed, st.epoch, self.device)
        rule.train_mode(True)
        watch = Stopwatch(self.device, st.train_time)
        sums: dict[str, Any] = dict(st.sums)
        t0, time_before = time.perf_counter(), st.train_time
        with watch:
            for b in range(st.batch, steps_per_epoch):
                if rule.unit == "batch":
                    idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                    x, y = train.x[idx], train.y[idx]
                    x = augment_batch(x, cfg.augment, cfg.seed, st.epoch, b)
                else:
                    x, y = train.x, train.y
                # the second step: optimiser state exists by then, as in every later step
                want_probe = cfg.probe and not st.probe and st.steps >= 1
                probe = self._probe(x, y) if want_probe else nullcontext()
                with probe:
                    logs = rule.step(x, y)
                if isinstance(probe, StepProbe):
                    st.probe = {
                        "flops_per_step": probe.flops,
                        "peak_step_bytes": probe.peak_bytes,
                        "step_resident_bytes": probe.resident_bytes,
                        "step_transient_bytes": probe.peak_bytes - probe.resident_bytes,
                        "probe_batch": len(y),
                        "inference_step_bytes": self._inference_bytes(self._inputs(x)),
                    }
                n = len(y)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + (v if k == "correct" else v * n)
                st.seen += n
                st.batch, st.steps, st.examples = b + 1, st.steps + 1, st.examples + n
                if st.steps % 10 == 0 or b + 1 == steps_per_epoch:
                    if is_diverged({k: float(v) for k, v in logs.items()}, cfg.diverge_loss):
                        st.stop_reason = (
                            f"training loss {float(logs['loss']):.3g} at step {st.steps}"
                        )
                        return "diverged"
                    progress.update(task, info=_running(sums, st.seen))
                progress.update(task, advance=1)
                if self._stop["stop"]:
                    break
                elapsed = time_before + time.perf_counter() - t0
                if self._budget_reason(st.steps, st.examples, elapsed):
                    break
        st.train_time = watch.total
        st.sums = {k: float(v) for k, v in sums.items()}
        if self._stop["stop"]:
            st.stop_reason = "interrupted (Ctrl-C / SIGTERM); resume with --resume"
            return "interrupted"
        return "epoch-done"

    def _budget_reason(self, steps: int, examples: int, seconds: float) -> str | None:
        """Sets and returns the stop reason if a step, example or time budget is spent."""
        cfg = self.config
        for limit, value, what in (
            (cfg.max_steps, steps, "steps"),
            (cfg.max_examples, examples, "examples"),
            (cfg.max_seconds, seconds, "seconds of training"),
        ):
            if limit is not None and value >= limit:
                self.state.stop_reason = f"budget of {limit} {what} spent"
                return self.state.stop_reason
        return None

    def _end_epoch(self) -> dict[str, Any]:
        cfg, st = self.config, self.state
        row: dict[str, Any] = {"epoch": st.epoch + 1, "steps": st.steps}
        seen = max(st.seen, 1)
        for k, v in st.sums.items():
            row["train_acc" if k == "correct" else f"train_{k}"] = v / seen
        watch = Stopwatch(self.device, st.train_time)
        with watch:  # part of training: e.g. a closed-form solve
            self.rule.finish_epoch()
        st.train_time = watch.total
        watch = Stopwatch(self.device)
        with watch:
            self.rule.validating = True
            try:
                val = self.evaluate(self.data.val, parts=True) if len(self.data.val) else {}
            finally:
                self.rule.validating = False
        st.val_time += watch.total
        row.update({f"val_{k}": v for k, v in val.items()})
        row["train_time_s"] = st.train_time
        warmup = self.rule.warming_up()
        if warmup:
            row["warmup"] = True  # not a candidate for the best epoch (see Rule.warming_up)
        st.history.append(row)

        # the best-epoch snapshot is of the weights just validated, before the rule's end_epoch
        # may change them (e.g. Mono-Forward restoring a layer's best copy and moving on)
        value = None if warmup else row.get(cfg.monitor)
        if value is not None:
            sign = 1.0 if cfg.monitor == "val_loss" else -1.0
            if st.best is None or sign * (st.best - value) > cfg.min_delta:
                st.best, st.best_epoch, st.bad_epochs = value, row["epoch"], 0
                self.best_modules = {
                    k: copy.deepcopy(m.state_dict()) for k, m in self.rule.modules().items()
                }
                if self.ckpt_dir is not None:
                    self._timed_save(self.best_modules, self.ckpt_dir / "best.pt")
            else:
                st.bad_epochs += 1
                if cfg.patience is not None and st.bad_epochs >= cfg.patience:
                    st.stop_reason = (
                        f"early stop: {cfg.monitor} did not improve for {cfg.patience} epochs"
                    )
        self.rule.end_epoch(st.epoch, val)
        st.epoch, st.batch, st.sums, st.seen = st.epoch + 1, 0, {}, 0
        if st.stop_reason is None:
            st.stop_reason = self.rule.done()
        if st.stop_reason is None:
            self._budget_reason(st.steps, st.examples, st.train_time)
        return row

    @torch.no_grad()
    def evaluate(self, split: Split, parts: bool = False) -> dict[str, Any]:
        """Mean loss and accuracy of the rule's predictions on a split; for an episodic task,
        the mean return of the episodes whose seeds the split holds (loss = −return). With
        ``parts``, also the mean cross-entropy of each of the rule's local predictors
        (``part_losses``, for rules that stop them one by one)."""
        if self.data.meta.env is not None:
            return self._play(split)
        self.rule.train_mode(False)
        loss, correct = 0.0, 0
        part_losses: list[float] | None = None
        bs = self.config.eval_batch_size
        for i in range(0, len(split), bs):
            x, y = split.x[i : i + bs], split.y[i : i + bs]
            scores = self.rule.predict(x)
            loss += float(self.rule.eval_loss(scores, y))
            correct += int((scores.argmax(1) == y).sum())
            local = self.rule.part_scores(x) if parts else None
            if local is not None:
                sums = [float(F.cross_entropy(z, y, reduction="sum")) for z in local]
                part_losses = (
                    sums
                    if part_losses is None
                    else [a + b for a, b in zip(part_losses, sums, strict=True)]
                )
        self.rule.train_mode(True)
        out: dict[str, Any] = {"loss": loss / len(split), "acc": correct / len(split)}
        if part_losses is not None:
            out["part_losses"] = [v / len(split) for v in part_losses]
        return out

    @torch.no_grad()
    def _play(self, split: Split) -> dict[str, float]:
        self.rule.train_mode(False)

        def policy(obs: torch.Tensor) -> torch.Tensor:
            return self.rule.predict(obs.flatten(0, 1)).view(*obs.shape[:2], -1)

        returns, _ = rollout(policy, self.data.meta.env, split.x, 1, self.device, self._env_pool)
        self.rule.train_mode(True)
        mean = float(returns.mean())
        return {"loss": -mean, "return": mean, "return_std": float(returns.std())}

    def _test(self) -> None:
        cfg, st = self.config, self.state
        if cfg.restore_best and self.best_modules is not None:
            for k, m in self.rule.modules().items():
                m.load_state_dict(self.best_modules[k])
        watch = Stopwatch(self.device)
        with watch:
            test = self.evaluate(self.data.test)
        self.record.metrics.update(
            **{f"test_{k}": v for k, v in test.items()},  # acc and loss; return for episodes
            test_time_s=watch.total,
            tested_epoch=st.best_epoch if cfg.restore_best and st.best_epoch else st.epoch,
        )
        if cfg.attack_eps is not None:
            self.rule.train_mode(False)
            split = self.data.test
            loss = ATTACK_LOSSES.get(cfg.attack_loss, self.rule.eval_loss)
            robust = robust_accuracy(
                self.rule.predict, loss, split.x, split.y, cfg.attack_eps,
                input_box(self.data.meta), cfg.attack_steps, cfg.eval_batch_size, cfg.seed,
            )  # fmt: skip
            self.record.metrics.update(
                attack_eps=cfg.attack_eps,
                attack_steps=cfg.attack_steps,
                attack_loss=cfg.attack_loss,
                test_fgsm_acc=robust["fgsm"],
                test_pgd_acc=robust["pgd"],
            )

    # -- measurement ----------------------------------------------------------------------------
    def _probe(self, x: torch.Tensor, y: torch.Tensor) -> StepProbe:
        # Gradients left from the previous step are not counted: rules free them when the next
        # step starts (or right after their update), and the step's new ones are counted.
        resident = [m.state_dict() for m in self.rule.modules().values()]
        resident += [self.rule.state_dict(), x, y]
        return StepProbe(resident)

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of net inputs like ``x``: for an episodic task (x = episode seeds), one
        observation per seed (zeros), the net's input for one time step of those episodes."""
        x = x[: self.config.batch_size]
        if self.data.meta.env is None:
            return x
        return torch.zeros(len(x), *self.data.meta.input_shape, device=x.device)

    def _inference_bytes(self, x: torch.Tensor) -> int:
        """Peak bytes of predicting one batch (weights, the batch, activations), the yardstick
        for a training step's memory (MeZO's claim: training memory ≈ inference memory)."""
        resident = [m.state_dict() for m in self.rule.modules().values()] + [x]
        self.rule.train_mode(False)
        try:
            with torch.no_grad(), StepProbe(resident) as probe:
                self.rule.predict(x)
        finally:
            self.rule.train_mode(True)
        return probe.peak_bytes

    def _finish_metrics(self, wall: float, energy: EnergyMeter) -> None:
        st, m = self.state, self.record.metrics
        reading = energy.reading
        if reading.joules is not None:
            st.energy_j = (st.energy_j or 0.0) + reading.joules
            st.energy_label, st.energy_method = reading.label, reading.method
        elif st.energy_j is None:
            st.energy_label, st.energy_method = reading.label, reading.method
        m.update(
            epochs=st.epoch,
            steps=st.steps,
            examples=st.examples,
            train_time_s=st.train_time,
            val_time_s=st.val_time,
            checkpoint_time_s=st.checkpoint_time,
            wall_time_s=m.get("wall_time_s", 0.0) + wall,
            best_epoch=st.best_epoch,
            stop_reason=st.stop_reason,
            peak_rss_bytes=max(peak_rss_bytes(), m.get("peak_rss_bytes", 0)),
            energy_j=st.energy_j,
            energy_wh=None if st.energy_j is None else st.energy_j / 3600,
            energy_label=st.energy_label,
            energy_method=st.energy_method,
        )
        if st.history:
            last_best = next((h for h in st.history if h["epoch"] == st.best_epoch), st.history[-1])
            m.update(val_acc=last_best.get("val_acc"), val_loss=last_best.get("val_loss"))
            if "val_return" in last_best:
                m.update(val_return=last_best["val_return"])
        if st.probe:
            per_example = st.probe["flops_per_step"] / max(st.probe["probe_batch"], 1)
            m.update(flops_per_step=st.probe["flops_per_step"], flops_per_example=per_example)
            if st.train_time > 0 and per_example > 0:
                gflops = per_example * st.examples / st.train_time / 1e9
                peak = matmul_peak_gflops(self.device)
                m.update(gflops_per_s=gflops, matmul_peak_gflops=peak, peak_fraction=gflops / peak)
        if st.probe:  # the same measure on every device, so CPU and GPU runs compare
            m["peak_step_bytes"] = st.probe["peak_step_bytes"]
            # resident: weights, optimiser state, batch; transient: what the step allocates
            # on top (activations, gradients, temporaries) at its peak
            m["step_resident_bytes"] = st.probe["step_resident_bytes"]
            m["step_transient_bytes"] = st.probe["step_transient_bytes"]
            m["peak_step_bytes_method"] = "live tensors during the second training step"
            if st.probe.get("inference_step_bytes"):
                m["inference_step_bytes"] = st.probe["inference_step_bytes"]
                m["step_to_inference_memory"] = m["peak_step_bytes"] / m["inference_step_bytes"]
        if self.device.type == "cuda":  # the allocator's view: the whole run on the GPU
            m["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            m["cuda_data_bytes"] = self._data_bytes
            if not st.probe:
                m["peak_step_bytes"] = m["cuda_max_allocated_bytes"] - m["cuda_data_bytes"]
                m["peak_step_bytes_method"] = (
                    "torch.cuda.max_memory_allocated over training (validation passes "
                    "included), less the dataset kept on the GPU"
                )
        self.record.history = list(st.history)

    # -- checkpoints ------------------------------------------------------------------------------
    def _timed_save(self, obj: Any, path: Path) -> None:
        t0 = time.perf_counter()
        atomic_save(obj, path)
        self.state.checkpoint_time += time.perf_counter() - t0

    def _save_checkpoint(self) -> None:
        if self.ckpt_dir is None:
            return
        ckpt = {
            "modules": {k: m.state_dict() for k, m in self.rule.modules().items()},
            "rule": self.rule.state_dict(),
            "harness": asdict(self.state),
            "rng": _rng_state(),
            "metrics": dict(self.record.metrics),
        }
        self._timed_save(ckpt, self.ckpt_dir / "last.pt")

    def _load(self) -> None:
        assert self.ckpt_dir is not None, "resume needs checkpoints"
        ckpt = load_checkpoint(self.ckpt_dir / "last.pt")
        for k, m in self.rule.modules().items():
            m.load_state_dict(ckpt["modules"][k])
        self.rule.load_state_dict(ckpt["rule"])
        self.state = HarnessState(**ckpt["harness"])
        self.state.stop_reason = None
        self.record.metrics.update(ckpt["metrics"])
        _set_rng_state(ckpt["rng"])
        best = self.ckpt_dir / "best.pt"
        if best.is_file():
            self.best_modules = load_checkpoint(best)

    def _save_record(self) -> None:
        if self.store is not None:
            self.store.save(self.record)

    def _progress(self):  # type: ignore[no-untyped-def]
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        return Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not self.config.progress,
            transient=True,
        )


def _has_conv(modules: Iterable[torch.nn.Module]) -> bool:
    return any(isinstance(x, torch.nn.Conv2d) for m in modules for x in m.modules())


def _running(sums: dict[str, Any], seen: int) -> str:
    seen = max(seen, 1)
    parts = []
    if "loss" in sums:
        parts.append(f"loss {float(sums['loss']) / seen:.4f}")
    if "correct" in sums:
        parts.append(f"acc {float(sums['correct']) / seen:.4f}")
    return "  ".join(parts)


def _epoch_line(row: dict[str, Any]) -> str:
    parts = [f"epoch {row['epoch']:>3}"]
    for k in ("train_loss", "train_acc", "val_loss", "val_acc", "val_return"):
        if row.get(k) is not None:
            parts.append(f"{k} {row[k]:.4f}")
    parts.append(f"{row['train_time_s']:.1f}s")
    return "  ".join(parts)
