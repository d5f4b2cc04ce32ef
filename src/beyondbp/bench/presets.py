"""Paper presets: a paper's setup as data (grids of rules, nets, hyperparameters and budgets)
together with the paper's own numbers, so ``beyondbp reproduce`` can print ours next to theirs.

Rule issues add their presets here (or call :func:`register_preset` from their own module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from beyondbp.bench.grid import GridSpec
from beyondbp.errors import UnknownNameError


@dataclass(frozen=True)
class PaperNumber:
    test_acc: float  # percent, as printed in the paper
    time_s: float | None = None
    energy_wh: float | None = None


PaperKey = tuple[str, ...]
"""(rule, dataset, net), or (rule, dataset, net, "option=value, ...") for a number that belongs to
one variant of a rule (e.g. ``("cafo", "mnist", "cnn3", "block_training=dfa")``)."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    source: str  # the paper, and where its numbers come from
    grids: tuple[GridSpec, ...]
    paper: dict[PaperKey, PaperNumber] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=lambda: {"epochs": 2})  # config overrides
    notes: str = ""

    def paper_number(
        self, rule: str, dataset: str, net: str, options: dict[str, Any]
    ) -> PaperNumber | None:
        """The paper's number for a run: the variant key whose options all match the run's
        (the one naming most options), else the plain (rule, dataset, net) key."""
        best: tuple[int, PaperNumber] | None = None
        for key, number in self.paper.items():
            if key[:3] != (rule, dataset, net):
                continue
            wanted = _parse_variant(key[3]) if len(key) > 3 else {}
            matches = all(str(options.get(k)) == v for k, v in wanted.items())
            if matches and (best is None or len(wanted) > best[0]):
                best = (len(wanted), number)
        return best[1] if best else None


def _parse_variant(text: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in text.split(",") if part.strip())
    return {k.strip(): v.strip() for k, v in pairs}


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UnknownNameError("preset", name, PRESETS)
    return PRESETS[name]


# Our BP recipe for the Spyra baselines: AdamW lr 1e-3, weight decay 0.05, cosine schedule over a
# fixed budget, test the best-validation-accuracy epoch (chosen on Fashion-MNIST MLP seed 0 among
# four recipes, see benchmarks/results/bp_baselines.md). The CNN budget is 5 epochs on a CPU.
_BP_RECIPE = {"optimizer": "adamw", "weight_decay": 0.05, "schedule": "cosine"}
_BP_CONFIG = {"patience": None, "monitor": "val_acc", "batch_size": 128}

_CIFAR_CONFIG = {**_BP_CONFIG, "augment": "crop-flip"}  # Spyra's CIFAR-10 train augmentation
_BP_GRIDS = (
    GridSpec(
        rules=["bp"],
        datasets=["fashion-mnist", "mnist"],
        nets=["mlp:1000x2"],
        options={"bp": _BP_RECIPE},
        config={**_BP_CONFIG, "epochs": 30},
    ),
    GridSpec(
        rules=["bp"],
        datasets=["fashion-mnist", "mnist"],
        nets=["cnn3"],
        options={"bp": _BP_RECIPE},
        config={**_BP_CONFIG, "epochs": 5},
    ),
    GridSpec(
        rules=["bp"],
        datasets=["fashion-mnist", "mnist"],
        nets=["mlp:2000x4"],
        options={"bp": _BP_RECIPE},
        config={**_BP_CONFIG, "epochs": 30},
    ),
    GridSpec(
        rules=["bp"],
        datasets=["mnist"],
        nets=["mlp:1000x3"],  # FF's native MNIST net
        options={"bp": _BP_RECIPE},
        config={**_BP_CONFIG, "epochs": 30},
    ),
    GridSpec(
        rules=["bp"],
        datasets=["cifar10"],
        nets=["mlp:2000x3", "cnn3"],
        options={"bp": _BP_RECIPE},
        config={**_CIFAR_CONFIG, "epochs": 30},
    ),
)
_BP_PAPER = {
    ("bp", "mnist", "mlp:1000x2"): PaperNumber(98.05, 39.8, 0.69),
    ("bp", "mnist", "mlp:2000x4"): PaperNumber(98.43, 125.8, 4.23),
    ("bp", "mnist", "cnn3"): PaperNumber(98.94, 37.6, 0.90),
    ("bp", "fashion-mnist", "mlp:1000x2"): PaperNumber(89.13, 44.2, 0.79),
    ("bp", "fashion-mnist", "mlp:2000x4"): PaperNumber(88.88, 43.1, 1.48),
    ("bp", "fashion-mnist", "cnn3"): PaperNumber(89.25, 33.2, 0.81),
    ("bp", "cifar10", "mlp:2000x3"): PaperNumber(61.13, 268.4, 5.35),
    ("bp", "cifar10", "cnn3"): PaperNumber(79.32, 339.5, 6.81),
}
_SPYRA_NOTES = (
    "Paper times and energies are on an A100 (NVML); compare accuracies across machines, and "
    "times only between rules on one machine. CIFAR-10 here is the JPEG re-encoded copy in "
    "../shared/data/cifar10-jpeg (lossy): compare rules with each other on it, not with the "
    "paper's absolute CIFAR-10 numbers."
)

