"""The seeded train/validation split both frameworks use, and per-channel statistics
(against hand-computed values and float64 numpy)."""

from __future__ import annotations

import numpy as np
import pytest

from lightning_densenet import UserError
from lightning_densenet.datasets import channel_stats, train_val_split


def test_train_val_split_is_disjoint_seeded_and_bounded() -> None:
    train, val = train_val_split(100, 20, seed=3)
    assert len(train) == 80 and len(val) == 20
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    again_train, again_val = train_val_split(100, 20, seed=3)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, train_val_split(100, 20, seed=4)[1])
    # max_train takes a prefix of the same permutation and leaves validation alone.
    small_train, small_val = train_val_split(100, 20, seed=3, max_train=10)
    np.testing.assert_array_equal(small_train, train[:10])
    np.testing.assert_array_equal(small_val, val)
    assert len(train_val_split(100, 20, seed=3, max_train=1000)[0]) == 80
    assert len(train_val_split(100, 0, seed=3)[1]) == 0
    # The documented recipe, so another framework can reproduce it.
    np.testing.assert_array_equal(val, np.random.default_rng(3).permutation(100)[:20])


@pytest.mark.parametrize(
    ("n", "val_size", "max_train", "message"),
    [
        (100, 100, None, r"data\.val_size=100 must be at least 0 and below the 100"),
        (100, -1, None, r"data\.val_size=-1"),
        (100, 10, 0, r"data\.max_train_images=0 must be positive"),
    ],
)
def test_train_val_split_rejects_bad_sizes(n, val_size, max_train, message) -> None:
    with pytest.raises(UserError, match=message):
        train_val_split(n, val_size, 0, max_train)


def test_channel_stats_by_hand() -> None:
    images = np.zeros((2, 1, 2, 3), np.uint8)
    images[..., 0] = [[[0, 255]], [[255, 255]]]  # R: 0, 1, 1, 1 -> mean 0.75, std sqrt(3)/4
    images[..., 1] = 51  # G: constant 0.2 -> std 0
    images[..., 2] = [[[0, 0]], [[102, 102]]]  # B: 0, 0, 0.4, 0.4 -> mean 0.2, std 0.2
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean, (0.75, 0.2, 0.2), rtol=1e-12)
    np.testing.assert_allclose(std, (np.sqrt(3) / 4, 0.0, 0.2), rtol=1e-12, atol=1e-15)


def test_channel_stats_matches_float64_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    floats = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, floats.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, floats.std(axis=(0, 1, 2)), rtol=1e-12)
