"""Networks as plain ``nn.Module``s that rules can consume block by block.

Every built-in net is a :class:`BlockNet`: a stack of ``blocks`` followed by a ``head`` that maps
the last block's output to class scores. Layer-local rules train ``net.blocks[i]`` one at a time;
backprop just calls ``net(x)``.

Spec strings:

- ``mlp:1000x2``: two hidden layers of 1000 ReLU units (``mlp:1000-500`` for unequal widths,
  ``mlp:1000x2:tanh`` for another activation: relu, tanh, sigmoid, gelu, or identity for a
  linear model).
- ``cnn3``: the 3-block CNN of CaFo / Spyra 2025: Conv3x3 pad 1 → ReLU → MaxPool 2 → BatchNorm,
  channels 32/128/512 (``cnn3:16-32-64`` for other widths).
- ``gru:128`` / ``rnn:128``: a recurrent net reading the image row by row (sequential MNIST), one
  GRU (or tanh RNN) layer of 128 units; ``gru:128x2`` for two layers; the last state is classified.
- ``noprop``: the NoProp net (T = 10 denoising blocks, one-hot class embeddings);
  ``noprop:20`` for T = 20, ``noprop:10:learned-20`` for learned 20-dimensional embeddings, ``noprop:10:prototype`` for
  learned embeddings initialised with one training image per class;
  ``noprop:ct`` / ``noprop:fm`` for the continuous-time variants (``noprop:100:ct``: 100 ODE
  steps at inference instead of 1000); a trailing ``:embed-head`` starts the classifier at the
  class embeddings (``noprop:10:onehot:embed-head``; see ``NoPropNet``'s ``head``).
  Trained by the ``noprop`` rule block by block, or end to end by ``bp``.
- ``gcn:128x2`` / ``sage:128x2`` / ``gat:128x2``: graph nets for graph datasets (``cora_ml``):
  two graph layers of 128 units and a linear head; ``gcn:128x2:out-conv`` ends in a graph layer
  to the classes instead (torch_geometric's ``GCN(num_layers=2)``); ``gcn:128x2:link`` scores node
  pairs (link prediction). See :mod:`beyondbp.nets.graph`.
- ``hopfield:256x2`` / ``vf:256x2``: nets that relax to a fixed point, for equilibrium
  propagation (``ep``, ``hep``; ``ghep``), and ``vfcnn:128-256-512`` on 32×32 images; ``:t150`` sets the free-phase iterations T1, ``vf``'s
  ``:angle-90`` starts its feedback weights independent of the forward ones. See
  :mod:`beyondbp.nets.equilibrium`.
- ``phys:scatter:256x2``: a physical neural network (PhyLL's blocks: a simulated physical system,
  a skip of its input, a digital linear layer); ``:noise-0.1``, ``:drift-0.5`` add measurement
  noise and drift, ``:sat-2`` a scattering medium's camera saturation, ``:ideal`` makes the
  simulation differentiable. See
  :mod:`beyondbp.nets.physical`.
- ``snn:256x2``: a feed-forward spiking net on spike trains (``delay-synth``, ``nmnist-small``);
  ``:delay-25`` learned synaptic delays (DCLS), ``:delay-25:fixed`` random fixed ones, ``:learn``
  learned neuron parameters. See :mod:`beyondbp.nets.spiking`.
- ``lm``: the causal language model of the language-model datasets (``arith``, ``msrp-yesno:16``,
  ``tinyshakespeare``); ``lm:tiny`` a small random one. See :mod:`beyondbp.nets.lm`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
from torch import nn

from beyondbp.errors import BeyondBPError, UnknownNameError

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "identity": nn.Identity,  # a deep linear model: a net's digital part without its nonlinearity
}


class BlockNet(nn.Module):
    """``head(blocks[-1](...blocks[0](x)))``, with the blocks exposed for layer-local rules."""

    def __init__(self, blocks: Sequence[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every block, in order."""
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return outs

    @torch.no_grad()
    def feature_shapes(self, input_shape: Sequence[int]) -> list[torch.Size]:
        """The output shape (without the batch axis) of every block for one input shape."""
        training = self.training
        self.eval()  # batch norm cannot run in training mode on a single example
        try:
            p = next(self.parameters(), None)
            x = torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu")
            return [f.shape[1:] for f in self.features(x)]
        finally:
            self.train(training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def mlp(
    input_shape: Sequence[int], widths: Sequence[int], classes: int, act: str = "relu"
) -> BlockNet:
    if act not in ACTIVATIONS:
        raise UnknownNameError("activation", act, ACTIVATIONS)
    blocks: list[nn.Module] = []
    d_in = int(torch.tensor(input_shape).prod())
    for i, w in enumerate(widths):
        layers: list[nn.Module] = [nn.Flatten()] if i == 0 else []
        layers += [nn.Linear(d_in, w), ACTIVATIONS[act]()]
        blocks.append(nn.Sequential(*layers))
        d_in = w
    head: nn.Module = nn.Linear(d_in, classes)
    if not widths:
        head = nn.Sequential(nn.Flatten(), head)
    return BlockNet(blocks, head)


def cnn3(
    input_shape: Sequence[int], classes: int, channels: Sequence[int] = (32, 128, 512)
) -> BlockNet:
    if len(input_shape) != 3:
        raise BeyondBPError(
            f"cnn3 needs image input (C, H, W), got shape {tuple(input_shape)}; use an mlp net"
        )
    c, h, w = input_shape
    blocks = []
    for out in channels:
        blocks.append(
            nn.Sequential(
                nn.Conv2d(c, out, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(out),
            )
        )
        c, h, w = out, h // 2, w // 2
    if h == 0 or w == 0:
        raise BeyondBPError(f"input {tuple(input_shape)} is too small for {len(channels)} poolings")
    return BlockNet(blocks, nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes)))


