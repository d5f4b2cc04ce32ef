"""The training loop every rule runs in, and its events.

The loop draws batches from the task, calls the rule's ``step``, validates after each epoch,
stops on divergence or a spent budget, and times and stores the run. Everything else around it
(early stopping and the best weights, checkpoints, the step probe, robustness tests, progress)
is a callback (:mod:`beyondbp.harness.callbacks`). Rules only learn; tasks draw and score.

Resume is exact: the batch order of epoch ``e`` is a permutation drawn from ``(seed, e)``, and a
checkpoint holds the position inside the epoch, every RNG state, the modules, the rule's learning
state, the harness counters and the callbacks' states. A run resumed from any checkpoint therefore
produces the same weights as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import math
import random
import signal
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from beyondbp.errors import BeyondBPError
from beyondbp.harness.callbacks import (
    Callback,
    Checkpointing,
    EarlyStopping,
    EpochCallback,
    EpochFunction,
    HeadProbe,
    ProgressBar,
    RobustnessTest,
    StepProbeCallback,
    TransferTest,
)
from beyondbp.harness.config import TrainConfig
from beyondbp.measure import (
    EnergyMeter,
    Stopwatch,
    peak_rss_bytes,
    peak_rss_method,
    rss_residue_bytes,
)
from beyondbp.nets.lzc import lzc_time
from beyondbp.nets.spiking import spike_counts
from beyondbp.physical import physical_passes
from beyondbp.rules.base import Rule, SetupContext, is_diverged
from beyondbp.runs import RunRecord, RunStore, atomic_save
from beyondbp.tasks import Task


@dataclass
class HarnessState:
    """Counters that a checkpoint carries so a run resumes exactly where it stopped."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # the next batch of that epoch
    steps: int = 0
    examples: int = 0
    tokens: int = 0  # tokens trained on (language-model tasks; 0 elsewhere)
    sums: dict[str, float] = field(default_factory=dict)  # running sums of the epoch in progress
    seen: int = 0  # examples in those sums
    train_time: float = 0.0
    val_time: float = 0.0
    checkpoint_time: float = 0.0
    energy_j: float | None = None
    energy_label: str = "unavailable"
    energy_method: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str | None = None


# harness fields that older checkpoints carried and callbacks hold now: {field: (callback, key)}
_MOVED_TO_CALLBACKS = {
    "best": ("early_stopping", "best"),
    "best_epoch": ("early_stopping", "best_epoch"),
    "bad_epochs": ("early_stopping", "bad"),
    "probe": ("probe", None),
}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _numpy_state(saved: dict[str, Any] | None = None) -> Any:
    """NumPy's global RNG state as data a checkpoint can hold (a tensor and numbers: no
    pickled arrays), or, given that, the state ``np.random.set_state`` takes."""
    if saved is None:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                "has_gauss": int(has_gauss), "cached": float(cached)}  # fmt: skip
    keys = saved["keys"].numpy().astype(np.uint32)
    return saved["name"], keys, saved["pos"], saved["has_gauss"], saved["cached"]


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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


def default_callbacks(config: TrainConfig, checkpoint_dir: Path | None) -> list[Callback]:
    """The callbacks a :class:`TrainConfig` asks for, before any of the user's."""
    out: list[Callback] = []
    if config.head_init == "probe":
        out.append(HeadProbe())
    out.append(EarlyStopping(config.monitor, config.patience, config.min_delta,
                             config.restore_best, checkpoint_dir))  # fmt: skip
    if config.probe:
        out.append(StepProbeCallback())
    if config.progress:
        out.append(ProgressBar())
    if config.attack_eps is not None:
        out.append(RobustnessTest(config.attack_eps, config.attack_steps, config.attack_loss))
    if config.also_test:
        out.append(TransferTest(config.also_test))
    return out


