"""Cascaded-Forward, CaFo (Zhao et al. 2023, arXiv 2303.09728): a cascade of blocks, each with its
own predictor; no gradient crosses blocks.

Each block's predictor is a linear map of its flattened, detached output to the classes. The
blocks are either frozen at their random initialisation (``rand``) or first trained for
``dfa_epochs`` epochs by direct feedback alignment through an auxiliary linear layer on the last
block (``dfa``). Predictors learn with cross-entropy (``ce``), the sparsemax loss (``sl``), or
mean squared error in closed form (``mse``: ridge least squares on the features of one epoch,
solved at the epoch's end). Prediction sums the predictors' softmax outputs (the official code)
or their logits (Spyra 2025). With ``predictor_patience`` each predictor stops on its own when its
validation cross-entropy has not improved for that many epochs and keeps its best epoch's weights
(Spyra 2025: patience 6-8); training ends when every predictor has stopped.

While the predictors learn, the frozen blocks run in train mode by default (``frozen_blocks``):
BatchNorm normalises with each batch's statistics and its running statistics keep moving, though
no weight does. ``frozen_blocks="eval"`` holds them in eval mode, as Spyra's code does; for
``rand`` blocks BatchNorm then keeps its initial running statistics (mean 0, variance 1).
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
from beyondbp.rules.dfa import dfa_backward, feedback_matrices
from beyondbp.rules.optim import OptimOptions, make_optimizer
from beyondbp.rules.registry import register


class Options(OptimOptions):
    block_training: Literal["rand", "dfa"] = "rand"
    dfa_epochs: int = Field(10, ge=1, description="epochs of DFA block training (dfa only)")
    dfa_lr: float = Field(1e-4, gt=0, description="learning rate of the DFA block phase (Adam)")
    loss: Literal["ce", "mse", "sl"] = "ce"
    ridge: float = Field(1e-3, ge=0, description="mse: ridge λ of the least-squares predictors")
    aggregate: Literal["softmax", "logits"] = Field(
        "softmax", description="sum of the predictors' softmax (official code) or logits (Spyra)"
    )
    predictor_patience: int | None = Field(
        None, ge=1, description="stop each predictor when its validation CE has not improved "
        "for this many epochs, keeping its best weights (Spyra: 6-8); None: all train to the end"
    )  # fmt: skip
    frozen_blocks: Literal["train", "eval"] = Field(
        "train", description="mode of the frozen blocks while the predictors learn: 'train' "
        "(BatchNorm on batch statistics, its running ones still updated) or 'eval' (Spyra's "
        "code: running statistics, fixed)"
    )  # fmt: skip


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of each row onto the simplex (Martins & Astudillo 2016)."""
    return (z - _tau(z)).clamp_min(0)


def _tau(z: torch.Tensor) -> torch.Tensor:
    zs, _ = z.sort(1, descending=True)
    k = torch.arange(1, z.shape[1] + 1, device=z.device, dtype=z.dtype)
    support = (1 + k * zs) > zs.cumsum(1)  # the sorted entries that stay positive
    size = support.sum(1, keepdim=True)
    return (zs.cumsum(1).gather(1, size - 1) - 1) / size.to(z.dtype)


