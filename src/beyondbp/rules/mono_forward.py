"""Mono-Forward (Gong, Li, Abdulla 2025, arXiv 2501.09238): per-layer class projections trained
with a local cross-entropy; no gradient crosses layers.

Layer i computes ``a_i = block_i(a_{i-1})`` from the *detached* ``a_{i-1}``; a learnable projection
``M_i`` (classes × d_i, no bias) scores the classes, ``G_i = a_i M_iᵀ``, and the local loss
``L_i = CE(G_i, y)`` updates only ``(block_i, M_i)``. Each layer's backward runs as soon as its
forward is done, so only one layer's graph is alive at a time: memory does not grow with depth.
Inference is one forward pass: argmax of the last layer's scores (or of their sum over layers).

Layer schedule: ``joint`` updates every layer on every batch; ``greedy`` trains layer 1, then
layer 2 on layer 1's frozen output, and so on (Spyra 2025's code). A greedy layer trains for
``epochs_per_layer`` epochs, or, with ``layer_patience``, until its validation loss has not
improved for that many epochs; it then gets its best epoch's weights back and the next layer
starts. The validation loss is that of the rule's prediction, which for ``predict_with=last`` is
exactly the local loss of the layer in training. Training ends when the last layer is done.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.nets import as_blocknet
from beyondbp.patience import Patience
from beyondbp.rules.base import (
    Categorical,
    Distribution,
    IntUniform,
    LogUniform,
    Rule,
    SetupContext,
)
from beyondbp.rules.optim import LayerOptimizers, OptimOptions
from beyondbp.rules.registry import register


class Options(OptimOptions):
    lr: float = Field(3.87e-4, gt=0, description="Spyra's tuned value for Fashion-MNIST 2x1000")
    layer_schedule: Literal["joint", "greedy"] = Field(
        "joint",
        description="joint: every layer updates on every batch; greedy: layer 1 for "
        "epochs_per_layer epochs, then layer 2, ... (Spyra's code)",
    )
    epochs_per_layer: int = Field(
        12, ge=1, description="greedy: the most epochs a layer trains (Spyra's tuned value)"
    )
    layer_patience: int | None = Field(
        None,
        ge=1,
        description="greedy: move to the next layer when the validation loss has not improved "
        "for this many epochs (None: always epochs_per_layer)",
    )
    predict_with: Literal["last", "sum"] = Field(
        "last", description="last layer's scores (the paper) or their sum over layers"
    )


@register(
    "mono-forward", "Mono-Forward: per-layer class projections, local cross-entropy (Gong 2025)"
)
class MonoForward(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-5, 1e-2),
        "weight_decay": LogUniform(1e-8, 1e-3),
        "epochs_per_layer": IntUniform(2, 20),
        "predict_with": Categorical(("last", "sum")),
    }
    options: Options
    stateful = ("layers", "stage", "stage_epochs", "finished")
    needs_blocks = True

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = as_blocknet(net)
        widths = [shape.numel() for shape in self.net.feature_shapes(meta.input_shape)]
        self.projections = nn.ModuleList(nn.Linear(w, meta.classes, bias=False) for w in widths)
        # the deepest layer trained so far, the one that predicts: a buffer among the modules, so
        # the best-epoch weights the harness restores come with the layer they belong to
        greedy = self.options.layer_schedule == "greedy"
        start = 0 if greedy else len(widths) - 1
        self.projections.register_buffer("layer", torch.tensor(start, device=ctx.device))
        # the greedy stage: its epochs, and patience on the layer's validation loss
        self.stage_epochs = 0
        self.stage = Patience(self.options.layer_patience)
        self.finished: str | None = None
        # one optimiser per layer, stepped right after the layer's backward: its gradients are
        # freed before the next layer runs (the same update as one optimiser over all layers)
        groups = [
            [*block.parameters(), *proj.parameters()]
            for block, proj in zip(self.net.blocks, self.projections, strict=True)
        ]
        horizon = self.options.epochs_per_layer if greedy else ctx.max_epochs
        self.layers = LayerOptimizers(groups, self.options, horizon)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net, "projections": self.projections}

    def _active_layers(self) -> range:
        """The layers that learn now: all (joint) or one at a time (greedy)."""
        if self.options.layer_schedule == "joint":
            return range(len(self.projections))
        k = int(self.projections.layer)
        return range(k, k + 1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        active = self._active_layers()
        a = x
        losses = []
        for i, block in enumerate(self.net.blocks[: active.stop]):
            if i in active:
                a = block(a.detach())
                loss = F.cross_entropy(self.projections[i](a.flatten(1)), y)
                loss.backward()  # frees this layer's graph before the next layer runs
                self.layers.step(i)
                losses.append(loss.detach())
            else:
                with torch.no_grad():
                    a = block(a)
        # the loss of the layer that predicts (the deepest one trained so far)
        return {"loss": losses[-1], "local_loss_mean": torch.stack(losses).mean()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        last = int(self.projections.layer)
        scores = []
        a = x
        for i, block in enumerate(self.net.blocks[: last + 1]):
            a = block(a)
            if self.options.predict_with == "sum" or i == last:
                scores.append(self.projections[i](a.flatten(1)))
        return torch.stack(scores).sum(0)

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.layers.end_epoch(val.get("loss"), self._active_layers())
        if self.options.layer_schedule == "greedy":
            self._greedy_stage(val.get("loss"))

    def _greedy_stage(self, val_loss: float | None) -> None:
        """Count the epoch of the layer in training; move on when its budget or patience ends."""
        o, st = self.options, self.stage
        k = int(self.projections.layer)
        self.stage_epochs += 1
        if o.layer_patience is not None and val_loss is not None:
            st.update(val_loss, snapshot=lambda: self._layer_state(k))
        if self.stage_epochs < o.epochs_per_layer and not st.exhausted:
            return
        if st.best_state is not None:  # the layer's best validation epoch
            self.net.blocks[k].load_state_dict(st.best_state["block"])
            self.projections[k].load_state_dict(st.best_state["projection"])
        why = f"no improvement for {o.layer_patience} epochs" if st.exhausted else "epoch budget"
        if k + 1 < len(self.projections):
            self.projections.layer.fill_(k + 1)
            self.stage_epochs, self.stage = 0, Patience(o.layer_patience)
        else:
            self.finished = f"greedy layer schedule complete (last layer: {why})"

    def _layer_state(self, k: int) -> dict[str, Any]:
        return {"block": self.net.blocks[k].state_dict(),
                "projection": self.projections[k].state_dict()}  # fmt: skip

    def step_stage(self) -> object:
        return int(self.projections.layer) if self.options.layer_schedule == "greedy" else None

    def done(self) -> str | None:
        return self.finished
