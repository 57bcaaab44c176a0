"""How a case is timed, whichever framework runs it: the first step apart (tracing,
compilation), untimed warm-up steps, then timed repeats; and the memory high-water mark.

A runner (`torch_runner`, `tf_runner`) builds a case's step and returns what this loop needs.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

from parity_tests.speed.cases import Settings

# What a runner returns: run(n) runs n steps and returns the last loss as the framework
# holds it; sync(loss) waits for it and makes it a float; peak_mb() is the memory high-water
# mark; info holds the numbers of the report's row that the runner knows (params, device...).
Runner = tuple[Callable[[int], Any], Callable[[Any], float], Callable[[], float], dict[str, Any]]


def time_steps(runner: Runner, settings: Settings, compile_only: bool = False) -> dict[str, Any]:
    """The runner's first step, then `settings.warmup` untimed steps and `settings.repeats`
    timed runs of `settings.steps` steps (fewer where `settings.repeat_s` seconds suffice).
    `compile_only` stops after the first step."""
    run, sync, peak_mb, _ = runner
    start = time.perf_counter()
    final_loss = sync(run(1))
    first_step_s = time.perf_counter() - start
    row: dict[str, Any] = {"first_step_s": first_step_s, "compile_only": compile_only}
    if compile_only:
        return row | {"final_loss": final_loss, "peak_mb": peak_mb()}

    warm_s = []
    for _ in range(settings.warmup):
        start = time.perf_counter()
        sync(run(1))
        warm_s.append(time.perf_counter() - start)
    steps = settings.steps
    if settings.repeat_s > 0:  # about repeat_s per repeat: many steps of a small model only
        one_step = min(warm_s) if warm_s else first_step_s
        steps = max(1, min(steps, math.ceil(settings.repeat_s / one_step)))
    ms_per_step = []
    for _ in range(settings.repeats):
        start = time.perf_counter()
        final_loss = sync(run(steps))  # waits for the last step (GPU work is asynchronous)
        ms_per_step.append(1e3 * (time.perf_counter() - start) / steps)
    return row | {
        "steps_timed": steps,
        "ms_per_step": ms_per_step,
        "final_loss": final_loss,
        "peak_mb": peak_mb(),
    }


def max_rss_mb() -> float:
    """This process's largest resident set so far, in MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes there, KiB here


__all__ = ["Runner", "max_rss_mb", "time_steps"]
