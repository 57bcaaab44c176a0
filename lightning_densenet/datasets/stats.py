"""Per-channel normalisation statistics of uint8 images."""

from __future__ import annotations

import numpy as np


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
