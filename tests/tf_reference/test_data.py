"""The tf.data pipelines: shapes, split, permutations, seeded augmentation, CIFAR download."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from lightning_densenet import UserError, datasets
from lightning_densenet.datasets import ArrayDataset
from tests.fake_data import write_cifar, write_cifar_archive
from tf_reference.config import DataConfig
from tf_reference.data import (
    augment_batch,
    download_cifar,
    eval_batches,
    load_splits,
    normalize,
    steps_per_epoch,
    train_batches,
)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def indexed_images(n: int) -> ArrayDataset:
    """Image i is constant, channel 0 = i % 256 and channel 1 = i // 256; label i % 10."""
    images = np.zeros((n, 8, 8, 3), np.uint8)
    images[..., 0] = (np.arange(n) % 256)[:, None, None]
    images[..., 1] = (np.arange(n) // 256)[:, None, None]
    return ArrayDataset(images, np.arange(n, dtype=np.int64) % 10, tuple("abcdefghij"))


def image_ids(x: tf.Tensor) -> np.ndarray:
    """Undoes `normalize` on `indexed_images` batches and reads back each image's index."""
    raw = np.rint((x.numpy() * np.array(STD) + np.array(MEAN)) * 255).astype(np.int64)
    return raw[:, 0, 0, 0] + 256 * raw[:, 0, 0, 1]


def test_splits_are_train_val_split_of_the_real_images(real_data: DataConfig) -> None:
    cfg = dataclasses.replace(real_data, val_size=500, max_train_images=2000, seed=3)
    splits = load_splits(cfg)
    full = datasets.load_image_folder(real_data.root, "train", real_data.cache_dir)
    train_idx, val_idx = datasets.train_val_split(len(full), 500, 3, 2000)
    np.testing.assert_array_equal(splits.train.images, full.images[train_idx])
    np.testing.assert_array_equal(splits.train.labels, full.labels[train_idx])
    np.testing.assert_array_equal(splits.val.labels, full.labels[val_idx])
    assert (splits.mean, splits.std) == datasets.channel_stats(full.images[train_idx])
    assert splits.num_classes == 10 and splits.image_shape == (32, 32, 3)
    assert splits.test is None  # the archive has no test/ folder


def test_holdout_split_is_the_pytorch_sides(real_data: DataConfig) -> None:
    """With `holdout_size` the archive's hold-out becomes the test split: the images of
    `datasets.holdout_split` (which the PyTorch data module uses too), and the validation
    and training splits are carved from the rest, as there."""
    cfg = dataclasses.replace(real_data, val_size=500, max_train_images=2000, holdout_size=700)
    splits = load_splits(cfg)
    full = datasets.load_image_folder(real_data.root, "train", real_data.cache_dir)
    held_out, rest = datasets.holdout_split(len(full), 700)
    train_idx, val_idx = datasets.train_val_split(len(rest), 500, 0, 2000)
    assert splits.test is not None
    np.testing.assert_array_equal(splits.test.images, full.images[held_out])
    np.testing.assert_array_equal(splits.train.images, full.images[rest[train_idx]])
    np.testing.assert_array_equal(splits.val.labels, full.labels[rest[val_idx]])


def test_train_batches_have_one_fixed_shape(real_data: DataConfig) -> None:
    cfg = dataclasses.replace(real_data, val_size=0, max_train_images=300)
    splits = load_splits(cfg)
    ds = train_batches(splits.train, 64, splits.mean, splits.std, epochs=2)
    images_spec, labels_spec = ds.element_spec
    assert images_spec == tf.TensorSpec((64, 32, 32, 3), tf.float32)
    assert labels_spec == tf.TensorSpec((64,), tf.int64)
    assert sum(1 for _ in ds) == 2 * (300 // 64)  # the partial batch is dropped
    capped = train_batches(splits.train, 64, MEAN, STD, epochs=3, steps_per_epoch=2)
    assert sum(1 for _ in capped) == 6
    assert steps_per_epoch(300, 64) == 4 and steps_per_epoch(300, 64, limit=2) == 2


def test_each_epoch_is_a_seeded_permutation() -> None:
    data = indexed_images(100)
    ds = train_batches(data, 10, MEAN, STD, augment=False, seed=7, epochs=2)
    epochs = np.concatenate([image_ids(x) for x, _ in ds]).reshape(2, 100)
    for order in epochs:
        assert sorted(order) == list(range(100))
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled every epoch
    labels = np.concatenate([y.numpy() for _, y in ds]).reshape(2, 100)
    np.testing.assert_array_equal(labels, epochs % 10)  # labels travel with their images
    # The same seed gives the same order; epoch 1 can be rebuilt on its own.
    again = train_batches(data, 10, MEAN, STD, augment=False, seed=7, first_epoch=1)
    np.testing.assert_array_equal(np.concatenate([image_ids(x) for x, _ in again]), epochs[1])
    other = train_batches(data, 10, MEAN, STD, augment=False, seed=8)
    assert not np.array_equal(np.concatenate([image_ids(x) for x, _ in other]), epochs[0])


def test_augmentation_is_a_padded_crop_or_its_mirror() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (64, 12, 12, 3), dtype=np.uint8)  # no zeros: padding shows
    out = augment_batch(tf.constant(images), tf.constant([5, 6], tf.int64)).numpy()
    assert out.shape == images.shape and out.dtype == np.uint8
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))

    def window(i: int, dy: int, dx: int, flip: bool) -> np.ndarray:
        crop = padded[i, dy : dy + 12, dx : dx + 12]
        return crop[:, ::-1] if flip else crop

    found = []
    for i in range(64):
        candidates = [(dy, dx, flip) for dy in range(9) for dx in range(9) for flip in (0, 1)]
        matches = [c for c in candidates if np.array_equal(out[i], window(i, *c))]
        assert matches, f"image {i} is not a crop of its padded original"
        found.append(matches[0])
    offsets = {(dy, dx) for dy, dx, _ in found}
    flips = [flip for _, _, flip in found]
    assert len(offsets) > 20 and 10 < sum(flips) < 54  # 81 offsets, flips with p = 1/2
    same = augment_batch(tf.constant(images), tf.constant([5, 6], tf.int64)).numpy()
    other = augment_batch(tf.constant(images), tf.constant([5, 7], tf.int64)).numpy()
    np.testing.assert_array_equal(same, out)
    assert not np.array_equal(other, out)