register_preset(
    Preset(
        name="spyra2025-bp",
        description="BP baselines of Spyra 2025 'Beyond Backpropagation' (MLP and cnn3)",
        source="Spyra 2025, arXiv 2509.19063; author's code/logs, 3-run means, A100",
        grids=_BP_GRIDS,
        paper=_BP_PAPER,
        notes=_SPYRA_NOTES,
    )
)

# -- the forward-only family against its BP baselines (Spyra 2025, Table of rules/native nets) --
# Each rule on its native net with the paper's protocol where the paper states it; values the
# paper does not state (its Optuna results for FF and CaFo) are ours, chosen as written below.
_MF = {"layer_schedule": "greedy", "layer_patience": 4}  # Spyra's code: greedy, patience 4-10
_MF_CONFIG = {**_BP_CONFIG, "epochs": 100}  # the rule ends the run when its last layer is done
# Spyra: AdamW (benchmarks/ff_init.py trains with the same options)
# input_norm: the first layer's input normalised like the layers' (benchmarks/results/ff_sweep.md:
# +2 points on Fashion-MNIST at 10 epochs, where image brightness otherwise sets layer 1's goodness)
FF_RECIPE = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "input_norm": True,
}
_FF_CONFIG = {"batch_size": 100, "epochs": 60, "patience": 20, "monitor": "val_acc"}
_CAFO = {"aggregate": "logits"}  # Spyra sums the predictors' logits
_CAFO_CONFIG = {**_BP_CONFIG, "epochs": 20}
_CAFO_DFA = {**_CAFO, "block_training": "dfa", "dfa_epochs": 10}
_CAFO_DFA_CONFIG = {**_BP_CONFIG, "epochs": 30}  # 10 DFA epochs, then 20 of the predictors
_CAFO_DFA_CIFAR_SPYRA = {
    **_CAFO_DFA,
    "dfa_epochs": 250,
    "dfa_lr": 1.37e-4,
    "predictor_patience": 8,
}

