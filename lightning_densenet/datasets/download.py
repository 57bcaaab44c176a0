"""What both frameworks' CIFAR downloads share: a socket timeout and the failure sentence.

The downloads themselves are the frameworks' own (torchvision's `download_and_extract_archive`,
`keras.utils.get_file`); neither takes a timeout.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning_densenet.datasets.cifar import CifarName, cifar_folder
from lightning_densenet.errors import UserError

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