_MLP = re.compile(r"^mlp:(?P<widths>\d+(x\d+|(-\d+)*))?(:(?P<act>\w+))?$")
_CNN3 = re.compile(r"^cnn3(:(?P<channels>\d+(-\d+)*))?$")
_RNN = re.compile(r"^(?P<cell>rnn|gru)(:(?P<width>\d+)(x(?P<depth>\d+))?)?$")
_NOPROP = re.compile(
    r"^noprop(:(?P<steps>\d+))?(:(?P<kind>dt|ct|fm))?(:(?P<embed>onehot|learned|prototype)(-(?P<dim>\d+))?)?(?P<head>:embed-head)?$"
)
_MINILM = re.compile(r"^minilm(:prompt-(?P<prompt>\d+))?$")
_EQ = re.compile(
    r"^(?P<kind>hopfield|vf):(?P<widths>\d+(x\d+|(-\d+)*))(:(?P<act>sigmoid|tanh))?(:t(?P<steps>\d+))?(:angle-(?P<angle>\d+))?$"
)
_VFCNN = re.compile(
    r"^vfcnn(:(?P<channels>\d+-\d+-\d+))?(:(?P<act>sigmoid|tanh|dsilu))?(:t(?P<steps>\d+))?(:angle-(?P<angle>\d+))?$"
)
_LM = re.compile(r"^lm(:(?P<size>tiny))?$")
_TEMPOTRON = re.compile(r"^tempotron(?P<meta>:meta)?(:tau(?P<tau>[\d.]+))?$")
_SNN = re.compile(
    r"^snn:(?P<widths>\d+(x\d+|(-\d+)*))(?P<meta>:meta)?(:delay-(?P<delay>\d+)(?P<fixed>:fixed)?)?(:tau(?P<tau>[\d.]+))?(?P<learn>:learn)?(?P<lzc>:lzc)?$"
)
_STDP = re.compile(
    r"^stdp:(?P<width>\d+)(?P<meta>:meta)?(:tau(?P<tau>[\d.]+))?(?P<learn>:learn)?(?P<lzc>:lzc)?$"
)
_PHYS = re.compile(
    r"^phys:(?P<system>[a-z]+):(?P<widths>\d+(x\d+|(-\d+)*))(:sat-(?P<sat>[\d.]+))?(:noise-(?P<noise>[\d.]+))?(:drift-(?P<drift>[\d.]+))?(?P<ideal>:ideal)?$"
)
_GRAPH = re.compile(
    r"^(?P<kind>gcn|sage|gat)(:(?P<width>\d+)(x(?P<depth>\d+))?)?(:(?P<out>out-conv|link))?$"
)
NET_SPECS = {
    "mlp:WIDTHxDEPTH[:act]": "MLP, e.g. mlp:1000x2 (or mlp:1000-500, mlp:1000x2:tanh, :identity)",
    "cnn3[:C1-C2-C3]": "3-block CNN of CaFo/Spyra: conv3x3-ReLU-maxpool-BN, 32/128/512 channels",
    "gru|rnn[:WIDTH[xDEPTH]]": "recurrent net reading images row by row, e.g. gru:128",
    "minilm[:prompt-N]": "all-MiniLM-L6-v2 sentence-pair classifier (text datasets), optionally "
    "with N soft-prompt vectors",
    "noprop[:T][:dt|ct|fm][:onehot|learned-D|prototype][:embed-head]": "NoProp: T denoising "
    "blocks (DT, default 10) or one time-conditioned block and T ODE steps (CT, FM; default "
    "1000); embed-head: the classifier starts at the class embeddings",
    "hopfield|vf:WIDTHxDEPTH[:act][:tT1][:angle-A]": "nets relaxing to a fixed point (EP): "
    "hopfield: energy-based, symmetric weights, softmax readout (ep, hep; default T1 200); vf: a "
    "vector field with free feedback weights, started A degrees from symmetric (ghep; default T1 "
    "150); act sigmoid (the papers' holomorphic 1/(1+e^(-4z+2))) or tanh",
    "vfcnn[:C1-C2-C3][:act][:tT1][:angle-A]": "the convolutional vector field of generalized "
    "hEP on 32x32 images (ghep; default 128-256-512, dsilu, T1 250)",
    "phys:SYSTEM:WIDTHxDEPTH[:sat-C][:noise-S][:drift-R][:ideal]": "physical neural network of "
    "PhyLL blocks (simulated system, skip, digital linear layer): SYSTEM scatter or "
    "oscillators, e.g. phys:scatter:256x2; camera saturation C (scatter), measurement noise S, "
    "drift R per 1,000 batches; ideal: "
    "differentiable simulation (phyll, pat, bp-twin; bp on :ideal)",
    "snn:WIDTHxDEPTH[:meta][:delay-D[:fixed]][:tauT][:learn][:lzc]": "feed-forward spiking net "
    "(snnTorch LIF or meta: probabilistic meta-neurons; "
    "BatchNorm, dropout 0.4, non-spiking readout) on spike trains, e.g. snn:256x2; delay-D: "
    "learned DCLS delays of up to D steps on every synapse (fixed: random, never trained); "
    "tauT: membrane time constant in steps; learn: learned intrinsic parameters (LIF: β and "
    "threshold); lzc: classify in Lempel-Ziv-complexity space (beyondbp[spiking])",
    "stdp:WIDTH[:meta][:tauT][:learn][:lzc]": "one winner-take-all layer of LIF (or meta) "
    "neurons and a linear readout of its rates (the stdp rule); tauT: τ in steps (default 10); "
    "learn: learned thresholds; lzc: classify in LZC space",
    "tempotron[:meta][:tauT]": "one Tempotron neuron per class on spike trains (the tempotron "
    "rule); meta: unreliable synapses (p = 0.5); T: its PSP kernel's τ in steps (default 3)",
    "lm[:tiny]": "the causal language model of a language-model dataset (SmolLM2-135M-Instruct "
    "or $BEYONDBP_LM); lm:tiny: a 2-layer LLaMA of its vocabulary, randomly initialised "
    "(beyondbp[llm])",
    "gcn|sage|gat[:WIDTHxDEPTH][:out-conv|:link]": "graph net on a graph dataset (cora_ml): "
    "GCN, GraphSAGE or GAT (4 heads) layers and a linear head, e.g. gcn:128x2; out-conv: the "
    "last of DEPTH layers maps to the classes (torch_geometric's GCN, ForwardGNN's BP); link: "
    "it gives node embeddings, pairs scored by their dot product (cora_ml:links) (beyondbp[graph])",
}