def test_training_batches_are_reproducible_with_augmentation() -> None:
    data = indexed_images(64)
    first = [x.numpy() for x, _ in train_batches(data, 16, MEAN, STD, seed=1)]
    again = [x.numpy() for x, _ in train_batches(data, 16, MEAN, STD, seed=1)]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))


def test_normalisation_standardises_the_training_split(real_data: DataConfig) -> None:
    cfg = dataclasses.replace(real_data, val_size=100, max_train_images=1000)
    splits = load_splits(cfg)
    x = np.concatenate([x for x, _ in eval_batches(splits.train, 256, splits.mean, splits.std)])
    x = x.astype(np.float64)  # float32 sums over 10^6 values lose the 4th decimal
    np.testing.assert_allclose(x.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(0, 1, 2)), 1, atol=1e-5)
    x0 = normalize(tf.constant(splits.train.images[:1]), splits.mean, splits.std).numpy()
    expected = (splits.train.images[:1] / 255 - np.array(splits.mean)) / np.array(splits.std)
    np.testing.assert_allclose(x0, expected, atol=1e-5)


def test_eval_batches_cover_every_image_once_in_order() -> None:
    data = indexed_images(70)
    batches = list(eval_batches(data, 32, MEAN, STD))
    assert [len(y) for _, y in batches] == [32, 32, 6]
    np.testing.assert_array_equal(np.concatenate([image_ids(x) for x, _ in batches]), range(70))
    assert len(list(eval_batches(data, 32, MEAN, STD, max_batches=2))) == 2


def test_too_few_images_for_a_batch_is_a_user_error() -> None:
    with pytest.raises(UserError, match="fewer than one batch of 64"):
        train_batches(indexed_images(10), 64, MEAN, STD)


# --- CIFAR download, on an archive in the official format written here ----------------------


def test_download_cifar_unpacks_the_official_layout(tmp_path: Path) -> None:
    cifar = write_cifar(tmp_path / "src", "cifar10", n_train=20, n_test=4)
    archive = write_cifar_archive(cifar, tmp_path / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "data"
    folder = download_cifar(root, "cifar10", origin=archive.as_uri(), md5=md5)
    assert folder == root.resolve() / "cifar-10-batches-py"
    assert datasets.cifar_is_present(root, "cifar10")
    # load_splits reads it (already present: no second download) with the same split.
    splits = load_splits(DataConfig(dataset="cifar10", root=str(root), val_size=5, seed=0))
    train_idx, _ = datasets.train_val_split(20, 5, 0)
    np.testing.assert_array_equal(splits.train.images, cifar.train_images[train_idx])
    np.testing.assert_array_equal(splits.train.labels, cifar.train_labels[train_idx])
    assert splits.test is not None and len(splits.test) == 4
    assert splits.classes == cifar.classes


def test_failed_download_is_one_user_error(tmp_path: Path) -> None:
    missing = (tmp_path / "nowhere" / "cifar-10-python.tar.gz").as_uri()
    with pytest.raises(UserError, match=r"Downloading cifar10 from .* failed .*--data\.root"):
        download_cifar(tmp_path / "data", "cifar10", origin=missing)
    cifar = write_cifar(tmp_path / "src", "cifar10", n_train=20, n_test=4)
    archive = write_cifar_archive(cifar, tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(UserError, match=r"Downloading cifar10 from .* failed"):  # bad checksum
        download_cifar(tmp_path / "data", "cifar10", origin=archive.as_uri(), md5="0" * 32)
