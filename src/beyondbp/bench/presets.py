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


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    source: str  # the paper, and where its numbers come from
    grids: tuple[GridSpec, ...]
    paper: dict[tuple[str, str, str], PaperNumber] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=lambda: {"epochs": 2})  # config overrides
    notes: str = ""


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

register_preset(
    Preset(
        name="spyra2025-bp",
        description="BP baselines of Spyra 2025 'Beyond Backpropagation' (MLP and cnn3)",
        source="Spyra 2025, arXiv 2509.19063; author's code/logs, 3-run means, A100",
        grids=(
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
                datasets=["cifar10"],
                nets=["mlp:2000x3", "cnn3"],
                options={"bp": _BP_RECIPE},
                config={**_BP_CONFIG, "epochs": 30},
            ),
        ),
        paper={
            ("bp", "mnist", "mlp:1000x2"): PaperNumber(98.05, 39.8, 0.69),
            ("bp", "mnist", "mlp:2000x4"): PaperNumber(98.43, 125.8, 4.23),
            ("bp", "mnist", "cnn3"): PaperNumber(98.94, 37.6, 0.90),
            ("bp", "fashion-mnist", "mlp:1000x2"): PaperNumber(89.13, 44.2, 0.79),
            ("bp", "fashion-mnist", "mlp:2000x4"): PaperNumber(88.88, 43.1, 1.48),
            ("bp", "fashion-mnist", "cnn3"): PaperNumber(89.25, 33.2, 0.81),
            ("bp", "cifar10", "mlp:2000x3"): PaperNumber(61.13, 268.4, 5.35),
            ("bp", "cifar10", "cnn3"): PaperNumber(79.32, 339.5, 6.81),
        },
        notes=(
            "Paper times and energies are on an A100 (NVML); compare accuracies across machines, "
            "and times only between rules on one machine. Spyra trained CIFAR-10 with random "
            "crop + flip augmentation, which this preset does not apply yet."
        ),
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