register_preset(
    Preset(
        name="spyra2025",
        description="Forward-only rules vs BP (Spyra 2025 'Beyond Backpropagation'): "
        "Mono-Forward, Forward-Forward, CaFo-Rand/-DFA, DFA",
        source="Spyra 2025, arXiv 2509.19063; author's code/logs, 3-run means, A100",
        grids=(
            *_BP_GRIDS,
            GridSpec(  # DFA: not in Spyra's table; the BP recipe on BP's MLP
                rules=["dfa"],
                datasets=["fashion-mnist", "mnist"],
                nets=["mlp:1000x2"],
                options={"dfa": _BP_RECIPE},
                config={**_BP_CONFIG, "epochs": 30},
            ),
            GridSpec(
                rules=["mono-forward"],
                datasets=["fashion-mnist"],
                nets=["mlp:1000x2"],
                options={"mono-forward": {**_MF, "lr": 3.87e-4, "epochs_per_layer": 12}},
                config=_MF_CONFIG,
            ),
            GridSpec(
                rules=["mono-forward"],
                datasets=["mnist"],
                nets=["mlp:1000x2"],
                options={"mono-forward": {**_MF, "lr": 1.57e-3, "epochs_per_layer": 14}},
                config=_MF_CONFIG,
            ),
            GridSpec(  # ours: every layer on every batch, with BP's recipe and budget
                rules=["mono-forward"],
                datasets=["fashion-mnist", "mnist"],
                nets=["mlp:1000x2"],
                options={"mono-forward": {"layer_schedule": "joint", **_BP_RECIPE}},
                config={**_BP_CONFIG, "epochs": 30},
            ),
            GridSpec(
                rules=["mono-forward"],
                datasets=["cifar10"],
                nets=["mlp:2000x3"],
                options={"mono-forward": {**_MF, "lr": 3.24e-4, "epochs_per_layer": 15}},
                config={**_CIFAR_CONFIG, "epochs": 100},
            ),
            GridSpec(
                rules=["ff"],
                datasets=["fashion-mnist"],
                nets=["mlp:2000x4"],
                options={"ff": FF_RECIPE},
                config=_FF_CONFIG,
            ),
            GridSpec(
                rules=["ff"],
                datasets=["mnist"],
                nets=["mlp:1000x3", "mlp:2000x4"],
                options={"ff": FF_RECIPE},
                config=_FF_CONFIG,
            ),
            GridSpec(
                rules=["cafo"],
                datasets=["fashion-mnist", "mnist"],
                nets=["cnn3"],
                options={"cafo": _CAFO},
                config=_CAFO_CONFIG,
            ),
            GridSpec(
                rules=["cafo"],
                datasets=["fashion-mnist", "mnist"],
                nets=["cnn3"],
                options={"cafo": _CAFO_DFA},
                config=_CAFO_DFA_CONFIG,
            ),
            GridSpec(
                rules=["cafo"],
                datasets=["cifar10"],
                nets=["cnn3"],
                options={"cafo": _CAFO_DFA},
                config={**_CIFAR_CONFIG, "epochs": 30},
            ),
            GridSpec(  # Spyra's CIFAR-10 CaFo-DFA budget: 250 DFA epochs, then 147 of the
                # predictors, each stopping on its own (their cafodfa_cifar10_cnn_3block config)
                rules=["cafo"],
                datasets=["cifar10"],
                nets=["cnn3"],
                options={"cafo": _CAFO_DFA_CIFAR_SPYRA},
                config={**_CIFAR_CONFIG, "epochs": 250 + 147},
            ),
        ),
        paper={
            **_BP_PAPER,
            ("mono-forward", "mnist", "mlp:1000x2"): PaperNumber(98.14, 35.0, 0.60),
            ("mono-forward", "fashion-mnist", "mlp:1000x2"): PaperNumber(89.72, 52.1, 0.86),
            ("mono-forward", "cifar10", "mlp:2000x3"): PaperNumber(62.34, 177.7, 3.17),
            ("ff", "mnist", "mlp:1000x3"): PaperNumber(98.33, 370.7, 6.69),
            ("ff", "mnist", "mlp:2000x4"): PaperNumber(98.42, 509.6, 14.26),
            ("ff", "fashion-mnist", "mlp:2000x4"): PaperNumber(89.63, 574.6, 14.28),
            ("cafo", "mnist", "cnn3", "block_training=rand"): PaperNumber(98.62, 69.2, 1.20),
            ("cafo", "mnist", "cnn3", "block_training=dfa"): PaperNumber(99.02, 84.5, 1.64),
            ("cafo", "fashion-mnist", "cnn3", "block_training=rand"): PaperNumber(
                90.36, 101.1, 1.76
            ),
            ("cafo", "fashion-mnist", "cnn3", "block_training=dfa"): PaperNumber(
                91.72, 105.4, 2.48
            ),
            ("cafo", "cifar10", "cnn3", "block_training=dfa"): PaperNumber(77.60, 1314.4, 27.38),
        },
        quick={"epochs": 1, "max_steps": 50},
        notes=_SPYRA_NOTES
        + " Not in the paper's table: DFA (no number). Chosen by us: FF AdamW lr 1e-3 with a "
        "cosine schedule, 60 epochs, patience 20 on val acc (Hinton's 60 epochs; Spyra's "
        "patience), softmax head SGD lr 1e-3, the input normalised like the layers' "
        "(input_norm, as in loeweX's reimplementation); CaFo predictors "
        "Adam 1e-3 for 20 epochs, trained together (Spyra stops each predictor on its own, "
        "patience 6-8: option predictor_patience, used only in the CIFAR-10 run with Spyra's "
        "budget below), the best validation "
        "epoch of their sum tested; "
        "CaFo-DFA 10 DFA epochs (Adam 1e-4) first; on CIFAR-10 also with Spyra's budget (250 DFA "
        "epochs at Adam 1.37e-4, then up to 147 predictor epochs, each predictor stopping "
        "after 8 epochs without a better validation loss). Mono-Forward runs twice: "
        "Spyra's protocol (tuned lr and epochs per layer, greedy, per-layer patience 4 on the "
        "local validation loss) and ours (joint: all layers on every batch, with BP's recipe "
        "and budget: AdamW at Spyra's tuned lr 3.87e-4, weight decay 0.05, cosine over 30 "
        "epochs).",
    )
)

