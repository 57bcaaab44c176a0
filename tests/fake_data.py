"""Tiny datasets written on the fly: CIFAR in the official pickled format (as files or as the
official archive), image folders, and their archives. Random pixels, seeded."""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class CifarFiles:
    """What `write_cifar` wrote, as `load_cifar` must return it."""

    root: Path
    train_images: np.ndarray  # (N, 32, 32, 3) uint8, what load_cifar must return
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]

    @property
    def folder(self) -> Path:
        """The batches folder: cifar-10-batches-py/ or cifar-100-python/."""
        return self.root / (
            "cifar-10-batches-py" if len(self.classes) == 10 else "cifar-100-python"
        )


def write_cifar(
    root: Path, name: str, n_train: int = 50, n_test: int = 20, seed: int = 0
) -> CifarFiles:
    """Random images in the official "python version" layout, pickled as Python 2 did."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    classes = tuple(f"class_{i:02d}" for i in range(num_classes))
    images = rng.integers(0, 256, (n_train + n_test, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, n_train + n_test)

    def batch(lo: int, hi: int, label_key: bytes) -> dict[bytes, object]:
        # Official rows: the 1024 R values, then G, then B, each plane row-major.
        rows = images[lo:hi].transpose(0, 3, 1, 2).reshape(hi - lo, 3072)
        return {
            b"batch_label": b"batch",
            label_key: [int(x) for x in labels[lo:hi]],  # a list, as in the official files
            b"data": rows,
            b"filenames": [f"{i}.png".encode() for i in range(lo, hi)],
        }

    def dump(path: Path, obj: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(obj, protocol=2))

    names = [c.encode() for c in classes]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        edges = np.linspace(0, n_train, 6).astype(int)  # five training batches
        for i in range(5):
            dump(folder / f"data_batch_{i + 1}", batch(edges[i], edges[i + 1], b"labels"))
        dump(folder / "test_batch", batch(n_train, n_train + n_test, b"labels"))
        dump(folder / "batches.meta", {b"label_names": names, b"num_cases_per_batch": 10000})
    else:
        folder = root / "cifar-100-python"
        dump(folder / "train", batch(0, n_train, b"fine_labels"))
        dump(folder / "test", batch(n_train, n_train + n_test, b"fine_labels"))
        dump(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": [b"x"] * 20})
    return CifarFiles(
        root, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:], classes
    )


def write_images(
    root: Path,
    split: str,
    counts: dict[str, int],
    size: tuple[int, int] = (6, 5),
    ext: str = ".png",
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


def write_tar(folder: Path, archive: Path, top: str | None = None) -> Path:
    """`folder`'s train/ and test/ in a .tar (or .tar.gz), nested in `top/` when given."""
    with tarfile.open(archive, "w:gz" if archive.name.endswith("gz") else "w") as t:
        for split in ("train", "test"):
            if (folder / split).exists():
                t.add(folder / split, arcname=f"{top}/{split}" if top else split)
    return archive


def write_cifar_archive(cifar: CifarFiles, archive: Path) -> Path:
    """`cifar`'s batches folder as the official download packs it (cifar-10-python.tar.gz)."""
    with tarfile.open(archive, "w:gz") as t:
        t.add(cifar.folder, arcname=cifar.folder.name)
    return archive
