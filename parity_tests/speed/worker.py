"""What one worker process of `python -m parity_tests.speed --worker JOB` computes.

Each worker runs in a fresh interpreter and imports one framework only (Triton and TensorFlow
must not share a process unless Triton loads first); it prints its result as one JSON line:

    run_case   one case on one model (`timing.time_steps` on the framework's runner)
    work       the job: a case, the models' FLOPs or the machine's peak (`flops`)

The runners and `flops` are imported inside these functions, once the job names its
framework: that is what keeps the other framework out of the process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from lightning_densenet.errors import UserError
from parity_tests.speed.cases import CASES, ModelSpec, Settings
from parity_tests.speed.timing import time_steps


def run_case(
    name: str, spec: ModelSpec, settings: Settings, compile_only: bool = False
) -> dict[str, Any]:
    """Times case `name` on `spec` in this process and returns its raw numbers. The first
    step (tracing, compilation) is timed apart; `compile_only` stops after it."""
    case = CASES[name]
    if case.framework == "torch":
        from parity_tests.speed.torch_runner import torch_runner as make
    else:
        from parity_tests.speed.tf_runner import tf_runner as make
    runner = make(spec, case, settings)
    info = runner[3]
    row: dict[str, Any] = {"case": name, "arch": spec.name, "model_kind": spec.kind}
    row |= {"framework": case.framework, **asdict(settings), **info}
    return row | time_steps(runner, settings, compile_only)


def work(job: str, specs: Sequence[ModelSpec], settings: Settings, compile_only: bool) -> Any:
    """What the worker process of `--worker JOB` computes: `peak`, `flops` or a case."""
    if job in ("peak", "flops"):
        from parity_tests.speed.flops import count_flops, measure_peak

        if job == "peak":
            return measure_peak(settings.threads)
        return {s.name: count_flops(s) for s in specs}
    if job not in CASES:
        raise UserError(f"Unknown case {job!r}: use one of {', '.join(CASES)}.")
    return run_case(job, specs[0], settings, compile_only)


__all__ = ["run_case", "work"]
