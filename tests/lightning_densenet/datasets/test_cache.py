"""The .npz cache: used until the source changes, answers for an archive, rebuilt when corrupt."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_densenet import UserError
from lightning_densenet.datasets import has_split, image_folder_classes, load_image_folder
from lightning_densenet.datasets.cache import cache_key, cache_path, folder_fingerprint
from lightning_densenet.datasets.image_folder import archive_listing
from tests.fake_data import write_images, write_tar


def test_cache_is_used_until_the_source_changes(tmp_path) -> None:
    written = write_images(tmp_path / "src", "train", {"a": 2, "b": 2}, ext=".bmp")
    cache = tmp_path / "cache"
    first = load_image_folder(tmp_path / "src", "train", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 1 and not list(cache.glob("*.tmp"))

    # New pixels, same size (BMP is uncompressed) and same mtime: the key sees no change, so a
    # second load returning the old pixels proves it came from the cache, not from decoding.
    path = tmp_path / "src/train/a/000.bmp"
    stat = path.stat()
    Image.fromarray(255 - written["train/a/000.bmp"]).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    np.testing.assert_array_equal(
        load_image_folder(tmp_path / "src", "train", cache_dir=cache).images, first.images
    )

    # A real change (new mtime) rebuilds the cache.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    rebuilt = load_image_folder(tmp_path / "src", "train", cache_dir=cache)
    np.testing.assert_array_equal(rebuilt.images[0], 255 - written["train/a/000.bmp"])
    np.testing.assert_array_equal(rebuilt.images[1:], first.images[1:])
    assert len(list(cache.glob("*.npz"))) == 1  # overwritten, not piled up


def test_archive_cache_answers_without_reading_the_archive(tmp_path) -> None:
    written = write_images(tmp_path / "src", "train", {"a": 2, "b": 1}, ext=".bmp")
    archive = write_tar(tmp_path / "src", tmp_path / "data.tar")
    cache = tmp_path / "cache"
    load_image_folder(archive, "train", cache_dir=cache)
    # Zeros of the same size and mtime: reading the archive would fail, so answers prove the
    # cache alone served them. Forget this process's listing too, as a new process would.
    stat = archive.stat()
    archive.write_bytes(bytes(stat.st_size))
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    archive_listing.cache_clear()
    assert image_folder_classes(archive, cache) == ("a", "b")
    assert not has_split(archive, "test", cache)
    cached = load_image_folder(archive, "train", cache_dir=cache)
    assert cached.classes == ("a", "b")
    np.testing.assert_array_equal(cached.images[2], written["train/b/000.bmp"])
    # A new mtime makes the cache stale: the archive is read again (an empty tar, to tarfile).
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(UserError, match=r"data\.tar holds no train/<class>/ folders"):
        load_image_folder(archive, "train", cache_dir=cache)


def test_corrupt_cache_is_rebuilt(tmp_path) -> None:
    written = write_images(tmp_path / "src", "train", {"a": 2})
    cache = tmp_path / "cache"
    load_image_folder(tmp_path / "src", "train", cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # truncated
    data = load_image_folder(tmp_path / "src", "train", cache_dir=cache)
    np.testing.assert_array_equal(data.images[1], written["train/a/001.png"])
    with np.load(cache_file) as npz:  # rewritten whole
        assert npz["images"].shape == (2, 5, 6, 3)


def test_cache_names_and_keys_are_stable() -> None:
    """A cache written by an earlier version is found only while these strings stay put."""
    assert cache_path(Path("/data/cifar10.tar.gz"), "train", "/cache") == Path(
        "/cache/cifar10-train-7bd2ebfa9a9c0f39.npz"
    )
    assert cache_key("archive:/d/x.tar:10:20", "test") == "v1|test|archive:/d/x.tar:10:20"
    stats = [("train/b/1.png", 5, 7), ("train/a/0.png", 3, 4)]
    assert folder_fingerprint(Path("/data/imgs"), ("a", "b"), stats) == (
        "folder:dd281290367fb3ee0dd6585f0dfe3e79347f327fb8fd4472d55dbe073d0daeff"
    )


def test_unwritable_cache_only_warns(tmp_path) -> None:
    written = write_images(tmp_path / "src", "train", {"a": 2})
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder would go")
    with pytest.warns(UserWarning, match="Could not cache decoded images in .*cache"):
        data = load_image_folder(tmp_path / "src", "train", cache_dir=cache)
    np.testing.assert_array_equal(data.images[1], written["train/a/001.png"])
    assert cache.read_text() == "a file where the cache folder would go"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "src"]  # no temporary files
