"""`python -m parity_tests.speed` writes a complete, well-formed report. No timing is asserted:
the numbers depend on the machine; only that each case ran and measured something."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from parity_tests.speed import CPU_CASES, main


@pytest.mark.slow
def test_speed_report_is_complete_and_well_formed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = ",".join(CPU_CASES)  # every case that runs without a GPU
    args = ["--arch", "densenet_tiny", "--steps", "2", "--repeats", "2", "--warmup", "1"]
    assert main([*args, "--threads", "2", "--cases", cases, "--out", str(tmp_path)]) == 0
    capsys.readouterr()

    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["settings"]["cases"] == list(CPU_CASES)
    assert report["machine"]["cores"] >= 1 and report["machine"]["cpu"]
    assert set(report["versions"]) == {"torch", "tensorflow", "keras"}
    assert report["command"].startswith("python -m parity_tests.speed --arch densenet_tiny")
    rows = report["results"]
    assert [r["case"] for r in rows] == list(CPU_CASES)
    for r in rows:
        assert "error" not in r, r
        assert r["arch"] == "densenet_tiny" and r["threads"] == 2 and len(r["ms_per_step"]) == 2
        numbers = [r["first_step_s"], r["median_ms"], r["min_ms"], r["max_ms"], r["images_per_s"]]
        assert all(math.isfinite(x) and x > 0 for x in numbers), r
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["compile_s"] >= 0
        assert math.isfinite(r["final_loss"])
    # Both frameworks build the same network: the parameter counts agree.
    assert len({r["params"] for r in rows}) == 1

    table = [line for line in (tmp_path / "speed.md").read_text().splitlines() if line[:1] == "|"]
    assert len(table) == 2 + len(CPU_CASES)  # header, rule, one row per case
    for case, line in zip(CPU_CASES, table[2:], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == case and cells[3] == "cpu" and len(cells) == 9
        assert cells[8] == "1.00x" if case.endswith("-eager") else cells[8].endswith("x")


def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--arch", "densenet_7"]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown DenseNet preset 'densenet_7'")
    assert main(["--arch", "densenet_tiny", "--cases", "jax-jit"]) == 2
    assert "--cases 'jax-jit' is unknown" in capsys.readouterr().err