def layered(spec: str) -> bool:
    """Whether ``spec`` builds a :class:`BlockNet` (blocks and a head), the shape layer-local
    rules train; spiking, equilibrium, NoProp and graph nets are trained by their own rules."""
    return any(p.match(spec) for p in (_MLP, _CNN3, _RNN, _PHYS))


def _widths(text: str) -> list[int]:
    """``256x2`` → [256, 256]; ``1000-500`` → [1000, 500]; ``""`` → []."""
    if "x" in text:
        width, depth = (int(v) for v in text.split("x"))
        return [width] * depth
    return [int(v) for v in text.split("-") if v]


def build_net(spec: str, input_shape: Sequence[int], classes: int) -> nn.Module:
    """Build a net from its spec string for the given input shape and number of classes."""
    if re.search(r"(?<![\d.])0+(?![\d.])", spec):
        raise BeyondBPError(
            f"net spec {spec!r} has a zero width, depth or count: every layer needs at least one "
            "unit and a net at least one layer (e.g. mlp:256x2)"
        )
    if m := _MLP.match(spec):
        return mlp(input_shape, _widths(m["widths"] or ""), classes, m["act"] or "relu")
    if m := _CNN3.match(spec):
        channels = [int(v) for v in m["channels"].split("-")] if m["channels"] else (32, 128, 512)
        return cnn3(input_shape, classes, channels)
    if m := _RNN.match(spec):
        from beyondbp.nets.recurrent import recurrent

        widths = [int(m["width"] or 128)] * int(m["depth"] or 1)
        return recurrent(input_shape, widths, classes, m["cell"])
    if m := _NOPROP.match(spec):
        from beyondbp.nets.noprop import NoPropNet

        dim = int(m["dim"]) if m["dim"] else None
        kind = m["kind"] or "dt"
        steps = int(m["steps"] or (10 if kind == "dt" else 1000))  # the paper's T
        head = "embed" if m["head"] else "random"
        return NoPropNet(input_shape, classes, steps, m["embed"] or "onehot", dim, kind,
                         head=head)  # fmt: skip
    if m := _GRAPH.match(spec):
        from beyondbp.nets.graph import GraphNet

        width, depth = int(m["width"] or 128), int(m["depth"] or 2)
        try:
            head = {"out-conv": "conv", "link": "link"}.get(m["out"] or "", "linear")
            return GraphNet(m["kind"], int(input_shape[0]), width, depth, classes, head)
        except ValueError as e:
            raise BeyondBPError(f"net spec {spec!r}: {e}") from None
    if m := _EQ.match(spec):
        from beyondbp.nets.equilibrium import HopfieldMLP, VectorFieldMLP

        widths = _widths(m["widths"])
        n_in = math.prod(input_shape)
        act = m["act"] or "sigmoid"
        if m["kind"] == "hopfield":
            if m["angle"]:
                raise BeyondBPError(
                    f"net spec {spec!r}: a hopfield net is symmetric; angle is for vf"
                )
            return HopfieldMLP(n_in, widths, classes, act, int(m["steps"] or 200))
        return VectorFieldMLP(n_in, widths, classes, act, int(m["steps"] or 150),
                              float(m["angle"] or 0))  # fmt: skip
    if m := _VFCNN.match(spec):
        from beyondbp.nets.equilibrium import VectorFieldCNN

        channels = [int(c) for c in (m["channels"] or "128-256-512").split("-")]
        try:
            return VectorFieldCNN(input_shape, channels, classes, m["act"] or "dsilu",
                                  int(m["steps"] or 250), float(m["angle"] or 0))  # fmt: skip
        except ValueError as e:
            raise BeyondBPError(f"net spec {spec!r}: {e}") from None
    if m := _PHYS.match(spec):
        from beyondbp.nets.physical import physical_net

        widths = _widths(m["widths"])
        return physical_net(input_shape, classes, m["system"], widths, float(m["noise"] or 0),
                            float(m["drift"] or 0), bool(m["ideal"]),
                            float(m["sat"]) if m["sat"] else None)  # fmt: skip
    if m := _TEMPOTRON.match(spec):
        from beyondbp.nets.spiking import TempotronNet

        return TempotronNet(input_shape, classes, float(m["tau"] or 3.0), bool(m["meta"]))
    if m := _SNN.match(spec):
        from beyondbp.nets.spiking import SpikingMLP

        widths = _widths(m["widths"])
        return SpikingMLP(input_shape, widths, classes,
                          max_delay=int(m["delay"]) if m["delay"] else None,
                          train_delays=not m["fixed"], tau=float(m["tau"] or 1.005),
                          learn_intrinsic=bool(m["learn"]),
                          neuron="meta" if m["meta"] else "lif", lzc=bool(m["lzc"]))  # fmt: skip
    if m := _STDP.match(spec):
        from beyondbp.nets.spiking import CompetitiveSNN

        return CompetitiveSNN(input_shape, int(m["width"]), classes, float(m["tau"] or 10.0),
                              "meta" if m["meta"] else "lif", bool(m["learn"]),
                              bool(m["lzc"]))  # fmt: skip
    if m := _LM.match(spec):
        from beyondbp.nets.lm import CausalLM

        if len(input_shape) != 2 or input_shape[0] != 3:
            raise BeyondBPError(
                f"lm reads token tensors (3, L) of a language-model dataset (arith, msrp-yesno:16, "
                f"tinyshakespeare); got input shape {tuple(input_shape)}"
            )
        return CausalLM.random() if m["size"] else CausalLM.pretrained()
    if m := _MINILM.match(spec):
        from beyondbp.nets.text import MiniLMClassifier

        if len(input_shape) != 2 or input_shape[0] != 3:
            raise BeyondBPError(
                f"minilm reads token tensors (3, L) of a text dataset (e.g. msrp); got input "
                f"shape {tuple(input_shape)}"
            )
        return MiniLMClassifier(classes, int(m["prompt"] or 0))
    raise BeyondBPError(
        f"unknown net spec {spec!r}; valid forms: "
        + "; ".join(f"{k} ({v})" for k, v in NET_SPECS.items())
    )


def as_blocknet(module: nn.Module) -> BlockNet:
    """Accept a user's net: a BlockNet as is, an ``nn.Sequential`` as blocks + last-layer head."""
    if isinstance(module, BlockNet):
        return module
    if isinstance(module, nn.Sequential) and len(module) >= 1:
        return BlockNet(list(module)[:-1], module[-1])
    raise BeyondBPError(
        f"{type(module).__name__} is not a BlockNet or nn.Sequential; wrap it as "
        "beyondbp.nets.BlockNet(blocks, head) so layer-local rules can see its blocks"
    )
