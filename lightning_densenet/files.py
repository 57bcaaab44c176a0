"""Files the project writes: atomically, into numbered run folders, as Markdown tables.

One copy of each: checkpoints, the decoded-image cache, sweep reports and the report tables
all write through `atomic_write`; Lightning-style `version_N` folders are numbered and found
with `version_number`; every Markdown table is `markdown_table`.
"""

from __future__ import annotations

import glob
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO

_VERSION = re.compile(r"version_(\d+)")


def atomic_write(
    path: str | Path, write: Callable[[IO[bytes]], object], *, remove_stale: bool = True
) -> None:
    """Call `write(f)` on a file beside `path`, fsync it, then rename it onto `path`.

    A rename within one directory is atomic on POSIX: a reader (or a run killed mid-write)
    sees the old file or the new one, never half of one. Temporary files a killed write
    left behind are removed first (`remove_stale`; pass False where other processes may be
    writing the same file at once, as a sweep's workers do its report: theirs are not
    stale); on any error the temporary file is removed and the target is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if remove_stale:
        for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
            stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)  # the rename itself survives a power cut


def write_bytes_atomic(path: str | Path, data: bytes, *, remove_stale: bool = True) -> None:
    """`Path.write_bytes`, atomically (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data), remove_stale=remove_stale)


def write_text_atomic(path: str | Path, text: str, *, remove_stale: bool = True) -> None:
    """`Path.write_text` (UTF-8), atomically (`atomic_write`)."""
    write_bytes_atomic(path, text.encode(), remove_stale=remove_stale)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


def version_number(name: str) -> int | None:
    """N for a run folder named `version_N` (Lightning's loggers' naming), else None."""
    match = _VERSION.fullmatch(name)
    return int(match.group(1)) if match else None


def next_version(folder: Path) -> Path:
    """`folder/version_N` for the first N above every one taken: runs are never overwritten."""
    taken = [version_number(p.name) for p in folder.iterdir()] if folder.is_dir() else []
    return folder / f"version_{max((n for n in taken if n is not None), default=-1) + 1}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A GitHub Markdown table; `align` has one letter per column (`l`, `r`, or `c`; left
    when missing). Cells are `str()`-ed with their `|` escaped."""
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    rules = [rule[align[i]] if i < len(align) else "---" for i in range(len(header))]
    lines = [list(header), rules, *([_cell(c) for c in row] for row in rows)]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|")
