"""ForwardGNN's link prediction (Park et al., ICLR 2024, §3.4): graph layers that each learn to
tell edges from non-edges on their own, no gradient crossing layers.

The task (``cora_ml:links``) gives node pairs ``(u, v)`` labelled 1 (an edge held out of the
message-passing graph) or 0 (a sampled non-edge). Every layer computes
``z = ReLU(conv(norm(h_in), edges))`` from its detached, row-normalised input, as the node
rules do (:mod:`beyondbp.rules.forwardgnn`), and scores a pair from ``z_u ⊙ z_v``:

- ``sf-link`` (the reference's "FL-CE"): logit ``s = Σ_j z_uj z_vj``, binary cross-entropy over
  the training pairs;
- ``ff-link`` (the Forward-Forward form): goodness ``s = Σ_j (z_uj z_vj)² − θ`` under the same
  loss;
- ``sf-link-topdown``: ``sf-link`` whose layers also see the layer above's previous output
  (:class:`LinkTopDown`).

A pair's score is the mean over layers of ``σ(s)``; ROC-AUC on the validation pairs picks each
layer's best epoch (the reference's criterion). Layers train one after another (greedy) or
together, with the node rules' options and defaults.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.rules.base import SetupContext
from beyondbp.rules.forwardgnn import (
    FFOptions,
    SFOptions,
    _Layerwise,
    _unit_rows,
    check_setup,
)
from beyondbp.rules.optim import LayerOptimizers, OptimOptions
from beyondbp.rules.registry import register


def pair_products(z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
    """``z_u ⊙ z_v`` for each pair ``(u, v)`` (a row of ``pairs``)."""
    return z[pairs[:, 0]] * z[pairs[:, 1]]


def two_class(p: torch.Tensor) -> torch.Tensor:
    """An edge probability as the task's two-class scores ``(1 − p, p)``."""
    return torch.stack([1 - p, p], 1)


