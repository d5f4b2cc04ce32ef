"""Zeroth-order machinery shared by ``mezo`` and ``zo-adam``: which tensors are trained, seeded
noise, and forward passes at perturbed weights.

A perturbation is a seed and a scale, never a stored tensor. Each trained tensor gets its own
noise stream, derived from (step seed, tensor index), so two layers of the same shape never get
the same noise (the pitfall of re-seeding one generator per parameter).

Perturbed forward passes never modify the weights. While :class:`Perturbed` is active, a hook on
each owning module swaps in ``w + scale * z`` (computed in fp32, cast to the weight's dtype) just
before that module runs and swaps the original parameter back right after. Memory is therefore
inference memory plus one perturbed tensor, and the weights after the pass are bit-identical to
those before it in every dtype (MeZO's in-place ``+εz, −2εz, +εz`` drifts by rounding, badly in
bf16). A parameter must be used inside its own module's ``forward`` (true of torch's layers and
of transformers' models); a parameter read by another module's code would not be perturbed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from pydantic import Field
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.rules.base import RuleOptions

_MIX = 0x9E3779B97F4A7C15  # the golden-ratio constant of splitmix64
_MASK = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (a step, a direction, a tensor index), splitmix64-style."""
    h = 0
    for p in parts:
        h = (h ^ (int(p) & ((1 << 64) - 1))) * _MIX & ((1 << 64) - 1)
        h ^= h >> 31
    return h & _MASK


class ZOOptions(RuleOptions):
    """Options every zeroth-order rule has."""

    eps: float = Field(1e-3, gt=0, description="perturbation scale ε")
    params: str = Field(
        "all",
        description="which tensors to train: 'all', or comma-separated name patterns "
        "(fnmatch, e.g. 'blocks.0.*,head.*'), each optionally with rows, e.g. 'embed.weight[3]' or "
        "'embed.weight[0:8]' (a single embedding vector, a soft prompt)",
    )


@dataclass
class Target:
    """One trained tensor: a parameter, or a range of its rows."""

    name: str
    param: nn.Parameter
    index: int  # position among the targets: its own noise stream
    rows: slice | None = None
    owners: list[tuple[nn.Module, str]] = field(default_factory=list)

    @property
    def value(self) -> torch.Tensor:
        return self.param.data if self.rows is None else self.param.data[self.rows]

    @property
    def shape(self) -> torch.Size:
        return self.value.shape

    @property
    def decays(self) -> bool:
        """Weight decay skips biases and norm scales (1-D parameters), as MeZO does."""
        return self.param.ndim >= 2

    def noise(self, seed: int) -> torch.Tensor:
        """z ~ N(0, I) of this tensor's shape, in fp32, from (seed, this tensor's index)."""
        dev = self.param.device
        g = torch.Generator(device=dev).manual_seed(mix_seed(seed, self.index))
        return torch.randn(self.shape, generator=g, device=dev, dtype=torch.float32)

    def shifted(self, seed: int, scale: float) -> torch.Tensor:
        """A new tensor: the parameter with scale·z(seed) added to the trained part (in fp32 or
        wider, then cast back). Built in the noise's own buffer: one extra tensor at most."""
        p = self.param.detach()
        wide = torch.promote_types(p.dtype, torch.float32)  # fp64 weights stay fp64
        delta = self.noise(seed).to(wide).mul_(scale)
        if self.rows is None:
            return delta.add_(_wide(p)).to(p.dtype)
        out = p.clone()
        out[self.rows] = delta.add_(_wide(p[self.rows])).to(p.dtype)
        return out

    def add_(self, delta: torch.Tensor) -> None:
        """In place: trained part += delta, accumulated in fp32 (for bf16/fp16 weights)."""
        v = self.value
        if v.dtype in (torch.float32, torch.float64):
            v.add_(delta)
        else:
            v.copy_((_wide(v) + delta).to(v.dtype))


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32, or in its own dtype when that is wider (fp64)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


_ROWS = re.compile(r"^(?P<name>[^\[]+)(?:\[(?P<a>-?\d+)(?::(?P<b>-?\d+))?\])?$")


