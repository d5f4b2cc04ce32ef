"""Training-time augmentation of image batches, vectorised over the batch.

The random draws come from a generator seeded by (seed, epoch, batch), so a resumed run sees the
same augmented batches as an uninterrupted one, with no generator state to checkpoint.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from beyondbp.errors import BeyondBPError

Augmentation = Literal["none", "crop-flip"]


def batch_generator(seed: int, epoch: int, batch: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + batch)


def random_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Pad by ``pad`` (reflect), crop back to the original size at a random offset, and flip
    half of the images horizontally: the standard CIFAR training augmentation."""
    if x.ndim != 4:
        raise BeyondBPError(
            f"crop-flip augmentation needs image batches (N, C, H, W), got shape "
            f"{tuple(x.shape)}; use augment='none' for this dataset"
        )
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, n), generator=g)).to(x.device)
    flip = (torch.rand(n, generator=g) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        out = out.contiguous(memory_format=torch.channels_last)  # keep the conv-friendly layout
    return out


def augment_batch(
    x: torch.Tensor, kind: Augmentation, seed: int, epoch: int, batch: int
) -> torch.Tensor:
    if kind == "none":
        return x
    return random_crop_flip(x, batch_generator(seed, epoch, batch))
