"""Shared test data: the CIFAR-10 JPEG archive beside the repo, and tiny official-format CIFAR."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


@dataclass
class CifarFiles:
    root: Path
    train_images: np.ndarray  # (N, 32, 32, 3) uint8, what load_cifar must return
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]


def write_cifar(
    root: Path, name: str, n_train: int = 50, n_test: int = 20, seed: int = 0
) -> CifarFiles:
    """Random images in the official "python version" layout, pickled as Python 2 did."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    classes = tuple(f"class_{i:02d}" for i in range(num_classes))
    images = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n_train + n_test)

    def batch(lo: int, hi: int, label_key: bytes) -> dict[bytes, object]:
        # Official rows: the 1024 R values, then G, then B, each plane row-major.
        rows = images[lo:hi].transpose(0, 3, 1, 2).reshape(hi - lo, 3072)
        return {
            b"batch_label": b"batch",
            label_key: [int(x) for x in labels[lo:hi]],  # a list, as in the official files
            b"data": rows,
            b"filenames": [f"{i}.png".encode() for i in range(lo, hi)],
        }

    def dump(path: Path, obj: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(obj, protocol=2))

    names = [c.encode() for c in classes]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        edges = np.linspace(0, n_train, 6).astype(int)  # five training batches
        for i in range(5):
            dump(folder / f"data_batch_{i + 1}", batch(edges[i], edges[i + 1], b"labels"))
        dump(folder / "test_batch", batch(n_train, n_train + n_test, b"labels"))
        dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 10000})
    else:
        folder = root / "cifar-100-python"
        dump(folder / "train", batch(0, n_train, b"fine_labels"))
        dump(folder / "test", batch(n_train, n_train + n_test, b"fine_labels"))
        dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20})
    return CifarFiles(
        root, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], classes
    )


@pytest.fixture
def make_cifar() -> Callable[..., CifarFiles]:
    """`make_cifar(root, "cifar10" | "cifar100", n_train=50, n_test=20, seed=0) -> CifarFiles`."""
    return write_cifar
