"""The train step, and the ways of tracing it: per step, or a whole loop of steps.

`TrainStep` is plain Python: called directly it runs eagerly; `compile_step` traces it into
one `tf.function` (optionally compiled by XLA), `compile_loop` traces a loop of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import tensorflow as tf

from tf_reference.optim import cross_entropy


class TrainStep:
    """One optimiser step on a batch. `python_calls` counts how often its body ran, which in
    a traced mode is the number of traces."""

    def __init__(
        self, model: keras.Model, optimizer: keras.optimizers.Optimizer, label_smoothing: float = 0
    ) -> None:
        self.model, self.optimizer, self.label_smoothing = model, optimizer, label_smoothing
        self.python_calls = 0
        # Create the optimiser's slots now: a tf.function that creates variables on its first
        # call traces twice, which would read as a retrace.
        optimizer.build(model.trainable_variables)

    def __call__(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(mean loss, number of correct predictions) of the batch, before the update."""
        self.python_calls += 1
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = tf.reduce_mean(cross_entropy(labels, logits, self.label_smoothing))
        variables = self.model.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss, count_correct(labels, logits)


def count_correct(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """How many of the batch's top-1 predictions are right (int32 scalar)."""
    hits = tf.equal(tf.argmax(logits, axis=1), tf.cast(labels, tf.int64))
    return tf.reduce_sum(tf.cast(hits, tf.int32))


def compile_step(
    step: Callable[..., Any], mode: str, batch_size: int, image_shape: Sequence[int]
) -> Callable[..., Any]:
    """`step` as `mode` runs it: itself (eager), or traced for one fixed batch shape."""
    if mode == "eager":
        return step
    if mode not in ("function", "xla"):
        raise ValueError(f"compile_step runs eager, function or xla, not {mode!r}")
    signature = (
        tf.TensorSpec((batch_size, *image_shape), tf.float32, name="images"),
        tf.TensorSpec((batch_size,), tf.int64, name="labels"),
    )
    return tf.function(step, input_signature=signature, jit_compile=mode == "xla")


def compile_loop(step: Callable[..., Any]) -> Callable[[Iterator[Any], tf.Tensor], Any]:
    """One `tf.function` that runs `n` steps on batches from `iterator`, returning the sums of
    their losses and correct predictions. `n` is a tensor, so any count reuses the one trace;
    AutoGraph turns the loop into a `tf.while_loop` and `next` into `iterator.get_next()`."""

    @tf.function(jit_compile=False)  # XLA cannot compile the iterator ops
    def run_steps(iterator: Iterator[Any], n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        loss_sum, correct = tf.constant(0.0), tf.constant(0)
        for _ in tf.range(n):
            images, labels = next(iterator)
            loss, hits = step(images, labels)
            loss_sum += loss
            correct += hits
        return loss_sum, correct

    return run_steps


__all__ = ["TrainStep", "compile_loop", "compile_step", "count_correct"]
