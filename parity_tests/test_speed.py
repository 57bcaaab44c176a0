"""`python -m parity_tests.speed` writes a complete, well-formed report. No timing is asserted:
the numbers depend on the machine; only that each case ran, measured something, and that
the derived columns (FLOPs, speed-ups, plots) are what they claim to be."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import pytest

from parity_tests.speed import STUDY_MODELS, main
from parity_tests.speed_cases import Settings, parse_model, run_case
from parity_tests.speed_report import COLUMNS

MODELS = ("densenet_tiny", "mlp:w32")
CASES = ("torch-eager", "torch-compile", "tf-eager", "tf-function", "tf-loop", "tf-fit")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROW_KEYS = {  # every measured row of speed.json has at least these
    "arch", "model_kind", "case", "framework", "device", "dtype", "params", "batch_size",
    "first_step_s", "compile_s", "ms_per_step", "median_ms", "min_ms", "max_ms", "iqr_ms",
    "images_per_s", "speedup", "flops_per_image", "gflops_per_s", "peak_gflops_per_s",
    "pct_of_peak", "peak_mb", "base_mb", "final_loss", "load_average_before",
}  # fmt: skip


def mlp_training_flops(widths: list[int]) -> int:
    """One training image through Linear layers widths[0] -> widths[1] -> ...: 2 FLOPs per
    multiply-add; forward x @ W, backward the gradient of W for every layer and of the input
    for every layer but the first (autograd needs no gradient of the image)."""
    layers = list(itertools.pairwise(widths))
    forward = sum(2 * n_in * n_out for n_in, n_out in layers)
    return 2 * forward + sum(2 * n_in * n_out for n_in, n_out in layers[1:])


@pytest.mark.slow
def test_speed_report_is_complete_and_well_formed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--arch", *MODELS, "--steps", "2", "--repeats", "1", "--warmup", "1"]
    args += ["--threads", "2", "--cases", ",".join(CASES), "--cold-and-warm"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    capsys.readouterr()

    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["settings"]["cases"] == list(CASES)
    assert report["settings"]["compile_cache"] == "cold-and-warm"
    assert report["machine"]["cores"] == os.cpu_count() and report["machine"]["cpu"]
    assert set(report["versions"]) == {"torch", "tensorflow", "keras"}
    assert report["command"].startswith("python -m parity_tests.speed --arch densenet_tiny")
    peak = report["peak"]["cpu"]

    rows = report["results"]
    assert [(r["arch"], r["case"]) for r in rows] == [(a, c) for a in MODELS for c in CASES]
    for r in rows:
        assert "error" not in r, r
        assert set(r) >= ROW_KEYS, ROW_KEYS - set(r)
        assert r["threads"] == 2 and len(r["ms_per_step"]) == 1
        # The derived columns, recomputed from the one timed repeat and the first step.
        (ms,) = r["ms_per_step"]
        assert r["median_ms"] == r["min_ms"] == r["max_ms"] == ms
        assert r["images_per_s"] == pytest.approx(r["batch_size"] * 1e3 / ms)
        assert r["compile_s"] == pytest.approx(max(0.0, r["first_step_s"] - ms / 1e3))
        assert r["flops_per_image"] == report["flops"][r["arch"]]["flops_per_image"]
        assert r["gflops_per_s"] == pytest.approx(r["flops_per_image"] * r["images_per_s"] / 1e9)
        best = max(peak[f"matmul_{r['dtype']}"], peak[f"conv_{r['dtype']}"])
        assert r["peak_gflops_per_s"] == best
        assert r["pct_of_peak"] == pytest.approx(100 * r["gflops_per_s"] / best)
        assert math.isfinite(r["final_loss"])
        # The speed-up is over the eager case of the same model and framework.
        eager = next(
            e for e in rows if e["arch"] == r["arch"] and e["case"] == f"{r['framework']}-eager"
        )
        assert r["speedup"] == pytest.approx(eager["median_ms"] / r["median_ms"])
        # Only torch.compile depends on a disk cache: it alone is timed cold and warm.
        assert ("compile_s_cold" in r) == (r["case"] == "torch-compile")
    for arch in MODELS:  # both frameworks build the same network
        assert len({r["params"] for r in rows if r["arch"] == arch}) == 1

    # FLOPs: torch.utils.flop_counter's count against the formula, for the MLP.
    mlp_flops = mlp_training_flops([3 * 32 * 32, 32, 32, 10])
    assert report["flops"]["mlp:w32"]["flops_per_image"] == mlp_flops
    assert {r["flops_per_image"] for r in rows if r["arch"] == "mlp:w32"} == {mlp_flops}

    table = [line for line in (tmp_path / "speed.md").read_text().splitlines() if line[:1] == "|"]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head == list(COLUMNS)
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2 : 2 + len(rows)]]
    for r, cells in zip(rows, body, strict=True):
        assert len(cells) == len(COLUMNS) and all(cells), cells
        assert (cells[0], cells[3], cells[4]) == (r["arch"], r["case"], "cpu")
        assert cells[9] == "1.00x" if r["case"].endswith("-eager") else cells[9].endswith("x")
        assert ("/" in cells[5]) == (r["case"] == "torch-compile")  # cold / warm
    assert float(body[len(CASES)][2]) == pytest.approx(mlp_flops / 1e9, rel=1e-3)

    assert report["plots"] == [
        "speedup_vs_flops.png",
        "throughput_by_mode.png",
        "gflops_vs_flops.png",
    ]
    for name in report["plots"]:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000


@pytest.mark.parametrize(
    "case", ["tf-fit", pytest.param("tf-fit-xla", marks=pytest.mark.slow), "tf-fit-eager"]
)
def test_keras_fit_cases_take_the_steps_of_the_traced_step(case: str) -> None:
    # In this process (threads=0 leaves TensorFlow's pools as they are): one step per call,
    # so each call's loss is that step's loss, before its update.
    settings = Settings(batch_size=8, steps=1, repeats=2, warmup=1, threads=0)
    model = parse_model("mlp:w16")
    fit, function = run_case(case, model, settings), run_case("tf-function", model, settings)
    assert len(fit["ms_per_step"]) == 2 and fit["params"] == function["params"]
    assert fit["final_loss"] == pytest.approx(function["final_loss"], rel=1e-4)


def test_model_names() -> None:
    assert parse_model("mlp:w512").depth == 2 and parse_model("cnn:w16").depth == 6
    spec = parse_model("cnn:w16d3@32")
    assert (spec.kind, spec.width, spec.depth, spec.batch_size) == ("cnn", 16, 3, 32)
    assert parse_model("densenet_bc_100_k12@16").preset == "densenet_bc_100_k12"
    for name in STUDY_MODELS:  # the study's command line is valid
        parse_model(name)


def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--arch", "densenet_7"]) == 2
    assert capsys.readouterr().err.startswith("error: Unknown DenseNet preset 'densenet_7'")
    assert main(["--arch", "densenet_tiny", "--cases", "jax-jit"]) == 2
    assert "--cases 'jax-jit' is unknown" in capsys.readouterr().err
    assert main(["--arch", "cnn:32"]) == 2
    assert "--arch 'cnn:32' is not understood" in capsys.readouterr().err
    assert main(["--arch", "mlp:w32@0"]) == 2
    assert "after @ comes a batch size" in capsys.readouterr().err
    assert main(["--steps", "3"]) == 2
    assert "--arch" in capsys.readouterr().err


def test_case_lists_take_spaces_or_commas() -> None:
    from parity_tests.speed import _parse_cases

    spaced = _parse_cases(["torch-eager", "tf-xla"])
    assert (
        spaced == _parse_cases(["torch-eager,tf-xla"]) == _parse_cases(["torch-eager,", "tf-xla"])
    )
    assert spaced == ("torch-eager", "tf-xla")


def _row(arch: str, kind: str, case: str, flops: float, value: float) -> dict:
    return {
        "arch": arch, "model_kind": kind, "case": case, "flops_per_image": flops,
        "speedup": value, "gflops_per_s": value * 10, "images_per_s": value * 100,
        "batch_size": 64, "min_ms": 0.9 * 640 / value, "max_ms": 1.1 * 640 / value,
        "device_type": "cpu",
    }  # fmt: skip


def test_plots_draw_a_line_per_model_family_and_the_bf16_peak(tmp_path, monkeypatch) -> None:
    """A line never joins two families (a DenseNet and an MLP of similar FLOPs, or ours and
    torchvision's DenseNet at equal FLOPs); the bf16 conv peak the docs cite is drawn."""
    from matplotlib.figure import Figure

    from parity_tests.speed_plots import MARKERS, write_plots

    rows = [
        _row(arch, kind, case, flops, value)
        for case in ("torch-eager", "torch-compile")
        for arch, kind, flops, value in (
            ("densenet_tiny", "densenet", 1e7, 1.2),
            ("densenet_bc_40_k12", "densenet", 4e8, 1.1),
            ("tv:densenet_bc_40_k12", "densenet", 4e8, 0.9),
            ("mlp:w128", "mlp", 2e6, 0.6),
            ("mlp:w2048", "mlp", 5e7, 1.4),
        )
    ]
    peak = {
        "cpu": {"matmul_fp32": 200.0, "conv_fp32": 500.0, "matmul_bf16": 800.0, "conv_bf16": 1000.0}
    }
    figures: dict[str, Figure] = {}
    save = Figure.savefig
    monkeypatch.setattr(
        Figure,
        "savefig",
        lambda fig, path, **kw: (figures.__setitem__(Path(path).name, fig), save(fig, path, **kw)),
    )
    written = write_plots(rows, peak, tmp_path)
    assert {p.name for p in written} == {
        "speedup_vs_flops.png",
        "throughput_by_mode.png",
        "gflops_vs_flops.png",
    }
    for name in ("speedup_vs_flops.png", "gflops_vs_flops.png"):
        ax = figures[name].axes[0]
        drawn = [
            line
            for line in ax.get_lines()
            if len(line.get_xdata()) >= 1 and line.get_marker() != "None"
        ]
        families = {line.get_marker(): sorted(line.get_xdata()) for line in drawn}
        assert families[MARKERS["densenet"]] == [1e7, 4e8]
        assert families[MARKERS["torchvision densenet"]] == [4e8]
        assert families[MARKERS["mlp"]] == [2e6, 5e7]
    ax = figures["gflops_vs_flops.png"].axes[0]
    levels = {line.get_ydata()[0] for line in ax.get_lines() if list(line.get_xdata()) == [0, 1]}
    assert levels == {200.0, 500.0, 800.0, 1000.0}
    assert any("conv bf16 peak" in t.get_text() for t in ax.texts)