register_preset(
    Preset(
        name="depth-sweep",
        description="Peak training memory vs depth: MLP with 2, 4, 8 hidden layers of 1000",
        source="the memory-vs-depth comparison of ARCHITECTURE.md (no paper numbers)",
        grids=(
            GridSpec(
                rules=["bp", "mono-forward", "ff", "dfa"],
                datasets=["fashion-mnist"],
                nets=["mlp:1000x2", "mlp:1000x4", "mlp:1000x8"],
                seeds=[0],
                # the memory probe measures the second step; 100 steps give a time per step too
                config={"epochs": 1, "max_steps": 100, "patience": None},
            ),
            GridSpec(  # FF without its softmax head, whose input (layers 2..L) grows with depth
                rules=["ff"],
                datasets=["fashion-mnist"],
                nets=["mlp:1000x2", "mlp:1000x4", "mlp:1000x8"],
                seeds=[0],
                options={"ff": {"predict": "goodness"}},
                config={"epochs": 1, "max_steps": 100, "patience": None},
            ),
        ),
        quick={"epochs": 1, "max_steps": 10},
    )
)

# -- local-target rules (issue 5): DRTP, tpSGD with BP and DFA beside them ----------------------
_LOCAL_CONFIG = {"epochs": 100, "batch_size": 100, "patience": 10}  # DRTP's batch, ≤ 100 epochs

