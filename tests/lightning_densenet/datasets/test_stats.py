"""Per-channel statistics, against hand-computed values and float64 numpy."""

from __future__ import annotations

import numpy as np

from lightning_densenet.datasets import channel_stats


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
