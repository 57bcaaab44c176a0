"""The training step, eager against compiled, in PyTorch and in TensorFlow, across model sizes.

    python -m parity_tests.speed --arch densenet_bc_100_k12 [cnn:w32 mlp:w512 ...]
        [--batch-size 64] [--steps 20] [--repeats 5] [--warmup 3] [--repeat-seconds S]
        [--threads N] [--cases torch-eager tf-xla ...] [--out DIR]
        [--cold-compile | --cold-and-warm]
    python -m parity_tests.speed --study [--out DIR]      # the whole study, defaults below

Cases (`speed_cases.CASES`; each in a fresh interpreter, both frameworks pinned to the same
thread count; on a machine with a GPU the PyTorch cases run on it):

    torch-eager                   build_model + SGD(nesterov) + cross-entropy, step by step
    torch-channels-last           the same, model and input in NHWC memory layout
    torch-bf16                    channels-last + torch.autocast(bfloat16)
    torch-compile                 torch.compile(model), default mode
    torch-compile-step            torch.compile of the whole step function (forward, backward
                                  and optimiser step; Dynamo splits it at .backward())
    torch-compile-bf16            torch.compile + channels-last + bf16 autocast
    torch-compile-reduce-overhead torch.compile(model, mode=...): CUDA graphs; GPU only
    torch-compile-max-autotune    torch.compile(model, mode=...): autotuned kernels; GPU only
    torch-compile-bf16-reduce-overhead   bf16 + channels-last + CUDA graphs; GPU only
    tf-eager                      tf_reference.build_model + L2SGD, the step run op by op
    tf-function                   the step in tf.function(jit_compile=False)
    tf-loop                       every step of a repeat inside one tf.function (the loop
                                  mode of tf_reference.train)
    tf-xla                        the step in tf.function(jit_compile=True)
    tf-bf16                       tf.function with Keras' "mixed_bfloat16" policy
    tf-fit, tf-fit-xla,           Keras' own loop: compile(jit_compile=False / True,
    tf-fit-eager                  run_eagerly=True) + one fit call per repeat (the fit
                                  modes of tf_reference.train)

Models (`--arch`): DenseNet preset names, `cnn:wW[dD]` (the plain CNN, default depth 6) and
`mlp:wW[dD]` (the MLP, default depth 2), built alike in both frameworks; `NAME@B` trains
that one model on batches of B instead of --batch-size.

Every case trains on one synthetic batch of the real shape (so no input pipeline is timed),
times its first step apart (compilation or tracing happens there), runs `--warmup` more,
then times `--repeats` runs of `--steps` steps. The driver also counts each model's FLOPs
(`torch.utils.flop_counter`) and measures the machine's matmul and conv peak in the same
run. The report goes to `--out` (default `runs/speed/<arch>`, beside the training runs: the
committed reports under `reports/` are only written when asked for): `speed.json` (every raw
number, the machine, versions and the command), `speed.md` (the tables) and PNG plots.
`--arch` and `--cases` both take a list of names separated by spaces (commas work too).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lightning_densenet.errors import UserError, command
from parity_tests.speed_cases import (
    CASES,
    CPU_CASES,
    GPU_ONLY,
    Settings,
    parse_model,
)
from parity_tests.speed_report import annotate, markdown, with_stats, write_report

# `--study`: DenseNets from tiny to BC-100 and one larger (DenseNet-100, k=12: 6x the FLOPs
# per image of BC-100, at batch 16 to keep the study in about half an hour on 2 cores), the
# plain CNN and the MLP at three widths each: 1.7 MFLOP to 10.6 GFLOP per training image.
STUDY_MODELS = (
    "densenet_tiny",
    "densenet_bc_40_k12",
    "densenet_bc_100_k12",
    "densenet_100_k12@16",
    "cnn:w8",
    "cnn:w32",
    "cnn:w64",
    "mlp:w128",
    "mlp:w512",
    "mlp:w2048",
)
STUDY_CASES = (
    "torch-eager",
    "torch-channels-last",
    "torch-bf16",
    "torch-compile",
    "torch-compile-bf16",
    "tf-eager",
    "tf-function",
    "tf-loop",
    "tf-xla",
    "tf-bf16",
)
STUDY_GPU_CASES = (
    "torch-compile-reduce-overhead",
    "torch-compile-max-autotune",
    "torch-compile-bf16-reduce-overhead",
)
STUDY_SETTINGS = {"steps": 50, "repeats": 3, "warmup": 1, "repeat_seconds": 0.5}
DEFAULTS = {"batch_size": 64, "steps": 20, "repeats": 5, "warmup": 3, "repeat_seconds": 0.0}


# --- The driver: one subprocess per case, then the report -----------------------------------


def measure(
    archs: Sequence[str],
    cases: Sequence[str],
    settings: Settings,
    *,
    timeout_s: float = 1800,
    compile_cache: str = "default",
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Runs every (arch, case) in a fresh interpreter; a case that fails is reported, not fatal.
    `compile_cache`: "default" lets torch.compile reuse what earlier runs cached on disk (so
    its compile time depends on what ran before), "cold" turns the caches off, and
    "cold-and-warm" times each compiled case twice from a private cache: empty, then filled."""
    rows = []
    for arch in archs:
        for case in cases:
            if not _applies(arch, case):
                continue
            log(f"{arch} / {case} ...")
            if compile_cache == "cold-and-warm" and CASES[case].compiled:
                row = _cold_and_warm(arch, case, settings, timeout_s)
            else:
                env = {"TORCHINDUCTOR_FORCE_DISABLE_CACHES": "1"} if compile_cache == "cold" else {}
                row = _run_case(arch, case, settings, timeout_s, env)
            rows.append(row)
            log(_row_line(row))
    return rows


