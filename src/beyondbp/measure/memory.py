"""Memory: peak resident memory of the process, and peak bytes of live tensors in a step.

Two ways to follow a step's tensors:

- :class:`AllocatorTrace` reads the allocator's own events (``torch.profiler`` with
  ``profile_memory``): the step runs as it does unobserved, and the profiler's memory model
  (``torch.profiler._memory_profiler``) sorts the bytes into gradients, activations, temporaries...
  That model needs the profiler to record shapes and Python stacks, which keeps tensors alive
  under torch.func's transforms (a ``jvp`` through 20 iterations read 2 GiB where it needs
  about 0.1): so the peak comes from a lean trace (``detail=False``) and the split from another
  step, kept only where the two agree.
- :class:`LiveTensorTracker` watches every op through a ``TorchDispatchMode``. Any active dispatch
  mode changes what autograd does (a gradient reaching a weight by two paths is summed out of
  place, one more weight-sized buffer), so it is only the fallback.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_rss_banked = 0  # the peak before the last span left out of the peak (see rss_left_out)
_rss_resettable: bool | None = None  # None: not tried yet
_rss_residue = 0  # resident bytes the left-out spans kept (the profiler's one-time set-up)


def _high_water(field: str = "VmHWM") -> int | None:
    """Linux's high-water mark of this process's resident memory (``VmHWM``; ``VmRSS``: the
    resident memory now), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started, leaving out the spans run
    under :func:`rss_left_out` (the memory probe's profiler) where the platform can reset its
    high-water mark (Linux); elsewhere, and if the reset failed, the probes are included
    (:func:`peak_rss_method` says which)."""
    hwm = _high_water()
    return max(_rss_banked, _max_rss() if hwm is None else hwm - _rss_residue)


def rss_residue_bytes() -> int:
    """Resident bytes the left-out spans kept after them (starting a profiler leaves ~70 MB of
    its set-up resident for good), taken off the peak after them."""
    return _rss_residue


def _max_rss() -> int:
    """The kernel's peak RSS (no reset reaches it; on Linux it starts at the parent's peak,
    copied at ``fork``: ``VmHWM`` is the process's own)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def peak_rss_method() -> str:
    """How :func:`peak_rss_bytes` was taken: with the probes' spans left out or not."""
    if _rss_resettable is False:
        return "process peak RSS, the memory probes' profiler included (cannot reset the peak)"
    return (
        "process peak RSS, the memory probes' profiler left out (its spans, and what they "
        "left resident: peak_rss_probe_residue_bytes)"
    )


@contextmanager
def rss_left_out() -> Iterator[None]:
    """Leave the memory this block takes out of :func:`peak_rss_bytes`: the peak so far is
    kept, and after the block the kernel's high-water mark is reset (``/proc/self/clear_refs``)
    to the resident memory then, once the C allocator has given back what it can (the
    profiler's records are many small blocks that ``free`` keeps for reuse). What the block
    left resident (the profiler's set-up) is taken off the peaks after it: the block must not
    allocate memory the run keeps (a training step does not; its first one, which makes the
    optimiser's state, is never probed)."""
    global _rss_banked, _rss_resettable, _rss_residue
    hwm, before = _high_water(), _high_water("VmRSS")
    _rss_banked = max(_rss_banked, _max_rss() if hwm is None else hwm - _rss_residue)
    try:
        yield
    finally:
        if _rss_resettable is not False:
            _rss_resettable = hwm is not None and _reset_high_water()
            after = _high_water("VmRSS")
            if _rss_resettable and before is not None and after is not None:
                _rss_residue += max(0, after - before)


def _reset_high_water() -> bool:
    gc.collect()  # the profiler's event objects hold cycles
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)  # glibc: hand freed heap back to the kernel
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux >= 4.0: reset the peak RSS to the current RSS
        return True
    except OSError:
        return False


def tensor_bytes(objs: Iterable[Any]) -> int:
    """Bytes of the distinct storages behind the tensors found (recursively) in ``objs``."""
    seen: dict[int, int] = {}
    for t in tree_flatten(list(objs))[0]:
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


class LiveTensorTracker(TorchDispatchMode):
    """Tracks live tensor bytes while active; ``peak`` is their maximum total.

    ``resident`` are the tensors alive at the start (weights, gradients, optimiser state, the
    batch): counted until they are freed. Then every op's outputs are inspected: a storage that
    no input shares is a new allocation, counted until Python frees it. In-place ops and views
    reuse an input's storage and are not counted again.
    """

    def __init__(self, resident: Iterable[Any] = ()) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0
        for t in tree_flatten(list(resident))[0]:  # alive at the start: counted until freed
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                for st in _storages(t):
                    self._add(st)

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {
            st.data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
            for st in _storages(t)
        }
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                for st in _storages(t):
                    if st.data_ptr() not in inputs:
                        self._add(st)
        return out

    def _add(self, st: torch.UntypedStorage) -> None:
        key, nbytes = st.data_ptr(), st.nbytes()
        if key in self.live or nbytes == 0:
            return
        self.live[key] = nbytes
        self.current += nbytes
        self.peak = max(self.peak, self.current)
        weakref.finalize(st, self._free, key)