def select_targets(net: nn.Module, spec: str) -> list[Target]:
    """The tensors named by ``spec`` (see :class:`ZOOptions`), each with the modules that own it."""
    named = dict(net.named_parameters())
    if spec.strip() == "all":
        chosen = [(n, None) for n in named]
    else:
        chosen = []
        for part in (s.strip() for s in spec.split(",") if s.strip()):
            m = _ROWS.match(part)
            if m is None:
                raise BeyondBPError(f"params: cannot read {part!r}; write a name pattern, e.g. "
                                    "'blocks.0.*' or 'embed.weight[3]'")  # fmt: skip
            hits = fnmatch.filter(named, m["name"])
            if not hits:
                raise BeyondBPError(
                    f"params: {m['name']!r} matches no parameter; the net has: "
                    + ", ".join(list(named)[:20]) + (" ..." if len(named) > 20 else "")
                )  # fmt: skip
            rows = None
            if m["a"] is not None:
                a = int(m["a"])
                rows = slice(a, int(m["b"]) if m["b"] is not None else (a + 1 if a != -1 else None))
            chosen += [(h, rows) for h in hits if (h, rows) not in chosen]
    targets = []
    for i, (name, rows) in enumerate(chosen):
        t = Target(name, named[name], i, rows)
        if rows is not None and t.value.shape[0] == 0:
            raise BeyondBPError(f"params: {name}{[rows.start, rows.stop]} selects no rows")
        targets.append(t)
    by_param = {}
    for t in targets:
        by_param.setdefault(id(t.param), []).append(t)
    for module in net.modules():
        for pname, p in module._parameters.items():
            for t in by_param.get(id(p), []):
                t.owners.append((module, pname))
    if any(t.rows is not None for t in targets) and len(by_param) < len(targets):
        raise BeyondBPError("params: select each parameter once (rows of one parameter in one "
                            "range)")  # fmt: skip
    return targets


def dimension(targets: list[Target]) -> int:
    return sum(t.value.numel() for t in targets)


@contextmanager
def perturbed(targets: list[Target], seed: int, scale: float) -> Iterator[None]:
    """Inside: every forward pass sees each target at ``w + scale * z(seed)``; the stored
    parameters are never written (see the module docstring)."""
    by_module: dict[int, tuple[nn.Module, list[tuple[str, Target]]]] = {}
    for t in targets:
        for module, pname in t.owners:
            by_module.setdefault(id(module), (module, []))[1].append((pname, t))
    cache: dict[int, torch.Tensor] = {}  # a module called many times (an RNN cell) reuses it

    def swap_in(module: nn.Module, entries: list[tuple[str, Target]]) -> None:
        for pname, t in entries:
            w = cache.get(t.index)
            if w is None:
                w = t.shifted(seed, scale)
                if _reused(module):
                    cache[t.index] = w
            module._parameters[pname] = w  # type: ignore[assignment]
        _refresh(module)

    def swap_out(module: nn.Module, entries: list[tuple[str, Target]]) -> None:
        for pname, t in entries:
            module._parameters[pname] = t.param
        _refresh(module)

    handles = []
    for module, entries in by_module.values():
        handles.append(module.register_forward_pre_hook(lambda m, a, e=entries: swap_in(m, e)))
        handles.append(module.register_forward_hook(lambda m, a, o, e=entries: swap_out(m, e)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for module, entries in by_module.values():
            swap_out(module, entries)


def _reused(module: nn.Module) -> bool:
    return isinstance(module, nn.RNNCellBase)


def _refresh(module: nn.Module) -> None:
    if isinstance(module, nn.RNNBase):  # cuDNN-style RNNs read a cached list of their weights
        module._init_flat_weights()


def update_(targets: list[Target], seed: int, coef: float, lr: float, weight_decay: float) -> None:
    """θ ← θ − lr·(coef·z(seed) + wd·θ) for every target, z regenerated from its seed."""
    with torch.no_grad():
        for t in targets:
            delta = t.noise(seed).mul_(-lr * coef)
            if weight_decay and t.decays:
                delta.add_(_wide(t.value), alpha=-lr * weight_decay)
            t.add_(delta)


def loss_at(
    loss_fn: Callable[[], torch.Tensor], targets: list[Target], seed: int, scale: float
) -> float:
    with torch.no_grad(), perturbed(targets, seed, scale):
        return float(loss_fn())


def spsa_coefficient(
    loss_fn: Callable[[], torch.Tensor], targets: list[Target], seed: int, eps: float
) -> tuple[float, float, float]:
    """The projected gradient g = (L(θ+εz) − L(θ−εz)) / 2ε of one direction z(seed), with both
    losses. g·z estimates the gradient: E[g z] = ∇L + O(ε²)."""
    plus = loss_at(loss_fn, targets, seed, eps)
    minus = loss_at(loss_fn, targets, seed, -eps)
    return (plus - minus) / (2 * eps), plus, minus
