"""Validation and test: the summed loss and the accuracy of a model over a dataset."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tf_reference.optim import cross_entropy
from tf_reference.steps import count_correct


def make_eval_step(model: keras.Model, mode: str, image_shape: Sequence[int]) -> Callable:
    """(images, labels) -> (summed loss, correct); traced like the mode's train step, but for
    any batch size (the last evaluation batch is smaller)."""

    def eval_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = model(images, training=False)
        return tf.reduce_sum(cross_entropy(labels, logits)), count_correct(labels, logits)

    if mode in ("eager", "fit-eager"):
        return eval_step
    signature = (
        tf.TensorSpec((None, *image_shape), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    return tf.function(eval_step, input_signature=signature, jit_compile=mode.endswith("xla"))


def evaluate(eval_step: Callable, dataset: tf.data.Dataset) -> dict[str, float]:
    """{"loss": mean loss, "acc": accuracy} over every batch of `dataset`."""
    loss, correct, n = 0.0, 0, 0
    for images, labels in dataset:
        batch_loss, hits = eval_step(images, labels)
        loss, correct, n = loss + float(batch_loss), correct + int(hits), n + len(labels)
    return {"loss": loss / max(n, 1), "acc": correct / max(n, 1)}


__all__ = ["evaluate", "make_eval_step"]
