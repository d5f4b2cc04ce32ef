"""Harness settings: the budget, evaluation, early stopping, seeds and device (one model, from
which the CLI takes its flags, defaults and help)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from beyondbp.data.augment import Augmentation
from beyondbp.errors import BeyondBPError, describe_validation


class TrainConfig(BaseModel):
    """Harness settings: the budget, evaluation, early stopping, seeds and device."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(100, ge=1, description="maximum epochs")
    batch_size: int = Field(128, ge=1, description="training examples per step")
    eval_batch_size: int = Field(2048, ge=1, description="examples per validation/test batch")
    patience: int | None = Field(
        10, ge=1, description="validations without improvement (epochs if val_every is 1); "
        "None: off"
    )  # fmt: skip
    val_every: int = Field(
        1, ge=1, description="validate every this many epochs (and after the last one)"
    )
    monitor: Literal["val_loss", "val_acc", "val_auc"] = Field(
        "val_loss", description="the validation metric of early stopping and the best epoch"
    )
    min_delta: float = Field(0.0, ge=0, description="the smallest change that is an improvement")
    restore_best: bool = Field(True, description="test the best-validation epoch's weights")
    max_steps: int | None = Field(None, ge=1, description="a budget of training steps")
    max_examples: int | None = Field(None, ge=1, description="a budget of training examples")
    max_seconds: float | None = Field(None, gt=0, description="training wall-time budget")
    steps_per_epoch: int = Field(1, ge=1, description="for rules whose step uses all the data")
    augment: Augmentation = Field(
        "none",
        description="training-batch augmentation: crop-flip = random crop (pad 4, reflect) and "
        "horizontal flip (the CIFAR protocol)",
    )
    diverge_loss: float = Field(1e6, gt=0, description="a training loss above this diverged")
    attack_eps: float | None = Field(
        None, gt=0, description="also test under ℓ∞ attacks (FGSM, PGD) of this radius, in "
        "raw input units (pixels in [0, 1])"
    )  # fmt: skip
    attack_steps: int = Field(20, ge=1, description="PGD steps of the robust test")
    attack_loss: Literal["margin", "ce", "rule"] = Field(
        "margin", description="the loss the attacks ascend: the margin max_{k≠y} s_k − s_y "
        "(the same for every rule), cross-entropy on the scores, or the rule's own loss"
    )  # fmt: skip
    also_test: list[str] = Field(
        default_factory=list, description="datasets whose test splits the finished model is "
        "also scored on (forgetting, transfer): metrics test_<metric>_<dataset>"
    )  # fmt: skip
    head_init: Literal["random", "probe"] = Field(
        "random",
        description="the head's start: 'random' (the net's initialisation) or 'probe': fit the "
        "head's last linear layer on the frozen net's features of the training split (logistic "
        "regression; LP-FT's first stage) before the rule trains; timed as training",
    )
    state_noise: float = Field(
        0.0, ge=0, description="std of Gaussian neuron noise in the nudged relaxations of a net "
        "that relaxes to a fixed point (hopfield, vf)"
    )  # fmt: skip
    seed: int = Field(0, description="weights and batch order")
    data_seed: int = Field(0, description="the validation split (the same for every rule)")
    device: str = Field("cpu", description="cpu, cuda or auto")
    energy: bool = Field(True, description="measure (or estimate) the energy of training")
    probe: bool = Field(
        True, description="count FLOPs and live-tensor memory of the second training step"
    )
    checkpoint: bool = Field(True, description="write a checkpoint after every epoch")
    progress: bool = Field(True, description="show a progress bar and a line per epoch")


def make_config(settings: dict[str, Any]) -> TrainConfig:
    """Validate harness settings; an unknown setting or a bad value is a clear error."""
    try:
        return TrainConfig(**settings)
    except ValidationError as e:
        raise BeyondBPError(f"bad training setting: {describe_validation(e)}") from None
