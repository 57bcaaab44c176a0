"""The fit, fit-xla and fit-eager modes: Keras' own loop, timed as the other modes are."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from tf_reference.loop import Throughput
from tf_reference.optim import cross_entropy

EpochEnd = Callable[[int, float, float], None]  # (epoch, train loss, train acc) -> None


def fit_epochs(
    net: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    label_smoothing: float,
    mode: str,
    train_data: tf.data.Dataset,
    epoch_steps: list[int],
    clock: Throughput,
    end_epoch: EpochEnd,
) -> int | None:
    """`compile` + `fit` for the planned steps, each epoch handed to `end_epoch`. Returns the
    number of traces of Keras' train function (None when it runs eagerly)."""
    traces = 0

    def loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        nonlocal traces
        if not isinstance(logits, keras.KerasTensor):  # not Keras' symbolic build
            traces += 1  # once per trace; once per step when run eagerly
        return cross_entropy(labels, logits, label_smoothing)

    optimizer.build(net.trainable_variables)  # as TrainStep does: the slots before the trace
    net.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
        jit_compile=mode == "fit-xla",
        run_eagerly=mode == "fit-eager",
    )
    net.fit(
        train_data,
        epochs=len(epoch_steps),
        steps_per_epoch=epoch_steps[0],
        callbacks=[_FitHooks(clock, sum(epoch_steps), end_epoch)],
        shuffle=False,  # the pipeline shuffles, seeded
        verbose=0,
    )
    return traces if mode != "fit-eager" else None


class _FitHooks(keras.callbacks.Callback):
    """Times `fit` as the other modes are timed, stops after the planned steps, and hands each
    epoch to the shared end-of-epoch routine (evaluation, logging, checkpoints)."""

    def __init__(self, clock: Throughput, total: int, end_epoch: EpochEnd) -> None:
        super().__init__()
        self.clock, self.total, self.end_epoch = clock, total, end_epoch
        self.done, self.start, self.last, self.steady = 0, 0.0, 0.0, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start, self.steady = time.perf_counter(), 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.done += 1
        self.last = time.perf_counter()
        if self.clock.first_step_s is None:
            self.clock.first_step_s = self.last - self.start
            self.start = self.last  # the steady part starts after the first step
        else:
            self.steady += 1
        if self.done >= self.total:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.clock.add(self.steady, self.last - self.start)
        logs = logs or {}
        self.end_epoch(epoch, float(logs.get("loss", math.nan)), float(logs.get("acc", math.nan)))


__all__ = ["fit_epochs"]
