"""`train/<class>/*` (and optionally `test/<class>/*`) from a folder or a .tar/.tar.gz archive,
read in place, decoded once, then served from the .npz cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lightning_densenet.datasets.arrays import SPLITS, ArrayDataset, Split
from lightning_densenet.datasets.cache import (
    cache_key,
    cache_path,
    read_cache,
    read_summary,
    write_cache,
)
from lightning_densenet.datasets.decode import decode_all
from lightning_densenet.datasets.fingerprint import archive_fingerprint
from lightning_densenet.datasets.listing import list_images
from lightning_densenet.errors import UserError


def image_folder_classes(root: str | Path, cache_dir: str | Path | None = None) -> tuple[str, ...]:
    """The class names under `train/`, sorted (torchvision's `ImageFolder` order). No decoding."""
    if (summary := _cached_summary(Path(root), cache_dir)) is not None:
        return summary[0]
    return list_images(Path(root)).classes


def has_split(root: str | Path, split: Split, cache_dir: str | Path | None = None) -> bool:
    """Whether the folder or archive holds `<split>/<class>/<image>` files."""
    if (summary := _cached_summary(Path(root), cache_dir)) is not None:
        return split in summary[1]
    return bool(list_images(Path(root)).files.get(split))


def load_image_folder(
    root: str | Path, split: Split, cache_dir: str | Path | None = None
) -> ArrayDataset:
    """Load `<split>/<class>/<image>` from a folder or a .tar/.tar.gz archive.

    Labels index the classes of `train/` (so `test/` may hold a subset of them). Images are
    decoded to RGB once and cached as .npz under `cache_dir` (default
    `$XDG_CACHE_HOME/lightning_densenet`); the cache is reused until the source's paths,
    sizes or modification times change.
    """
    root = Path(root)
    # An archive's cache is checked before listing it: listing a .tar.gz inflates all of it.
    if (fingerprint := archive_fingerprint(root)) is not None:
        cache = cache_path(root.resolve(), split, cache_dir)
        if (cached := read_cache(cache, cache_key(fingerprint, split))) is not None:
            return cached
    listing = list_images(root)
    files = listing.files.get(split)
    if not files:
        raise UserError(f"{root} holds no {split}/<class>/<image> files: add a {split}/ folder.")
    if unknown := sorted({cls for _, cls in files} - set(listing.classes)):
        raise UserError(
            f"{root}: {split}/{unknown[0]} is not a class of train/: rename or remove it."
        )
    key = cache_key(listing.fingerprints[split], split)
    cache = cache_path(listing.path, split, cache_dir)
    if (cached := read_cache(cache, key)) is not None:
        return cached

    index = {cls: i for i, cls in enumerate(listing.classes)}
    images = decode_all(listing, [name for name, _ in files])
    first = files[0][0]
    for name, _ in files:
        if images[name].shape != images[first].shape:
            raise UserError(
                f"Images differ in size: {name} is {_size(images[name])} but {first} is "
                f"{_size(images[first])}; resize them all to one size first."
            )
    data = ArrayDataset(
        np.stack([images[name] for name, _ in files]),
        np.array([index[cls] for _, cls in files], dtype=np.int64),
        listing.classes,
    )
    write_cache(cache, key, data, splits=[s for s in SPLITS if listing.files[s]])
    return data


def _cached_summary(
    root: Path, cache_dir: str | Path | None
) -> tuple[tuple[str, ...], set[str]] | None:
    """(classes, splits) of an archive from its train cache, without reading the archive."""
    if (fingerprint := archive_fingerprint(root)) is None:
        return None
    return read_summary(
        cache_path(root.resolve(), "train", cache_dir), cache_key(fingerprint, "train")
    )


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"
