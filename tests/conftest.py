"""What every suite may use: the CIFAR-10 JPEG archive beside the repo, decoded once per
session, and one tiny trained run for the tests that only need *a* trained checkpoint. The
`slow` mark comes from measured durations (`tests/durations.py`, hooked in by the root
conftest.py for every suite). (Tiny data written on the fly: `tests/fake_data.py`; shared
constants and CLI helpers: `tests/helpers.py`.)"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fake_data import CifarFiles, write_cifar
from tests.helpers import QUIET, cli_args, digests

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
def image_cache(tmp_path_factory: pytest.TempPathFactory, cifar10_jpeg_tar: Path) -> Path:
    """The decode cache of the shared archive, filled once per test run: the first process to
    get here decodes the 50,000 images (~13 s), the others (pytest-xdist workers) wait for
    it and read the cache."""
    from filelock import FileLock

    from lightning_densenet.datasets import load_image_folder

    run_dir = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        run_dir = run_dir.parent  # each worker's base folder sits in the run's
    cache = run_dir / "image-cache"
    with FileLock(run_dir / "image-cache.lock"):
        load_image_folder(cifar10_jpeg_tar, "train", cache_dir=cache)
    return cache


@dataclass(frozen=True)
class TrainedRun:
    """A finished `fit` of configs/debug.yaml (densenet_tiny, 1 epoch of 5 batches) on `cifar`
    (200 training images, 40 of them validation; 40 test images). Read-only: a test that
    writes into it must copy it to its own tmp_path first."""

    cifar: CifarFiles
    run: Path  # runs/debug/version_0: config.yaml, metrics.csv, checkpoints/

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoints/last.ckpt"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedRun]:
    """One tiny real run per session, through the real command line, for every test that only
    needs a trained checkpoint or run folder (tests of training itself train their own)."""
    from lightning_densenet.__main__ import main

    tmp = tmp_path_factory.mktemp("trained-run")
    cifar = write_cifar(tmp / "cifar", "cifar10", n_train=200, n_test=40)
    assert main(cli_args("fit", cifar.root, tmp / "runs", *QUIET)) == 0
    shared = TrainedRun(cifar, tmp / "runs/debug/version_0")
    before = digests(tmp)
    yield shared
    changed = sorted(k for k, v in digests(tmp).items() ^ before.items())
    assert not changed, f"a test changed the shared trained run (copy it first): {changed}"
