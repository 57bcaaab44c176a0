"""The .npz cache of decoded images: one file per source and split, found by a key.

The key holds the source's fingerprint (`archive_fingerprint`, `folder_fingerprint`), which
changes when any image's path, size or mtime does, so a stale file is overwritten, never piled
up. Keep the names and key strings as they are: a cache written before is found by them.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from lightning_densenet.datasets.arrays import ArrayDataset
from lightning_densenet.files import atomic_write

T = TypeVar("T")

CACHE_VERSION = 1  # bump when the cache layout changes; older files are then rebuilt


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/lightning_densenet`, or `~/.cache/lightning_densenet`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightning_densenet"


def cache_path(source: Path, split: str, cache_dir: str | Path | None) -> Path:
    """Where the cache of `source`'s (a resolved path) `split` lives."""
    tag = hashlib.sha256(str(source).encode()).hexdigest()[:16]
    stem = source.name.split(".")[0] or "data"
    return Path(cache_dir or default_cache_dir()) / f"{stem}-{split}-{tag}.npz"


def archive_fingerprint(root: Path) -> str | None:
    """Identifies an archive's content by path, size and mtime; None when `root` is no file."""
    if not root.is_file():
        return None
    path, stat = root.resolve(), root.stat()
    return f"archive:{path}:{stat.st_size}:{stat.st_mtime_ns}"


def folder_fingerprint(
    path: Path, classes: tuple[str, ...], stats: list[tuple[str, int, int]]
) -> str:
    """Identifies one split of a folder by its images' (name, size, mtime) and the classes
    (labels index them, so they are part of it)."""
    return (
        "folder:" + hashlib.sha256(repr((str(path), classes, sorted(stats))).encode()).hexdigest()
    )


def cache_key(fingerprint: str, split: str) -> str:
    return f"v{CACHE_VERSION}|{split}|{fingerprint}"


def read_cache(path: Path, key: str) -> ArrayDataset | None:
    """The cached images when `path` holds them under `key`; None to rebuild."""
    data = _read(path, key, _dataset)
    if data is None:
        return None
    if data.images.dtype != np.uint8 or data.images.ndim != 4 or len(data.images) != len(data):
        return None
    return data


def _dataset(npz: Any) -> ArrayDataset:
    return ArrayDataset(npz["images"], npz["labels"], tuple(str(c) for c in npz["classes"]))


def read_summary(path: Path, key: str) -> tuple[tuple[str, ...], set[str]] | None:
    """(classes, splits of the source) from a cache file, without reading its images."""
    return _read(
        path,
        key,
        lambda npz: (tuple(str(c) for c in npz["classes"]), {str(s) for s in npz["splits"]}),
    )


def _read(path: Path, key: str, build: Callable[[Any], T]) -> T | None:
    try:  # npz members load lazily: `build` reads only what it uses
        with np.load(path, allow_pickle=False) as npz:
            return build(npz) if str(npz["key"]) == key else None
    except Exception:  # missing, truncated, foreign or half-written: rebuild it
        return None


def write_cache(path: Path, key: str, data: ArrayDataset, splits: list[str]) -> None:
    """Store `data` under `key`; `splits` are the source's, for `read_summary`."""

    def write(f: IO[bytes]) -> None:
        np.savez(
            f,
            key=np.array(key),
            images=data.images,
            labels=data.labels,
            classes=np.array(data.classes),
            splits=np.array(splits),
        )

    try:  # atomically: readers never see a half-written file
        atomic_write(path, write, remove_stale=False)  # DDP processes may all write it
    except OSError as err:  # an unwritable cache only costs speed
        warnings.warn(f"Could not cache decoded images in {path}: {err}", stacklevel=3)