register_preset(
    Preset(
        name="local-targets",
        description="DRTP and tpSGD against BP and DFA on MLPs, a conv net and a GRU "
        "(row-by-row MNIST), each rule with its defaults",
        source="DRTP: Frenkel et al. 2021 (reference defaults); tpSGD: Lomnitz et al. 2022 (claim: "
        "within 5 % of BP); no table numbers to compare with",
        grids=(
            GridSpec(
                rules=["bp", "dfa", "drtp", "tpsgd"],
                datasets=["mnist", "fashion-mnist"],
                nets=["mlp:1000x2:tanh", "cnn3"],
                config=_LOCAL_CONFIG,
            ),
            GridSpec(  # targets beyond tanh's range: each unit learns a random class dichotomy
                rules=["tpsgd"],
                datasets=["mnist", "fashion-mnist"],
                nets=["mlp:1000x2:tanh"],
                options={"tpsgd": {"target_scale": 10.0}},
                config=_LOCAL_CONFIG,
            ),
            GridSpec(  # the reference CIFAR-10 setting of DRTP keeps the conv layers frozen
                rules=["drtp"],
                datasets=["mnist", "fashion-mnist"],
                nets=["cnn3"],
                options={"drtp": {"freeze_conv": True}},
                config=_LOCAL_CONFIG,
            ),
            GridSpec(
                rules=["bp", "tpsgd"],
                datasets=["mnist"],
                nets=["gru:128"],
                config={**_LOCAL_CONFIG, "epochs": 30},
            ),
            GridSpec(
                rules=["tpsgd"],
                datasets=["mnist"],
                nets=["gru:128"],
                options={"tpsgd": {"bptt_in_layer": True}},
                config={**_LOCAL_CONFIG, "epochs": 30},
            ),
        ),
        quick={"epochs": 1, "max_steps": 50},
        notes="tpSGD's claim is checked by Δacc against bp on the same data and net.",
    )
)

# NoProp-CT (and FM, the same): Adam lr 1e-3, η = 1 (the rule's CT default); validation between
# epochs integrates 10 Heun steps (19 net passes) instead of the test's 1,000 (1,999 passes)
_NOPROP_CONTINUOUS = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "val_steps": 10}

register_preset(
    Preset(
        name="noprop2025",
        description="NoProp-DT (Li, Teh, Pascanu 2025) on MNIST and CIFAR-10, with backprop on the "
        "same architecture",
        source="Li, Teh, Pascanu 2025, arXiv 2503.24322 (a careful reimplementation: DT 99.44 % "
        "MNIST, 80.30 % CIFAR-10)",
        grids=(
            GridSpec(
                rules=["noprop", "bp"],
                datasets=["mnist"],
                nets=["noprop"],
                config={"epochs": 100, "batch_size": 128, "patience": None, "monitor": "val_acc"},
            ),
            GridSpec(
                rules=["noprop", "bp"],
                datasets=["cifar10"],
                nets=["noprop"],
                config={"epochs": 150, "batch_size": 128, "patience": None, "monitor": "val_acc"},
            ),
            GridSpec(  # CT and FM: one time-conditioned block, T = 1000 Heun steps at the test
                rules=["noprop"],
                datasets=["mnist"],
                nets=["noprop:ct", "noprop:fm"],
                options={"noprop": _NOPROP_CONTINUOUS},
                config={"epochs": 100, "batch_size": 128, "patience": None, "monitor": "val_acc"},
            ),
        ),
        paper={
            ("noprop", "mnist", "noprop"): PaperNumber(99.54),
            ("noprop", "cifar10", "noprop"): PaperNumber(80.54),
            ("noprop", "mnist", "noprop:ct"): PaperNumber(97.17),
        },
        quick={"epochs": 1, "max_steps": 50},
        notes="CIFAR-10 here is the JPEG re-encoded copy in ../shared/data/cifar10-jpeg (lossy). "
        "Backprop trains the same NoProp net end to end through its (mean) inference chain. "
        "CT and FM (MNIST): Adam lr 1e-3, 100 epochs (the DT budget; the paper gives no CT/FM "
        "epochs), validated with 10 Heun steps and tested with T = 1,000; no FM MNIST number in "
        "our source, and no BP row of their own (backprop through 1,000 ODE steps is not a "
        "baseline anyone runs: the DT net's BP row has the same image and label paths).",
    )
)

