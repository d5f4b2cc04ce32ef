"""Forward-Forward (Hinton 2022, arXiv 2212.13345), supervised label-in-input variant.

The one-hot label replaces the first ``classes`` input values. Positive data carries the true
label, negative data a label that is guaranteed wrong (``(y + k) mod C`` with ``k`` in 1..C−1, or
the wrong label the network currently finds best). Each layer's goodness is the sum of its squared
activities; ``p(positive) = σ(goodness − θ)`` with a binary cross-entropy per layer. The activity
vector is length-normalised before it passes on (option ``input_norm``: the first layer's input
too), and each layer's input is detached: no gradient crosses layers, and each layer's backward
runs before the next layer's forward.

Inputs with different labels differ only in the label values, so when the first block starts
with a linear layer its product with the image is computed once per batch and each label adds
its own column of the weight matrix (the same numbers, one matmul instead of two for training
and ten for goodness prediction; autograd sums the shared product's gradient).

Prediction: ``goodness`` accumulates each candidate label's goodness over the layers (one forward
pass per class), ``softmax`` is a linear head on the normalised activities of layers 2..L from a
neutral-label input (one pass), trained beside the layers on detached features.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.nets import as_blocknet
from beyondbp.rules.base import Categorical, Distribution, LogUniform, Rule, SetupContext
from beyondbp.rules.optim import LayerOptimizers, OptimOptions
from beyondbp.rules.registry import register


class Options(OptimOptions):
    # loeweX's reimplementation: SGD lr 1e-3, momentum 0.9, weight decay 3e-4, threshold = units
    optimizer: Literal["adam", "adamw", "sgd"] = "sgd"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(3e-4, ge=0)
    goodness: Literal["sum", "mean"] = Field(
        "sum",
        description="goodness = sum of squared activities (Hinton), or their mean (a softer "
        "logit: the sum divided by the layer's units)",
    )
    threshold: float | None = Field(
        None, description="θ; None: the number of units of the layer (goodness sum) or 1 (mean)"
    )
    normalize: bool = Field(True, description="length-normalise activities between layers")
    input_norm: bool = Field(
        False,
        description="normalise the first layer's input (image and label) the same way, as "
        "loeweX's reimplementation does",
    )
    relu_grad: Literal["relu", "identity"] = Field(
        "relu",
        description="the blocks' ReLU gradient: the true one (none through a unit that is off) "
        "or passed through unchanged (straight-through, as in loeweX's reimplementation: "
        "units that are off still learn)",
    )
    negatives: Literal["random", "hardest"] = Field(
        "random", description="a random wrong label, or the wrong label with the most goodness"
    )
    peer_norm: float = Field(0.03, ge=0, description="peer normalisation weight (0: off)")
    predict: Literal["softmax", "goodness"] = Field(
        "softmax", description="linear head on a neutral-label pass, or goodness over the labels"
    )
    head_lr: float = Field(
        1e-3,
        gt=0,
        description="learning rate of the softmax head; its input is thousands of unit-RMS "
        "values, so 1e-2 is already noisy for SGD",
    )
    head_optimizer: Literal["sgd", "adam", "adamw"] = Field(
        "sgd", description="the head's optimiser: SGD with momentum 0.9, or Adam/AdamW (Spyra's "
        "code: AdamW, lr 0.0111, weight decay 0.0051 on Fashion-MNIST 4x2000)"
    )  # fmt: skip
    head_weight_decay: float = Field(0.0, ge=0, description="the head's weight decay")
    head_schedule: Literal["none", "same"] = Field(
        "none", description="the head's learning rate: constant, or the layers' schedule"
    )
    goodness_from: int = Field(
        1, ge=0, description="first layer (0-based) whose goodness counts in goodness prediction"
    )


def rms_normalise(h: torch.Tensor) -> torch.Tensor:
    """Each row scaled to root-mean-square 1."""
    return h / (h.pow(2).mean(1, keepdim=True).sqrt() + 1e-8)


def embed_label(x: torch.Tensor, labels: torch.Tensor | None, classes: int) -> torch.Tensor:
    """Flatten ``x`` and overwrite its first ``classes`` values with the one-hot label
    (``None``: the neutral label, 1/classes everywhere)."""
    x = x.flatten(1).clone()
    if labels is None:
        x[:, :classes] = 1.0 / classes
    else:
        x[:, :classes] = F.one_hot(labels, classes).to(x.dtype)
    return x


@register("ff", "Forward-Forward: per-layer goodness of positive vs negative data (Hinton 2022)")
class ForwardForward(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-5, 1e-1),
        "weight_decay": LogUniform(1e-6, 1e-2),
        "peer_norm": LogUniform(1e-3, 1e-1),
        "head_lr": LogUniform(1e-4, 1e-1),
        "optimizer": Categorical(("sgd", "adamw")),
    }
    options: Options
    stateful = ("layers", "head_opts", "running")
    needs_blocks = True

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        self.net = as_blocknet(net)
        if meta.input_dim <= meta.classes:
            raise BeyondBPError(f"ff writes the label into the input, which needs more than "
                                f"{meta.classes} input values")  # fmt: skip
        shapes = self.net.feature_shapes(meta.input_shape)
        if any(len(s) != 1 for s in shapes):
            raise BeyondBPError("ff is defined for MLP blocks (flat activities); use an mlp net")
        self.classes = meta.classes
        self.widths = [s[0] for s in shapes]
        self.thresholds = [self._threshold(w) for w in self.widths]
        head_in = sum(self.widths[1:]) or self.widths[0]
        self.head = nn.Linear(head_in, meta.classes)
        self.running = [torch.zeros(w, device=ctx.device) for w in self.widths]
        # one optimiser per layer, stepped right after the layer's backward (frees its gradients)
        groups = [block.parameters() for block in self.net.blocks]
        self.layers = LayerOptimizers(groups, self.options, ctx.max_epochs)
        o = self.options
        head_o = o.model_copy(update={
            "optimizer": o.head_optimizer, "lr": o.head_lr, "weight_decay": o.head_weight_decay,
            "momentum": 0.9, "nesterov": False,
            "schedule": o.schedule if o.head_schedule == "same" else "none",
        })  # fmt: skip
        self.head_opts = LayerOptimizers([self.head.parameters()], head_o, ctx.max_epochs)
        if self.options.relu_grad == "identity" and not _pass_relu_gradients(self.net):
            raise BeyondBPError("relu_grad=identity: the net has no nn.ReLU to pass gradients "
                                "through; use a ReLU net or relu_grad=relu")  # fmt: skip
        self.split_first = _split_first_linear(self.net.blocks[0])

    @property
    def head_opt(self) -> torch.optim.Optimizer:
        """The softmax head's optimiser."""
        return self.head_opts.opts[0]

    def _threshold(self, units: int) -> float:
        if self.options.threshold is not None:
            return self.options.threshold
        return float(units) if self.options.goodness == "sum" else 1.0

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net, "head": self.head}

    def _first_layer(self, x: torch.Tensor, labels: list[torch.Tensor | None]) -> torch.Tensor:
        """The first block's activities for ``x`` under each set of labels (None: neutral),
        concatenated along the batch."""
        norm = self.options.input_norm
        if self.split_first is None:
            inp = torch.cat([embed_label(x, lab, self.classes) for lab in labels])
            return self.net.blocks[0](rms_normalise(inp) if norm else inp)
        linear, rest = self.split_first
        c = self.classes
        image = x.flatten(1).clone()
        image[:, :c] = 0
        shared = F.linear(image, linear.weight)  # W·image, once for every label
        label_cols = linear.weight[:, :c].T  # (classes, units): what each one-hot label adds
        image_sq = image.pow(2).sum(1, keepdim=True) if norm else None
        parts = []
        for lab in labels:
            part = shared + (label_cols.mean(0) if lab is None else label_cols[lab])
            if norm:  # the labelled input's RMS, from the image's squares and the label's
                label_sq = 1.0 / c if lab is None else 1.0
                part = part / ((image_sq + label_sq) / image.shape[1]).sqrt().add(1e-8)
            parts.append(part if linear.bias is None else part + linear.bias)
        return rest(torch.cat(parts))

    def _layers(self, x: torch.Tensor, labels: torch.Tensor | None) -> list[torch.Tensor]:
        """Each layer's activities for ``x`` with ``labels`` written in, input normalised
        between layers."""
        outs = [self._first_layer(x, [labels])]
        for block in self.net.blocks[1:]:
            outs.append(block(self._norm(outs[-1])))
        return outs

    def _norm(self, h: torch.Tensor) -> torch.Tensor:
        """Keep the direction only: scale to root-mean-square 1 (length sqrt(units), the scale
        at which a threshold equal to the number of units is natural)."""
        return rms_normalise(h) if self.options.normalize else h

    @torch.no_grad()
    def goodness_per_label(self, x: torch.Tensor) -> torch.Tensor:
        """(N, classes): goodness summed over layers ``goodness_from``.., for every label."""
        n = len(x)
        labels = [
            torch.full((n,), c, device=x.device, dtype=torch.long) for c in range(self.classes)
        ]
        h = self._first_layer(x, labels)  # (classes · N, units): every label in one batch
        layers = [h]
        for block in self.net.blocks[1:]:
            layers.append(block(self._norm(layers[-1])))
        start = min(self.options.goodness_from, len(layers) - 1)
        goodness = sum(self._goodness(h) for h in layers[start:])
        return goodness.view(self.classes, n).T

    def _goodness(self, h: torch.Tensor) -> torch.Tensor:
        squares = h.pow(2)
        return squares.sum(1) if self.options.goodness == "sum" else squares.mean(1)

    def negative_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Labels that are never the true one."""
        if self.options.negatives == "hardest":
            g = self.goodness_per_label(x)
            g[torch.arange(len(y)), y] = -float("inf")
            return g.argmax(1)
        shift = torch.randint(1, self.classes, y.shape, device=y.device)
        return (y + shift) % self.classes

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        o = self.options
        neg = self.negative_labels(x, y)
        target = torch.cat([torch.ones(len(y)), torch.zeros(len(y))]).to(x.device)
        losses = []
        h = self._first_layer(x, [y, neg])  # positive and negative data in one batch
        for i, block in enumerate(self.net.blocks):
            if i:
                h = block(self._norm(h.detach()))
            logits = self._goodness(h) - self.thresholds[i]
            loss = F.binary_cross_entropy_with_logits(logits, target)
            if o.peer_norm > 0:
                mean = 0.9 * self.running[i] + 0.1 * h[: len(y)].mean(0)
                self.running[i] = mean.detach()
                loss = loss + o.peer_norm * (mean.mean() - mean).pow(2).mean()
            loss.backward()  # frees this layer's graph before the next layer runs
            self.layers.step(i)
            losses.append(loss.detach())
        logs = {"loss": torch.stack(losses).mean()}
        if o.predict == "softmax":
            # the head learns on detached features of a neutral-label pass; its input (layers
            # 2..L) grows with depth, unlike the layers' own training
            with torch.no_grad():
                feats = self._head_features(x)
            head_logits = self.head(feats)
            head_loss = F.cross_entropy(head_logits, y)
            head_loss.backward()
            self.head_opts.step(0)
            logs["head_loss"] = head_loss.detach()
            logs["correct"] = (head_logits.detach().argmax(1) == y).sum()
        return logs

    def _head_features(self, x: torch.Tensor) -> torch.Tensor:
        layers = self._layers(x, None)
        used = layers[1:] or layers
        return torch.cat([self._norm(h) for h in used], 1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.options.predict == "goodness":
            return self.goodness_per_label(x)
        return self.head(self._head_features(x))

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.layers.end_epoch(val.get("loss"))
        self.head_opts.end_epoch(val.get("loss"))


class _PassThroughReLU(nn.Module):
    """ReLU forward, identity backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (x.clamp_min(0) - x).detach()


def _pass_relu_gradients(module: nn.Module) -> int:
    """Swap every ``nn.ReLU`` inside ``module`` for a straight-through one (no parameters: the
    net's state dict is unchanged); returns how many were swapped."""
    swapped = 0
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, _PassThroughReLU())
            swapped += 1
        else:
            swapped += _pass_relu_gradients(child)
    return swapped


def _split_first_linear(block: nn.Module) -> tuple[nn.Linear, nn.Module] | None:
    """(the linear layer, what follows it) when a block is [Flatten,] Linear, ...; else None."""
    if not isinstance(block, nn.Sequential):
        return None
    layers = [m for m in block if not isinstance(m, nn.Flatten)]
    if not layers or not isinstance(layers[0], nn.Linear) or isinstance(block[-1], nn.Flatten):
        return None
    return layers[0], nn.Sequential(*layers[1:])
