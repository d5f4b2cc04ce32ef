"""S²FT on a LLaMA-style causal LM: select, co-permute, train slices, keep them as adapters.

1. **Select** units per block (FFN channels, attention heads, key-value heads) by a score:
   random, weight norm, activation norm, gradient norm on calibration data, or weight ×
   activation.
2. **Co-permute** the coupled weights so the selected units are contiguous: an FFN channel is a
   row of gate_proj and up_proj and a column of down_proj, permuted by one order; an attention
   head is rows of q_proj and columns of o_proj, and its key-value head rows of k_proj and v_proj.
   Under grouped-query attention a query head must stay with its key-value group, so groups move
   as wholes and heads move only inside their group (the released code permutes heads across
   groups, which is only correct without GQA). The block computes the same function.
3. **Train** the selected slices (:class:`~beyondbp.s2ft.layer.S2Linear`), everything else frozen.
4. **Adapters**: save / load ``(indices in the original order, delta)``, fuse into the weights,
   switch between adapters in place, serve a batch whose examples use different adapters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from beyondbp.errors import BeyondBPError
from beyondbp.s2ft.config import TARGETS, S2FTConfig
from beyondbp.s2ft.layer import S2Linear

ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of a Hugging Face LLaMA-style model."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    layers = getattr(decoder, "layers", None)
    if layers is None or not hasattr(layers[0], "mlp") or not hasattr(layers[0], "self_attn"):
        raise BeyondBPError(
            f"S²FT needs a LLaMA-style model (blocks with .mlp and .self_attn); got "
            f"{type(model).__name__}"
        )
    return layers


def _module(block: nn.Module, target: str) -> nn.Module:
    return getattr(block.mlp if target in ("down_proj", "up_proj") else block.self_attn, target)


def _sizes(model: nn.Module) -> dict[str, int]:
    c = model.config
    heads = c.num_attention_heads
    return {"channel": c.intermediate_size, "head": heads,
            "kv-head": getattr(c, "num_key_value_heads", None) or heads,
            "head_dim": getattr(c, "head_dim", None) or c.hidden_size // heads}  # fmt: skip


def _unit_width(target: str, sizes: dict[str, int]) -> int:
    return 1 if TARGETS[target][1] == "channel" else sizes["head_dim"]


# -- 1. selection --------------------------------------------------------------------------------
def _unit_norms(t: torch.Tensor, side: str, width: int) -> torch.Tensor:
    """Frobenius norm of each unit's slice of a weight-shaped tensor (columns or rows)."""
    t = t.detach().float()
    t = t.T if side == "in" else t  # units along the first axis
    return t.reshape(-1, width, t.shape[-1]).pow(2).sum((1, 2)).sqrt()


