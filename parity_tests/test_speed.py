"""`python -m parity_tests.speed` writes a complete, well-formed report. No timing is asserted:
the numbers depend on the machine; only that each case ran, measured something, and that
the derived columns (FLOPs, speed-ups, plots) are what they claim to be, checked on
hand-made timings whose results are worked out below."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import pytest

from parity_tests.speed import driver
from parity_tests.speed.cases import Settings, parse_model
from parity_tests.speed.cli import STUDY_MODELS, build_parser, main, settings_from_args
from parity_tests.speed.report import COLUMNS, annotate, markdown, with_stats
from parity_tests.speed.worker import run_case

# The smallest run that fills every column and plot: the smallest MLP (one hidden layer of
# 8), each framework's eager case (both frameworks' versions, parameter counts and best-case
# columns) and one more case, the cheapest to start, for a speed-up and its plot. Every
# worker (the peak, the FLOPs, each case) is a process of its own that imports a framework,
# so each case costs seconds; the derived columns of other cases (torch.compile's cold /
# warm compile times among them) are checked on hand-made timings and stand-in workers below.
MODEL = "mlp:w8d1"
CASES = ("torch-eager", "torch-channels-last", "tf-eager")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ROW_KEYS = {  # every measured row of speed.json has at least these
    "arch", "model_kind", "case", "framework", "device", "dtype", "params", "batch_size",
    "first_step_s", "compile_s", "ms_per_step", "median_ms", "min_ms", "max_ms", "iqr_ms",
    "images_per_s", "speedup", "flops_per_image", "gflops_per_s", "peak_gflops_per_s",
    "pct_of_peak", "peak_mb", "base_mb", "final_loss", "load_average_before",
}  # fmt: skip
DERIVED = ("GFLOP/image", "speed-up vs eager", "GFLOP/s", "% of peak")  # "-" where unknown


def mlp_training_flops(widths: list[int]) -> int:
    """One training image through Linear layers widths[0] -> widths[1] -> ...: 2 FLOPs per
    multiply-add; forward x @ W, backward the gradient of W for every layer and of the input
    for every layer but the first (autograd needs no gradient of the image)."""
    layers = list(itertools.pairwise(widths))
    forward = sum(2 * n_in * n_out for n_in, n_out in layers)
    return 2 * forward + sum(2 * n_in * n_out for n_in, n_out in layers[1:])


def test_speed_report_is_complete_and_well_formed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--arch", MODEL, "--steps", "1", "--repeats", "2", "--warmup", "0"]
    args += ["--threads", "1", "--cases", ",".join(CASES), "--cold-and-warm"]
    assert main([*args, "--out", str(tmp_path)]) == 0
    capsys.readouterr()

    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["settings"]["cases"] == list(CASES)
    assert report["settings"]["compile_cache"] == "cold-and-warm"
    assert report["machine"]["cores"] == os.cpu_count() and report["machine"]["cpu"]
    assert set(report["versions"]) == {"torch", "tensorflow", "keras"}
    assert report["command"].startswith(f"python -m parity_tests.speed --arch {MODEL}")
    assert set(report["peak"]["cpu"]) >= {"matmul_fp32", "conv_fp32", "matmul_bf16", "conv_bf16"}

    # FLOPs: torch.utils.flop_counter's count against the formula.
    mlp_flops = mlp_training_flops([3 * 32 * 32, 8, 10])
    assert report["flops"][MODEL]["flops_per_image"] == mlp_flops

    rows = report["results"]
    assert [(r["arch"], r["case"]) for r in rows] == [(MODEL, c) for c in CASES]
    for r in rows:
        assert "error" not in r, r
        assert set(r) >= ROW_KEYS, ROW_KEYS - set(r)
        assert r["threads"] == 1 and len(r["ms_per_step"]) == 2
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["min_ms"] > 0
        assert r["images_per_s"] > 0 and r["compile_s"] >= 0 and r["peak_mb"] > 0
        assert r["flops_per_image"] == mlp_flops
        assert r["gflops_per_s"] > 0 and r["peak_gflops_per_s"] > 0 and r["pct_of_peak"] > 0
        assert math.isfinite(r["final_loss"])
        assert r["speedup"] == 1.0 if r["case"].endswith("-eager") else r["speedup"] > 0
        assert "compile_s_cold" not in r  # only torch.compile cases are timed cold and warm
    assert len({r["params"] for r in rows}) == 1  # both frameworks build the same network

    text = (tmp_path / "speed.md").read_text()
    table = [line for line in text.splitlines() if line[:1] == "|"]
    head = [c.strip() for c in table[0].strip("|").split("|")]
    assert head == list(COLUMNS)
    body = [[c.strip() for c in line.strip("|").split("|")] for line in table[2 : 2 + len(rows)]]
    for r, cells in zip(rows, body, strict=True):
        assert len(cells) == len(COLUMNS) and all(cells), cells
        assert (cells[0], cells[3], cells[4]) == (r["arch"], r["case"], "cpu")
        assert all(cells[COLUMNS.index(c)] != "-" for c in DERIVED), cells
        assert cells[9] == "1.00x" if r["case"].endswith("-eager") else cells[9].endswith("x")
        assert float(cells[2]) == pytest.approx(mlp_flops / 1e9, rel=1e-3)
    best = table[2 + len(rows)]
    assert best.startswith("| model | fastest torch case (vs eager) | fastest tf case")
    assert table[-1].startswith(f"| {MODEL} | torch-") and "| tf-eager (" in table[-1]

    assert report["plots"] == [
        "speedup_vs_flops.png",
        "throughput_by_mode.png",
        "gflops_vs_flops.png",
    ]
    for name in report["plots"]:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 1000
        assert f"![{name.removesuffix('.png')}]({name})" in text


def _raw(arch: str, case: str, ms: list[float], first_step_s: float, **more: object) -> dict:
    """A worker's row as `run_case` returns it, with only what the report reads."""
    framework, _, _ = case.partition("-")
    return {
        "arch": arch, "case": case, "framework": framework, "model_kind": "mlp", "params": 1234,
        "device": "cpu", "device_type": "cpu", "dtype": "fp32", "batch_size": 64,
        "first_step_s": first_step_s, "ms_per_step": ms, "peak_mb": 512.0, **more,
    }  # fmt: skip


