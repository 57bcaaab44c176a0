"""An image folder with things a loader must ignore, for the image-folder tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fake_data import write_images


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
