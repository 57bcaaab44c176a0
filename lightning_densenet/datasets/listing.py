"""Which images a folder or .tar/.tar.gz archive holds, by split and class, without decoding.

Layout: `<split>/<class>/.../<image>`; hidden files and folders are skipped, and an archive
whose entries all sit in one top folder (`tar czf x.tar.gz folder/`) is looked through.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath

from lightning_densenet.datasets.arrays import SPLITS
from lightning_densenet.datasets.fingerprint import archive_fingerprint, folder_fingerprint
from lightning_densenet.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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
