"""The command line of `python -m parity_tests.speed`: options, the study's defaults, main.

The usage and what each case times are in the package's docstring (`parity_tests/speed`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lightning_densenet.errors import UserError, command
from parity_tests.speed.cases import CASES, CPU_CASES, Settings, parse_model
from parity_tests.speed.driver import (
    has_gpu,
    machine_info,
    measure,
    reference_numbers,
    usable_cores,
)
from parity_tests.speed.report import annotate, markdown, write_report
from parity_tests.speed.worker import work

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


def build_parser() -> argparse.ArgumentParser:
    """The command line; options are spelt out in full (`Settings.as_args` writes them so)."""
    parser = argparse.ArgumentParser(
        prog="python -m parity_tests.speed",
        description="Time the training step eager vs compiled in PyTorch and TensorFlow.",
        allow_abbrev=False,
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
    parser.add_argument("--threads", type=int, default=usable_cores(), help="default: usable cores")
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


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The `Settings` of parsed options: the defaults (the study's with `--study`) where an
    option is not given. A count below its minimum is a `UserError`."""
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
    """Measures and writes the report; with `--worker`, runs that one job here instead."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if not args.arch and not args.study:
        raise UserError("Name the models with --arch (or run the whole study: --study).")
    archs = args.arch or list(STUDY_MODELS)
    specs = [parse_model(a) for a in archs]  # an unknown name fails here, not in a worker
    settings = settings_from_args(args)
    if args.worker:
        print(json.dumps(work(args.worker, specs, settings, args.compile_only)))
        return 0
    if args.cases:
        cases = _parse_cases(args.cases)
    elif args.study:
        cases = STUDY_CASES + (STUDY_GPU_CASES if has_gpu() else ())
    else:
        cases = tuple(CASES) if has_gpu() else CPU_CASES
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


def _parse_cases(given: Sequence[str]) -> tuple[str, ...]:
    """`--cases a b`, `--cases a,b` and `--cases a, b` alike."""
    cases = tuple(c.strip() for text in given for c in text.split(",") if c.strip())
    if unknown := [c for c in cases if c not in CASES]:
        raise UserError(f"--cases {unknown[0]!r} is unknown: use some of {', '.join(CASES)}.")
    return cases


__all__ = [
    "DEFAULTS",
    "STUDY_CASES",
    "STUDY_GPU_CASES",
    "STUDY_MODELS",
    "STUDY_SETTINGS",
    "build_parser",
    "main",
    "settings_from_args",
]
