"""The numpy data layer: CIFAR pickles, image folders and archives, the cache, splits, stats."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightning_densenet import UserError, datasets
from lightning_densenet.datasets import (
    channel_stats,
    cifar_classes,
    cifar_is_present,
    has_split,
    image_folder_classes,
    load_cifar,
    load_image_folder,
    train_val_split,
)

# --- CIFAR ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_load_cifar_returns_the_pickled_pixels_and_labels(tmp_path, make_cifar, name) -> None:
    files = make_cifar(tmp_path, name, n_train=50, n_test=20)
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


def test_cifar_pixel_layout_is_channel_planes(tmp_path, make_cifar) -> None:
    make_cifar(tmp_path, "cifar10")
    # Overwrite the first training row by hand: R plane all 1, G all 2, B ramps 0..1023 % 256.
    path = tmp_path / "cifar-10-batches-py/data_batch_1"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch[b"data"][0] = np.concatenate([np.full(1024, 1), np.full(1024, 2), np.arange(1024) % 256])
    path.write_bytes(pickle.dumps(batch, protocol=2))
    image = load_cifar(tmp_path, "cifar10", "train").images[0]
    assert (image[..., 0] == 1).all() and (image[..., 1] == 2).all()
    assert image[0, 5, 2] == 5 and image[1, 0, 2] == 32  # row-major within the plane


def test_missing_cifar_file_names_it_and_the_fix(tmp_path, make_cifar) -> None:
    make_cifar(tmp_path, "cifar10")
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
def test_corrupt_cifar_file_is_a_user_error(tmp_path, make_cifar, content) -> None:
    make_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py/data_batch_2").write_bytes(content)
    with pytest.raises(UserError, match=r"data_batch_2 is corrupt .*download it again"):
        load_cifar(tmp_path, "cifar10", "train")


def test_cifar_pickles_cannot_run_code(tmp_path, make_cifar) -> None:
    make_cifar(tmp_path, "cifar10")
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


# --- Image folders -------------------------------------------------------------------------


def _write_images(root: Path, split: str, counts: dict[str, int], size=(6, 5), ext=".png"):
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


def _expected(written: dict[str, np.ndarray], split: str, classes: tuple[str, ...]):
    items = sorted((rel.split("/")[1], rel) for rel in written if rel.startswith(split + "/"))
    images = np.stack([written[rel] for _, rel in items])
    labels = np.array([classes.index(cls) for cls, _ in items])
    return images, labels


def _tar(folder: Path, archive: Path, top: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as tar:
        for split in ("train", "test"):
            if (folder / split).exists():
                tar.add(folder / split, arcname=f"{top}/{split}" if top else split)
    return archive


@pytest.fixture
def image_folder(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    root = tmp_path / "images"
    written = _write_images(root, "train", {"dog": 3, "cat": 4, "bird": 2})
    written |= _write_images(root, "test", {"cat": 2, "dog": 1})  # a subset of the classes
    # Things a loader must ignore: hidden files and folders, other files, files outside classes.
    (root / "train/cat/.hidden.png").write_bytes(b"junk")
    (root / "train/cat/notes.txt").write_text("not an image")
    (root / "train/.cache").mkdir()
    (root / "train/readme.png").write_bytes(b"junk")
    return root, written


@pytest.mark.parametrize("form", ["folder", "tar.gz", "tar-nested"])
def test_image_folder_round_trips_pixels(tmp_path, image_folder, form) -> None:
    root, written = image_folder
    source = {
        "folder": root,
        "tar.gz": _tar(root, tmp_path / "images.tar.gz"),
        "tar-nested": _tar(root, tmp_path / "images.tar", top="images"),  # `tar cf x.tar images/`
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
    _write_images(tmp_path, "train", {"a": 1, "b": 1})
    archive = _tar(tmp_path, tmp_path / "train-only.tar.gz")
    for source in (tmp_path, archive):
        assert has_split(source, "train") and not has_split(source, "test")
        with pytest.raises(UserError, match=r"holds no test/<class>/<image> files: add a test/"):
            load_image_folder(source, "test", cache_dir=tmp_path / "cache")


def test_cache_is_used_until_the_source_changes(tmp_path) -> None:
    written = _write_images(tmp_path / "src", "train", {"a": 2, "b": 2}, ext=".bmp")
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
    written = _write_images(tmp_path / "src", "train", {"a": 2, "b": 1}, ext=".bmp")
    archive = _tar(tmp_path / "src", tmp_path / "data.tar")
    cache = tmp_path / "cache"
    load_image_folder(archive, "train", cache_dir=cache)
    # Zeros of the same size and mtime: reading the archive would fail, so answers prove the
    # cache alone served them. Forget this process's listing too, as a new process would.
    stat = archive.stat()
    archive.write_bytes(bytes(stat.st_size))
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    datasets._archive_listing.cache_clear()
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
    written = _write_images(tmp_path / "src", "train", {"a": 2})
    cache = tmp_path / "cache"
    load_image_folder(tmp_path / "src", "train", cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])  # truncated
    data = load_image_folder(tmp_path / "src", "train", cache_dir=cache)
    np.testing.assert_array_equal(data.images[1], written["train/a/001.png"])
    with np.load(cache_file) as npz:  # rewritten whole
        assert npz["images"].shape == (2, 5, 6, 3)


def test_mixed_image_sizes_name_an_offending_file(tmp_path) -> None:
    _write_images(tmp_path, "train", {"a": 2}, size=(8, 8))
    _write_images(tmp_path, "train", {"b": 1}, size=(8, 7))
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
    _write_images(tmp_path, "train", {"a": 1})
    (tmp_path / "train/a/broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(UserError, match=r"Cannot decode image train/a/broken\.jpg"):
        load_image_folder(tmp_path, "train", cache_dir=tmp_path / "cache")


def test_unknown_test_class_is_a_user_error(tmp_path) -> None:
    _write_images(tmp_path, "train", {"a": 1})
    _write_images(tmp_path, "test", {"zebra": 1})
    with pytest.raises(UserError, match=r"test/zebra is not a class of train/"):
        load_image_folder(tmp_path, "test", cache_dir=tmp_path / "cache")


# --- Splits and statistics -----------------------------------------------------------------


def test_train_val_split_is_disjoint_seeded_and_bounded() -> None:
    train, val = train_val_split(100, 20, seed=3)
    assert len(train) == 80 and len(val) == 20
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    again_train, again_val = train_val_split(100, 20, seed=3)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, train_val_split(100, 20, seed=4)[1])
    # max_train takes a prefix of the same permutation and leaves validation alone.
    small_train, small_val = train_val_split(100, 20, seed=3, max_train=10)
    np.testing.assert_array_equal(small_train, train[:10])
    np.testing.assert_array_equal(small_val, val)
    assert len(train_val_split(100, 20, seed=3, max_train=1000)[0]) == 80
    assert len(train_val_split(100, 0, seed=3)[1]) == 0
    # The documented recipe, so another framework can reproduce it.
    np.testing.assert_array_equal(val, np.random.default_rng(3).permutation(100)[:20])


@pytest.mark.parametrize(
    ("n", "val_size", "max_train", "message"),
    [
        (100, 100, None, r"data\.val_size=100 must be at least 0 and below the 100"),
        (100, -1, None, r"data\.val_size=-1"),
        (100, 10, 0, r"data\.max_train_images=0 must be positive"),
    ],
)
def test_train_val_split_rejects_bad_sizes(n, val_size, max_train, message) -> None:
    with pytest.raises(UserError, match=message):
        train_val_split(n, val_size, 0, max_train)


def test_channel_stats_by_hand() -> None:
    images = np.zeros((2, 1, 2, 3), np.uint8)
    images[..., 0] = [[[0, 255]], [[255, 255]]]  # R: 0, 1, 1, 1 -> mean 0.75, std sqrt(3)/4
    images[..., 1] = 51  # G: constant 0.2 -> std 0
    images[..., 2] = [[[0, 0]], [[102, 102]]]  # B: 0, 0, 0.4, 0.4 -> mean 0.2, std 0.2
    mean, std = channel_stats(images)
    np.testing.assert_allclose(mean, (0.75, 0.2, 0.2), rtol=1e-12)
    np.testing.assert_allclose(std, (np.sqrt(3) / 4, 0.0, 0.2), rtol=1e-12, atol=1e-15)


def test_channel_stats_matches_float64_numpy() -> None:
    images = np.random.default_rng(0).integers(0, 256, (7, 5, 4, 3), dtype=np.uint8)
    mean, std = channel_stats(images)
    floats = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, floats.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, floats.std(axis=(0, 1, 2)), rtol=1e-12)


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
    data = load_image_folder(cifar10_jpeg_tar, "train", cache_dir=image_cache)
    assert data.images.shape == (50_000, 32, 32, 3) and data.images.dtype == np.uint8
    assert data.classes == CIFAR10_CLASSES
    np.testing.assert_array_equal(np.bincount(data.labels), [5000] * 10)
    assert not has_split(cifar10_jpeg_tar, "test", image_cache)
    # Close to the official CIFAR-10 training statistics (JPEG moves them slightly).
    mean, std = channel_stats(data.images)
    np.testing.assert_allclose(mean, (0.4914, 0.4822, 0.4465), atol=2e-3)
    np.testing.assert_allclose(std, (0.2470, 0.2435, 0.2616), atol=5e-3)
    # The cached copy is the same data.
    again = load_image_folder(cifar10_jpeg_tar, "train", cache_dir=image_cache)
    np.testing.assert_array_equal(again.images[::997], data.images[::997])
    np.testing.assert_array_equal(again.labels, data.labels)


def test_importing_the_data_layer_imports_no_framework() -> None:
    code = (
        "import sys, lightning_densenet.datasets; "
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