def _applies(arch: str, case: str) -> bool:
    """torchvision's DenseNet has no Keras twin; memory_efficient is a DenseNet option."""
    if arch.startswith("tv:") and CASES[case].framework != "torch":
        return False
    return not CASES[case].memory_efficient or arch.partition(":")[0] not in ("cnn", "mlp")


def _cold_and_warm(arch: str, case: str, settings: Settings, timeout_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="speed-inductor-") as cache:
        env = {"TORCHINDUCTOR_CACHE_DIR": cache}
        cold = _run_case(arch, case, settings, timeout_s, env, compile_only=True)
        if "error" in cold:
            return cold
        warm = _run_case(arch, case, settings, timeout_s, env)
    if "error" in warm:
        return warm
    steady_s = warm["median_ms"] / 1e3
    return warm | {
        "first_step_s_cold": cold["first_step_s"],
        "compile_s_cold": max(0.0, cold["first_step_s"] - steady_s),
        "peak_mb_cold": cold["peak_mb"],
    }


def _run_case(
    arch: str,
    case: str,
    settings: Settings,
    timeout_s: float,
    env: dict[str, str],
    compile_only: bool = False,
) -> dict[str, Any]:
    batch = parse_model(arch).batch_size
    settings = dataclasses.replace(settings, batch_size=batch) if batch else settings
    args = ["--worker", case, "--arch", arch, *settings.as_args()]
    failed = {"case": case, "arch": arch, "framework": CASES[case].framework}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        row = _run_worker(args + ["--compile-only"] * compile_only, settings, timeout_s, env)
    except RuntimeError as err:
        return failed | {"error": str(err)}
    row["load_average_before"] = load  # other work on the machine skews the timings
    return row if compile_only else with_stats(row)


