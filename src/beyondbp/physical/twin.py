"""Digital twins: MLPs fitted to input/output samples of a physical system.

Physics-aware training (Wright et al., Nature 601:549, 2022) needs a differentiable model of the
hardware; like the PhyLL paper's released code, the model is an MLP fitted to measurements
(SiLU hidden layers, Adam on the mean squared error). The samples cost physical passes, which
the layer counts. ``mismatch`` fits the twin to a copy of the system whose parameters are moved
by that relative amount along a fixed random direction: a model characterised wrongly, or
before the hardware changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from beyondbp.physical.layer import PhysicalLayer

MISMATCH_SEED = 4_242  # the direction a mismatched twin's system is moved along


@dataclass(frozen=True)
class TwinFit:
    """How well a twin learned: relative RMS error on the samples it was fitted to and on
    held-out ones, and (held out) against the real system, which differs under a mismatch."""

    train_error: float
    val_error: float
    true_error: float
    samples: int


def twin_mlp(in_features: int, out_features: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = in_features
    for w in hidden:
        layers += [nn.Linear(d, w), nn.SiLU()]
        d = w
    layers.append(nn.Linear(d, out_features))
    return nn.Sequential(*layers)


def fit_twin(
    layer: PhysicalLayer,
    x: torch.Tensor,
    hidden: Sequence[int] = (512, 512),
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 256,
    mismatch: float = 0.0,
    seed: int = 0,
) -> tuple[nn.Sequential, TwinFit, torch.Tensor]:
    """A twin of ``layer``'s system fitted to its responses to the encoded inputs ``x``
    (9/10 to fit, 1/10 held out); returns it (frozen), how well it fits, and the responses."""
    gen = torch.Generator().manual_seed(seed)
    params = layer.system.shifted(mismatch, MISMATCH_SEED) if mismatch else None
    y = layer.query(x, params)
    scale = y.pow(2).mean().sqrt()  # the twin learns outputs of unit RMS, scaled back after
    n_val = max(1, len(x) // 10)
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    val, fit = perm[:n_val], perm[n_val:]
    with torch.random.fork_rng(devices=[]):  # the twin's init from its own seed
        torch.manual_seed(seed)
        twin = twin_mlp(layer.in_features, layer.out_features, hidden).to(x.device)
    opt = torch.optim.Adam(twin.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    target = y / scale
    for _ in range(epochs):
        order = fit[torch.randperm(len(fit), generator=gen).to(x.device)]
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = F.mse_loss(twin(x[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        last = twin[-1]
        last.weight.mul_(scale)
        last.bias.mul_(scale)

        def error(idx: torch.Tensor, target: torch.Tensor) -> float:
            return float((twin(x[idx]) - target).pow(2).mean().sqrt() / scale)

        # a diagnostic, not a measurement the method makes: the simulation, uncounted
        truth = layer.system(x[val]) if mismatch else y[val]
        report = TwinFit(error(fit, y[fit]), error(val, y[val]), error(val, truth), len(x))
    twin.requires_grad_(False)
    return twin, report, y
