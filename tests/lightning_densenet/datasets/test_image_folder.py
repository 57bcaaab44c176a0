"""Image folders and archives: pixels, labels and classes, and the errors of a bad layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lightning_densenet import UserError
from lightning_densenet.datasets import (
    channel_stats,
    has_split,
    image_folder_classes,
    load_image_folder,
)
from tests.fake_data import write_images, write_tar


def _expected(written: dict[str, np.ndarray], split: str, classes: tuple[str, ...]):
    items = sorted((rel.split("/")[1], rel) for rel in written if rel.startswith(split + "/"))
    images = np.stack([written[rel] for _, rel in items])
    labels = np.array([classes.index(cls) for cls, _ in items])
    return images, labels


@pytest.mark.parametrize("form", ["folder", "tar.gz", "tar-nested"])
def test_image_folder_round_trips_pixels(tmp_path, image_folder, form) -> None:
    root, written = image_folder
    source = {
        "folder": root,
        "tar.gz": write_tar(root, tmp_path / "images.tar.gz"),
        # `tar cf x.tar images/` nests everything in images/
        "tar-nested": write_tar(root, tmp_path / "images.tar", top="images"),
    }[form]
    classes = ("bird", "cat", "dog")  # sorted, like torchvision's ImageFolder
    assert image_folder_classes(source) == classes
    assert has_split(source, "train") and has_split(source, "test")
    for split in ("train", "test"):
        data = load_image_folder(source, split, cache_dir=tmp_path / "cache")
        images, labels = _expected(written, split, classes)
        assert data.classes == classes
        assert data.images.dtype == np.uint8 and data.images.shape == (len(labels), 5, 6, 3)
        np.testing.assert_array_equal(data.images, images)
        np.testing.assert_array_equal(data.labels, labels)


def test_image_folder_without_test_split(tmp_path) -> None:
    write_images(tmp_path, "train", {"a": 1, "b": 1})
    archive = write_tar(tmp_path, tmp_path / "train-only.tar.gz")
    for source in (tmp_path, archive):
        assert has_split(source, "train") and not has_split(source, "test")
        with pytest.raises(UserError, match=r"holds no test/<class>/<image> files: add a test/"):
            load_image_folder(source, "test", cache_dir=tmp_path / "cache")


def test_mixed_image_sizes_name_an_offending_file(tmp_path) -> None:
    write_images(tmp_path, "train", {"a": 2}, size=(8, 8))
    write_images(tmp_path, "train", {"b": 1}, size=(8, 7))
    with pytest.raises(UserError, match=r"train/b/000\.png is 8x7 but train/a/000\.png is 8x8"):
        load_image_folder(tmp_path, "train", cache_dir=tmp_path / "cache")


def test_grayscale_and_rgba_images_become_rgb(tmp_path) -> None:
    (tmp_path / "train/a").mkdir(parents=True)
    Image.fromarray(np.full((4, 4), 7, np.uint8), "L").save(tmp_path / "train/a/gray.png")
    Image.fromarray(np.full((4, 4, 4), 9, np.uint8), "RGBA").save(tmp_path / "train/a/rgba.png")
    data = load_image_folder(tmp_path, "train", cache_dir=tmp_path / "cache")
    assert data.images.shape == (2, 4, 4, 3)
    assert (data.images[0] == 7).all() and (data.images[1] == 9).all()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, r"does not exist: point data\.root at a folder"),
        (lambda root: root.mkdir(), r"holds no train/<class>/ folders"),
        (lambda root: (root / "train/empty").mkdir(parents=True), r"train/empty holds no images"),
        (lambda root: root.write_text("hello"), r"neither a folder nor a \.tar/\.tar\.gz archive"),
    ],
    ids=["missing", "no-train", "empty-class", "not-an-archive"],
)
def test_bad_image_folders_are_user_errors(tmp_path, make, message) -> None:
    root = tmp_path / "data"
    make(root)
    with pytest.raises(UserError, match=message):
        load_image_folder(root, "train", cache_dir=tmp_path / "cache")


def test_undecodable_image_is_named(tmp_path) -> None:
    write_images(tmp_path, "train", {"a": 1})
    (tmp_path / "train/a/broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match=r"Cannot decode image train/a/broken\.jpg"):
        load_image_folder(tmp_path, "train", cache_dir=tmp_path / "cache")


def test_unknown_test_class_is_a_user_error(tmp_path) -> None:
    write_images(tmp_path, "train", {"a": 1})
    write_images(tmp_path, "test", {"zebra": 1})
    with pytest.raises(UserError, match=r"test/zebra is not a class of train/"):
        load_image_folder(tmp_path, "test", cache_dir=tmp_path / "cache")


# --- The shared CIFAR-10 JPEG archive ------------------------------------------------------

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def test_shared_cifar10_jpeg_archive(cifar10_jpeg_tar, image_cache) -> None:
    # Decoded once per test run into `image_cache` (its round trip: test_cache.py).
    data = load_image_folder(cifar10_jpeg_tar, "train", cache_dir=image_cache)
    assert data.images.shape == (50_000, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.classes == CIFAR10_CLASSES
    np.testing.assert_array_equal(np.bincount(data.labels), [5000] * 10)
    assert not has_split(cifar10_jpeg_tar, "test", image_cache)
    # Close to the official CIFAR-10 training statistics (JPEG moves them slightly).
    mean, std = channel_stats(data.images)
    np.testing.assert_allclose(mean, (0.4914, 0.4822, 0.4465), atol=2e-3)
    np.testing.assert_allclose(std, (0.2470, 0.2435, 0.2616), atol=5e-3)
