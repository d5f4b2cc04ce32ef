"""Callbacks: each concern around the loop in one class with its own state.

The :class:`~beyondbp.harness.loop.Trainer` calls these events in this order::

    on_fit_start(resume)          before the rule's setup (the head probe)
    on_setup_end(resume)          the rule is set up (and, on resume, its checkpoint loaded)
      on_epoch_start()
      step_context(x, y)          a context manager around one step, or None (the step probe)
      on_step_end(x, y, logs)
      on_validation_end(row)      after validation, before the rule's end_epoch (early stopping)
      on_epoch_end(row)           (progress line, user callbacks, the epoch checkpoint)
    on_train_end(status)          (the last checkpoint)
    on_test_start / on_test_end   finished runs only (restore the best weights; robustness)
    on_metrics(metrics)           when the run's metrics are assembled
    on_exception(error)           training raised (an Exception: the run is stored as failed)

A callback with a ``state_key`` has its :meth:`Callback.state_dict` saved in every checkpoint
under that key, and loaded on resume (PyTorch Lightning's shape). A callback stops training with
``trainer.request_stop(reason)``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from beyondbp.errors import BeyondBPError
from beyondbp.measure import CATEGORIES, StepProbe, matmul_peak_gflops, rss_left_out
from beyondbp.patience import Patience

if TYPE_CHECKING:
    from beyondbp.harness.loop import Trainer

EpochCallback = Callable[[dict[str, Any]], str | None]
"""Called with each epoch's history row; a returned string stops training with that reason."""


