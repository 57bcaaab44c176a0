"""The training step, eager against compiled, in PyTorch and in TensorFlow, on one machine.

    python -m parity_tests.speed --arch densenet_bc_100_k12 [--batch-size 64] [--steps 20]
        [--repeats 5] [--warmup 3] [--threads N] [--cases torch-eager,tf-xla,...] [--out DIR]
        [--cold-compile]

Cases (each in a fresh interpreter, both frameworks pinned to the same thread count):

    torch-eager                   build_model + SGD(nesterov) + cross-entropy, step by step
    torch-compile                 the same with torch.compile(model), default mode
    torch-compile-step            torch.compile of the whole step function (forward, backward
                                  and optimiser step; Dynamo splits it at .backward())
    torch-compile-reduce-overhead torch.compile(model, mode=...): CUDA graphs; GPU only
    torch-compile-max-autotune    torch.compile(model, mode=...): autotuned kernels; GPU only
    tf-eager                      tf_reference.build_model + L2SGD, the step run op by op
    tf-function                   the step in tf.function(jit_compile=False)
    tf-xla                        the step in tf.function(jit_compile=True)

Every case trains on one synthetic batch of the real shape (so no input pipeline is timed),
times its first step apart (compilation or tracing happens there), runs `--warmup` more,
then times `--repeats` runs of `--steps` steps. The report, `speed.json` (every raw number,
the machine, versions and the command) and `speed.md` (a table), goes to `--out`, by
default `reports/speed/<arch>`. Several `--arch` names make one table across model sizes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lightning_densenet.arch import resolve_arch
from lightning_densenet.errors import UserError

CASES: dict[str, tuple[str, str]] = {  # name: (framework, how the step runs)
    "torch-eager": ("torch", "eager"),
    "torch-compile": ("torch", "compile"),
    "torch-compile-step": ("torch", "compile-step"),
    "torch-compile-reduce-overhead": ("torch", "reduce-overhead"),
    "torch-compile-max-autotune": ("torch", "max-autotune"),
    "tf-eager": ("tf", "eager"),
    "tf-function": ("tf", "function"),
    "tf-xla": ("tf", "xla"),
}
GPU_ONLY = ("torch-compile-reduce-overhead", "torch-compile-max-autotune")
CPU_CASES = tuple(c for c in CASES if c not in GPU_ONLY)
NUM_CLASSES = 10
IMAGE = (32, 32, 3)  # CIFAR; H, W, C


@dataclass(frozen=True)
class Settings:
    """What every case of one report shares."""

    batch_size: int = 64
    steps: int = 20  # steps per timed repeat
    repeats: int = 5
    warmup: int = 3  # untimed steps after the first
    threads: int = 1  # torch.set_num_threads / TF's intra- and inter-op pools / OMP_NUM_THREADS

    def as_args(self) -> list[str]:
        """`--batch-size 64 --steps 20 ...`: the worker's command line."""
        return [
            str(part)
            for f in fields(self)
            for part in (f"--{f.name.replace('_', '-')}", getattr(self, f.name))
        ]


# --- One case, inside its own interpreter ---------------------------------------------------


def run_case(case: str, arch: str, settings: Settings) -> dict[str, Any]:
    """Times `case` in this process and returns its raw numbers."""
    framework, how = CASES[case]
    make = _torch_step if framework == "torch" else _tf_step
    step, sync, info = make(arch, how, settings.batch_size, settings.threads)

    start = time.perf_counter()
    sync(step())
    first_step_s = time.perf_counter() - start
    for _ in range(settings.warmup):
        sync(step())
    ms_per_step = []
    for _ in range(settings.repeats):
        start = time.perf_counter()
        for _ in range(settings.steps):
            loss = step()
        final_loss = sync(loss)  # waits for the last step (GPU work is asynchronous)
        ms_per_step.append(1e3 * (time.perf_counter() - start) / settings.steps)
    return {
        "case": case,
        "arch": arch,
        "framework": framework,
        **asdict(settings),
        "first_step_s": first_step_s,
        "ms_per_step": ms_per_step,
        "final_loss": final_loss,
        **info,
    }


Step = Callable[[], Any]


