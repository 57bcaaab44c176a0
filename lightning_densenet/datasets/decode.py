"""Reading the listed images' bytes from a folder or archive and decoding them to RGB."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator

import numpy as np

from lightning_densenet.datasets.listing import Listing
from lightning_densenet.errors import UserError

# Pillow would clip 16-bit and float pixels to 0..255 without a word.
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


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
