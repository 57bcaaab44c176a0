"""CIFAR-10 and CIFAR-100 (fine labels): the official "python version" archives and pickles.

Both frameworks download the same archive (`cifar_archive`: its URL and md5), each with its
own client (torchvision's `download_and_extract_archive`, `keras.utils.get_file`; neither
takes a timeout, hence `socket_timeout`), and fail with the same sentence
(`download_failed`). This reader then serves both: torchvision's `CIFAR10` reads the same
files but needs torch. It validates the files by shape and content (md5 is checked only on
download) and unpickles them with `ArrayUnpickler`, which runs no code.
"""

from __future__ import annotations

import codecs
import pickle
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple, NoReturn

import numpy as np

from lightning_densenet.datasets.arrays import ArrayDataset, Split
from lightning_densenet.errors import UserError

CifarName = Literal["cifar10", "cifar100"]
DOWNLOAD_TIMEOUT_S = 60.0  # per socket operation: a stalled connection fails instead of hanging


class CifarArchive(NamedTuple):
    """The official archive of a CIFAR dataset (torchvision's `url`, `filename`, `tgz_md5`)."""

    url: str
    filename: str
    md5: str


class _CifarFiles(NamedTuple):
    archive: CifarArchive
    folder: str  # what the official archive unpacks to
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    label_key: str
    names_key: str


_CIFAR = {
    "cifar10": _CifarFiles(
        CifarArchive(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
        ),
        "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)),
        ("test_batch",),
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": _CifarFiles(
        CifarArchive(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
        ),
        "cifar-100-python",
        ("train",),
        ("test",),
        "meta",
        "fine_labels",
        "fine_label_names",
    ),
}


def cifar_archive(name: CifarName) -> CifarArchive:
    """Where the official archive is downloaded from, and its md5."""
    return _cifar_files(name).archive


def cifar_folder(name: CifarName) -> str:
    """The folder the official archive unpacks to, e.g. `cifar-10-batches-py`."""
    return _cifar_files(name).folder


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


def _read_cifar_pickle(path: Path, name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(
            f"{name} file {path} is missing: download the dataset (data.download: true) or point "
            f"data.root at the folder that holds {path.parent.name}/."
        )
    try:
        with path.open("rb") as f:
            # The official files are Python 2 pickles: latin1 turns their str into str.
            obj = ArrayUnpickler(f, encoding="latin1").load()
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


# --- Downloading: what both frameworks' downloads share ----------------------------------------


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


# --- Unpickling: arrays, and nothing that runs code -----------------------------------------

# The only globals the CIFAR pickles need: numpy arrays, dtypes and protocol-2 bytes. Found
# through __reduce__ so numpy 1.x (numpy.core) and 2.x (numpy._core) pickles both resolve.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("multiarray", "_reconstruct"): np.zeros(1).__reduce__()[0],
    ("multiarray", "scalar"): np.float64(0).__reduce__()[0],
    ("_codecs", "encode"): codecs.encode,
}


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts of numpy arrays, lists and strings, and nothing that could run code."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module.rsplit(".", 1)[-1] if module.startswith("numpy.") else module, name)
        if key not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}")
        return _PICKLE_GLOBALS[key]