def test_derived_columns_from_hand_made_timings() -> None:
    """Statistics, speed-ups, GFLOP/s and % of peak of timings whose results are known."""
    raw = [
        _raw("m", "torch-eager", [30.0, 10.0, 20.0, 40.0], 2.0125),
        _raw("m", "torch-compile", [5.0], 30.1234, compile_s_cold=41.5),
        _raw("n", "torch-eager", [50.0], 0.5),
        _raw("n", "torch-compile", [10.0], 0.001),  # a first step faster than a steady one
        _raw("n", "tf-function", [20.0], 1.0, dtype="bf16"),  # no tf-eager of n: no speed-up
    ]
    failed = {"arch": "n", "case": "tf-xla", "framework": "tf", "error": "exit 1: boom | bang"}
    flops = {"m": {"flops_per_image": 1e8}, "n": {"flops_per_image": 2e8}}
    peak = {"cpu": {"matmul_fp32": 1000.0, "conv_fp32": 2560.0, "matmul_bf16": 5000.0,
                    "conv_bf16": 4000.0}}  # fmt: skip
    rows = annotate([*map(with_stats, raw), failed], flops, peak)
    eager, compiled = rows[0], rows[1]

    # torch-eager of m: 4 repeats; median 25 ms, quartiles by linear interpolation.
    assert (eager["median_ms"], eager["min_ms"], eager["max_ms"]) == (25.0, 10.0, 40.0)
    assert eager["iqr_ms"] == pytest.approx([17.5, 32.5])
    assert eager["images_per_s"] == pytest.approx(2560.0)  # 64 images / 25 ms
    assert eager["compile_s"] == pytest.approx(1.9875)  # 2.0125 s first step - 25 ms
    assert eager["speedup"] == 1.0
    assert eager["gflops_per_s"] == pytest.approx(256.0)  # 1e8 FLOP x 2560 / s
    assert eager["peak_gflops_per_s"] == 2560.0  # the conv's, the better fp32 peak
    assert eager["pct_of_peak"] == pytest.approx(10.0)
    # torch-compile of m: 5 ms a step, 5x its eager; 12,800 images/s = 1,280 GFLOP/s, 50 %.
    assert compiled["speedup"] == pytest.approx(5.0)
    assert compiled["images_per_s"] == pytest.approx(12800.0)
    assert compiled["gflops_per_s"] == pytest.approx(1280.0)
    assert compiled["pct_of_peak"] == pytest.approx(50.0)
    # n's compiled case against n's eager (50 ms), not m's; no compile time below zero.
    assert rows[3]["speedup"] == pytest.approx(5.0) and rows[3]["compile_s"] == 0.0
    # bf16 against the bf16 peak (the matmul's 5,000): 2e8 x 3,200 / s = 640 GFLOP/s.
    assert rows[4]["speedup"] is None and rows[4]["pct_of_peak"] == pytest.approx(12.8)
    assert rows[5] == failed

    meta = {
        "command": "python -m parity_tests.speed --arch m n",
        "date": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu": "a CPU", "usable_cores": 2, "load_average_at_start": [0.5]},
        "versions": {"torch": "2.x"},
        "settings": {"archs": ["m", "n"], "threads": 2, "batch_size": 64, "repeats": 4,
                     "steps": 20, "warmup": 3, "compile_cache": "cold-and-warm"},
        "peak": peak | {"cpu": peak["cpu"] | {"matmul_size": 2048, "conv_shape": "64x128"}},
        "plots": ["speedup_vs_flops.png"],
    }  # fmt: skip
    lines = markdown(rows, meta).splitlines()
    head = "| " + " | ".join(COLUMNS) + " |"
    table = lines[lines.index(head) :]
    cells = [[c.strip() for c in line[1:-1].split(" | ")] for line in table[2:8]]
    assert cells[0] == ["m", "1,234", "0.1", "torch-eager", "cpu", "1.99", "25.0", "10.0-40.0",
                        "2560", "1.00x", "256", "10", "512"]  # fmt: skip
    assert cells[1][5:12] == ["41.50 / 30.12", "5.0", "5.0-5.0", "12800", "5.00x", "1,280", "50"]
    assert cells[4][9] == "-"  # no eager case to compare with
    assert cells[5][:6] == ["n", "", "", "tf-xla", "", "failed: exit 1: boom \\| bang"]
    assert len(cells[5]) == len(COLUMNS)
    assert table[9] == "| model | fastest torch case (vs eager) | fastest tf case (vs eager) |"
    assert table[11] == "| m | torch-compile (12800/s, 5.00x) | - |"
    assert table[12] == "| n | torch-compile (6400/s, 5.00x) | tf-function (3200/s) |"
    assert lines[-1] == "![speedup_vs_flops](speedup_vs_flops.png)"