def _torch_step(arch: str, how: str, batch_size: int, threads: int) -> tuple[Step, Callable, dict]:
    import torch
    import torch.nn.functional as F

    from lightning_densenet.model import build_model, count_parameters

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as the training CLI does
    if how in ("reduce-overhead", "max-autotune") and device.type != "cuda":
        raise UserError(f"torch.compile mode {how!r} needs a GPU; on CPU use torch-compile.")
    model = build_model(arch, NUM_CLASSES).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    net = model if how in ("eager", "compile-step") else torch.compile(model, mode=_mode(how))
    x = torch.randn(batch_size, IMAGE[2], *IMAGE[:2], device=device)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    run = torch.compile(step) if how == "compile-step" else step
    info = {
        "params": count_parameters(model),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "torch": torch.__version__,
    }
    return run, lambda loss: float(loss.item()), info


def _mode(how: str) -> str | None:
    return None if how == "compile" else how


def _tf_step(arch: str, how: str, batch_size: int, threads: int) -> tuple[Step, Callable, dict]:
    import keras
    import tensorflow as tf

    import tf_reference
    from tf_reference.optim import L2SGD
    from tf_reference.train import TrainStep, compile_step, configure_threads

    configure_threads(threads)
    keras.utils.set_random_seed(0)
    model = tf_reference.build_model(arch, NUM_CLASSES, "functional", IMAGE)
    train_step = TrainStep(model, L2SGD(0.1, momentum=0.9, nesterov=True, weight_decay_l2=1e-4))
    run = compile_step(train_step, how, batch_size, IMAGE)
    x = tf.random.normal((batch_size, *IMAGE), seed=0)
    y = tf.random.uniform((batch_size,), 0, NUM_CLASSES, tf.int64, seed=0)
    gpus = tf.config.list_physical_devices("GPU")
    info = {
        "params": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
        "device": "gpu" if gpus else "cpu",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    return lambda: run(x, y)[0], lambda loss: float(loss), info


# --- The driver: one subprocess per case, then the report -----------------------------------


def measure(
    archs: Sequence[str],
    cases: Sequence[str],
    settings: Settings,
    *,
    timeout_s: float = 1800,
    cold_compile: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Runs every (arch, case) in a fresh interpreter; a case that fails is reported, not fatal.
    `cold_compile` keeps torch.compile from reusing compilations cached on disk by earlier runs
    (by default they are used, so its compile time depends on what ran before)."""
    rows = []
    for arch in archs:
        for case in cases:
            log(f"{arch} / {case} ...")
            rows.append(_run_subprocess(arch, case, settings, timeout_s, cold_compile))
            log(_row_line(rows[-1]))
    return rows


def _run_subprocess(
    arch: str, case: str, settings: Settings, timeout_s: float, cold_compile: bool
) -> dict[str, Any]:
    command = [sys.executable, "-m", "parity_tests.speed", "--worker", case, "--arch", arch]
    command += settings.as_args()
    # OpenMP pools (oneDNN, MKL, Inductor's C++ kernels) get the same thread count.
    env = os.environ | {"OMP_NUM_THREADS": str(settings.threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if cold_compile:  # compile from scratch, ignoring Inductor's on-disk caches (XLA keeps none)
        env["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
    failed = {"case": case, "arch": arch, "framework": CASES[case][0]}
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return failed | {"error": f"timed out after {timeout_s:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return failed | {"error": f"exit {done.returncode}: {tail}"}
    return _with_stats(json.loads(lines[-1]))


def _with_stats(row: dict[str, Any]) -> dict[str, Any]:
    ms = sorted(row["ms_per_step"])
    median = statistics.median(ms)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else ms * 3
    return row | {
        "median_ms": median,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "iqr_ms": [q1, q3],
        "images_per_s": row["batch_size"] / median * 1e3,
        # Tracing/compilation: what the first step took beyond a steady step.
        "compile_s": max(0.0, row["first_step_s"] - median / 1e3),
    }


def _row_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"  failed: {row['error']}"
    return (
        f"  first step {row['first_step_s']:.2f} s, {row['median_ms']:.1f} ms/step "
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
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "load_average_at_start": load,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def write_report(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """`speed.json` with everything, `speed.md` with the table."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(meta | {"results": rows}, indent=2) + "\n")
    (out / "speed.md").write_text(markdown(rows, meta))


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m, s = meta["machine"], meta["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    load = m["load_average_at_start"]
    load = f"{load[0]:.1f}" if load else "unknown"
    caches = (
        "torch.compile from scratch (--cold-compile)"
        if s.get("cold_compile")
        else "torch.compile may reuse Inductor's on-disk cache of earlier runs"
    )
    lines = [
        f"# Training-step speed: {', '.join(s['archs'])}",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}; {m['cpu']}, {m['usable_cores']} usable cores (load average "
        f"{load} at the start), {s['threads']} threads per case; {versions}. Batch "
        f"{s['batch_size']} of synthetic 32x32 images; {s['repeats']} repeats of {s['steps']} "
        f"steps after {s['warmup']} warm-up steps. compile s: the first step minus a steady "
        f"one; {caches}. On a shared machine the spread (min-max of the repeats) shows how "
        "much the timings moved; compare numbers within one table.",
        "",
        "| arch | params | case | device | compile s | ms/step (median) | spread (min-max) "
        "| images/s | speed-up vs eager |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['arch']} | | {r['case']} | | failed: {r['error']} | | | | |")
            continue
        eager = _eager_ms(rows, r["arch"], r["framework"])
        speedup = f"{eager / r['median_ms']:.2f}x" if eager else "-"
        lines.append(
            f"| {r['arch']} | {r['params']:,} | {r['case']} | {r['device']} "
            f"| {r['compile_s']:.2f} | {r['median_ms']:.1f} | {r['min_ms']:.1f}-{r['max_ms']:.1f} "
            f"| {r['images_per_s']:.0f} | {speedup} |"
        )
    return "\n".join(lines) + "\n"


def _eager_ms(rows: list[dict[str, Any]], arch: str, framework: str) -> float | None:
    for r in rows:
        if r["arch"] == arch and r["case"] == f"{framework}-eager" and "error" not in r:
            return r["median_ms"]
    return None


# --- Command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m parity_tests.speed",
        description="Time the training step eager vs compiled in PyTorch and TensorFlow.",
    )
    parser.add_argument("--arch", nargs="+", required=True, help="preset name(s)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    parser.add_argument("--threads", type=int, default=_cores(), help="default: usable cores")
    parser.add_argument(
        "--cases",
        help=f"comma-separated, from {', '.join(CASES)} (default: all that the device supports)",
    )
    parser.add_argument("--out", help="default: reports/speed/<arch>")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per case")
    parser.add_argument(
        "--cold-compile",
        action="store_true",
        help="ignore torch.compile's on-disk caches, so compile s is a first compile",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one case here
    return parser


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _default_cases() -> tuple[str, ...]:
    # Whether a GPU is there is asked of a child process: the driver imports no framework.
    probe = "import torch; print(torch.cuda.is_available())"
    has_gpu = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    ).stdout.strip()
    return tuple(CASES) if has_gpu == "True" else CPU_CASES


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for arch in args.arch:
            resolve_arch(arch)  # an unknown name fails here, not in eight subprocesses
        if min(args.batch_size, args.steps, args.repeats, args.threads) < 1 or args.warmup < 0:
            raise UserError(
                "--batch-size, --steps, --repeats and --threads must be at least 1, --warmup 0."
            )
        settings = Settings(args.batch_size, args.steps, args.repeats, args.warmup, args.threads)
        if args.worker:
            if args.worker not in CASES:
                raise UserError(f"Unknown case {args.worker!r}: use one of {', '.join(CASES)}.")
            print(json.dumps(run_case(args.worker, args.arch[0], settings)))
            return 0
        cases = _parse_cases(args.cases) if args.cases else _default_cases()
        rows = measure(
            args.arch, cases, settings, timeout_s=args.timeout, cold_compile=args.cold_compile
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    versions = {k: r[k] for r in rows for k in ("torch", "tensorflow", "keras") if k in r}
    out = Path(args.out or Path("reports") / "speed" / "+".join(args.arch))
    meta = {
        "command": "python -m parity_tests.speed " + " ".join(argv or sys.argv[1:]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": versions,
        "settings": {
            "archs": list(args.arch),
            "cases": list(cases),
            **asdict(settings),
            "cold_compile": args.cold_compile,
        },
    }
    write_report(out, rows, meta)
    print(markdown(rows, meta))
    print(f"Wrote {out / 'speed.json'} and {out / 'speed.md'}")
    return 0


def _parse_cases(text: str) -> tuple[str, ...]:
    cases = tuple(c.strip() for c in text.split(",") if c.strip())
    if unknown := [c for c in cases if c not in CASES]:
        raise UserError(f"--cases {unknown[0]!r} is unknown: use some of {', '.join(CASES)}.")
    return cases


if __name__ == "__main__":
    sys.exit(main())