class Callback:
    """Base class: every event is a no-op; override the ones you need."""

    state_key: str | None = None  # set to save state in checkpoints

    def on_fit_start(self, trainer: Trainer, resume: bool) -> None: ...
    def on_setup_end(self, trainer: Trainer, resume: bool) -> None: ...
    def on_epoch_start(self, trainer: Trainer) -> None: ...
    def step_context(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor
    ) -> AbstractContextManager | None:
        return None

    def on_step_end(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, logs: dict[str, Any]
    ) -> None: ...
    def on_validation_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...
    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...
    def on_train_end(self, trainer: Trainer, status: str) -> None: ...
    def on_test_start(self, trainer: Trainer) -> None: ...
    def on_test_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...
    def on_metrics(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...
    def on_exception(self, trainer: Trainer, error: BaseException) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EpochFunction(Callback):
    """A plain function of the epoch's history row (e.g. a tuner's pruner) as a callback."""

    def __init__(self, fn: EpochCallback) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        reason = self.fn(row)
        if reason:
            trainer.request_stop(reason)


class EarlyStopping(Callback):
    """Keeps the best validation epoch's weights; stops after ``patience`` epochs without
    improvement (``None``: never, the best epoch is still the one tested). A warm-up epoch
    (``Rule.warming_up``) is never the best and does not count."""

    state_key = "early_stopping"

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int | None = 10,
        min_delta: float = 0.0,
        restore_best: bool = True,
        checkpoint_dir: Path | None = None,
    ) -> None:
        self.monitor, self.restore_best, self.dir = monitor, restore_best, checkpoint_dir
        mode = "min" if monitor == "val_loss" else "max"
        self.patience = Patience(patience, mode, min_delta)
        self.best_modules: dict[str, Any] | None = None

    def on_validation_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        # the snapshot is of the weights just validated, before the rule's end_epoch may change
        # them (e.g. Mono-Forward restoring a layer's best copy and moving on)
        value = None if row.get("warmup") else row.get(self.monitor)
        if value is None:
            return
        if self.patience.update(value, row["epoch"]):
            self.best_modules = {
                k: copy.deepcopy(m.state_dict()) for k, m in trainer.rule.modules().items()
            }
            if self.dir is not None:
                trainer.timed_save(self.best_modules, self.dir / "best.pt")
        elif self.patience.exhausted:
            trainer.request_stop(
                f"early stop: {self.monitor} did not improve for {self.patience.patience} epochs"
            )

    def on_test_start(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_modules is not None:
            for k, m in trainer.rule.modules().items():
                live = {f"{n}.{b}".lstrip("."): getattr(sub, b).clone()
                        for n, sub in m.named_modules() for b in getattr(sub, "live_buffers", ())}  # fmt: skip
                m.load_state_dict(self.best_modules[k])
                for name, value in live.items():  # the world moved on: a drift clock, costs paid
                    m.get_buffer(name).copy_(value)
            if self.patience.best_epoch:
                trainer.tested_epoch = self.patience.best_epoch

    def on_metrics(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        history, best = trainer.state.history, self.patience.best_epoch
        metrics["best_epoch"] = best
        if history:
            row = next((h for h in history if h["epoch"] == best), history[-1])
            metrics.update(val_acc=row.get("val_acc"), val_loss=row.get("val_loss"))
            if "val_return" in row:
                metrics["val_return"] = row["val_return"]

    def state_dict(self) -> dict[str, Any]:
        return self.patience.state_dict()  # the best weights are in best.pt

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from beyondbp.runs import load_checkpoint

        self.patience.load_state_dict(state)
        best = self.dir / "best.pt" if self.dir is not None else None
        if best is not None and best.is_file():
            self.best_modules = load_checkpoint(best)


class Checkpointing(Callback):
    """Writes the trainer's whole state (``last.pt``, atomically) after every epoch and when
    training ends (Ctrl-C included); the trainer loads it on resume, before ``on_setup_end``."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.state.stop_reason is None:  # a stopping run saves once, at the end
            self._save(trainer)

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        # the final state: resumable if interrupted, inspectable otherwise
        self._save(trainer)

    def _save(self, trainer: Trainer) -> None:
        trainer.timed_save(trainer.snapshot(), self.dir / "last.pt")


class StepProbeCallback(Callback):
    """Live-tensor memory of the second training step (optimiser state exists by then, as in
    every later step) and the memory of predicting one batch; the FLOPs of the third; the split
    of the fourth step's peak into gradients, activations, temporaries... (``step_<part>_bytes``).

    Each on a step of its own: the FLOP counter is a dispatch mode, and any active dispatch
    mode changes what autograd allocates (a weight reached by two paths gets its gradients
    summed out of place: one more weight-sized buffer). The memory is the allocator's view of
    the step as it runs unobserved (:class:`~beyondbp.measure.StepProbe`, allocations alone).
    The split needs the profiler to record shapes and stacks, which keeps tensors alive under
    torch.func's transforms (forward-mode AD, vmap): it is kept only where that step's peak is
    the unobserved one's to 1 % (or 1 MiB), and otherwise left out with the reason.

    A rule whose steps change with its stage (``Rule.step_stage()``: a layer-wise rule's layer in
    training) is probed in every stage, and the stage with the largest peak is kept (with that
    stage's FLOPs and split): the step memory is the most any step needed. A stage with only two
    steps has its memory measured and neither FLOPs nor split; with three, no split; a one-step
    stage is not probed.

    The probes' own work (the profiler's memory model, the inference probe) is left out of the
    training time; the probed steps stay in it, the profiler's overhead on them included. The
    process's peak RSS leaves out the probed steps and that work
    (:func:`~beyondbp.measure.rss_left_out`): the profiler's records are not the run's memory,
    and every other step is the same step unobserved."""

    state_key = "probe"
    METHOD = "peak live tensor bytes of the second training step"

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, Any]] = {}  # per stage: what was measured, on which step
        self._probe: StepProbe | None = None
        self._steps: dict[str, int] = {}  # steps seen per stage (a resumed run: in all)
        self._left_out = ExitStack()  # the probe's span, left out of the process's peak RSS

    def step_context(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor
    ) -> AbstractContextManager | None:
        stage = str(trainer.rule.step_stage())
        rec = self.stages.get(stage, {})
        seen = self._steps.get(stage, 0)
        self._steps[stage] = seen + 1
        if seen < 1 or {"flops_per_step", "step_split"} <= rec.keys():  # first, or done
            return None
        rule, step = trainer.rule, trainer.state.steps + 1
        # Gradients left from the previous step are not counted: rules free them when the next
        # step starts (or right after their update), and the step's new ones are.
        resident = [*(m.state_dict() for m in rule.modules().values()), rule.state_dict(), x, y]
        if "peak_step_bytes" not in rec:
            self._probe = StepProbe(resident, what="memory", detail=False)
        elif "flops_per_step" not in rec and rec["memory_step"] < step:
            self._probe = StepProbe(what="flops")  # FLOPs on a later step than the memory
        elif "step_split" not in rec and rec.get("flops_step", step) < step:  # the split: later
            self._probe = StepProbe(resident, what="memory", detail=True)
        else:
            return None
        self._stage = stage
        self._left_out.close()
        self._left_out.enter_context(rss_left_out())
        return self._probe

    def on_step_end(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, logs: dict[str, Any]
    ) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        with self._left_out, trainer.untimed():  # the probe's own work: not the run's
            rec, step = self.stages.setdefault(self._stage, {}), trainer.state.steps
            if probe.what == "flops":
                rec.update(flops_per_step=probe.flops, flops_batch=len(y), flops_step=step)
            elif probe.detail and "peak_step_bytes" in rec:
                rec.update(self._split(probe, rec["peak_step_bytes"]))
            elif probe.peak_bytes is not None:  # None: the profiler failed, the tracker is next
                if probe.memory_method != StepProbe.PROFILER:  # the tracker: no split to take
                    rec.update(step_split={})
                rec.update(
                    peak_step_bytes=probe.peak_bytes,
                    step_resident_bytes=probe.resident_bytes,
                    step_transient_bytes=probe.peak_bytes - probe.resident_bytes,
                    probe_batch=len(y),
                    memory_step=step,
                    inference_step_bytes=self._inference_bytes(trainer, x),
                    step_memory_method=probe.memory_method,
                )

    @staticmethod
    def _split(probe: StepProbe, unobserved: int) -> dict[str, Any]:
        """The detailed probe's split of its step's peak, if that peak is the unobserved one's
        (to 1 % or 1 MiB), with the memory method saying why not otherwise."""
        method = StepProbe.PROFILER
        if probe.peak_bytes is None:
            return {"step_split": {}, "step_memory_method": f"{method}; no split (no events)"}
        if abs(probe.peak_bytes - unobserved) > max(0.01 * unobserved, 2**20):
            why = (f"recording shapes and stacks changed the step's peak: "
                   f"{probe.peak_bytes / 2**20:.1f} MiB against {unobserved / 2**20:.1f} MiB "
                   "unobserved (torch.func's transforms keep tensors alive under it)")  # fmt: skip
            return {"step_split": {}, "step_memory_method": f"{method}; no split ({why})"}
        split = dict(probe.split)  # the profiler's memory model: slow
        return {"step_split": split, "step_memory_method": probe.memory_method or method}

    @staticmethod
    def _inference_bytes(trainer: Trainer, x: torch.Tensor) -> int | None:
        """Peak bytes of predicting one batch (weights, the batch, activations), the yardstick
        for a training step's memory (MeZO's claim: training memory ≈ inference memory)."""
        rule = trainer.rule
        x = trainer.task.example_inputs(x[: trainer.config.batch_size])
        resident = [m.state_dict() for m in rule.modules().values()] + [x]
        rule.set_phase("test")  # inference as at test time (NoProp: every step, not val_steps)
        try:
            with torch.no_grad(), StepProbe(resident, detail=False) as probe:
                rule.predict(x)
        finally:
            rule.set_phase("train")
        return probe.peak_bytes

    @property
    def result(self) -> dict[str, Any]:
        """The stage with the largest step memory (empty if none was measured), and which
        stages were measured."""
        measured = {k: r for k, r in self.stages.items() if "peak_step_bytes" in r}
        if not measured:
            return {}
        top = max(measured.values(), key=lambda r: r["peak_step_bytes"])
        return {**top, "probed_stages": list(measured)}

    def on_metrics(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        p, st, m = self.result, trainer.state, metrics
        if not p:
            return
        for stale in ("flops_per_step_missing", *(f"step_{c}_bytes" for c in CATEGORIES)):
            m.pop(stale, None)  # a resumed run's metrics start from the interrupted run's
        if p.get("flops_per_step") is not None:
            per_example = p["flops_per_step"] / max(p["flops_batch"], 1)
            m.update(flops_per_step=p["flops_per_step"], flops_per_example=per_example)
            if p["flops_step"] is not None:
                m["flops_probe_step"] = p["flops_step"]
            if st.train_time > 0 and per_example > 0:
                gflops = per_example * st.examples / st.train_time / 1e9
                peak = matmul_peak_gflops(trainer.device)
                m.update(gflops_per_s=gflops, matmul_peak_gflops=peak, peak_fraction=gflops / peak)
        else:
            m["flops_per_step_missing"] = (
                "not counted: the stage with the largest step memory had no step after the "
                "one whose memory was measured (FLOPs are counted on a separate step)"
            )
        # the same measure on every device, so CPU and GPU runs compare
        m["peak_step_bytes"] = p["peak_step_bytes"]
        # resident: weights, optimiser state, batch; transient: what the step allocates on top
        # (activations, gradients, temporaries) at its peak
        m["step_resident_bytes"] = p["step_resident_bytes"]
        m["step_transient_bytes"] = p["step_transient_bytes"]
        # the peak's parts: step_gradient_bytes, step_activation_bytes, step_temporary_bytes...
        for part, nbytes in p.get("step_split", {}).items():
            m[f"step_{part}_bytes"] = nbytes
        m["peak_step_bytes_method"] = f"{self.METHOD}: {p['step_memory_method']}"
        if p["memory_step"] is not None:
            m["memory_probe_step"] = p["memory_step"]
        if len(p["probed_stages"]) > 1:  # the largest of these stages' steps
            m["probed_stages"] = len(p["probed_stages"])
        if p.get("inference_step_bytes"):
            m["inference_step_bytes"] = p["inference_step_bytes"]
            m["step_to_inference_memory"] = m["peak_step_bytes"] / m["inference_step_bytes"]

    def state_dict(self) -> dict[str, Any]:
        # the steps seen too: a resumed run probes the steps an unbroken one would (a FLOP step
        # runs under a dispatch mode, which can change a step's rounding)
        return {"stages": copy.deepcopy(self.stages), "steps": dict(self._steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "stages" in state:
            self.stages = copy.deepcopy(state["stages"])
            self._steps = dict(state.get("steps", {}))
        elif state:  # a checkpoint from before the split: its kept stage, memory and FLOPs
            kept = {k: v for k, v in state.items() if k != "probed_stages"}
            kept.setdefault("step_split", {})
            kept.setdefault("step_memory_method", StepProbe.TRACKER)
            kept.setdefault("memory_step", None)  # not recorded then
            kept.setdefault("flops_batch", kept.get("probe_batch", 1))
            kept.setdefault("flops_step", None)
            stages = state.get("probed_stages") or ["None"]
            self.stages = {s: {"flops_per_step": None, "step_split": {}} for s in stages}
            self.stages[stages[-1]] = kept


class HeadProbe(Callback):
    """``head_init='probe'``: before the rule trains, fit the net's last linear layer on the
    frozen net's features of the training split (LP-FT's first stage); timed as training."""

    def on_fit_start(self, trainer: Trainer, resume: bool) -> None:
        from beyondbp.linear_probe import fit_head
        from beyondbp.measure import Stopwatch

        if resume:  # a resumed run loads its head
            return
        if trainer.task.kind != "classification":
            raise BeyondBPError("head_init='probe' needs labelled data, not an episodic task")
        train = trainer.task.train
        watch = Stopwatch(trainer.device, trainer.state.train_time)
        with watch:
            fitted = fit_head(trainer.net, train.x, train.y, trainer.config.eval_batch_size)
        trainer.state.train_time = watch.total
        trainer.record.metrics.update(fitted)


class RobustnessTest(Callback):
    """Test accuracy under ℓ∞ FGSM and PGD attacks of radius ``eps`` (finished runs)."""

    def __init__(self, eps: float, steps: int, loss: str) -> None:
        self.eps, self.steps, self.loss = eps, steps, loss

    def on_test_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        from beyondbp.measure.robustness import ATTACK_LOSSES, input_box, robust_accuracy

        rule, cfg = trainer.rule, trainer.config
        rule.set_phase("test")
        split = trainer.task.split("test")
        loss = ATTACK_LOSSES.get(self.loss, rule.eval_loss)
        robust = robust_accuracy(
            rule.predict, loss, split.x, split.y, self.eps, input_box(trainer.task.meta),
            self.steps, cfg.eval_batch_size, cfg.seed,
        )  # fmt: skip
        metrics.update(
            attack_eps=self.eps,
            attack_steps=self.steps,
            attack_loss=self.loss,
            test_fgsm_acc=robust["fgsm"],
            test_pgd_acc=robust["pgd"],
        )


class TransferTest(Callback):
    """The finished model also scored on other datasets' test splits: forgetting (a language
    model fine-tuned on arithmetic, then its TinyShakespeare perplexity) or transfer. Adds
    ``test_<metric>_<dataset>`` for each of those tasks' metrics."""

    def __init__(self, datasets: list[str]) -> None:
        self.datasets = datasets

    def on_test_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        from beyondbp.data import load_dataset
        from beyondbp.tasks import make_task

        home = trainer.task
        data_dir = trainer.record.config.get("data_dir")
        try:
            for name in self.datasets:
                data = load_dataset(name, data_dir, data_seed=trainer.config.data_seed)
                task = make_task(data)
                task.to(trainer.device)
                task.attach(trainer.net)
                trainer.rule.set_phase("test")
                scores = task.evaluate(trainer.rule, "test", trainer.config.eval_batch_size)
                key = name.replace(":", "_")
                metrics.update({f"test_{k}_{key}": v for k, v in scores.items()})
        finally:
            home.attach(trainer.net)


class ProgressBar(Callback):
    """A Rich progress bar per epoch, the running loss and accuracy, and a line per epoch."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            transient=True,
        )
        self.task: Any = None

    def on_epoch_start(self, trainer: Trainer) -> None:
        if not self.bar.live.is_started:
            self.bar.start()
        st, cfg = trainer.state, trainer.config
        self.task = self.bar.add_task(
            f"epoch {st.epoch + 1}/{cfg.epochs}",
            total=trainer.steps_per_epoch,
            completed=st.batch,
            info="",
        )

    def on_step_end(
        self, trainer: Trainer, x: torch.Tensor, y: torch.Tensor, logs: dict[str, Any]
    ) -> None:
        st = trainer.state
        if st.steps % 10 == 0 or st.batch == trainer.steps_per_epoch:
            self.bar.update(self.task, info=_running(trainer.sums, st.seen))
        self.bar.update(self.task, advance=1)

    def on_validation_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self._drop_task()

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.bar.console.print(_epoch_line(row), highlight=False, markup=False)

    def on_train_end(self, trainer: Trainer, status: str) -> None:
        self._drop_task()
        self.bar.stop()

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self.bar.stop()

    def _drop_task(self) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None


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
