"""What identifies a source's content for the cache: changes when any image's path, size or
mtime does. Keep these strings as they are: a cache written before is found by them."""

from __future__ import annotations

import hashlib
from pathlib import Path


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
