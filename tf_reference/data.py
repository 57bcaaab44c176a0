"""tf.data pipelines over the arrays both frameworks read: same files, same split, same statistics.

The images stay uint8 in memory (`lightning_densenet.datasets`); a pipeline shuffles indices,
batches them, and only then gathers, augments and normalises a whole batch with tensor ops,
as airbench does, instead of running Python per image. Training batches have a fixed shape
(`drop_remainder=True`), so a traced train step sees one input signature and is traced once.

Every random choice is a stateless op keyed by (seed, epoch, batch index): the same seed
gives the same batches whatever the parallelism, and epoch e can be rebuilt on its own.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from lightning_densenet import datasets
from lightning_densenet.datasets import ArrayDataset
from lightning_densenet.errors import UserError
from tf_reference.config import DataConfig

PAD = 4  # pixels of zero padding before the random crop (the paper's standard augmentation)

Stats = tuple[float, float, float]


@dataclass(frozen=True)
class Splits:
    """The data of one experiment: train and validation carved as the PyTorch side carves them."""

    train: ArrayDataset
    val: ArrayDataset | None  # None when data.val_size is 0
    test: ArrayDataset | None  # CIFAR's test set, or an image folder's test/ when it has one
    mean: Stats  # per channel, of the training split, in [0, 1] units
    std: Stats

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return len(self.train.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        h, w, c = self.train.images.shape[1:]
        return h, w, c


def download_cifar(
    root: str | Path, name: str, *, origin: str | None = None, md5: str | None = None
) -> Path:
    """Fetches the official CIFAR archive with `keras.utils.get_file` and unpacks it into `root`.

    `origin` and `md5` default to the official URL and checksum; leaves
    `root/cifar-10-batches-py/` (or `cifar-100-python/`), the layout torchvision writes too.
    """
    import keras  # only needed to download

    if name not in ("cifar10", "cifar100"):
        raise UserError(f"Unknown CIFAR dataset {name!r}: use cifar10 or cifar100.")
    official = datasets.cifar_archive(name)
    origin, md5 = (origin, md5) if origin else (official.url, official.md5)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        with datasets.socket_timeout():  # get_file takes no timeout of its own
            archive = keras.utils.get_file(
                fname=Path(origin).name,
                origin=origin,
                file_hash=md5,
                cache_dir=root,
                cache_subdir=".",
            )
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")  # refuses absolute paths and links out of root
    except Exception as err:  # URL, HTTP, checksum and archive errors all mean the same here
        reason = str(err).replace("\n", " ") or type(err).__name__
        raise datasets.download_failed(name, origin, root, reason) from None
    return root / datasets.cifar_folder(name)


def load_splits(cfg: DataConfig) -> Splits:
    """Reads `cfg`'s dataset and carves the splits as the PyTorch side does: a hold-out test
    split (`datasets.holdout_split`) where the data has none, then validation
    (`datasets.train_val_split`)."""
    if cfg.dataset == "imagefolder":
        full = datasets.load_image_folder(cfg.root, "train", cfg.cache_dir)
        has_test = datasets.has_split(cfg.root, "test", cfg.cache_dir)
        test = datasets.load_image_folder(cfg.root, "test", cfg.cache_dir) if has_test else None
    else:
        if cfg.download and not datasets.cifar_is_present(cfg.root, cfg.dataset):
            download_cifar(cfg.root, cfg.dataset)
        full = datasets.load_cifar(cfg.root, cfg.dataset, "train")
        test = datasets.load_cifar(cfg.root, cfg.dataset, "test")
    pool = np.arange(len(full))
    if cfg.holdout_size and test is None:
        held_out, pool = datasets.holdout_split(len(full), cfg.holdout_size)
        test = _subset(full, held_out)
    train_idx, val_idx = (
        pool[i]
        for i in datasets.train_val_split(len(pool), cfg.val_size, cfg.seed, cfg.max_train_images)
    )
    train = _subset(full, train_idx)
    mean, std = datasets.channel_stats(train.images)
    return Splits(train, _subset(full, val_idx) if len(val_idx) else None, test, mean, std)


def _subset(data: ArrayDataset, idx: np.ndarray) -> ArrayDataset:
    return ArrayDataset(data.images[idx], data.labels[idx], data.classes)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, pad: int = PAD) -> tf.Tensor:
    """(B, H, W, C) -> (B, H, W, C): per image, a random HxW crop of the zero-padded image,
    mirrored left-right with probability 1/2. `seed` is a stateless-op seed, shape (2,).

    One gather per axis does all of it: row r of image i reads padded row oy_i + r, and
    column c reads padded column ox_i + c, or ox_i + W - 1 - c when the image is flipped.
    """
    b, h, w = tf.shape(images)[0], images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform([b, 2], seed, maxval=2 * pad + 1, dtype=tf.int32)
    flip_seed = tf.random.experimental.stateless_fold_in(seed, 1)
    flip = tf.random.stateless_uniform([b, 1], flip_seed, maxval=2, dtype=tf.int32) == 1
    rows = offsets[:, :1] + tf.range(h)  # (B, H)
    cols = offsets[:, 1:] + tf.where(flip, tf.range(w - 1, -1, -1), tf.range(w))  # (B, W)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)  # (B, H, W + 2 pad, C)
    out = tf.gather(out, cols, axis=2, batch_dims=1)  # (B, H, W, C)
    return tf.ensure_shape(out, images.shape)


def normalize(images: tf.Tensor, mean: Stats, std: Stats) -> tf.Tensor:
    """uint8 (B, H, W, 3) -> float32, each channel standardised with the training statistics."""
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def train_batches(
    data: ArrayDataset,
    batch_size: int,
    mean: Stats,
    std: Stats,
    *,
    augment: bool = True,
    seed: int = 0,
    epochs: int = 1,
    first_epoch: int = 0,
    steps_per_epoch: int | None = None,
) -> tf.data.Dataset:
    """`epochs` epochs of training batches back to back: (float32 (B, H, W, 3), int64 (B,)).

    Each epoch is a fresh seeded permutation cut into full batches (the last partial batch is
    dropped, as the shapes must not change), of which at most `steps_per_epoch` are used.
    """
    n = len(data)
    if n < batch_size:
        raise UserError(
            f"The training split holds {n} images, fewer than one batch of {batch_size}: "
            "lower data.batch_size or use more images."
        )
    images, labels = tf.constant(data.images), tf.constant(data.labels)
    base_seed = tf.constant([seed, 0], tf.int64)

    def epoch_batches(epoch: tf.Tensor) -> tf.data.Dataset:
        epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
        order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), epoch_seed)
        batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=True)
        if steps_per_epoch is not None:
            batches = batches.take(steps_per_epoch)
        # Batch i of the epoch augments with seed fold_in(epoch_seed, i + 1).
        return batches.enumerate(start=1).map(
            lambda i, idx: (tf.random.experimental.stateless_fold_in(epoch_seed, i), idx)
        )

    def load(batch_seed: tf.Tensor, idx: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x = tf.gather(images, idx)
        if augment:
            x = augment_batch(x, batch_seed)
        return normalize(x, mean, std), tf.gather(labels, idx)

    return (
        tf.data.Dataset.range(first_epoch, first_epoch + epochs)
        .flat_map(epoch_batches)
        .map(load, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def eval_batches(
    data: ArrayDataset, batch_size: int, mean: Stats, std: Stats, *, max_batches: int | None = None
) -> tf.data.Dataset:
    """Every image once, in order, normalised, unaugmented; the last batch may be smaller."""
    images, labels = tf.constant(data.images), tf.constant(data.labels)
    batches = tf.data.Dataset.range(len(data)).batch(batch_size)
    if max_batches is not None:
        batches = batches.take(max_batches)
    return batches.map(
        lambda idx: (normalize(tf.gather(images, idx), mean, std), tf.gather(labels, idx)),
        num_parallel_calls=tf.data.AUTOTUNE,
    ).prefetch(tf.data.AUTOTUNE)


def steps_per_epoch(n_train: int, batch_size: int, limit: int | None = None) -> int:
    """Full batches in one epoch, capped at `limit` (trainer.limit_train_batches)."""
    full = n_train // batch_size
    return full if limit is None else min(full, limit)


__all__ = [
    "Splits",
    "augment_batch",
    "download_cifar",
    "eval_batches",
    "load_splits",
    "normalize",
    "steps_per_epoch",
    "train_batches",
]
