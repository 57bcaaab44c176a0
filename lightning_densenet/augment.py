"""The paper's CIFAR augmentation and the normalisation, as batched tensor ops on any device.

Zero-pad 4, a random 32x32 crop and a random horizontal flip per image, for a whole uint8
NCHW batch at once (no per-image Python), then (x/255 - mean) / std as one fused affine op.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop_flip(
    images: Tensor,
    padding: int = 4,
    generator: torch.Generator | None = None,
    flip: Tensor | None = None,
) -> Tensor:
    """Zero-pad, crop back to the original size at a random offset, flip half the images.

    Args:
        images: (N, C, H, W), any dtype (uint8 for the cheapest gather).
        padding: pixels of zeros on each side; offsets are uniform in [0, 2 * padding].
        generator: on `images.device`; draws the N offsets and N flips.
        flip: (N,) bool, which images to mirror, instead of a random half (random flips
            are drawn all the same, so the generator advances as without `flip`).

    Returns:
        (N, C, H, W), same dtype and device: one gather, no loop over images.
    """
    n, c, h, w = images.shape
    width = w + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding)).view(n, c, -1)
    device = images.device
    oy, ox = torch.randint(0, 2 * padding + 1, (2, n, 1, 1), generator=generator, device=device)
    drawn = torch.randint(0, 2, (n, 1, 1), generator=generator, device=device, dtype=torch.bool)
    flip = drawn if flip is None else flip.to(device, torch.bool).view(n, 1, 1)
    j = torch.arange(w, device=device)
    cols = ox + torch.where(flip, w - 1 - j, j)  # (N, 1, W)
    rows = (oy + torch.arange(h, device=device).view(1, h, 1)) * width  # (N, H, 1)
    index = (rows + cols).view(n, 1, h * w).expand(n, c, h * w)  # into the flattened padded image
    return torch.gather(padded, 2, index).view(n, c, h, w)


def normalize(
    images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> Tensor:
    """uint8 (N, C, H, W) -> float32 `(images / 255 - mean) / std`, per channel.

    `mean` and `std` are in [0, 1] units, as `channel_stats` returns them.
    """
    return affine(images, *scale_shift(mean, std, images.device))


def scale_shift(
    mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, device: torch.device
) -> tuple[Tensor, Tensor]:
    mean = torch.as_tensor(mean, dtype=torch.float64).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float64).view(-1, 1, 1)
    scale, shift = 1 / (255 * std), -mean / std
    return scale.to(device, torch.float32), shift.to(device, torch.float32)


def affine(images: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    # A multiply and an in-place add: broadcasting addcmul is several times slower on CPU.
    return images.float().mul_(scale).add_(shift)