def _storages(t: torch.Tensor) -> list[torch.UntypedStorage]:
    """The storages a tensor's memory lives in: a sparse one's are its index and value arrays."""
    if t.layout == torch.strided:
        return [t.untyped_storage()]
    if t.layout == torch.sparse_coo:
        return [t._indices().untyped_storage(), t._values().untyped_storage()]
    if t.layout == torch.sparse_csr:
        parts = (t.crow_indices(), t.col_indices(), t.values())
        return [p.untyped_storage() for p in parts]
    return []  # other layouts: not counted


CATEGORIES = (
    "parameter",
    "optimizer_state",
    "input",
    "gradient",
    "activation",
    "temporary",
    "autograd_detail",
    "unknown",
)
"""The parts of a step's memory, as ``torch.profiler._memory_profiler.Category`` names them (its
memory model: the Python tracer for parameters and optimiser state, data flow for the rest).
``unknown``: bytes it could not attribute (a resident tensor the step never touched, an
allocation no tensor was seen to own, one it took for a parameter although the step made it)."""


class AllocatorTrace:
    """The peak live bytes of a block of code from the allocator's events, and their parts.

    ``resident`` are the tensors alive at the start (weights, optimiser state, the batch): the
    profiler sees no allocation made before it started, so their bytes (:func:`tensor_bytes`)
    are added, until they are freed. The CPU allocator does not report freeing a block it
    allocated before profiling, so a resident storage's end is taken from a weak reference.
    Frees of other memory from before the block (the previous step's gradients) are not counted,
    as they were not counted alive. No dispatch mode is involved: autograd runs as unobserved.

    The split is the profiler's model, a heuristic: it follows activations by data flow from
    the inputs, so a layer-local rule's deeper layers (fed detached activities) can land in
    ``unknown``; the peak itself does not depend on it.

    After the block: ``peak`` (bytes), ``split`` (the peak's bytes per :data:`CATEGORIES`) and
    ``split_error`` (why the profiler's categories were unavailable: all bytes are ``unknown``);
    ``peak`` is None and ``error`` says why if the profiler's events could not be read.
    ``detail=False`` records allocations alone (no shapes, no stacks): the peak of the block as
    it runs unobserved, with no split.
    """

    def __init__(self, resident: Iterable[Any] = (), detail: bool = True) -> None:
        self.detail = detail
        self._resident: dict[int, int] = {}
        storages = []
        for t in tree_flatten(list(resident))[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                for st in _storages(t):
                    if st.nbytes() and st.data_ptr() not in self._resident:
                        self._resident[st.data_ptr()] = st.nbytes()
                        storages.append(st)
        self._storages = storages  # until __enter__ sets the weak references
        self.resident_bytes = sum(self._resident.values())
        self.peak: int | None = self.resident_bytes
        self.split_error: str | None = None
        self.error: str | None = None
        self._split: dict[str, int] | None = None
        self._at_peak: tuple[dict[int, int], dict[int, tuple], int] | None = None

    def __enter__(self) -> AllocatorTrace:
        from torch.profiler import ProfilerActivity, profile

        if torch.autograd._profiler_enabled():  # a second one would end the first one's session
            raise RuntimeError("another profiler is running")
        self._freed: list[tuple[int, int]] = []  # (time ns, storage pointer) of resident frees
        self._watch = [
            weakref.finalize(st, self._resident_freed, st.data_ptr()) for st in self._storages
        ]
        self._storages = []
        self._prof = profile(
            activities=[ProfilerActivity.CPU],  # allocations on every device are reported here
            profile_memory=True,
            record_shapes=self.detail,  # tensor ids: what the categories are keyed by
            with_stack=self.detail,  # the Python tracer: modules' parameters, the optimiser's state
        )
        try:
            with _quiet_kineto():
                self._prof.__enter__()
        except BaseException:
            self._stop_watching()
            raise
        return self

    def _stop_watching(self) -> None:
        for w in self._watch:
            w.detach()

    def _resident_freed(self, ptr: int) -> None:
        self._freed.append((time.time_ns(), ptr))  # the profiler's clock: ns since the epoch

    def __exit__(self, *exc: object) -> None:
        try:
            with _quiet_kineto():
                self._prof.__exit__(*exc)
        finally:
            self._stop_watching()
        if exc[0] is None:
            try:
                self._measure()
            except Exception as e:  # private structures that changed: no number, not a crash
                self.peak, self.error = None, f"{type(e).__name__}: {e}"

    def _measure(self) -> None:
        from torch._C._profiler import _EventType

        result = self._prof.profiler.kineto_results
        events: list[tuple[int, int, int, int, Any]] = []  # (time, order, ptr, bytes, fields)
        for node in _dfs(result.experimental_event_tree()):
            if node.typed[0] == _EventType.Allocation:
                f = node.typed[1]
                if f.alloc_size:
                    events.append((node.start_time_ns, len(events), f.ptr, f.alloc_size, f))
        # a resident storage freed: after any allocator event of the same nanosecond
        events += [(t, len(events) + i, ptr, 0, None) for i, (t, ptr) in enumerate(self._freed)]
        events.sort(key=lambda e: (e[0], e[1]))

        def replay(stop: int | None) -> tuple[int, int, dict[int, int], dict[int, tuple]]:
            resident, live = dict(self._resident), {}
            current, peak, peak_at = self.resident_bytes, self.resident_bytes, -1
            for i, (_, _, ptr, size, fields) in enumerate(events[:stop]):
                if size > 0:
                    current -= resident.pop(ptr, 0)  # the address reused: that one was freed
                    live[ptr] = (size, fields)
                    current += size
                elif size < 0 and ptr in live:
                    current -= live.pop(ptr)[0]
                else:  # freed: a resident storage (or memory from before, never counted)
                    current -= resident.pop(ptr, 0)
                if current > peak:
                    peak, peak_at = current, i
            return peak, peak_at, resident, live

        self.peak, peak_at, _, _ = replay(None)
        _, _, resident, live = replay(peak_at + 1)  # what was alive at the peak
        self._at_peak = (resident, live, events[peak_at][0] if peak_at >= 0 else 0)

    @property
    def split(self) -> dict[str, int]:
        """The peak's bytes per category, worked out on first read: the profiler's memory model
        takes a while (most of a second for a small language model's step), so read it outside
        timed code."""
        if self._split is None and self._at_peak is not None:
            if not self.detail:
                self.split_error = "a lean trace: allocations only"
                self._split = {"unknown": self.peak or 0}
                self._prof = self._at_peak = None
                return self._split
            try:
                self._split = _categorise(self._prof, *self._at_peak)
            except Exception as e:  # the memory model is private and heuristic: keep the peak
                self.split_error = f"{type(e).__name__}: {e}"
                self._split = {"unknown": self.peak or 0}
            self._prof = self._at_peak = None  # the events are no longer needed
        return self._split or {}


def _categorise(
    prof: Any, resident: dict[int, int], live: dict[int, tuple], at: int
) -> dict[str, int]:
    """The bytes alive at time ``at`` per category of the profiler's memory model."""
    from torch.profiler._memory_profiler import Action, MemoryProfile, TensorKey

    mp = MemoryProfile(prof.profiler.kineto_results)
    versions: dict[Any, int] = {}  # each tensor's version at the peak (in-place ops bump it)
    by_ptr: dict[int, Any] = {}  # resident storages the step touched: their tensor key
    for t, action, (key, version), _ in mp.timeline:
        if not isinstance(key, TensorKey):
            continue
        if action == Action.PREEXISTING:
            by_ptr.setdefault(key.storage.ptr, key)
        elif action == Action.INCREMENT_VERSION and t <= at:
            versions[key] = max(versions.get(key, 0), version + 1)

    def category(key: Any) -> str:
        c = None if key is None else mp._categories.get(key, versions.get(key, 0))
        return "unknown" if c is None else c.name.lower()

    split: dict[str, int] = {}
    for ptr, nbytes in resident.items():
        name = category(by_ptr.get(ptr))
        split[name] = split.get(name, 0) + nbytes
    for size, fields in live.values():
        name = category(TensorKey.from_allocation(fields))
        if name == "parameter":  # the model's data-flow guess for a buffer the step made (SGD's
            name = "unknown"  # weight-decay sum): the parameters existed before the step
        split[name] = split.get(name, 0) + size
    return {k: split[k] for k in CATEGORIES if k in split}


def _dfs(roots: Iterable[Any]) -> Iterable[Any]:
    """Every node of the profiler's event tree, parents before children, in call order."""
    stack = list(reversed(list(roots)))
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


@contextmanager
def _quiet_kineto() -> Iterator[None]:
    """Kineto logs each profiler start and stop to stderr at the level the environment had when
    it was initialised (on the first profiler's start): a level above its last keeps a run's
    output clean. A user's own ``KINETO_LOG_LEVEL`` wins; the environment is restored after."""
    had = "KINETO_LOG_LEVEL" in os.environ
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    try:
        yield
    finally:
        if not had:
            os.environ.pop("KINETO_LOG_LEVEL", None)