def edge_bce(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed binary cross-entropy of the edge probabilities (column 1)."""
    return F.binary_cross_entropy(scores[:, 1].clamp(1e-7, 1 - 1e-7), y.float(), reduction="sum")


class _LinkLayerwise(_Layerwise):
    """The greedy layer loop of the node rules on the bound graph itself (one view)."""

    tasks = ("graph-link",)
    stage_metric = "auc"

    def views(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [self.net.x], [self.net.edge_index]

    def pair_logits(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def local_loss(self, outs: list[torch.Tensor]) -> torch.Tensor:
        logits = self.pair_logits(outs[0], self.nodes)  # the training pairs
        return F.binary_cross_entropy_with_logits(logits, self.labels.float())

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        edges = self.net.edge_index  # the split's message-passing edges (the task sets them)
        outs = self._outputs(("predict", id(edges)), [self.net.x], [edges])
        p = torch.stack([self.pair_logits(o[0], x).sigmoid() for o in outs]).mean(0)
        return two_class(p)

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return edge_bce(scores, y)


@register("sf-link", "ForwardGNN link prediction: per-layer BCE of z_u·z_v (Park 2024)")
class SFLink(_LinkLayerwise):
    Options = SFOptions
    options: SFOptions

    def pair_logits(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return pair_products(z, pairs).sum(1) / self.options.temperature


@register("ff-link", "ForwardGNN link prediction, FF form: goodness of z_u⊙z_v (Park 2024)")
class FFLink(_LinkLayerwise):
    Options = FFOptions
    options: FFOptions

    def pair_logits(self, z: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        return pair_products(z, pairs).pow(2).sum(1) - self.options.theta


class LinkTopDownOptions(OptimOptions):
    weight_decay: float = Field(
        0.0, ge=0, description="the reference's link top-down model has none"
    )
    alternating: bool = Field(True, description="even layers first, then odd ones")
    test_steps: int = Field(10, ge=1, description="inference iterations")
    skip_steps: int = Field(2, ge=0, description="the first iterations left out of the score")
    grad_clip: float | None = Field(None, gt=0, description="clip each layer's gradient norm")


@register("sf-link-topdown", "ForwardGNN link prediction with top-down input (Park 2024)")
class LinkTopDown(_LinkLayerwise):
    """``sf-link`` whose layer j (below the top) takes ``[norm(s_j), norm(s_{j+2})]``: its input
    from below and the layer above's output from the previous update (its *state*); the top
    layer takes its input from below only. Every step updates every layer once (``alternating``:
    even layers first, odd ones then on their neighbours' fresh outputs), so information flows
    down one layer per step; states start from one bottom-up pass with the top-down part zero.
    Inference starts the same way, runs ``test_steps`` updates and averages σ(z_u·z_v) over the
    layers and the steps after the first ``skip_steps``."""

    Options = LinkTopDownOptions  # type: ignore[assignment]
    options: LinkTopDownOptions  # type: ignore[assignment]
    stateful = ("layers", "states")

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        check_setup(self.name, net, ctx)
        self.net = net
        self.nodes, self.labels = ctx.train.x.to(ctx.device), ctx.train.y.to(ctx.device)
        depth = len(net.blocks)
        for j in range(depth - 1):
            net.widen_input(net.width, k=j)
        self.layers = LayerOptimizers((b.parameters() for b in net.blocks), self.options,
                                      ctx.max_epochs)  # fmt: skip
        self.states = self._bottom_up(net.edge_index)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def restored(self) -> None:
        pass

    def _run(self, j: int, below: torch.Tensor, above: torch.Tensor | None, edges: torch.Tensor):  # type: ignore[no-untyped-def]
        h = _unit_rows(below)
        if above is not None:
            h = torch.cat([h, _unit_rows(above)], 1)
        return self.net.layer(j, h, edges)

    @torch.no_grad()
    def _bottom_up(self, edges: torch.Tensor) -> list[torch.Tensor]:
        """``[x, z_1 .. z_L]`` from one pass up, the top-down inputs zero."""
        states, h, depth = [self.net.x], self.net.x, len(self.net.blocks)
        for j in range(depth):
            above = h.new_zeros(len(h), self.net.width) if j + 1 < depth else None
            h = self._run(j, h, above, edges)
            states.append(h)
        return states

    def _order(self) -> list[int]:
        depth = len(self.net.blocks)
        if self.options.alternating:
            return [j for j in range(depth) if j % 2 == 0] + [j for j in range(depth) if j % 2]
        return list(range(depth))

    def _sweep(self, states: list[torch.Tensor], edges: torch.Tensor, train: bool) -> tuple:  # type: ignore[type-arg]
        """One update of every layer from ``states``: (new states, the layers' outputs, losses)."""
        depth = len(self.net.blocks)
        new: list[torch.Tensor | None] = [states[0]] + [None] * depth
        losses = []
        for j in self._order():
            fresh = self.options.alternating
            below = new[j] if fresh and new[j] is not None else states[j]
            above = None
            if j + 1 < depth:
                above = new[j + 2] if fresh and new[j + 2] is not None else states[j + 2]
                above = above.detach()
            z = self._run(j, below.detach(), above, edges)
            if train:
                loss = F.binary_cross_entropy_with_logits(
                    pair_products(z, self.nodes).sum(1), self.labels.float()
                )
                loss.backward()
                if self.options.grad_clip is not None:
                    clip = self.options.grad_clip
                    torch.nn.utils.clip_grad_norm_(self.net.blocks[j].parameters(), clip)
                self.layers.step(j)
                losses.append(loss.detach())
            new[j + 1] = z.detach()
        return new, new[1:], losses

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        self.states, _, losses = self._sweep(self.states, self.net.edge_index, train=True)
        return {"loss": torch.stack(losses).mean()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        edges = self.net.edge_index
        states, total, counted = self._bottom_up(edges), 0.0, 0
        for t in range(self.options.test_steps):
            states, outs, _ = self._sweep(states, edges, train=False)
            if t >= self.options.skip_steps:
                total = total + sum(pair_products(z, x).sum(1).sigmoid() for z in outs)
                counted += len(outs)
        return two_class(total / max(counted, 1))  # type: ignore[operator]

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.layers.end_epoch(val.get("loss"))

    def step_stage(self) -> object:
        return None

    def done(self) -> str | None:
        return None

    @property
    def greedy(self) -> bool:
        return False