class Trainer:
    """Runs one rule on one task under a :class:`TrainConfig`, recording into a store.

    ``callbacks`` (:class:`Callback` objects or functions of the epoch's history row) run after
    the ones the config asks for, and before the checkpoint of each epoch.
    """

    def __init__(
        self,
        rule: Rule,
        net: torch.nn.Module,
        task: Task,
        config: TrainConfig,
        record: RunRecord,
        store: RunStore | None,
        checkpoint_dir: Path | None,
        callbacks: Sequence[Callback | EpochCallback] = (),
    ) -> None:
        if task.kind not in rule.tasks:
            raise BeyondBPError(
                f"rule {rule.name!r} learns {' and '.join(rule.tasks)} tasks; "
                f"{task.meta.name!r} is {task.kind}: pick another rule or dataset"
            )
        self.rule, self.net, self.config = rule, net, config
        self.device = torch.device(config.device)
        self.task = task
        self.task.to(self.device)
        self.task.attach(net)
        self.record, self.store = record, store
        ckpt_dir = checkpoint_dir if config.checkpoint else None
        self.checkpoint_dir = ckpt_dir
        self.callbacks = default_callbacks(config, ckpt_dir)
        self.callbacks += [c if isinstance(c, Callback) else EpochFunction(c) for c in callbacks]
        if ckpt_dir is not None:
            self.callbacks.append(Checkpointing(ckpt_dir))
        self.state = HarnessState()
        self.sums: dict[str, Any] = {}  # the running sums of the epoch in progress (tensors)
        self.steps_per_epoch = 0
        self.tested_epoch: int | None = None
        self._stop = {"stop": False}
        self._watch: Stopwatch | None = None  # the training clock while an epoch runs

    def interrupt(self) -> None:
        """Save and stop at the end of this step, as Ctrl-C does (the run can be resumed)."""
        self._stop["stop"] = True

    def request_stop(self, reason: str) -> None:
        """Stop after this epoch (a callback's early stop, a pruner)."""
        if self.state.stop_reason is None:
            self.state.stop_reason = reason

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    # -- public ---------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> RunRecord:
        cfg, rule = self.config, self.rule
        self.steps_per_epoch = self.task.steps_per_epoch(
            rule.unit, cfg.batch_size, cfg.steps_per_epoch
        )
        seed_everything(cfg.seed)
        self.net.to(self.device)
        self._emit("on_fit_start", resume)
        ctx = SetupContext(
            self.device, cfg.seed, self.steps_per_epoch, cfg.epochs, cfg.batch_size,
            train=self.task.train, max_steps=cfg.max_steps,
        )  # fmt: skip
        if cfg.state_noise:
            if not hasattr(self.net, "noise"):
                raise BeyondBPError(
                    f"state_noise applies to nets that relax to a fixed point (hopfield:, vf:); "
                    f"{type(self.net).__name__} has no state to perturb: drop state_noise"
                )
            if not rule.noisy_relaxation:
                raise BeyondBPError(
                    f"state_noise perturbs the nudged relaxations of ep, hep and ghep; {rule.name} "
                    "has none and would train without it: drop state_noise"
                )
            self.net.noise = cfg.state_noise
        rule.setup(self.net, self.task.meta, ctx)
        for m in rule.modules().values():
            m.to(self.device)
        if _has_conv(rule.modules().values()):  # NHWC convolutions are faster on CPU and GPU
            for m in rule.modules().values():
                m.to(memory_format=torch.channels_last)
            self.task.to_channels_last()
        if resume:
            self._resume()
        self._emit("on_setup_end", resume)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.record.status = "running"
        self._save_record()
        t_start = time.perf_counter()
        status: str = "finished"
        energy = EnergyMeter(self.device, enabled=cfg.energy)
        try:
            with _graceful_interrupt(self._stop), energy:
                status = self._loop()
        except Exception as e:
            self.record.status, self.record.error = "failed", f"{type(e).__name__}: {e}"
            self._finish_metrics(time.perf_counter() - t_start, energy)
            self._save_record()
            self._emit("on_exception", e)
            raise
        except BaseException as e:  # a second Ctrl-C: abort at once
            if isinstance(e, KeyboardInterrupt):  # truthfully: stopped, resumable from the last
                self.record.status = "interrupted"  # checkpoint (no test, no final metrics)
                self.record.error = "aborted by a second interrupt; resume from the last checkpoint"
                self._save_record()
            self._emit("on_exception", e)
            raise
        self._finish_metrics(time.perf_counter() - t_start, energy)
        self._emit("on_train_end", status)
        if status == "finished":
            self._test()
        self.record.status = status  # type: ignore[assignment]
        self._save_record()
        return self.record

    def evaluate(self, split: str, parts: bool = False) -> dict[str, Any]:
        """The task's metrics of the rule's predictions on a split ("val" or "test")."""
        self.rule.set_phase("val" if split == "val" else "test")
        try:
            return self.task.evaluate(self.rule, split, self.config.eval_batch_size, parts)
        finally:
            self.rule.set_phase("train")

    # -- the loop -------------------------------------------------------------------------------
    def _loop(self) -> str:
        cfg, st = self.config, self.state
        while st.epoch < cfg.epochs:
            self._emit("on_epoch_start")
            outcome = self._train_epoch()
            if outcome != "epoch-done":
                return outcome
            row = self._end_epoch()
            if row.get("val_loss") is not None and not math.isfinite(row["val_loss"]):
                st.stop_reason = "validation loss is not finite"
                return "diverged"
            self.record.history = list(st.history)  # visible in the store while running
            self._save_record()
            self._emit("on_epoch_end", row)
            if st.stop_reason:  # early stopping, a budget, the rule or a callback
                break
        if st.stop_reason is None:
            st.stop_reason = f"reached {cfg.epochs} epochs"
        return "finished"

    def _train_epoch(self) -> str:
        cfg, st, rule = self.config, self.state, self.rule
        batches = self.task.batches(
            st.epoch, st.batch, self.steps_per_epoch, unit=rule.unit,
            batch_size=cfg.batch_size, seed=cfg.seed, augment=cfg.augment,
        )  # fmt: skip
        rule.set_phase("train")
        self._watch = watch = Stopwatch(self.device, st.train_time)
        self.sums = sums = dict(st.sums)
        with watch:
            for b, x, y in batches:
                with ExitStack() as around:
                    for cb in self.callbacks:
                        cm = cb.step_context(self, x, y)
                        if cm is not None:
                            around.enter_context(cm)
                    logs = rule.step(x, y)
                n = len(y)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + (v if k == "correct" else v * n)
                st.seen += n
                st.batch, st.steps, st.examples = b + 1, st.steps + 1, st.examples + n
                st.tokens += self.task.tokens(x)
                check = st.steps % 10 == 0 or b + 1 == self.steps_per_epoch  # syncs the device
                if check and is_diverged({k: float(v) for k, v in logs.items()}, cfg.diverge_loss):
                    st.stop_reason = f"training loss {float(logs['loss']):.3g} at step {st.steps}"
                    return "diverged"
                self._emit("on_step_end", x, y, logs)
                if self._stop["stop"]:
                    break
                if self._budget_reason(st.steps, st.examples, watch.elapsed):
                    break
        st.train_time, self._watch = watch.total, None
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

    def untimed(self) -> AbstractContextManager:
        """A block inside the training loop left out of the training time (a callback's
        measurement work, e.g. the step probe's)."""
        return self._watch.paused() if self._watch is not None else nullcontext()

    def _end_epoch(self) -> dict[str, Any]:
        st, rule = self.state, self.rule
        row: dict[str, Any] = {"epoch": st.epoch + 1, "steps": st.steps}
        seen = max(st.seen, 1)
        for k, v in st.sums.items():
            row["train_acc" if k == "correct" else f"train_{k}"] = v / seen
        watch = Stopwatch(self.device, st.train_time)
        with watch:  # part of training: e.g. a closed-form solve
            rule.finish_epoch()
        st.train_time = watch.total
        watch = Stopwatch(self.device)
        with watch:
            cfg = self.config
            due = (st.epoch + 1) % cfg.val_every == 0 or st.epoch + 1 >= cfg.epochs
            val = self.evaluate("val", parts=True) if due and len(self.task.split("val")) else {}
        st.val_time += watch.total
        row.update({f"val_{k}": v for k, v in val.items()})
        row["train_time_s"] = st.train_time
        if rule.warming_up():
            row["warmup"] = True  # not a candidate for the best epoch (see Rule.warming_up)
        st.history.append(row)
        self._emit("on_validation_end", row)
        rule.end_epoch(st.epoch, val)
        st.epoch, st.batch, st.sums, st.seen = st.epoch + 1, 0, {}, 0
        if st.stop_reason is None:
            st.stop_reason = rule.done()
        if st.stop_reason is None:
            self._budget_reason(st.steps, st.examples, st.train_time)
        return row

    def _test(self) -> None:
        st = self.state
        self.tested_epoch = st.epoch
        self._emit("on_test_start")
        watch = Stopwatch(self.device)
        before = self._physical_passes()
        modules = list(self.rule.modules().values())
        spikes_before, lzc_before = spike_counts(modules), lzc_time(modules)
        with watch:
            test = self.evaluate("test")
        metrics = self.record.metrics
        metrics.update(
            **{f"test_{k}": v for k, v in test.items()},  # acc and loss; return for episodes
            test_time_s=watch.total,
            tested_epoch=self.tested_epoch,
        )
        if before is not None:  # examples sent through physical systems to test
            after = self._physical_passes()
            metrics["physical_test_passes"] = (
                after["physical_eval_passes"] - before["physical_eval_passes"]
            )
        if spikes_before is not None:  # spikes the net emitted per test example
            spikes, examples = spike_counts(modules)
            metrics["spikes_per_inference"] = (spikes - spikes_before[0]) / max(
                1, examples - spikes_before[1]
            )
        if lzc_before is not None:  # the LZC-space readout's own time per test example
            seconds, examples = lzc_time(modules)
            metrics["lzc_ms_per_example"] = (
                1000 * (seconds - lzc_before[0]) / max(1, examples - lzc_before[1])
            )
        metrics.update(self.rule.metrics())  # of the weights tested
        self._emit("on_test_end", metrics)

    # -- measurement ----------------------------------------------------------------------------
    def _physical_passes(self) -> dict[str, int] | None:
        return physical_passes(list(self.rule.modules().values()))

    def _finish_metrics(self, wall: float, energy: EnergyMeter) -> None:
        st, m, trains = self.state, self.record.metrics, type(self.rule).trains
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
            step_time_s=st.train_time / st.steps if st.steps and trains else None,
            **(
                {"tokens": st.tokens, "tokens_per_s": st.tokens / st.train_time}
                if st.tokens and st.train_time > 0 and trains
                else {}
            ),
            val_time_s=st.val_time,
            checkpoint_time_s=st.checkpoint_time,
            wall_time_s=m.get("wall_time_s", 0.0) + wall,
            stop_reason=st.stop_reason,
            peak_rss_bytes=max(peak_rss_bytes(), m.get("peak_rss_bytes", 0)),
            peak_rss_method=peak_rss_method(),
            peak_rss_probe_residue_bytes=rss_residue_bytes(),
            energy_j=st.energy_j,
            energy_wh=None if st.energy_j is None else st.energy_j / 3600,
            energy_label=st.energy_label,
            energy_method=st.energy_method,
        )
        passes = self._physical_passes()
        if passes is not None:  # calls to the hardware a physical net's training made
            m["physical_passes"] = passes["physical_passes"]
        self._emit("on_metrics", m)
        if self.device.type == "cuda":  # the allocator's view: the whole run on the GPU
            m["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            m["cuda_data_bytes"] = self.task.data_bytes
            if not str(m.get("peak_step_bytes_method")).startswith(StepProbeCallback.METHOD):
                m["peak_step_bytes"] = m["cuda_max_allocated_bytes"] - m["cuda_data_bytes"]
                m["peak_step_bytes_method"] = (
                    "torch.cuda.max_memory_allocated over training (validation passes "
                    "included), less the dataset kept on the GPU"
                )
        self.record.history = list(st.history)

    # -- checkpoints ------------------------------------------------------------------------------
    def timed_save(self, obj: Any, path: Path) -> None:
        """Write ``obj`` atomically to ``path``; the time counts as checkpoint time."""
        t0 = time.perf_counter()
        try:
            atomic_save(obj, path)
        except OSError as e:  # a full disk, a folder gone: the previous file is intact
            raise BeyondBPError(
                f"cannot write the checkpoint {path} ({e.strerror or e}); the previous one is "
                f"intact: free space, then `beyondbp train --resume {self.record.id}`"
            ) from e
        self.state.checkpoint_time += time.perf_counter() - t0

    def snapshot(self) -> dict[str, Any]:
        """Everything a resumed run needs: modules, the rule's learning state, the harness
        counters, every RNG state, the metrics so far and the callbacks' states."""
        return {
            "modules": {k: m.state_dict() for k, m in self.rule.modules().items()},
            "rule": self.rule.state_dict(),
            "harness": asdict(self.state),
            "rng": _rng_state(),
            "metrics": dict(self.record.metrics),
            "callbacks": {cb.state_key: cb.state_dict() for cb in self.callbacks if cb.state_key},
        }

    def _resume(self) -> None:
        from beyondbp.runs import load_checkpoint

        if self.checkpoint_dir is None:
            raise BeyondBPError(
                "resume needs the run's checkpoints: this run was started with checkpoint=False, "
                "so it cannot continue; start it anew"
            )
        self.restore(load_checkpoint(self.checkpoint_dir / "last.pt"))

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` (also one written before the callbacks held their state)."""
        for k, m in self.rule.modules().items():
            m.load_state_dict(ckpt["modules"][k])
        self.rule.load_state_dict(ckpt["rule"])
        harness, states = dict(ckpt["harness"]), dict(ckpt.get("callbacks", {}))
        for name, (key, sub) in _MOVED_TO_CALLBACKS.items():
            if name in harness:
                value = harness.pop(name)
                if sub is None:
                    states.setdefault(key, value)
                else:
                    states.setdefault(key, {"best_state": None}).setdefault(sub, value)
        self.state = HarnessState(**harness)
        self.state.stop_reason = None
        self.record.metrics.update(ckpt["metrics"])
        _set_rng_state(ckpt["rng"])
        for cb in self.callbacks:
            if cb.state_key and cb.state_key in states:
                cb.load_state_dict(states[cb.state_key])

    def _save_record(self) -> None:
        if self.store is not None:
            self.store.save(self.record)


def _has_conv(modules: Iterable[torch.nn.Module]) -> bool:
    return any(isinstance(x, torch.nn.Conv2d) for m in modules for x in m.modules())
