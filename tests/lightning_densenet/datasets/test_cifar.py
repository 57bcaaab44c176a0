"""CIFAR from the official pickles: pixels, labels, layout, and the errors of a bad file."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from lightning_densenet import UserError
from lightning_densenet.datasets import (
    cifar_archive,
    cifar_classes,
    cifar_is_present,
    load_cifar,
)
from tests.fake_data import write_cifar


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_cifar_returns_the_pickled_pixels_and_labels(tmp_path, name) -> None:
    files = write_cifar(tmp_path, name, n_train=50, n_test=20)
    assert cifar_is_present(tmp_path, name)
    train, test = load_cifar(tmp_path, name, "train"), load_cifar(tmp_path, name, "test")
    assert train.images.shape == (50, 32, 32, 3) and train.images.dtype == np.uint8
    assert train.images.flags.c_contiguous
    assert train.labels.dtype == np.int64
    np.testing.assert_array_equal(train.images, files.train_images)
    np.testing.assert_array_equal(train.labels, files.train_labels)
    np.testing.assert_array_equal(test.images, files.test_images)
    np.testing.assert_array_equal(test.labels, files.test_labels)
    assert train.classes == test.classes == files.classes == cifar_classes(tmp_path, name)
    assert len(train.classes) == (10 if name == "cifar10" else 100)


def test_cifar_pixel_layout_is_channel_planes(tmp_path) -> None:
    write_cifar(tmp_path, "cifar10")
    # Overwrite the first training row by hand: R plane all 1, G all 2, B ramps 0..1023 % 256.
    path = tmp_path / "cifar-10-batches-py/data_batch_1"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch[b"data"][0] = np.concatenate([np.full(1024, 1), np.full(1024, 2), np.arange(1024) % 256])
    path.write_bytes(pickle.dumps(batch, protocol=2))
    image = load_cifar(tmp_path, "cifar10", "train").images[0]
    assert (image[..., 0] == 1).all() and (image[..., 1] == 2).all()
    assert image[0, 5, 2] == 5 and image[1, 0, 2] == 32  # row-major within the plane


def test_missing_cifar_file_names_it_and_the_fix(tmp_path) -> None:
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py/data_batch_3").unlink()
    assert not cifar_is_present(tmp_path, "cifar10")
    with pytest.raises(UserError, match=r"data_batch_3 is missing: download .*data\.root"):
        load_cifar(tmp_path, "cifar10", "train")
    load_cifar(tmp_path, "cifar10", "test")  # the test split does not need it


@pytest.mark.parametrize(
    "content",
    [
        b"not a pickle at all",
        pickle.dumps([1, 2, 3], protocol=2),  # not a dict
        pickle.dumps({b"data": np.zeros((4, 3072), np.uint8)}, protocol=2),  # no labels
        pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}),  # bad shape
        pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 99]}),
    ],
    ids=["garbage", "list", "no-labels", "bad-shape", "label-out-of-range"],
)
def test_corrupt_cifar_file_is_a_user_error(tmp_path, content) -> None:
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py/data_batch_2").write_bytes(content)
    with pytest.raises(UserError, match=r"data_batch_2 is corrupt .*download it again"):
        load_cifar(tmp_path, "cifar10", "train")


def test_cifar_pickles_cannot_run_code(tmp_path) -> None:
    write_cifar(tmp_path, "cifar10")
    target = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (target,))

    exploit = pickle.dumps({b"data": Exploit(), b"labels": []})
    pickle.loads(exploit)  # a plain unpickler runs it...
    assert target.exists()
    target.unlink()
    (tmp_path / "cifar-10-batches-py/test_batch").write_bytes(exploit)
    with pytest.raises(UserError, match=r"test_batch is corrupt .*unexpected object"):
        load_cifar(tmp_path, "cifar10", "test")
    assert not target.exists()  # ...the CIFAR reader refuses it


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_archive_is_the_one_torchvision_downloads(name) -> None:
    from torchvision.datasets import CIFAR10, CIFAR100  # the one test here that needs torch

    official = CIFAR10 if name == "cifar10" else CIFAR100
    assert cifar_archive(name) == (official.url, official.filename, official.tgz_md5)
