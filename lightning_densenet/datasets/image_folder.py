"""`train/<class>/*` (and optionally `test/<class>/*`) from a folder or a .tar/.tar.gz archive,
read in place, decoded once, then served from the .npz cache (`cache`).

Listing: which images the source holds, by split and class, without decoding them. Layout
`<split>/<class>/.../<image>`; hidden files and folders are skipped, and an archive whose
entries all sit in one top folder (`tar czf x.tar.gz folder/`) is looked through.
Decoding: the listed images' bytes, read from the folder or archive, to RGB.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np

from lightning_densenet.datasets.arrays import SPLITS, ArrayDataset, Split
from lightning_densenet.datasets.cache import (
    archive_fingerprint,
    cache_key,
    cache_path,
    folder_fingerprint,
    read_cache,
    read_summary,
    write_cache,
)
from lightning_densenet.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# Pillow would clip 16-bit and float pixels to 0..255 without a word.
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


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


# --- Listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listing:
    path: Path  # resolved folder or archive
    # For an archive: image name -> (byte offset, size) of its data in the uncompressed tar.
    members: dict[str, tuple[int, int]] | None
    files: dict[str, list[tuple[str, str]]]  # split -> sorted [(relative name, class)]
    classes: tuple[str, ...]
    fingerprints: dict[str, str]  # split -> changes when any image's path, size or mtime does


def list_images(root: Path) -> Listing:
    """The listing of a folder or archive; a `UserError` naming the fix when it is neither."""
    if root.is_dir():
        return _folder_listing(root.resolve())
    if (fingerprint := archive_fingerprint(root)) is not None and tarfile.is_tarfile(root):
        return archive_listing(root.resolve(), fingerprint)
    if root.exists():
        raise UserError(
            f"{root} is neither a folder nor a .tar/.tar.gz archive: point data.root at one."
        )
    raise UserError(
        f"{root} does not exist: point data.root at a folder or .tar/.tar.gz archive holding "
        "train/<class>/<image> files."
    )


def _folder_listing(root: Path) -> Listing:
    entries: list[tuple[str, int, int]] = []  # (posix name relative to root, size, mtime)
    class_dirs: set[str] = set()
    for split in SPLITS:
        top = root / split
        if not top.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
            if len(rel.parts) == 1 and split == "train":
                class_dirs.update(dirnames)
            for file in filenames:
                if _is_image(file) and len(rel.parts) >= 2:
                    stat = os.stat(os.path.join(dirpath, file))
                    entries.append((str(rel / file), stat.st_size, stat.st_mtime_ns))
    return _make_listing(root, None, entries, class_dirs)


# Listing a .tar.gz reads all of it: do it once per process and version (the fingerprint
# holds the archive's path, size and mtime).
@lru_cache(maxsize=8)
def archive_listing(path: Path, fingerprint: str) -> Listing:
    try:
        with tarfile.open(path) as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(
            f"Cannot read archive {path} ({err}): replace it with a valid one."
        ) from err
    names = [PurePosixPath(m.name.removeprefix("./")) for m in members]
    # `tar czf x.tar.gz folder/` nests everything in one top folder: look through it.
    prefix = ""
    if not any(n.parts and n.parts[0] in ("train", "test") for n in names):
        tops = {n.parts[0] for n in names if n.parts}
        if len(tops) == 1:
            prefix = f"{tops.pop()}/"
    entries, class_dirs, offsets = [], set(), {}
    for member, name in zip(members, names, strict=True):
        rel = PurePosixPath(str(name).removeprefix(prefix))
        if any(part.startswith(".") for part in rel.parts) or len(rel.parts) < 2:
            continue
        if member.isdir():
            if rel.parts[0] == "train" and len(rel.parts) == 2:
                class_dirs.add(rel.parts[1])
        elif _is_image(rel.name) and len(rel.parts) >= 3:
            entries.append((str(rel), member.size, member.mtime))
            offsets[str(rel)] = (member.offset_data, member.size)
    listing = _make_listing(path, offsets, entries, class_dirs)
    return Listing(
        path, offsets, listing.files, listing.classes, dict.fromkeys(SPLITS, fingerprint)
    )


def _make_listing(
    path: Path,
    members: dict[str, tuple[int, int]] | None,
    entries: list[tuple[str, int, int]],
    class_dirs: set[str],
) -> Listing:
    files: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    stats: dict[str, list[tuple[str, int, int]]] = {split: [] for split in SPLITS}
    for entry in entries:
        split, cls, *_ = entry[0].split("/")
        if split in files:
            files[split].append((entry[0], cls))
            stats[split].append(entry)
            if split == "train":
                class_dirs.add(cls)
    for split_files in files.values():
        split_files.sort(key=lambda item: (item[1], item[0]))  # by class, then path
    classes = tuple(sorted(class_dirs))
    if not classes:
        raise UserError(
            f"{path} holds no train/<class>/ folders: arrange the images as "
            "train/<class>/<image> (extensions: " + ", ".join(IMAGE_EXTENSIONS) + ")."
        )
    if empty := sorted(set(classes) - {cls for _, cls in files["train"]}):
        raise UserError(f"{path}: train/{empty[0]} holds no images: add some or remove the folder.")
    fingerprints = {split: folder_fingerprint(path, classes, s) for split, s in stats.items()}
    return Listing(path, members, files, classes, fingerprints)


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


# --- Decoding ----------------------------------------------------------------------------------


def decode_all(listing: Listing, names: Iterable[str]) -> dict[str, np.ndarray]:
    """{name: (H, W, 3) uint8} for the named images of `listing`."""
    return {name: _decode(name, data) for name, data in _read_files(listing, names)}


def _read_files(listing: Listing, names: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    if listing.members is None:
        for name in names:
            yield name, (listing.path / name).read_bytes()
        return
    # Read at the offsets the listing found, in storage order: a .tar.gz then inflates once,
    # moving forward only, and tar headers are not parsed a second time.
    with tarfile.open(listing.path) as tar:
        stream = tar.fileobj  # the uncompressed tar stream (a GzipFile for .tar.gz)
        assert stream is not None
        for name in sorted(names, key=lambda n: listing.members[n][0]):  # type: ignore[index]
            offset, size = listing.members[name]
            stream.seek(offset)
            yield name, stream.read(size)


def _decode(name: str, data: bytes) -> np.ndarray:
    from PIL import Image  # only needed when decoding

    try:
        with Image.open(io.BytesIO(data)) as image:
            mode = image.mode
            if mode not in _HIGH_DEPTH_MODES:
                return np.asarray(image.convert("RGB"))
    except Exception as err:  # Pillow raises many types for bad files
        raise UserError(f"Cannot decode image {name} ({err}): replace or remove it.") from err
    raise UserError(
        f"Image {name} has {mode} pixels (more than 8 bits per channel), which would be "
        "clipped: convert the images to 8-bit RGB (or grey) first."
    )