def _run_worker(
    args: list[str], settings: Settings, timeout_s: float, env: dict[str, str] | None = None
) -> Any:
    """Runs `python -m parity_tests.speed <args>` and returns the JSON line it prints last;
    a failure is a RuntimeError with the worker's last line of stderr."""
    command = [sys.executable, "-m", "parity_tests.speed", *args]
    # OpenMP pools (oneDNN, MKL, Inductor's C++ kernels) get the same thread count.
    full_env = os.environ | {"OMP_NUM_THREADS": str(settings.threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=full_env | (env or {}),
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout_s:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {done.returncode}: {tail}")
    return json.loads(lines[-1])


def reference_numbers(
    archs: Sequence[str], settings: Settings, timeout_s: float, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(FLOPs per model, the machine's peak GFLOP/s), each from one worker; empty on failure."""
    numbers: list[dict[str, Any]] = []
    for what in ("peak", "flops"):
        log(f"{what} ...")
        args = ["--worker", what, "--arch", *archs, *settings.as_args()]
        try:
            numbers.append(_run_worker(args, settings, timeout_s))
        except RuntimeError as err:
            log(f"  {what} failed: {err}")
            numbers.append({})
    peak, flops = numbers
    return flops, peak


def _row_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"  failed: {row['error']}"
    cold = f" (cold {row['first_step_s_cold']:.2f} s)" if "first_step_s_cold" in row else ""
    return (
        f"  first step {row['first_step_s']:.2f} s{cold}, {row['median_ms']:.1f} ms/step "
        f"(min {row['min_ms']:.1f}, max {row['max_ms']:.1f}), {row['images_per_s']:.0f} images/s"
    )


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": _cores(),
        "load_average_at_start": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


# --- Command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parity_tests.speed",
        description="Time the training step eager vs compiled in PyTorch and TensorFlow.",
    )
    parser.add_argument("--arch", nargs="+", help="DenseNet preset names, cnn:wW[dD], mlp:wW[dD]")
    parser.add_argument(
        "--study",
        action="store_true",
        help=f"the study: models {' '.join(STUDY_MODELS)}; its cases; {STUDY_SETTINGS}; "
        "--cold-and-warm (any option given explicitly wins)",
    )
    parser.add_argument("--batch-size", type=int, help=f"default {DEFAULTS['batch_size']}")
    parser.add_argument("--steps", type=int, help="steps per timed repeat (default 20)")
    parser.add_argument("--repeats", type=int, help="default 5")
    parser.add_argument("--warmup", type=int, help="untimed steps after the first (default 3)")
    parser.add_argument(
        "--repeat-seconds",
        type=float,
        help="take fewer than --steps steps per repeat where this many seconds suffice "
        "(timed from the warm-up steps; default 0: always --steps)",
    )
    parser.add_argument("--threads", type=int, default=_cores(), help="default: usable cores")
    parser.add_argument(
        "--cases",
        nargs="+",
        help=f"some of {', '.join(CASES)}, separated by spaces or commas (default: all that "
        "the device supports)",
    )
    parser.add_argument("--out", help="default: runs/speed/<arch>")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cold-compile",
        action="store_true",
        help="ignore torch.compile's on-disk caches, so compile s is a first compile",
    )
    cache.add_argument(
        "--cold-and-warm",
        action="store_true",
        help="time each torch.compile case's compilation twice: from an empty cache (cold), "
        "then from the cache that run wrote (warm)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one case here
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    return parser


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _has_gpu() -> bool:
    # Asked of a child process: the driver imports no framework.
    probe = "import torch; print(torch.cuda.is_available())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() == "True"


def _settings(args: argparse.Namespace) -> Settings:
    chosen = DEFAULTS | (STUDY_SETTINGS if args.study else {})
    value = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in chosen.items()}
    if min(value["batch_size"], value["steps"], value["repeats"], args.threads) < 1:
        raise UserError("--batch-size, --steps, --repeats and --threads must be at least 1.")
    if value["warmup"] < 0 or value["repeat_seconds"] < 0:
        raise UserError("--warmup and --repeat-seconds must be at least 0.")
    return Settings(
        value["batch_size"],
        value["steps"],
        value["repeats"],
        value["warmup"],
        args.threads,
        value["repeat_seconds"],
    )


@command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if not args.arch and not args.study:
        raise UserError("Name the models with --arch (or run the whole study: --study).")
    archs = args.arch or list(STUDY_MODELS)
    specs = [parse_model(a) for a in archs]  # an unknown name fails here, not in a worker
    settings = _settings(args)
    if args.worker:
        print(json.dumps(_work(args.worker, specs, settings, args.compile_only)))
        return 0
    if args.cases:
        cases = _parse_cases(args.cases)
    elif args.study:
        cases = STUDY_CASES + (STUDY_GPU_CASES if _has_gpu() else ())
    else:
        cases = tuple(CASES) if _has_gpu() else CPU_CASES
    compile_cache = (
        "cold-and-warm"
        if args.cold_and_warm or (args.study and not args.cold_compile)
        else "cold"
        if args.cold_compile
        else "default"
    )
    started = dt.datetime.now(dt.timezone.utc)
    machine = machine_info()
    flops, peak = reference_numbers(archs, settings, args.timeout, print)
    rows = measure(archs, cases, settings, timeout_s=args.timeout, compile_cache=compile_cache)
    rows = annotate(rows, flops, peak)
    versions = {k: r[k] for r in rows for k in ("torch", "tensorflow", "keras") if k in r}
    out = Path(args.out or Path("runs") / "speed" / "+".join(archs).replace(":", "-"))
    meta = {
        "command": "python -m parity_tests.speed " + shlex.join(argv),
        "date": started.isoformat(timespec="seconds"),
        "wall_s": (dt.datetime.now(dt.timezone.utc) - started).total_seconds(),
        "machine": machine,
        "versions": versions,
        "settings": {
            "archs": archs,
            "cases": list(cases),
            **asdict(settings),
            "compile_cache": compile_cache,
            "cold_compile": compile_cache == "cold",
        },
        "flops": flops,
        "peak": peak,
    }
    written = write_report(out, rows, meta)
    print(markdown(rows, meta | {"plots": [p.name for p in written[2:]]}))
    print("Wrote " + ", ".join(str(p) for p in written))
    return 0


def _work(worker: str, specs: list, settings: Settings, compile_only: bool) -> Any:
    """What one worker process computes (it imports one framework only)."""
    from parity_tests import speed_cases

    if worker == "peak":
        return speed_cases.measure_peak(settings.threads)
    if worker == "flops":
        return {s.name: speed_cases.count_flops(s) for s in specs}
    if worker not in CASES:
        raise UserError(f"Unknown case {worker!r}: use one of {', '.join(CASES)}.")
    return speed_cases.run_case(worker, specs[0], settings, compile_only)


def _parse_cases(given: Sequence[str]) -> tuple[str, ...]:
    """`--cases a b`, `--cases a,b` and `--cases a, b` alike."""
    cases = tuple(c.strip() for text in given for c in text.split(",") if c.strip())
    if unknown := [c for c in cases if c not in CASES]:
        raise UserError(f"--cases {unknown[0]!r} is unknown: use some of {', '.join(CASES)}.")
    return cases


__all__ = [
    "CASES",
    "CPU_CASES",
    "GPU_ONLY",
    "STUDY_CASES",
    "STUDY_MODELS",
    "build_parser",
    "machine_info",
    "main",
    "measure",
]

if __name__ == "__main__":
    sys.exit(main())
