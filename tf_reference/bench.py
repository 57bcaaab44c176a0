"""The training modes side by side: their steady speed, as `python -m tf_reference bench` shows it.

`benchmark_modes` trains every mode afresh (`tf_reference.train.train`, nothing written) for
a warm-up epoch and a timed one, over several rounds, and reports median and range;
`markdown_table` lays the rows out with the speed-up over eager.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import keras

from tf_reference.config import Experiment
from tf_reference.data import Splits, load_splits
from tf_reference.train import MODES, ModelKind, train


def benchmark_modes(
    exp: Experiment,
    modes: Sequence[str] = MODES,
    *,
    model: ModelKind = "densenet",
    width: int | None = None,
    depth: int | None = None,
    steps: int = 50,
    repeats: int = 3,
    splits: Splits | None = None,
    one_batch: bool = False,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Steady steps/s of each mode, median and range over `repeats` rounds. A round trains
    every mode afresh for two epochs of `steps` steps, the first a warm-up whose first step
    (trace/compile) is timed apart, the second timed. Rounds visit the modes in turn
    (reversed every other round), so a change in the machine's load hits all of them alike.
    No validation, nothing written; `one_batch` leaves the input pipeline out (see `train`)."""
    say = log or (lambda _: None)
    splits = splits or load_splits(exp.data)
    bench_exp = dataclasses.replace(exp, limit_train_batches=steps, max_epochs=2, max_steps=None)
    rates: dict[str, list[float]] = {mode: [] for mode in modes}
    firsts: dict[str, list[float]] = {mode: [] for mode in modes}
    last: dict[str, dict[str, Any]] = {}
    for round_ in range(repeats):
        for mode in modes if round_ % 2 == 0 else modes[::-1]:
            keras.backend.clear_session()  # the previous round's models and graphs
            result = train(
                bench_exp,
                mode,  # type: ignore[arg-type]
                model=model,
                width=width,
                depth=depth,
                root_dir=None,
                validate=False,
                splits=splits,
                one_batch=one_batch,
                log=None,
            )
            rates[mode].append(result.history[1]["steps_per_s"])
            firsts[mode].append(result.metrics["first_step_s"])
            last[mode] = result.metrics
        say(f"round {round_ + 1}/{repeats}: " + ", ".join(f"{m} {rates[m][-1]:.1f}" for m in modes))
    rows = []
    for mode in modes:
        median = statistics.median(rates[mode])
        rows.append(
            {
                "mode": mode,
                "model": model,
                "params": last[mode]["params"],
                "first_step_s": statistics.median(firsts[mode]),
                "steps_per_s": median,
                "min": min(rates[mode]),
                "max": max(rates[mode]),
                "images_per_s": median * exp.data.batch_size,
                "traces": last[mode]["traces"],
                "samples": rates[mode],
            }
        )
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows of `benchmark_modes` as a markdown table, with the speed-up over eager."""
    eager = next((r["steps_per_s"] for r in rows if r["mode"] == "eager"), None)
    lines = [
        "| mode | first step s | steps/s (median) | min-max | images/s | vs eager | traces |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        speedup = f"{r['steps_per_s'] / eager:.2f}x" if eager else "-"
        traces = "-" if r["traces"] is None else str(r["traces"])
        lines.append(
            f"| {r['mode']} | {r['first_step_s']:.2f} | {r['steps_per_s']:.2f} | "
            f"{r['min']:.2f}-{r['max']:.2f} | {r['images_per_s']:.0f} | {speedup} | {traces} |"
        )
    return "\n".join(lines)


__all__ = ["benchmark_modes", "markdown_table"]
