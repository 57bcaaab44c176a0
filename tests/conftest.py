"""The real data every suite may use: the CIFAR-10 JPEG archive beside the repo, decoded once
per session. (Tiny data written on the fly: `tests/fake_data.py`; shared constants and CLI
helpers: `tests/helpers.py`.)"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

# Triton's library segfaults when it loads into a process that already holds TensorFlow;
# loaded first, both work. One pytest run holds both frameworks, whatever the test order.
with contextlib.suppress(ImportError):
    import triton  # noqa: F401

# The repo root's parent holds shared/ (see shared/data/README.md).
CIFAR10_JPEG_TAR = Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpeg-train.tar.gz"


@pytest.fixture(scope="session")
def cifar10_jpeg_tar() -> Path:
    if not CIFAR10_JPEG_TAR.is_file():
        pytest.skip(f"the shared CIFAR-10 JPEG archive is absent ({CIFAR10_JPEG_TAR})")
    return CIFAR10_JPEG_TAR


@pytest.fixture(scope="session")
def image_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One decode cache per test session: the 50,000-image archive is decoded once."""
    return tmp_path_factory.mktemp("image-cache")