def test_cold_and_warm_compile_times_come_from_one_cache(monkeypatch) -> None:
    """--cold-and-warm: a compiled case runs twice on one private Inductor cache, first
    compiling only (cold), then timed (warm); other cases run once, with the default cache."""
    calls: list[tuple[list[str], dict[str, str]]] = []

    def worker(args: list[str], settings: Settings, timeout_s: float, env=None) -> dict:
        calls.append((args, dict(env or {})))
        case, arch = args[args.index("--worker") + 1], args[args.index("--arch") + 1]
        if "--compile-only" in args:
            return _raw(arch, case, [], 12.0, peak_mb=900.0)
        return _raw(arch, case, [10.0, 10.0], 3.0, peak_mb=800.0)

    monkeypatch.setattr(driver, "_run_worker", worker)
    settings = Settings(batch_size=64, steps=2, repeats=2, warmup=1, threads=1)
    rows = driver.measure(
        ["mlp:w8"], ["torch-eager", "torch-compile"], settings,
        compile_cache="cold-and-warm", log=lambda _: None,
    )  # fmt: skip
    assert [args[args.index("--worker") + 1] for args, _ in calls] == [
        "torch-eager", "torch-compile", "torch-compile"
    ]  # fmt: skip
    (_, eager_env), (cold_args, cold_env), (warm_args, warm_env) = calls
    assert eager_env == {}
    assert "--compile-only" in cold_args and "--compile-only" not in warm_args
    assert cold_env == warm_env and cold_env["TORCHINDUCTOR_CACHE_DIR"]
    assert not Path(cold_env["TORCHINDUCTOR_CACHE_DIR"]).exists()  # removed afterwards
    eager, compiled = rows
    assert "compile_s_cold" not in eager and eager["compile_s"] == pytest.approx(2.99)
    assert compiled["first_step_s_cold"] == 12.0 and compiled["peak_mb_cold"] == 900.0
    assert compiled["compile_s_cold"] == pytest.approx(11.99)  # 12 s - one 10 ms step
    assert compiled["compile_s"] == pytest.approx(2.99) and compiled["peak_mb"] == 800.0

    calls.clear()
    driver.measure(["mlp:w8"], ["torch-compile"], settings, compile_cache="cold", log=print)
    assert calls[0][1] == {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"}


def test_settings_round_trip_through_the_command_line(capsys) -> None:
    """The workers' command line is the user's: `as_args` writes every option in full, and
    the parser takes no abbreviation that could hide a misspelt one."""
    parser = build_parser()
    settings = Settings(batch_size=7, steps=3, repeats=2, warmup=0, threads=5, repeat_s=0.25)
    assert settings_from_args(parser.parse_args(["--arch", "m", *settings.as_args()])) == settings
    assert settings_from_args(parser.parse_args(["--arch", "m", *Settings().as_args()])) == (
        Settings()
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--arch", "m", "--repeat-s", "0.5"])
    assert "unrecognized arguments: --repeat-s" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["tf-fit", "tf-fit-xla", "tf-fit-eager"])
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
    from parity_tests.speed.cli import _parse_cases

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

    from parity_tests.speed.plots import MARKERS, write_plots

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
