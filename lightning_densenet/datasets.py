"""Image datasets as in-memory numpy arrays, shared by the PyTorch and Keras pipelines.

Imports neither torch nor TensorFlow. Every loader returns an `ArrayDataset`: uint8 NHWC
images (the layout of torchvision's `CIFAR10.data` and of Keras) and int64 labels.

- `load_cifar`: the official CIFAR-10/100 "python version" pickles.
- `load_image_folder`: `train/<class>/*` (and optionally `test/<class>/*`) in a folder or a
  .tar/.tar.gz archive, read in place. Decoded once, then cached as .npz.
- `train_val_split`: the one split both frameworks use, so they see the same images.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import pickle
import socket
import tarfile
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal, NamedTuple, NoReturn

import numpy as np

from lightning_densenet.errors import UserError

Split = Literal["train", "test"]
CifarName = Literal["cifar10", "cifar100"]
SPLITS: tuple[Split, ...] = ("train", "test")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
_CACHE_VERSION = 1  # bump when the cache layout changes; older files are then rebuilt


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare by
class ArrayDataset:
    """Images and labels held in memory."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64, indices into `classes`
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


# --- CIFAR, official python-pickle format --------------------------------------------------


class _CifarFiles(NamedTuple):
    folder: str  # what the official archive unpacks to
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str


_CIFAR = {
    "cifar10": _CifarFiles(
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": _CifarFiles(
        "cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names"
    ),
}


def cifar_folder(name: CifarName) -> str:
    """The folder the official archive unpacks to, e.g. `cifar-10-batches-py`."""
    return _cifar_files(name).folder


DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation: a stalled connection fails instead of hanging