register_preset(
    Preset(
        name="noprop-memory",
        description="Peak training-step memory vs T: NoProp-DT and backprop on the NoProp net "
        "with 2, 5, 10, 20 blocks (MNIST)",
        source="the memory growth with T asked by issue 5 (no paper numbers)",
        grids=(
            GridSpec(
                rules=["noprop", "bp"],
                datasets=["mnist"],
                nets=["noprop:2", "noprop:5", "noprop:10", "noprop:20"],
                seeds=[0],
                # the memory probe measures the second step; 20 steps give a time per step
                config={"epochs": 1, "max_steps": 20, "patience": None},
            ),
        ),
        quick={"epochs": 1, "max_steps": 3},
        notes="Each run is 20 training steps (batch 128): accuracies are not results. Memory is "
        "probed on the second step: the whole step (weights, optimiser state, batch, what the "
        "step allocates) and, in brackets, what the step itself allocates.",
    )
)

_MSRP = {"batch_size": 16, "patience": None, "monitor": "val_acc"}
_PROMPT = "prompt,head.*"

register_preset(
    Preset(
        name="mezo2023",
        description="Zeroth-order vs backprop fine-tuning of MiniLM-L6 on MSRP: MeZO on all "
        "weights and on a soft prompt, ZO-Adam with and without the Subspace Gradient",
        source="MeZO: Malladi et al. 2023 (ε 1e-3, lr 1e-6, batch 16, 20k steps for LLMs); "
        "ZOODiP: Seo et al. 2025 (ZO-Adam lr 1e-2, n = 2, τ 128, ν 1e-3); no MiniLM/MSRP "
        "numbers in either paper",
        grids=(
            GridSpec(  # the usual GLUE/MRPC recipe: AdamW 2e-5, 3 epochs
                rules=["bp"],
                datasets=["msrp"],
                nets=["minilm"],
                seeds=[0],
                options={"bp": {"optimizer": "adamw", "lr": 2e-5, "weight_decay": 0.01}},
                config={**_MSRP, "epochs": 3},
            ),
            GridSpec(  # 2,000 MeZO steps (the paper's 20k do not fit a CPU session)
                rules=["mezo"],
                datasets=["msrp"],
                nets=["minilm"],
                seeds=[0],
                config={**_MSRP, "epochs": 9},
            ),
            GridSpec(
                rules=["mezo"],
                datasets=["msrp"],
                nets=["minilm:prompt-16"],
                seeds=[0],
                options={"mezo": {"params": _PROMPT, "lr": 1e-3}},
                config={**_MSRP, "epochs": 9},
            ),
            GridSpec(
                rules=["zo-adam"],
                datasets=["msrp"],
                nets=["minilm:prompt-16"],
                seeds=[0],
                options={"zo-adam": {"params": _PROMPT}},
                config={**_MSRP, "epochs": 9},
            ),
            GridSpec(
                rules=["zo-adam"],
                datasets=["msrp"],
                nets=["minilm:prompt-16"],
                seeds=[0],
                options={"zo-adam": {"params": _PROMPT, "subspace": False}},
                config={**_MSRP, "epochs": 9},
            ),
            # the soft prompt alone, from a linear-probe head (fitted on the frozen encoder's
            # features, then kept): ZO-Adam at 1e-3 with and without the Subspace Gradient
            *(
                GridSpec(
                    rules=["zo-adam"],
                    datasets=["msrp"],
                    nets=["minilm:prompt-16"],
                    seeds=[0],
                    options={"zo-adam": {"params": "prompt", "lr": 1e-3, "subspace": sub}},
                    config={**_MSRP, "epochs": 9, "head_init": "probe"},
                )
                for sub in (True, False)
            ),
        ),
        quick={"epochs": 1, "max_steps": 20},
        notes="MeZO's lr for all weights is the paper's 1e-6; for the 16 prompt vectors and the "
        "head (6,914 values) we use 1e-3 (not from a paper). The classification head starts "
        "random (no prompt-based start as in the MeZO paper). For scale: always answering "
        "'paraphrase' scores 66.49 % on the MSRP test set (1,147 of 1,725). The last two cells "
        "tune the prompt alone from a linear-probe head (head_init='probe'; ZO-Adam lr 1e-3, "
        "ten times below ZOODiP's, not from a paper). Memory per step "
        "against inference: benchmarks/zo_memory.py.",
    )
)