def _scores(model: nn.Module, config: S2FTConfig, calibrate: Callable[[], torch.Tensor] | None):
    """Per target, a (blocks, units) tensor of scores."""
    layers, sizes = blocks(model), _sizes(model)
    need_act = config.selection in ("activation", "combined")
    need_grad = config.selection == "gradient"
    acts: dict[tuple[int, str], torch.Tensor] = {}
    grads: dict[tuple[int, str], torch.Tensor] = {}
    if need_act or need_grad:
        if calibrate is None:
            raise BeyondBPError(f"S²FT selection={config.selection!r} scores units on data: pass "
                                "calibrate=, a function returning the loss of a batch")  # fmt: skip
        hooks, flags = [], {}
        for i, block in enumerate(layers):
            for target in config.targets:
                mod, side = _module(block, target), TARGETS[target][0]

                def hook(m, inp, out, key=(i, target), side=side):
                    a = (inp[0] if side == "in" else out).detach().float()
                    a = a.reshape(-1, a.shape[-1]).pow(2).sum(0)
                    acts[key] = acts.get(key, 0) + a

                hooks.append(mod.register_forward_hook(hook))
                if need_grad:
                    flags[(i, target)] = mod.weight.requires_grad
                    mod.weight.requires_grad_(True)
        try:
            with torch.enable_grad() if need_grad else torch.no_grad():
                loss = calibrate()
                if need_grad:
                    loss.backward()
        finally:
            for h in hooks:
                h.remove()
        if need_grad:
            for (i, target), flag in flags.items():
                w = _module(layers[i], target).weight
                grads[(i, target)] = w.grad.detach().clone()
                w.grad = None
                w.requires_grad_(flag)
    out = {}
    for target in config.targets:
        side, width = TARGETS[target][0], _unit_width(target, sizes)
        rows = []
        for i, block in enumerate(layers):
            w = _module(block, target).weight
            if config.selection == "gradient":
                s = _unit_norms(grads[(i, target)], side, width)
            elif config.selection == "weight":
                s = _unit_norms(w, side, width)
            elif config.selection == "random":
                s = torch.zeros(w.shape[1 if side == "in" else 0] // width)
            else:
                a = acts[(i, target)].sqrt().reshape(-1, width).norm(dim=1)
                s = a if config.selection == "activation" else a * _unit_norms(w, side, width)
            rows.append(s.cpu())
        out[target] = torch.stack(rows)
    return out


def select_units(
    model: nn.Module, config: S2FTConfig, calibrate: Callable[[], torch.Tensor] | None = None
) -> dict[str, list[list[int]]]:
    """For each target, the selected units of every block (sorted unit indices)."""
    scores = _scores(model, config, calibrate)
    g = torch.Generator().manual_seed(config.seed)
    chosen: dict[str, list[list[int]]] = {}
    for target, frac in config.targets.items():
        s = scores[target]  # (blocks, units)
        n_blocks, n_units = s.shape
        if config.selection == "random":  # a random ranking
            s = torch.rand(s.shape, generator=g)
        elif config.order == "smallest":
            s = -s
        if config.allocation == "global":
            k = int(frac * s.numel())
            flat = s.flatten().argsort(descending=True, stable=True)[:k]
            picks = [sorted(int(u) % n_units for u in flat if u // n_units == b)
                     for b in range(n_blocks)]  # fmt: skip
        else:
            k = int(frac * n_units)
            picks = [sorted(s[b].argsort(descending=True, stable=True)[:k].tolist())
                     for b in range(n_blocks)]  # fmt: skip
            k *= n_blocks
        if k == 0:
            raise BeyondBPError(f"S²FT: {frac} of {target}'s {s.numel()} units selects none; "
                                "raise the fraction")  # fmt: skip
        chosen[target] = picks
    return chosen


# -- 2. co-permutation ---------------------------------------------------------------------------
def _rows(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return t.index_select(0, order)


@torch.no_grad()
def _permute(mod: nn.Linear, order: torch.Tensor, side: str) -> None:
    """Permute a linear layer's columns (``side="in"``) or rows (and bias) by ``order``."""
    order = order.to(mod.weight.device)
    if side == "in":
        mod.weight.data = mod.weight.data.index_select(1, order).contiguous()
    else:
        mod.weight.data = _rows(mod.weight.data, order).contiguous()
        if mod.bias is not None:
            mod.bias.data = _rows(mod.bias.data, order)


def _expand(units: torch.Tensor, width: int) -> torch.Tensor:
    """Unit indices to weight indices (a head of width 64 is 64 consecutive rows)."""
    return (units[:, None] * width + torch.arange(width)).flatten()


def ffn_order(up: list[int], down: list[int], n: int) -> torch.Tensor:
    """Channels selected for up only, for both, for down only, then the rest: both slices
    contiguous."""
    u, d = set(up), set(down)
    first = (
        [c for c in up if c not in d] + [c for c in up if c in d] + [c for c in down if c not in u]
    )
    return torch.tensor(first + [c for c in range(n) if c not in u | d], dtype=torch.int64)


def head_order(o_heads: list[int], v_groups: list[int], heads: int, groups: int):
    """Query-head and key-value-group orders under grouped-query attention.

    Groups move as wholes (selected key-value groups first, then by how many selected query
    heads they hold); inside a group, its selected query heads come first. Returns
    ``(query-head order, group order)``.
    """
    per = heads // groups
    sel = set(o_heads)
    count = [sum(h in sel for h in range(g * per, (g + 1) * per)) for g in range(groups)]
    gorder = sorted(range(groups), key=lambda g: (g not in v_groups, -count[g], g))
    qorder = []
    for g in gorder:
        members = list(range(g * per, (g + 1) * per))
        qorder += [h for h in members if h in sel] + [h for h in members if h not in sel]
    return torch.tensor(qorder, dtype=torch.int64), torch.tensor(gorder, dtype=torch.int64)


def permute_block(block: nn.Module, picks: dict[str, list[int]], sizes: dict[str, int]):
    """Co-permute one block for its selected units; the trained weight indices (in the new
    order) and the permutation of each target's permuted axis."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    mlp, attn = block.mlp, block.self_attn
    if "down_proj" in picks or "up_proj" in picks:
        up, down = picks.get("up_proj", []), picks.get("down_proj", [])
        order = ffn_order(up, down, sizes["channel"])
        for mod, side in ((mlp.gate_proj, "out"), (mlp.up_proj, "out"), (mlp.down_proj, "in")):
            _permute(mod, order, side)
        n_up = len(up)
        if up:
            out["up_proj"] = (torch.arange(n_up), order)
        if down:
            start = n_up - len(set(up) & set(down))
            out["down_proj"] = (torch.arange(start, start + len(down)), order)
    if "o_proj" in picks or "v_proj" in picks:
        hd = sizes["head_dim"]
        o_heads, v_groups = picks.get("o_proj", []), picks.get("v_proj", [])
        qorder, gorder = head_order(o_heads, v_groups, sizes["head"], sizes["kv-head"])
        q_cols, kv_rows = _expand(qorder, hd), _expand(gorder, hd)
        _permute(attn.q_proj, q_cols, "out")
        _permute(attn.k_proj, kv_rows, "out")
        _permute(attn.v_proj, kv_rows, "out")
        _permute(attn.o_proj, q_cols, "in")
        if o_heads:
            where = torch.tensor([int((qorder == h).nonzero()) for h in o_heads])
            out["o_proj"] = (_expand(where.sort().values, hd), q_cols)
        if v_groups:
            out["v_proj"] = (torch.arange(len(v_groups) * hd), kv_rows)
    return out


# -- 3. the model --------------------------------------------------------------------------------
class S2FTModel(nn.Module):
    """A causal LM with S²FT layers: call it as the base model; only the deltas train."""

    def __init__(self, base: nn.Module, config: S2FTConfig) -> None:
        super().__init__()
        self.base_model = base
        self.config_s2 = config
        self.adapters: dict[str, dict[str, tuple[str, torch.Tensor, torch.Tensor]]] = {}
        self.active: str | None = None  # the stored adapter fused into the weights, if any

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base_model, name)

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def s2_layers(self) -> dict[str, S2Linear]:
        return {n: m for n, m in self.base_model.named_modules() if isinstance(m, S2Linear)}

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (m.delta for m in self.s2_layers().values())

    def print_trainable_parameters(self) -> str:
        n = sum(p.numel() for p in self.trainable_parameters())
        total = sum(p.numel() for p in self.base_model.parameters())
        line = (
            f"trainable params: {n:,} || all params: {total:,} || trainable%: {100 * n / total:.4f}"
        )
        print(line)
        return line

    # -- the trained adapter ------------------------------------------------------------------
    def adapter_state(self) -> dict[str, tuple[str, torch.Tensor, torch.Tensor]]:
        """The trained update as ``{module: (side, indices in the original order, delta)}``
        (indices sorted, delta's slices in the same order)."""
        state = {}
        for name, m in self.s2_layers().items():
            if not len(m.idx):
                continue
            original = m.perm[m.idx.cpu()]
            order = original.argsort()
            delta = m.delta.detach().cpu()
            delta = delta[:, order] if m.side == "in" else delta[order]
            state[name] = (m.side, original[order], delta.clone())
        return state

    def save_adapter(self, path: str | Path) -> None:
        """A folder as PEFT writes one: ``adapter_config.json`` and ``adapter_model.safetensors``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = self.adapter_state()
        tensors = {f"{n}.idx": i for n, (_, i, _) in state.items()}
        tensors |= {f"{n}.delta": d.contiguous() for n, (_, _, d) in state.items()}
        meta = {"method": "s2ft", "config": self.config_s2.model_dump(),
                "sides": {n: s for n, (s, _, _) in state.items()}}  # fmt: skip
        (path / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=1))
        save_file(tensors, str(path / ADAPTER_WEIGHTS))

    def load_adapter(self, path: str | Path, name: str) -> None:
        """Read a saved adapter and keep it under ``name`` (for :meth:`switch` and serving)."""
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / ADAPTER_CONFIG).read_text())
            tensors = load_file(str(path / ADAPTER_WEIGHTS))
        except (OSError, ValueError) as e:
            raise BeyondBPError(f"{path}: not a readable S²FT adapter folder ({e}); save one "
                                "with save_adapter()") from e  # fmt: skip
        if meta.get("method") != "s2ft":
            raise BeyondBPError(f"{path}: not an S²FT adapter (method {meta.get('method')!r})")
        modules = dict(self.base_model.named_modules())
        adapter = {}
        for n, side in meta["sides"].items():
            if n not in modules:
                raise BeyondBPError(f"{path}: adapter module {n!r} is not in this model")
            adapter[n] = (side, tensors[f"{n}.idx"], tensors[f"{n}.delta"])
        self.adapters[name] = adapter

    # -- fusing and switching -----------------------------------------------------------------
    def fuse(self) -> None:
        """Write the trained slices into the weights (``W[:, idx] += C``); inference then
        costs what the base model costs."""
        for m in self.s2_layers().values():
            m.fuse()

    def unfuse(self) -> None:
        for m in self.s2_layers().values():
            m.unfuse()

    def _edit(self, adapter: dict, sign: float) -> None:
        modules = dict(self.base_model.named_modules())
        for n, (side, idx, delta) in adapter.items():
            m = modules[n]
            w = m.weight
            here = m.inverse[idx] if isinstance(m, S2Linear) else idx  # original → permuted
            dim = 1 if side == "in" else 0
            with torch.no_grad():
                w.index_add_(dim, here.to(w.device), delta.to(w), alpha=sign)

    def switch(self, name: str | None) -> None:
        """Make a stored adapter the one in the weights, in place: the current one's slices
        are subtracted and the new one's added (``W[:, idx] ± C``; no ``A @ B`` product)."""
        if name is not None and name not in self.adapters:
            raise BeyondBPError(
                f"no adapter {name!r}; loaded: {', '.join(self.adapters) or 'none'}"
            )
        if self.active is not None:
            self._edit(self.adapters[self.active], -1.0)
        if name is not None:
            self._edit(self.adapters[name], 1.0)
        self.active = name

    @contextmanager
    def serving(self, names: list[str | None]):
        """Inside the block, example ``i`` of the batch runs with adapter ``names[i]`` (None: the
        weights as they are): each adapter's examples are gathered, multiplied by its slices
        and scattered back, in one batched forward pass."""
        modules = dict(self.base_model.named_modules())
        plan: dict[str, list] = {}
        for a in sorted({n for n in names if n is not None}):
            if a not in self.adapters:
                raise BeyondBPError(f"no adapter {a!r}; loaded: {', '.join(self.adapters)}")
            rows = torch.tensor([i for i, n in enumerate(names) if n == a], dtype=torch.int64)
            for n, (_side, idx, delta) in self.adapters[a].items():
                m = modules[n]
                if not isinstance(m, S2Linear):
                    raise BeyondBPError(f"serving needs {n} as an S²FT layer: load the adapters "
                                        "into a model made by get_model with that target")  # fmt: skip
                dev = m.weight.device
                plan.setdefault(n, []).append(
                    (rows.to(dev), m.inverse[idx].to(dev), delta.to(m.weight))
                )
        try:
            for n, p in plan.items():
                modules[n].serve(p)
            yield self
        finally:
            for n in plan:
                modules[n].serve(None)

    def merge_and_unload(self) -> nn.Module:
        """The base model with the trained slices fused in and plain linear layers back (in
        the permuted order, which computes the same function)."""
        self.fuse()
        for name, m in list(self.s2_layers().items()):
            parent, _, child = name.rpartition(".")
            setattr(self.base_model.get_submodule(parent), child, m.base)
        return self.base_model


def get_model(
    base: nn.Module, config: S2FTConfig | None = None,
    calibrate: Callable[[], torch.Tensor] | None = None,
) -> S2FTModel:  # fmt: skip
    """Turn a LLaMA-style causal LM into an S²FT model, in place: select units (``calibrate``
    returns a batch's loss, for the data-driven selections), co-permute each block, replace the
    targets with :class:`S2Linear` layers and freeze everything else."""
    config = config or S2FTConfig()
    layers, sizes = blocks(base), _sizes(base)
    if sizes["head"] % sizes["kv-head"]:
        raise BeyondBPError("S²FT: the attention heads do not divide into key-value groups")
    chosen = select_units(base, config, calibrate)
    for p in base.parameters():
        p.requires_grad_(False)
    for b, block in enumerate(layers):
        picks = {t: units[b] for t, units in chosen.items()}
        trained = permute_block(block, picks, sizes)
        for target in config.targets:
            mod = _module(block, target)
            side = TARGETS[target][0]
            axis = mod.weight.shape[1 if side == "in" else 0]
            idx, perm = trained.get(target, (torch.zeros(0, dtype=torch.int64), None))
            if perm is None:
                perm = torch.arange(axis)
            layer = S2Linear(mod, side, idx)
            layer.register_buffer("perm", perm.cpu(), persistent=False)  # new position → original
            layer.register_buffer("inverse", perm.argsort().cpu(), persistent=False)
            parent = block.mlp if target in ("down_proj", "up_proj") else block.self_attn
            setattr(parent, target, layer)
    return S2FTModel(base, config)
