"""The driver of `python -m parity_tests.speed`: each case in a worker process of its own.

    measure            every (model, case) in a fresh interpreter, torch.compile's disk cache
                       as asked (default, cold, or cold and then warm)
    reference_numbers  the models' FLOPs and the machine's peak, from one worker each
    machine_info       what ran it: CPU, cores, load, platform

The driver imports no framework: a worker is `python -m parity_tests.speed --worker JOB`
(`worker.work`), whose last line of output is its result as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from parity_tests.speed.cases import CASES, Settings, parse_model
from parity_tests.speed.report import with_stats


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
    """The CPU, its cores (all, and usable by this process), the load and the platform."""
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
        "usable_cores": usable_cores(),
        "load_average_at_start": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def usable_cores() -> int:
    """The cores this process may run on (its affinity), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def has_gpu() -> bool:
    """Whether PyTorch sees a GPU."""
    # Asked of a child process: the driver imports no framework.
    probe = "import torch; print(torch.cuda.is_available())"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return done.stdout.strip() == "True"


__all__ = ["has_gpu", "machine_info", "measure", "reference_numbers", "usable_cores"]