@contextmanager
def socket_timeout(seconds: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """The process-wide socket timeout for a download whose client takes none of its own
    (torchvision's urlopen, keras.utils.get_file)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_failed(name: CifarName, url: str, root: str | Path, reason: object) -> UserError:
    """The one sentence both frameworks give when a CIFAR download fails."""
    return UserError(
        f"Downloading {name} from {url} into {root} failed ({reason}): point "
        f"--data.root at a folder holding {cifar_folder(name)}/, or use "
        "--data.dataset imagefolder --data.root DIR_OR_TAR."
    )


def cifar_is_present(root: str | Path, name: CifarName) -> bool:
    """Whether every file `load_cifar` reads exists under `root` (no integrity check)."""
    spec = _cifar_files(name)
    return all(
        (Path(root) / spec.folder / f).is_file() for f in (*spec.train, *spec.test, spec.meta)
    )


def cifar_classes(root: str | Path, name: CifarName) -> tuple[str, ...]:
    """The class names in CIFAR's meta file (fine labels for CIFAR-100), in label order."""
    spec = _cifar_files(name)
    meta = _read_cifar_pickle(Path(root) / spec.folder / spec.meta, name, (spec.names_key,))
    return tuple(str(c) for c in meta[spec.names_key])


def load_cifar(root: str | Path, name: CifarName, split: Split) -> ArrayDataset:
    """Read CIFAR-10 or CIFAR-100 (fine labels) from `root/<cifar folder>/`.

    The files are validated by shape and content rather than by md5, so files written by
    tests (or re-pickled copies) load too; md5 is checked only when downloading.
    """
    spec = _cifar_files(name)
    classes = cifar_classes(root, name)
    images, labels = [], []
    for file in spec.train if split == "train" else spec.test:
        path = Path(root) / spec.folder / file
        batch = _read_cifar_pickle(path, name, ("data", spec.label_key))
        data = np.asarray(batch["data"])
        label = np.asarray(batch[spec.label_key], dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            _corrupt(path, name, f"data is {data.dtype} {data.shape}, not uint8 (N, 3072)")
        if label.shape != (len(data),) or (
            label.size and not 0 <= label.min() <= label.max() < len(classes)
        ):
            _corrupt(path, name, f"its labels do not match its {len(data)} images")
        # Rows hold the R, G, B planes of a 32x32 image one after another (CHW): make NHWC.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(label)
    return ArrayDataset(
        np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), classes
    )


def _cifar_files(name: str) -> _CifarFiles:
    if name not in _CIFAR:
        raise UserError(f"Unknown CIFAR dataset {name!r}: use one of {sorted(_CIFAR)}.")
    return _CIFAR[name]


# The only globals the CIFAR pickles need: numpy arrays, dtypes and protocol-2 bytes. Found
# through __reduce__ so numpy 1.x (numpy.core) and 2.x (numpy._core) pickles both resolve.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
    ("multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("_codecs", "encode"): codecs.encode,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays, lists and strings, and nothing that could run code."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module.rsplit(".", 1)[-1] if module.startswith("numpy.") else module, name)
        if key not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return _PICKLE_GLOBALS[key]


def _read_cifar_pickle(path: Path, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(
            f"{name} file {path} is missing: download the dataset (data.download: true) or point "
            f"data.root at the folder that holds {path.parent.name}/."
        )
    try:
        with path.open("rb") as f:
            # The official files are Python 2 pickles: latin1 turns their str into str.
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except Exception as err:  # any unpickling failure means the same thing to the user
        _corrupt(path, name, str(err) or type(err).__name__)
    if not isinstance(obj, dict):
        _corrupt(path, name, f"it holds a {type(obj).__name__}, not a dict")
    obj = {_text(k): v for k, v in obj.items()}
    if missing := [k for k in keys if k not in obj]:
        _corrupt(path, name, f"it has no {missing[0]!r} entry")
    if keys[0].endswith("label_names"):  # the meta file: class names may be bytes
        obj[keys[0]] = [_text(c) for c in obj[keys[0]]]
    return obj


def _text(value: Any) -> Any:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _corrupt(path: Path, name: str, reason: str) -> NoReturn:
    raise UserError(
        f"{name} file {path} is corrupt ({reason}): delete {path.parent} and download it again "
        "(data.download: true)."
    )


# --- Image folders and archives -----------------------------------------------------------


def image_folder_classes(root: str | Path, cache_dir: str | Path | None = None) -> tuple[str, ...]:
    """The class names under `train/`, sorted (torchvision's `ImageFolder` order). No decoding."""
    if (summary := _cached_summary(Path(root), cache_dir)) is not None:
        return summary[0]
    return _listing(Path(root)).classes


def has_split(root: str | Path, split: Split, cache_dir: str | Path | None = None) -> bool:
    """Whether the folder or archive holds `<split>/<class>/<image>` files."""
    if (summary := _cached_summary(Path(root), cache_dir)) is not None:
        return split in summary[1]
    return bool(_listing(Path(root)).files.get(split))


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
    if (fingerprint := _archive_fingerprint(root)) is not None:
        cache = _cache_path(root.resolve(), split, cache_dir)
        if (cached := _read_cache(cache, _cache_key(fingerprint, split))) is not None:
            return cached
    listing = _listing(root)
    files = listing.files.get(split)
    if not files:
        raise UserError(f"{root} holds no {split}/<class>/<image> files: add a {split}/ folder.")
    if unknown := sorted({cls for _, cls in files} - set(listing.classes)):
        raise UserError(
            f"{root}: {split}/{unknown[0]} is not a class of train/: rename or remove it."
        )
    key = _cache_key(listing.fingerprints[split], split)
    cache = _cache_path(listing.path, split, cache_dir)
    if (cached := _read_cache(cache, key)) is not None:
        return cached

    index = {cls: i for i, cls in enumerate(listing.classes)}
    images = _decode_all(listing, dict(files))
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
    _write_cache(cache, key, data, splits=[s for s in SPLITS if listing.files[s]])
    return data


@dataclass(frozen=True)
class _Listing:
    path: Path  # resolved folder or archive
    # For an archive: image name -> (byte offset, size) of its data in the uncompressed tar.
    members: dict[str, tuple[int, int]] | None
    files: dict[str, list[tuple[str, str]]]  # split -> sorted [(relative name, class)]
    classes: tuple[str, ...]
    fingerprints: dict[str, str]  # split -> changes when any image's path, size or mtime does


def _listing(root: Path) -> _Listing:
    if root.is_dir():
        return _folder_listing(root.resolve())
    if root.is_file() and tarfile.is_tarfile(root):
        stat = root.stat()
        return _archive_listing(root.resolve(), stat.st_size, stat.st_mtime_ns)
    if root.exists():
        raise UserError(
            f"{root} is neither a folder nor a .tar/.tar.gz archive: point data.root at one."
        )
    raise UserError(
        f"{root} does not exist: point data.root at a folder or .tar/.tar.gz archive holding "
        "train/<class>/<image> files."
    )


def _folder_listing(root: Path) -> _Listing:
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


@lru_cache(maxsize=8)  # listing a .tar.gz reads all of it: do it once per process and version
def _archive_listing(path: Path, size: int, mtime_ns: int) -> _Listing:
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
    fingerprint = f"archive:{path}:{size}:{mtime_ns}"  # as _archive_fingerprint
    return _Listing(
        path, offsets, listing.files, listing.classes, dict.fromkeys(SPLITS, fingerprint)
    )


def _make_listing(
    path: Path,
    members: dict[str, tuple[int, int]] | None,
    entries: list[tuple[str, int, int]],
    class_dirs: set[str],
) -> _Listing:
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
    # Labels index `classes`, so they are part of every split's fingerprint.
    fingerprints = {
        split: "folder:"
        + hashlib.sha256(repr((str(path), classes, sorted(stat))).encode()).hexdigest()
        for split, stat in stats.items()
    }
    return _Listing(path, members, files, classes, fingerprints)


def _archive_fingerprint(root: Path) -> str | None:
    """Identifies an archive's content by path, size and mtime; None when `root` is no archive."""
    if not root.is_file():
        return None
    path, stat = root.resolve(), root.stat()
    return f"archive:{path}:{stat.st_size}:{stat.st_mtime_ns}"


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _decode_all(listing: _Listing, wanted: dict[str, str]) -> dict[str, np.ndarray]:
    return {name: _decode(name, data) for name, data in _read_files(listing, wanted)}


def _read_files(listing: _Listing, wanted: dict[str, str]) -> Iterator[tuple[str, bytes]]:
    if listing.members is None:
        for name in wanted:
            yield name, (listing.path / name).read_bytes()
        return
    # Read at the offsets the listing found, in storage order: a .tar.gz then inflates once,
    # moving forward only, and tar headers are not parsed a second time.
    with tarfile.open(listing.path) as tar:
        stream = tar.fileobj  # the uncompressed tar stream (a GzipFile for .tar.gz)
        assert stream is not None
        for name in sorted(wanted, key=lambda n: listing.members[n][0]):  # type: ignore[index]
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
    # Pillow would clip 16-bit and float pixels to 0..255 without a word.
    raise UserError(
        f"Image {name} has {mode} pixels (more than 8 bits per channel), which would be "
        "clipped: convert the images to 8-bit RGB (or grey) first."
    )


_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


# --- The .npz cache ------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/lightning_densenet`, or `~/.cache/lightning_densenet`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightning_densenet"


def _cache_path(source: Path, split: str, cache_dir: str | Path | None) -> Path:
    # One file per source and split, overwritten when stale, so old versions do not pile up.
    tag = hashlib.sha256(str(source).encode()).hexdigest()[:16]
    stem = source.name.split(".")[0] or "data"
    return Path(cache_dir or default_cache_dir()) / f"{stem}-{split}-{tag}.npz"


def _cache_key(fingerprint: str, split: str) -> str:
    return f"v{_CACHE_VERSION}|{split}|{fingerprint}"


def _read_cache(path: Path, key: str) -> ArrayDataset | None:
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["key"]) != key:
                return None
            data = ArrayDataset(npz["images"], npz["labels"], tuple(str(c) for c in npz["classes"]))
    except Exception:  # missing, truncated, foreign or half-written: rebuild it
        return None
    if data.images.dtype != np.uint8 or data.images.ndim != 4 or len(data.images) != len(data):
        return None
    return data


def _cached_summary(
    root: Path, cache_dir: str | Path | None
) -> tuple[tuple[str, ...], set[str]] | None:
    """(classes, splits) of an archive from its train cache, without reading the images."""
    if (fingerprint := _archive_fingerprint(root)) is None:
        return None
    try:  # npz members load lazily: this reads a few bytes, not the images
        with np.load(_cache_path(root.resolve(), "train", cache_dir), allow_pickle=False) as npz:
            if str(npz["key"]) != _cache_key(fingerprint, "train"):
                return None
            return tuple(str(c) for c in npz["classes"]), {str(s) for s in npz["splits"]}
    except Exception:
        return None


def _write_cache(path: Path, key: str, data: ArrayDataset, splits: list[str]) -> None:
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target, then rename: readers never see a half-written file.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
            tmp = f.name
            np.savez(
                f,
                key=np.array(key),
                images=data.images,
                labels=data.labels,
                classes=np.array(data.classes),
                splits=np.array(splits),
            )
        os.replace(tmp, path)
    except OSError as err:  # an unwritable cache only costs speed
        warnings.warn(f"Could not cache decoded images in {path}: {err}", stacklevel=3)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# --- Splits and statistics -----------------------------------------------------------------


def train_val_split(
    n: int, val_size: int, seed: int, max_train: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) into `n` training images, the same in every framework.

    A seeded permutation: its first `val_size` entries are validation, the next `max_train`
    (all the rest when None, or fewer when fewer remain) are training.
    """
    if not 0 <= val_size < n:
        raise UserError(
            f"data.val_size={val_size} must be at least 0 and below the {n} training images: "
            "choose a smaller validation split."
        )
    if max_train is not None and max_train < 1:
        raise UserError(f"data.max_train_images={max_train} must be positive (or null for all).")
    order = np.random.default_rng(seed).permutation(n)
    stop = n if max_train is None else min(n, val_size + max_train)
    return order[val_size:stop], order[:val_size]


HOLDOUT_SEED = 20_161_608  # fixed, so no choice of `seed` ever moves a hold-out image


def holdout_split(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (held out, the rest) into `n` training images, the same for every `seed`.

    The hold-out stands in for a test split: carved first, before any validation split,
    with its own fixed seed, so tuning on validation never sees it.
    """
    if not 0 < size < n:
        raise UserError(
            f"data.holdout_size={size} must be at least 1 and below the {n} training images."
        )
    order = np.random.default_rng(HOLDOUT_SEED).permutation(n)
    return np.sort(order[:size]), order[size:]


def channel_stats(
    images: np.ndarray,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and (population) std of uint8 NHWC images, in [0, 1] units."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not images.size:
        raise ValueError(
            f"expected non-empty uint8 (N, H, W, 3) images, got {images.dtype} {images.shape}"
        )
    values = np.arange(256, dtype=np.float64) / 255
    means, stds = [], []
    for c in range(3):
        # A histogram is exact and reads each byte once; no float copy of the images.
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        mean = counts @ values / counts.sum()
        means.append(float(mean))
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    return (means[0], means[1], means[2]), (stds[0], stds[1], stds[2])
