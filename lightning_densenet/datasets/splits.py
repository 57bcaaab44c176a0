"""The seeded index splits both frameworks use, so they train and test on the same images."""

from __future__ import annotations

import numpy as np

from lightning_densenet.errors import UserError

HOLDOUT_SEED = 20_161_608  # fixed, so no choice of `seed` ever moves a hold-out image


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
