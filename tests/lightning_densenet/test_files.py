"""`lightning_densenet.files`: the one atomic writer, run-folder numbering and Markdown table
that checkpoints, the sweep's report and the report tables share."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_densenet.files import (
    atomic_write,
    markdown_table,
    next_version,
    version_number,
    write_bytes_atomic,
    write_text_atomic,
)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".*.tmp"))


def test_atomic_write_replaces_the_file_and_makes_its_folder(tmp_path: Path) -> None:
    target = tmp_path / "new/folder/report.md"
    write_text_atomic(target, "first\n")
    write_text_atomic(target, "second ü\n")
    assert target.read_text(encoding="utf-8") == "second ü\n"
    write_bytes_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _temporaries(target.parent) == []


def test_an_error_inside_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")

    def half_then_fail(f) -> None:
        f.write(b"half of a new one")
        raise KeyboardInterrupt  # a kill mid-write: BaseException, not only Exception

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"the previous checkpoint"
    assert _temporaries(tmp_path) == []


def test_temporaries_a_killed_write_left_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "last.ckpt"
    for name in (".last.ckpt.abc123.tmp", ".last.ckpt.4242.tmp", ".other.ckpt.abc.tmp"):
        (tmp_path / name).write_bytes(b"left by a killed save")
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert _temporaries(tmp_path) == [".other.ckpt.abc.tmp"]  # another file's: not ours


def test_remove_stale_false_leaves_other_writers_temporaries(tmp_path: Path) -> None:
    # A sweep's workers rewrite one report at once: a temporary may be another's, in flight.
    (tmp_path / ".trials.csv.9999.tmp").write_bytes(b"another worker's")
    write_text_atomic(tmp_path / "trials.csv", "a,b\n", remove_stale=False)
    assert (tmp_path / "trials.csv").read_text() == "a,b\n"
    assert _temporaries(tmp_path) == [".trials.csv.9999.tmp"]


def test_a_name_with_glob_characters_removes_only_its_own_temporaries(tmp_path: Path) -> None:
    (tmp_path / ".run[1].txt.x.tmp").write_bytes(b"stale")
    (tmp_path / ".run1.txt.x.tmp").write_bytes(b"another file's")
    write_text_atomic(tmp_path / "run[1].txt", "ok")
    assert _temporaries(tmp_path) == [".run1.txt.x.tmp"]


@pytest.mark.parametrize(
    ("name", "number"),
    [("version_0", 0), ("version_12", 12), ("version_", None), ("version_1a", None),
     ("version_1.bak", None), ("Version_1", None), ("run_3", None)],
)  # fmt: skip
def test_version_number(name: str, number: int | None) -> None:
    assert version_number(name) == number


def test_next_version_is_above_every_taken_one_skipping_gaps_and_other_names(
    tmp_path: Path,
) -> None:
    runs = tmp_path / "runs/debug"
    assert next_version(runs) == runs / "version_0"  # no folder yet
    runs.mkdir(parents=True)
    assert next_version(runs) == runs / "version_0"
    for name in ("version_0", "version_3", "version_x", "version_7.bak", "notes"):
        (runs / name).mkdir()
    (runs / "version_9.txt").write_text("a file, not a run")
    assert next_version(runs) == runs / "version_4"  # the gap (1, 2) is not reused


def test_markdown_table_escapes_pipes_and_aligns_columns() -> None:
    table = markdown_table(
        ["model", "acc", "note"], [["a|b", 0.5, None], ["c", 12, "x | y"]], align="lrc"
    )
    assert table == (
        "| model | acc | note |\n"
        "| --- | ---: | :---: |\n"
        "| a\\|b | 0.5 | None |\n"
        "| c | 12 | x \\| y |\n"
    )


def test_markdown_table_columns_without_an_alignment_are_left_aligned() -> None:
    assert markdown_table(["a", "b", "c"], [], align="r").splitlines()[1] == (
        "| ---: | --- | --- |"
    )
