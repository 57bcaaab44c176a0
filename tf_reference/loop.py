"""The hand-written training loop of the eager, function, loop and xla modes, timed.

`step_runner` gives a function that runs n steps in the mode's way; `run_epoch` runs one
epoch with it and times it into a `Throughput`. The very first step of a run (tracing,
compilation, one step) is timed apart from the steady steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import tensorflow as tf

from tf_reference.steps import TrainStep, compile_loop, compile_step

Runner = Callable[[int], tuple[tf.Tensor, tf.Tensor]]  # n steps -> (loss sum, correct)


@dataclass
class Throughput:
    """Timing of a run's training steps (evaluation excluded)."""

    batch_size: int
    first_step_s: float | None = None  # trace + compile + one step
    epoch_rates: list[float] = field(default_factory=list)  # steady steps/s of each epoch
    steady_steps: int = 0
    steady_s: float = 0.0

    def add(self, steps: int, seconds: float) -> None:
        if steps > 0 and seconds > 0:
            self.steady_steps += steps
            self.steady_s += seconds
            self.epoch_rates.append(steps / seconds)

    @property
    def steps_per_s(self) -> float:
        return self.steady_steps / self.steady_s if self.steady_s else float("nan")


def step_runner(
    step: TrainStep, mode: str, batch: int, image_shape: Sequence[int], it: Iterator[Any]
) -> Runner:
    """n -> n steps on batches from `it`: one traced loop (`loop`), or a Python loop over the
    eager or traced step, its losses summed once at the end (not with an op per step)."""
    if mode == "loop":
        run_steps = compile_loop(step)
        return lambda n: run_steps(it, tf.constant(n, tf.int32))
    one_step = compile_step(step, mode, batch, image_shape)

    def run_steps_in_python(n: int) -> tuple[tf.Tensor, tf.Tensor]:
        losses, hits = [], []
        for _ in range(n):
            images, labels = next(it)
            loss, correct = one_step(images, labels)
            losses.append(loss)
            hits.append(correct)
        return tf.add_n(losses), tf.add_n(hits)

    return run_steps_in_python


def run_epoch(run_steps: Runner, n: int, clock: Throughput) -> tuple[float, float]:
    """Runs `n` steps; the very first step of the run is timed on its own. Returns the epoch's
    mean loss and accuracy."""
    loss, correct, epoch_steps = 0.0, 0, n
    if clock.first_step_s is None:
        start = time.perf_counter()
        first_loss, first_correct = run_steps(1)
        loss, correct = float(first_loss), int(first_correct)  # waits for the step to finish
        clock.first_step_s = time.perf_counter() - start
        n -= 1
    if n:
        start = time.perf_counter()
        loss_sum, hits = run_steps(n)
        loss, correct = loss + float(loss_sum), correct + int(hits)
        clock.add(n, time.perf_counter() - start)
    return loss / epoch_steps, correct / (epoch_steps * clock.batch_size)


__all__ = ["Runner", "Throughput", "run_epoch", "step_runner"]
