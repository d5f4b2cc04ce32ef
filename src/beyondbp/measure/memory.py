"""Memory: peak resident memory of the process, and peak bytes of live tensors in a step."""

from __future__ import annotations

import resource
import sys
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started (Linux/macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


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
