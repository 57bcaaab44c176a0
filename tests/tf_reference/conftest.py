"""The TensorFlow tests' real data: the shared CIFAR-10 JPEG archive as a `data` block."""

from __future__ import annotations

from pathlib import Path

import pytest

from tf_reference.config import DataConfig


@pytest.fixture(scope="session")
def real_data(cifar10_jpeg_tar: Path, image_cache: Path) -> DataConfig:
    """The archive beside the repo (skipped, with the reason, where it is absent), decoded once
    per session into `image_cache`. A test takes its slice with `dataclasses.replace`:
    `replace(real_data, max_train_images=128, val_size=64, batch_size=32)`."""
    return DataConfig(dataset="imagefolder", root=str(cifar10_jpeg_tar), cache_dir=str(image_cache))
