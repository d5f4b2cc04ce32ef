"""The S²FT layer: a frozen linear layer whose selected columns (or rows) train as a dense slice.

``side="in"`` trains columns ``idx`` of W (down_proj's FFN channels, o_proj's heads):
``y = x Wᵀ + x[..., idx] Cᵀ``. The slice ``x[..., idx]`` is copied before it meets C, so
autograd saves only that copy for C's gradient (not the whole input, which a frozen W never
needs): *partial backprop*, the activation memory of the selected channels only, and only the
gradient of the selected slice ``C`` is ever computed. ``side="out"`` trains rows ``idx``
(up_proj's channels, v_proj's heads): ``y[..., idx] += x Cᵀ``; its gradient needs the full input,
as LoRA's does.

The update stays an adapter ``(idx, C)``: :meth:`fuse` writes ``W[:, idx] += C`` in place (no
``A @ B`` product to form), :meth:`unfuse` takes it back out. A mixed batch serves several
adapters at once (:meth:`serve`): each adapter's rows are gathered, multiplied by their ``C``
and scattered back into the output.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Side = Literal["in", "out"]


def _span(idx: torch.Tensor) -> tuple[int, int] | None:
    """``(start, end)`` when the indices are one run ``start, start + 1, ..., end - 1``."""
    if len(idx) and int(idx[-1]) - int(idx[0]) + 1 == len(idx) and bool((idx.diff() == 1).all()):
        return int(idx[0]), int(idx[-1]) + 1
    return None


def gather(x: torch.Tensor, idx: torch.Tensor, span: tuple[int, int] | None) -> torch.Tensor:
    """``x[..., idx]`` as a new tensor (a contiguous copy: nothing keeps all of ``x`` alive)."""
    if span is not None:
        return x[..., span[0] : span[1]].contiguous()
    return x.index_select(-1, idx)


class S2Linear(nn.Module):
    """``base`` (frozen) plus a trainable dense slice ``delta`` at columns or rows ``idx``."""

    def __init__(self, base: nn.Linear, side: Side, idx: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        if base.bias is not None:
            base.bias.requires_grad_(False)
        self.side: Side = side
        idx = idx.to(torch.int64).sort().values
        self.register_buffer("idx", idx.to(base.weight.device))
        self.span = _span(idx)
        out_f, in_f = base.weight.shape
        shape = (out_f, len(idx)) if side == "in" else (len(idx), in_f)
        self.delta = nn.Parameter(base.weight.new_zeros(shape))
        self.fused = False
        self.mixed: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if not self.fused and len(self.idx):
            # in place: a linear layer's backward never needs its own output
            if self.side == "in":
                y += nn.functional.linear(gather(x, self.idx, self.span), self.delta)
            else:
                y.index_add_(-1, self.idx, nn.functional.linear(x, self.delta))
        if self.mixed is not None:
            y = self._serve(x, y)
        return y

    # -- adapters as weight edits -------------------------------------------------------------
    @torch.no_grad()
    def add_to_weight(self, idx: torch.Tensor, delta: torch.Tensor, sign: float = 1.0) -> None:
        """``W[:, idx] += sign·delta`` (``side="in"``) or ``W[idx] += sign·delta``, in place."""
        dim = 1 if self.side == "in" else 0
        self.base.weight.index_add_(dim, idx.to(self.base.weight.device), delta, alpha=sign)

    def fuse(self) -> None:
        if not self.fused:
            self.add_to_weight(self.idx, self.delta.detach())
            self.fused = True

    def unfuse(self) -> None:
        if self.fused:
            self.add_to_weight(self.idx, self.delta.detach(), -1.0)
            self.fused = False

    # -- several adapters in one batch --------------------------------------------------------
    def serve(self, rows_idx_delta: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None):
        """Set the mixed batch: for each adapter, the batch rows it serves, its indices and its
        delta (None: back to the plain layer)."""
        self.mixed = rows_idx_delta

    def _serve(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.mixed is not None
        y = y.clone()
        for rows, idx, delta in self.mixed:
            xr = x.index_select(0, rows)  # gather the adapter's examples
            if self.side == "in":
                part = nn.functional.linear(xr.index_select(-1, idx), delta)
                y.index_add_(0, rows, part)  # scatter them back
            else:
                yr = y.index_select(0, rows)
                yr.index_add_(-1, idx, nn.functional.linear(xr, delta))
                y.index_copy_(0, rows, yr)
        return y

    def extra_repr(self) -> str:
        what = "columns" if self.side == "in" else "rows"
        layout = f"{self.span[0]}:{self.span[1]}" if self.span else "gathered"
        return f"{len(self.idx)} trainable {what} ({layout}), fused={self.fused}"
