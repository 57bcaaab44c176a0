"""`ArrayDataset`, what every loader returns, and what both frameworks compute from one: the
seeded splits (so they train and test on the same images) and the normalisation statistics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lightning_densenet.errors import UserError

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

HOLDOUT_SEED = 20_161_608  # fixed, so no choice of `seed` ever moves a hold-out image


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare by
class ArrayDataset:
    """Images and labels held in memory."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64, indices into `classes`
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def train_val_split(
    n: int, val_size: int, seed: int, max_train: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) into `n` training images, the same in every framework.

    A seeded permutation: its first `val_size` entries are validation, the next `max_train`
    (all the rest when None, or fewer when fewer remain) are training.
    """
    if not 0 <= val_size < n:
        raise UserError(
            f"data.val_size={val_size} must be at least 0 and below the {n} training images: "
            "choose a smaller validation split."
        )
    if max_train is not None and max_train < 1:
        raise UserError(f"data.max_train_images={max_train} must be positive (or null for all).")
    order = np.random.default_rng(seed).permutation(n)
    stop = n if max_train is None else min(n, val_size + max_train)
    return order[val_size:stop], order[:val_size]


def holdout_split(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (held out, the rest) into `n` training images, the same for every `seed`.

    The hold-out stands in for a test split: carved first, before any validation split,
    with its own fixed seed, so tuning on validation never sees it.
    """
    if not 0 < size < n:
        raise UserError(
            f"data.holdout_size={size} must be at least 1 and below the {n} training images."
        )
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(order[:size]), order[size:]


def channel_stats(
    images: np.ndarray,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and (population) std of uint8 NHWC images, in [0, 1] units."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not images.size:
        raise ValueError(
            f"expected non-empty uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}"
        )
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for c in range(3):
        # A histogram is exact and reads each byte once; no float copy of the images.
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        mean = counts @ values / counts.sum()
        means.append(float(mean))
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return (means[0], means[1], means[2]), (stds[0], stds[1], stds[2])
