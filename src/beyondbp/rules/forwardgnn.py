"""Forward learning of GNNs (ForwardGNN: Park, Wang, Ghaderi, Lee, Kim, Kang, ICLR 2024,
arXiv 2403.11004): graph layers trained by local losses, no gradient crossing layers.

Every layer computes ``h = ReLU(conv(norm(h_in), edges))`` from its *detached* input, where
``norm`` scales each node's row to unit ℓ2 length, and learns from a loss of its own output alone.
Three ways to give a layer a label to learn from:

- ``sf`` (single forward): one virtual node per class, linked (both ways) to the training nodes
  of that class, with fixed random features. A layer's class embeddings are its outputs at the
  virtual nodes, ``c_k = h_{N+k}``; its loss is the cross-entropy of ``h_i · c_kᵀ / τ`` over the
  training nodes i. Inference sums each layer's class probabilities ``softmax(h_i · Cᵀ / τ)``.
- ``ff-la`` (Forward-Forward, label appending): each node's features get a label part, its
  one-hot label on training nodes and ``1/C`` everywhere else. Goodness ``g = Σ_j h_ij² − θ``;
  the loss is ``BCE(g(positive), 1) + mean_n BCE(g(negative n), 0)`` over training nodes, the
  negatives being the training nodes with each wrong label in turn. Inference appends each
  class c to the scored nodes and takes the class whose goodness, ``mean_j h_j² − θ`` summed
  over layers, is highest.
- ``ff-vn`` (Forward-Forward, virtual nodes): ``sf``'s graph is the positive; negative n links
  each training node to the virtual node of a wrong class instead; the same FF loss on the
  training nodes; inference links the scored nodes to each class's virtual node in turn.

``sf-topdown`` (:class:`SFTopDown`) adds the layer above's last output to a layer's input or
loss.

Layers train one after another (``layer_schedule="greedy"``, the paper's): each for up to
``epochs_per_layer`` full-batch steps, stopping when the validation accuracy of the layers so
far has not improved for ``layer_patience`` epochs, and keeping its best epoch. ``joint``
updates every layer in every step instead. The labels of training nodes are the only ones a
layer ever sees (the reference also gives the validation labels to FF's final test).
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from beyondbp.data.core import DatasetMeta
from beyondbp.errors import BeyondBPError
from beyondbp.patience import Patience
from beyondbp.rules.base import Distribution, IntUniform, LogUniform, Rule, SetupContext, Uniform
from beyondbp.rules.optim import LayerOptimizers, OptimOptions
from beyondbp.rules.registry import register

_NET = re.compile(r"^(gcn|sage|gat)(:\d+(x\d+)?)?$")


class LayerwiseOptions(OptimOptions):
    weight_decay: float = Field(5e-4, ge=0)
    layer_schedule: Literal["greedy", "joint"] = Field(
        "greedy", description="greedy: one layer after another (the paper's); joint: every "
        "layer in every step, each on its input's current value"
    )  # fmt: skip
    epochs_per_layer: int = Field(1000, ge=1, description="greedy: the most steps a layer takes")
    layer_patience: int | None = Field(
        200, ge=1, description="greedy: next layer after this many validations without a "
        "better accuracy (the paper: 100, one every 2 epochs); None: never"
    )  # fmt: skip
    grad_clip: float | None = Field(
        None, gt=0, description="clip each layer's gradient norm (the reference code: off here)"
    )


class SFOptions(LayerwiseOptions):
    temperature: float = Field(1.0, gt=0, description="τ of the node·class logits")


class FFOptions(LayerwiseOptions):
    theta: float = Field(2.0, description="the goodness threshold θ")


class _Layerwise(Rule):
    """The shared loop: per-layer optimisers, the greedy stages, the layer-by-layer passes.
    A variant says what a layer's inputs are (``views``), its loss and its class scores."""

    Options = LayerwiseOptions
    options: LayerwiseOptions
    tasks = ("graph",)
    stateful = ("layers", "stage", "stage_epochs", "finished")
    stage_metric: ClassVar[str] = "acc"  # the validation metric a greedy stage stops on

    @classmethod
    def works_on(cls, net_spec: str) -> bool:
        return bool(_NET.match(net_spec))

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        check_setup(self.name, net, ctx)
        self.net, self.classes = net, meta.classes
        self.nodes, self.labels = ctx.train.x.to(ctx.device), ctx.train.y.to(ctx.device)
        self.n = int(net.x.shape[0])
        gen = torch.Generator().manual_seed(ctx.seed)
        # rule-owned tensors that prediction needs, and the layer in training (a buffer among
        # the modules: a restored best epoch brings the number of layers it had)
        self.extra = nn.Module()
        self.extra.register_buffer("layer", torch.tensor(0, device=ctx.device))
        self.prepare(gen)
        self.extra.to(ctx.device)
        if not self.greedy:
            self.extra.layer.fill_(len(net.blocks) - 1)
        horizon = self.options.epochs_per_layer if self.greedy else ctx.max_epochs
        self.layers = LayerOptimizers((b.parameters() for b in net.blocks), self.options, horizon)
        self.stage, self.stage_epochs, self.finished = (
            Patience(self.options.layer_patience, "max"),
            0,
            None,
        )
        self._memo: dict[tuple, list[list[torch.Tensor]]] = {}
        self._views: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net, "extra": self.extra}

    def restored(self) -> None:
        self._memo, self._views = {}, None

    # -- what a variant defines -------------------------------------------------------------
    def prepare(self, gen: torch.Generator) -> None:
        """Build the variant's fixed tensors (registered on ``self.extra``)."""

    def views(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The first layer's inputs during training: features and edges of each view (built
        once: they are fixed)."""
        raise NotImplementedError

    def shares_input(self) -> bool:
        """True when every view's next input is the first view's output (FF+VN)."""
        return False

    def local_loss(self, outs: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    # -- the loop -----------------------------------------------------------------------------
    @property
    def last(self) -> int:
        """The deepest layer trained so far (greedy: the one in training)."""
        return int(self.extra.layer)

    @property
    def greedy(self) -> bool:
        return self.options.layer_schedule == "greedy"

    def _layer(
        self, k: int, hs: list[torch.Tensor], edges: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Layer k on each view; the next layer's inputs are these (or view 0's, shared)."""
        outs = [self.net.layer(k, _unit_rows(h), e) for h, e in zip(hs, edges, strict=True)]
        return [outs[0]] * len(outs) if self.shares_input() else outs

    def _below(
        self, tag: Hashable, feats: list[torch.Tensor], edges: list[torch.Tensor]
    ) -> list[list[torch.Tensor]]:
        """Per layer below the first one that learns now (greedy: the one in training; joint:
        none), its outputs on each view. They only change when those layers do, so they are
        kept under ``tag`` until then (a stage's every step and validation reuse them)."""
        k = self.last if self.greedy else 0
        params = [p for block in self.net.blocks[:k] for p in block.parameters()]
        key = (tag, k, tuple(p._version for p in params))
        if key not in self._memo:
            outs, hs = [], feats
            with torch.no_grad():
                for j in range(k):
                    hs = self._layer(j, hs, edges)
                    outs.append(hs)
            self._memo = {kk: v for kk, v in self._memo.items() if kk[1:] == key[1:]}
            self._memo[key] = outs
        return self._memo[key]

    def _outputs(
        self, tag: Hashable, feats: list[torch.Tensor], edges: list[torch.Tensor]
    ) -> list[list[torch.Tensor]]:
        """Per layer up to the last trained one, its outputs on each view (for prediction)."""
        outs = list(self._below(tag, feats, edges))
        hs = outs[-1] if outs else feats
        for k in range(len(outs), self.last + 1):
            hs = self._layer(k, hs, edges)
            outs.append(hs)
        return outs

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        if self._views is None:
            self._views = self.views()
        feats, edges = self._views
        below = self._below("train", feats, edges)
        # every input normalised anew, the fixed first one too (as the reference does: the
        # step memory measured includes that copy)
        ins = [_unit_rows(h.detach()) for h in (below[-1] if below else feats)]
        losses = []
        for k in range(len(below), self.last + 1):
            outs = [self.net.layer(k, h, e) for h, e in zip(ins, edges, strict=True)]
            loss = self.local_loss(outs)
            loss.backward()
            if self.options.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(
                    self.net.blocks[k].parameters(), self.options.grad_clip
                )
            self.layers.step(k)
            losses.append(loss.detach())
            if k < self.last:
                hs = [outs[0]] * len(outs) if self.shares_input() else outs
                ins = [_unit_rows(h.detach()) for h in hs]
        return {"loss": losses[-1], "local_loss_mean": torch.stack(losses).mean()}

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.layers.end_epoch(val.get("loss"), [self.last] if self.greedy else None)
        if self.greedy:
            self._greedy_stage(val.get(self.stage_metric))

    def _greedy_stage(self, val_acc: float | None) -> None:
        o, st, k = self.options, self.stage, self.last
        self.stage_epochs += 1
        if o.layer_patience is not None and val_acc is not None:
            st.update(val_acc, snapshot=self.net.blocks[k].state_dict)
        if self.stage_epochs < o.epochs_per_layer and not st.exhausted:
            return
        if st.best_state is not None:  # the layer's best validation epoch
            self.net.blocks[k].load_state_dict(st.best_state)
        why = f"no improvement for {o.layer_patience} epochs" if st.exhausted else "epoch budget"
        if k + 1 < len(self.net.blocks):
            self.extra.layer.fill_(k + 1)
            self.stage_epochs, self.stage = 0, Patience(o.layer_patience, "max")
        else:
            self.finished = f"greedy layer schedule complete (last layer: {why})"

    def step_stage(self) -> object:
        return self.last if self.greedy else None

    def done(self) -> str | None:
        return self.finished


