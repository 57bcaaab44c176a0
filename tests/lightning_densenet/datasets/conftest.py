"""Image folders and archives written on the fly, for the image-folder and cache tests."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_images(
    root: Path, split: str, counts: dict[str, int], size=(6, 5), ext=".png"
) -> dict[str, np.ndarray]:
    """Random images; returns {relative path: pixels}. PNG and BMP are lossless."""
    rng = np.random.default_rng(len(counts) + len(split))
    written = {}
    for cls, count in counts.items():
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            rel = f"{split}/{cls}/{i:03d}{ext}"
            Image.fromarray(pixels).save(root / rel)
            written[rel] = pixels
    return written


def tar(folder: Path, archive: Path, top: str | None = None) -> Path:
    """`folder`'s train/ and test/ in a .tar (or .tar.gz), nested in `top/` when given."""
    with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as t:
        for split in ("train", "test"):
            if (folder / split).exists():
                t.add(folder / split, arcname=f"{top}/{split}" if top else split)
    return archive


@pytest.fixture
def make_images() -> Callable[..., dict[str, np.ndarray]]:
    """`make_images(root, split, {class: count}, size=(w, h), ext=".png") -> {path: pixels}`."""
    return write_images


@pytest.fixture
def make_tar() -> Callable[..., Path]:
    """`make_tar(folder, archive, top=None) -> archive`."""
    return tar


@pytest.fixture
def image_folder(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "images"
    written = write_images(root, "train", {"dog": 3, "cat": 4, "bird": 2})
    written |= write_images(root, "test", {"cat": 2, "dog": 1})  # a subset of the classes
    # Things a loader must ignore: hidden files and folders, other files, files outside classes.
    (root / "train/cat/.hidden.png").write_bytes(b"junk")
    (root / "train/cat/notes.txt").write_text("not an image")
    (root / "train/.cache").mkdir()
    (root / "train/readme.png").write_bytes(b"junk")
    return root, written