def sparsemax_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean sparsemax loss; its gradient w.r.t. ``z`` is sparsemax(z) − onehot(y)."""
    tau = _tau(z)
    in_support = (z > tau).to(z.dtype).detach()
    quad = 0.5 * (in_support * (z.pow(2) - tau.pow(2))).sum(1)
    return (quad - z.gather(1, y[:, None]).squeeze(1) + 0.5).mean()


@register(
    "cafo", "Cascaded-Forward: per-block predictors on random or DFA-trained blocks (Zhao 2023)"
)
class CaFo(Rule):
    Options = Options
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-5, 1e-1),
        "dfa_lr": LogUniform(1e-6, 1e-2),
        "dfa_epochs": IntUniform(1, 30),
        "ridge": LogUniform(1e-6, 1.0),
        "loss": Categorical(("ce", "mse", "sl")),
    }
    options: Options
    stateful = ("opt", "gram", "cross", "patience", "stopped", "dfa_opt", "feedback")
    needs_blocks = True

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        o = self.options
        self.net = as_blocknet(net)
        shapes = self.net.feature_shapes(meta.input_shape)
        self.classes = meta.classes
        self.predictors = nn.ModuleList(nn.Linear(s.numel(), meta.classes) for s in shapes)
        # the epoch counter decides what predicts (the DFA auxiliary layer, then the predictors):
        # a buffer among the modules, so a restored best epoch brings its counter along
        self.predictors.register_buffer("epoch", torch.tensor(0, device=ctx.device))
        self.opt = make_optimizer(self.predictors.parameters(), o)
        if o.block_training == "dfa":
            self.aux = nn.Linear(shapes[-1].numel(), meta.classes)
            self.feedback = feedback_matrices(shapes, meta.classes, ctx.seed).to(ctx.device)
            dfa_params = list(self.net.blocks.parameters()) + list(self.aux.parameters())
            self.dfa_opt = torch.optim.Adam(dfa_params, lr=o.dfa_lr)
        self.net.blocks.requires_grad_(False)
        self._reset_normal_equations()
        k = len(self.predictors)
        # per-predictor early stopping on its own validation CE, restoring its best weights
        self.patience = [Patience(o.predictor_patience) for _ in range(k)]
        self.stopped = [False] * k

    def modules(self) -> dict[str, nn.Module]:
        if self.options.block_training == "dfa":
            return {"net": self.net, "predictors": self.predictors, "aux": self.aux}
        return {"net": self.net, "predictors": self.predictors}

    @property
    def epoch(self) -> int:
        return int(self.predictors.epoch)

    @property
    def training_blocks(self) -> bool:
        return self.options.block_training == "dfa" and self.epoch < self.options.dfa_epochs

    def step_stage(self) -> object:
        return self.training_blocks  # the DFA phase's steps, then the predictors'

    def warming_up(self) -> bool:
        # the DFA phase predicts through the auxiliary head: not the CaFo model that is tested
        return self.training_blocks

    def _reset_normal_equations(self) -> None:
        self.gram: list[torch.Tensor | None] = [None] * len(self.predictors)
        self.cross: list[torch.Tensor | None] = [None] * len(self.predictors)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if not self.training_blocks and self.options.frozen_blocks == "eval":
            self.net.eval()  # frozen blocks at their running statistics while predictors learn
        if self.training_blocks:
            blocks = self.net.blocks
            blocks.requires_grad_(True)
            self.dfa_opt.zero_grad(set_to_none=True)
            loss, logits = dfa_backward(blocks, _Flat(self.aux), self.feedback, x, y)
            self.dfa_opt.step()
            blocks.requires_grad_(False)
            return {"loss": loss, "correct": (logits.argmax(1) == y).sum()}
        with torch.no_grad():
            feats = [f.flatten(1) for f in self.net.features(x)]
        if self.options.loss == "mse":
            return self._accumulate(feats, y)
        self.opt.zero_grad(set_to_none=True)
        losses = []
        for f, p, stopped in zip(feats, self.predictors, self.stopped, strict=True):
            if stopped:
                continue
            z = p(f)
            loss = F.cross_entropy(z, y) if self.options.loss == "ce" else sparsemax_loss(z, y)
            loss.backward()
            losses.append(loss.detach())
        if not losses:  # every predictor has stopped
            return {}
        self.opt.step()
        return {"loss": torch.stack(losses).mean()}

    def _accumulate(self, feats: list[torch.Tensor], y: torch.Tensor) -> dict[str, Any]:
        """Add a batch to each predictor's normal equations [X 1]ᵀ[X 1] and [X 1]ᵀY."""
        target = F.one_hot(y, self.classes).double()
        for i, f in enumerate(feats):  # float64: the Gram matrix is often ill-conditioned
            if self.stopped[i]:
                continue
            xb = torch.cat([f.double(), torch.ones(len(f), 1, device=f.device).double()], 1)
            g, c = xb.T @ xb, xb.T @ target
            self.gram[i] = g if self.gram[i] is None else self.gram[i] + g
            self.cross[i] = c if self.cross[i] is None else self.cross[i] + c
        return {}

    def solve_least_squares(self) -> None:
        """Set each predictor to the ridge least-squares solution of the accumulated equations."""
        for i, p in enumerate(self.predictors):
            g, c = self.gram[i], self.cross[i]
            if g is None or c is None:
                continue
            reg = self.options.ridge * torch.eye(len(g), device=g.device, dtype=g.dtype)
            reg[-1, -1] = 0  # the bias is not penalised
            # pseudo-inverse of the symmetric matrix: exact also when a feature is always zero
            w = torch.linalg.pinv(g + reg, hermitian=True) @ c
            with torch.no_grad():
                p.weight.copy_(w[:-1].T.to(p.weight.dtype))
                p.bias.copy_(w[-1].to(p.bias.dtype))
        self._reset_normal_equations()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.training_blocks:
            return self.aux(self.net.features(x)[-1].flatten(1))
        outs = self._predictor_scores(x)
        if self.options.aggregate == "softmax":
            return torch.stack([z.softmax(1) for z in outs]).sum(0)
        return torch.stack(outs).sum(0)

    def part_scores(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        if self.options.predictor_patience is None or self.training_blocks:
            return None
        return self._predictor_scores(x)

    def _predictor_scores(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's predictor on its (flattened) block output."""
        return [p(f.flatten(1)) for f, p in zip(self.net.features(x), self.predictors, strict=True)]

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.options.aggregate == "softmax" and not self.training_blocks:
            # scores are a sum of probabilities: the loss of their mean
            probs = scores / len(self.predictors)
            return F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")
        return F.cross_entropy(scores, y, reduction="sum")

    def finish_epoch(self) -> None:
        if self.options.loss == "mse" and not self.training_blocks:
            self.solve_least_squares()

    def end_epoch(self, epoch: int, val: dict[str, Any]) -> None:
        self.predictors.epoch.fill_(epoch + 1)
        losses, patience = val.get("part_losses"), self.options.predictor_patience
        if losses is None or patience is None:
            return
        for i, loss in enumerate(losses):
            if self.stopped[i]:
                continue
            p = self.patience[i]
            p.update(loss, snapshot=self.predictors[i].state_dict)
            if p.exhausted:  # stop it at its best validation epoch
                self.predictors[i].load_state_dict(p.best_state)
                self.stopped[i] = True

    def done(self) -> str | None:
        if all(self.stopped):
            return (
                f"every predictor stopped: no validation improvement for "
                f"{self.options.predictor_patience} epochs"
            )
        return None


class _Flat(nn.Module):
    """The auxiliary DFA output layer on the flattened last block."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))