def check_setup(name: str, net: nn.Module, ctx: SetupContext) -> None:
    """A forward graph rule needs a graph net with a linear head and the training split."""
    from beyondbp.nets.graph import GraphNet

    if not isinstance(net, GraphNet) or net.head_kind != "linear":
        raise BeyondBPError(f"{name} trains graph layers: use --net gcn:128x2 (or sage:128x2, "
                            "gat:128x2), without out-conv or link")  # fmt: skip
    if ctx.train is None:
        raise BeyondBPError(f"{name} needs the training split's examples and labels")


def _unit_rows(h: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit ℓ2 length (the reference's "LayerNormalization")."""
    return h / (h.norm(dim=1, keepdim=True) + 1e-8)


def _wrong_labels(y: torch.Tensor, classes: int, gen: torch.Generator) -> torch.Tensor:
    """(C − 1, n): column i is a random order of the C − 1 labels that are not ``y_i``."""
    keys = torch.rand(len(y), classes, generator=gen).to(y.device)
    keys[torch.arange(len(y)), y] = 2.0  # the true label sorts last
    return keys.argsort(1)[:, : classes - 1].T.contiguous()


def _class_logits(h: torch.Tensor, nodes: torch.Tensor, n: int, tau: float) -> torch.Tensor:
    """SF's logits: the nodes' outputs against the virtual class nodes' (rows ``n`` on), / τ."""
    return h[nodes] @ h[n:].T / tau


def _fingerprint(x: torch.Tensor) -> tuple[int, ...]:
    """Tells the scored node sets apart (validation, test) for the memo of frozen layers."""
    return (len(x), int(x.sum()), int(x[0]) if len(x) else -1, int(x[-1]) if len(x) else -1)


def _goodness(h: torch.Tensor) -> torch.Tensor:
    return h.pow(2).sum(1)


class _Virtual(_Layerwise):
    """Virtual class nodes ``N .. N+C−1`` with fixed N(0, 1) features, linked both ways to the
    training nodes of their class (the positive graph)."""

    def prepare(self, gen: torch.Generator) -> None:
        x = self.net.x
        self.extra.register_buffer(
            "vn_x", torch.randn(self.classes, x.shape[1], generator=gen).to(x)
        )

    def linked(self, nodes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The graph's edges plus ``node ↔ virtual node of its class`` for each pair."""
        vn = self.n + classes
        extra = torch.stack([torch.cat([nodes, vn]), torch.cat([vn, nodes])])
        return torch.cat([self.net.edge_index, extra], 1)

    def features(self) -> torch.Tensor:
        return torch.cat([self.net.x, self.extra.vn_x])

    def pass_all(self, tag: Hashable, edges: torch.Tensor) -> list[torch.Tensor]:
        """Every layer (up to the last trained one) on the augmented graph with these edges."""
        return [outs[0] for outs in self._outputs(tag, [self.features()], [edges])]


@register("sf", "ForwardGNN single forward: per-layer CE against virtual class nodes (Park 2024)")
class SingleForward(_Virtual):
    Options = SFOptions
    options: SFOptions
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-4, 1e-2),
        "weight_decay": LogUniform(1e-6, 1e-2),
        "temperature": Uniform(0.1, 2.0),
    }

    def views(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return [self.features()], [self.linked(self.nodes, self.labels)]

    def local_loss(self, outs: list[torch.Tensor]) -> torch.Tensor:
        logits = _class_logits(outs[0], self.nodes, self.n, self.options.temperature)
        return F.cross_entropy(logits, self.labels)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        outs = self.pass_all("predict", self.linked(self.nodes, self.labels))
        tau = self.options.temperature
        return sum(_class_logits(h, x, self.n, tau).softmax(1) for h in outs)  # type: ignore[return-value]

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the layers' mean probability."""
        p = scores / (self.last + 1)
        return F.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum")


class _FF(_Layerwise):
    """Forward-Forward's loss on the training nodes: view 0 positive, the others negative."""

    Options = FFOptions
    options: FFOptions
    search_space: ClassVar[dict[str, Distribution]] = {
        "lr": LogUniform(1e-4, 1e-2),
        "weight_decay": LogUniform(1e-6, 1e-2),
        "theta": Uniform(0.5, 10.0),
        "epochs_per_layer": IntUniform(50, 1000, log=True),
    }

    def local_loss(self, outs: list[torch.Tensor]) -> torch.Tensor:
        theta = self.options.theta
        g = torch.stack([_goodness(h[self.nodes]) for h in outs]) - theta  # (views, n_train)
        target = torch.zeros_like(g)
        target[0] = 1.0
        bce = F.binary_cross_entropy_with_logits(g, target, reduction="none").mean(1)
        return bce[0] + bce[1:].mean()

    def candidate_scores(self, x: torch.Tensor, passes: list[list[torch.Tensor]]) -> torch.Tensor:
        """(len(x), C): per candidate class, ``mean_j h_j² − θ`` summed over the layers."""
        theta = self.options.theta
        return torch.stack([sum(h[x].pow(2).mean(1) - theta for h in outs) for outs in passes], 1)

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the goodness scores."""
        return F.cross_entropy(scores, y, reduction="sum")


@register(
    "ff-la", "ForwardGNN Forward-Forward with the label appended to node features (Park 2024)"
)
class FFLabelAppending(_FF):
    def prepare(self, gen: torch.Generator) -> None:
        self.net.widen_input(self.classes)  # the label part enters the first layer
        wrong = _wrong_labels(self.labels.cpu(), self.classes, gen)
        self.extra.register_buffer("wrong", wrong.to(self.labels.device))

    def labelled(self, nodes: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Features with the label part: training nodes their label, ``nodes`` ``classes``,
        every other node 1/C."""
        part = self.net.x.new_full((self.n, self.classes), 1.0 / self.classes)
        part[self.nodes] = F.one_hot(self.labels, self.classes).to(part)
        part[nodes] = F.one_hot(classes, self.classes).to(part)
        return torch.cat([self.net.x, part], 1)

    def views(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = [self.labelled(self.nodes, self.labels)]
        feats += [self.labelled(self.nodes, w) for w in self.extra.wrong]
        return feats, [self.net.edge_index] * len(feats)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        passes = []
        for c in range(self.classes):
            feats = [self.labelled(x, torch.full_like(x, c))]
            outs = self._outputs(("predict", _fingerprint(x), c), feats, [self.net.edge_index])
            passes.append([o[0] for o in outs])
        return self.candidate_scores(x, passes)


@register("ff-vn", "ForwardGNN Forward-Forward with virtual class nodes (Park 2024)")
class FFVirtualNodes(_Virtual, _FF):
    def prepare(self, gen: torch.Generator) -> None:
        super().prepare(gen)
        wrong = _wrong_labels(self.labels.cpu(), self.classes, gen)
        self.extra.register_buffer("wrong", wrong.to(self.labels.device))

    def shares_input(self) -> bool:
        return True

    def views(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        edges = [self.linked(self.nodes, self.labels)]
        edges += [self.linked(self.nodes, w) for w in self.extra.wrong]
        return [self.features()] * len(edges), edges

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        keep = ~torch.isin(self.nodes, x)  # training nodes scored here try every class too
        nodes, labels = self.nodes[keep], self.labels[keep]
        passes = []
        for c in range(self.classes):
            edges = self.linked(torch.cat([nodes, x]), torch.cat([labels, torch.full_like(x, c)]))
            passes.append(self.pass_all(("predict", _fingerprint(x), c), edges))
        return self.candidate_scores(x, passes)


class TopDownOptions(OptimOptions):
    weight_decay: float = Field(5e-4, ge=0)
    temperature: float = Field(1.0, gt=0, description="τ of the node·class logits")
    topdown: Literal["input", "loss"] = Field(
        "input", description="where the layer above's last output enters: the layer's input "
        "(concatenated; the top layer gets the labels) or its loss (averaged into its embedding)"
    )  # fmt: skip
    alternating: bool = Field(
        True, description="input: even layers first, then odd ones on their fresh neighbours"
    )
    test_steps: int = Field(10, ge=1, description="input: inference iterations")
    skip_steps: int = Field(
        2, ge=0, description="input: the first inference iterations left out of the vote"
    )
    grad_clip: float | None = Field(
        None, gt=0, description="clip each layer's gradient norm (the reference: 1.0 for loss)"
    )


@register("sf-topdown", "ForwardGNN SF with top-down signals to the input or loss (Park 2024)")
class SFTopDown(_Virtual):
    """SF whose layers also see the layer above: every step updates every layer once on the
    previous step's outputs (its *states*), so information flows down one layer per step.

    ``topdown="input"``: layer j's input is ``[norm(s_j), norm(s_{j+2})]``, its input from below
    and the output of the layer above (for the top layer, the labels: one-hot on training
    nodes, 1/C on the other nodes, the identity on the virtual nodes); with ``alternating``, even
    layers update first and odd ones then use their neighbours' fresh outputs. States start
    from one bottom-up pass with the top-down part zero. Inference starts the same way, runs
    ``test_steps`` such updates and sums the class probabilities of every layer over the steps
    after the first ``skip_steps``.

    ``topdown="loss"``: layer j's input is its state from below; its loss is SF's on the mean
    of its output and the (normalised) states of every layer above; inference is one
    bottom-up pass with the same means, the layers' probabilities summed. Layer inputs are
    normalised in that pass as in training (the reference's inference pass does not).
    """

    Options = TopDownOptions
    options: TopDownOptions
    stateful = ("layers", "states")

    @property
    def greedy(self) -> bool:
        return False

    def setup(self, net: nn.Module, meta: DatasetMeta, ctx: SetupContext) -> None:
        check_setup(self.name, net, ctx)
        self.net, self.classes, self.n = net, meta.classes, int(net.x.shape[0])
        self.nodes, self.labels = ctx.train.x.to(ctx.device), ctx.train.y.to(ctx.device)
        self.extra = nn.Module()
        self.extra.register_buffer("layer", torch.tensor(len(net.blocks) - 1))
        self.prepare(torch.Generator().manual_seed(ctx.seed))
        depth = len(net.blocks)
        if self.options.topdown == "input":
            for j in range(depth):
                net.widen_input(net.width if j + 1 < depth else self.classes, k=j)
        self.extra.to(ctx.device)
        self.layers = LayerOptimizers((b.parameters() for b in net.blocks), self.options,
                                      ctx.max_epochs)  # fmt: skip
        self.edges = self.linked(self.nodes, self.labels)
        self.states = self._bottom_up()

    def restored(self) -> None:
        self.edges = self.linked(self.nodes, self.labels)

    def _label_state(self) -> torch.Tensor:
        y = self.net.x.new_full((self.n + self.classes, self.classes), 1.0 / self.classes)
        y[self.nodes] = F.one_hot(self.labels, self.classes).to(y)
        y[self.n :] = torch.eye(self.classes, device=y.device)
        return y

    def _run(self, j: int, below: torch.Tensor, above: torch.Tensor | None) -> torch.Tensor:
        h = _unit_rows(below)
        if above is not None:
            h = torch.cat([h, _unit_rows(above)], 1)
        return self.net.layer(j, h, self.edges)

    @torch.no_grad()
    def _bottom_up(self) -> list[torch.Tensor]:
        """``[x, h_1 .. h_L, labels]`` from one pass up (top-down inputs zero); in loss mode
        the outputs are kept normalised, as the states they become."""
        states, h = [self.features()], self.features()
        for j in range(len(self.net.blocks)):
            if self.options.topdown == "input":
                extra = self.net.width if j + 1 < len(self.net.blocks) else self.classes
                h = self._run(j, h, h.new_zeros(len(h), extra))
            else:
                h = _unit_rows(self._run(j, h, None))
            states.append(h)
        return [*states, self._label_state()]

    def _order(self) -> list[int]:
        depth = len(self.net.blocks)
        if self.options.topdown == "input" and self.options.alternating:
            return [j for j in range(depth) if j % 2 == 0] + [j for j in range(depth) if j % 2]
        return list(range(depth))

    def _sweep(self, states: list[torch.Tensor], train: bool) -> tuple[list, list, list]:
        """One update of every layer from ``states``: (new states, embeddings, losses)."""
        new: list[torch.Tensor | None] = [states[0]] + [None] * (len(states) - 1)
        embs: list[torch.Tensor | None] = [None] * len(self.net.blocks)
        losses = []
        for j in self._order():
            if self.options.topdown == "input":
                fresh = self.options.alternating
                below = new[j] if fresh and new[j] is not None else states[j]
                above = new[j + 2] if fresh and new[j + 2] is not None else states[j + 2]
                out = self._run(j, below.detach(), above.detach())
                emb, state = out, out
            else:
                out = self._run(j, states[j].detach(), None)
                emb = torch.stack([out, *[s.detach() for s in states[j + 2 : -1]]]).mean(0)
                state = _unit_rows(out)
            if train:
                loss = F.cross_entropy(self._logits(emb, self.nodes), self.labels)
                loss.backward()
                if self.options.grad_clip is not None:
                    clip = self.options.grad_clip
                    torch.nn.utils.clip_grad_norm_(self.net.blocks[j].parameters(), clip)
                self.layers.step(j)
                losses.append(loss.detach())
            new[j + 1], embs[j] = state.detach(), emb.detach()
        new[-1] = states[-1]
        return new, embs, losses  # type: ignore[return-value]

    def _logits(self, emb: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        return _class_logits(emb, nodes, self.n, self.options.temperature)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
        self.states, _, losses = self._sweep(self.states, train=True)
        return {"loss": torch.stack(losses).mean()}

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        states = self._bottom_up()
        if self.options.topdown == "loss":
            _, embs, _ = self._sweep(states, train=False)
            return sum(self._logits(e, x).softmax(1) for e in embs)  # type: ignore[return-value]
        total = torch.zeros(len(x), self.classes, device=x.device)
        for t in range(self.options.test_steps):
            states, embs, _ = self._sweep(states, train=False)
            if t >= self.options.skip_steps:
                total += sum(self._logits(e, x).softmax(1) for e in embs)
        return total

    def end_epoch(self, epoch: int, val: dict[str, float]) -> None:
        self.layers.end_epoch(val.get("loss"))

    def eval_loss(self, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the mean of the summed probabilities."""
        p = scores / scores.sum(1, keepdim=True).clamp_min(1e-12)
        return F.nll_loss(p.clamp_min(1e-12).log(), y, reduction="sum")

    def done(self) -> str | None:
        return None
