"""The TensorFlow tests' real data (the shared CIFAR-10 JPEG archive as a `data` block), and
the reader of the TensorBoard event files that runs and traces write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tf_reference.config import DataConfig


@pytest.fixture(scope="session")
def real_data(cifar10_jpeg_tar: Path, image_cache: Path) -> DataConfig:
    """The archive beside the repo (skipped, with the reason, where it is absent), decoded once
    per session into `image_cache`. A test takes its slice with `dataclasses.replace`:
    `replace(real_data, max_train_images=128, val_size=64, batch_size=32)`."""
    return DataConfig(dataset="imagefolder", root=str(cifar10_jpeg_tar), cache_dir=str(image_cache))


def _summary_values(run: Path) -> list[Any]:
    """Every `tf.compat.v1.Summary.Value` in the event files of `run`."""
    import tensorflow as tf

    values = []
    for event_file in run.glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(event_file)):
            values += tf.compat.v1.Event.FromString(record.numpy()).summary.value
    return values


@pytest.fixture(scope="session")
def summaries() -> Callable[[Path], list[Any]]:
    """`summaries(run)`: the summary values a run folder's event files hold."""
    return _summary_values
