"""The objective every training mode shares: the loss, and the optimiser on its schedule.

cross_entropy   per-example loss of integer labels: Keras' with label smoothing
LRTable         the PyTorch side's learning-rate schedule, as a table looked up each step
L2SGD           `torch.optim.SGD` in Keras: L2 joins the gradient, lr stays out of momentum
make_optimizer  an experiment's optimiser (L2SGD or AdamW) on its schedule
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from lightning_densenet.schedules import lr_factor
from tf_reference.config import ModelOptions


def cross_entropy(labels: tf.Tensor, logits: tf.Tensor, label_smoothing: float = 0.0) -> tf.Tensor:
    """Per-example cross-entropy (B,) of integer labels. Keras smooths the one-hot target to
    (1 - eps) * onehot + eps / K, which is PyTorch's label smoothing:
    (1 - eps) * NLL(label) + eps * mean over classes of -log p."""
    # Keras' fit hands the labels over as floats.
    onehot = tf.one_hot(tf.cast(labels, tf.int32), tf.shape(logits)[-1], dtype=logits.dtype)
    return keras.losses.categorical_crossentropy(
        onehot, logits, from_logits=True, label_smoothing=label_smoothing
    )


class LRTable(keras.optimizers.schedules.LearningRateSchedule):
    """`peak_lr * factors[step]`: the PyTorch side's schedule, evaluated once per step in Python
    and looked up in the graph, so both frameworks use the very same numbers."""

    def __init__(self, peak_lr: float, factors: Sequence[float]) -> None:
        self.peak_lr = float(peak_lr)
        self.factors = [float(f) for f in factors]
        self._table = tf.constant(self.factors, tf.float32) * self.peak_lr

    def __call__(self, step: Any) -> tf.Tensor:
        last = len(self.factors) - 1
        return tf.gather(self._table, tf.minimum(tf.cast(step, tf.int32), last))

    def get_config(self) -> dict[str, Any]:
        return {"peak_lr": self.peak_lr, "factors": self.factors}


@keras.saving.register_keras_serializable("tf_reference")
class L2SGD(keras.optimizers.Optimizer):
    """`torch.optim.SGD` in Keras: the L2 term joins the gradient, momentum multiplies the
    gradient without the learning rate (so a change of lr acts at once, as in PyTorch):

        g = grad + weight_decay * w
        b = momentum * b + g
        w = w - lr * (g + momentum * b)        (nesterov; else w - lr * b)
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay_l2: float = 1e-4,
        name: str = "l2sgd",
        **kwargs: Any,
    ) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay_l2 = float(weight_decay_l2)

    def build(self, variables: list[Any]) -> None:
        if self.built:
            return
        super().build(variables)
        self.momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        lr = tf.cast(learning_rate, variable.dtype)
        g = tf.cast(gradient, variable.dtype) + self.weight_decay_l2 * variable
        buf = self.momentums[self._get_variable_index(variable)]
        self.assign(buf, self.momentum * buf + g)
        step = g + self.momentum * buf if self.nesterov else buf
        self.assign_sub(variable, lr * step)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            momentum=self.momentum, nesterov=self.nesterov, weight_decay_l2=self.weight_decay_l2
        )
        return config


def make_optimizer(model: ModelOptions, total_steps: int) -> keras.optimizers.Optimizer:
    """The `model` block's optimiser on its schedule over `total_steps` steps."""
    factor = lr_factor(model.schedule, total_steps, model.milestones, model.warmup)
    lr = LRTable(model.lr, [factor(s) for s in range(total_steps)])
    if model.optimizer == "adamw":  # decoupled decay, as torch.optim.AdamW (and its epsilon)
        return keras.optimizers.AdamW(lr, weight_decay=model.weight_decay, epsilon=1e-8)
    return L2SGD(lr, model.momentum, model.nesterov, model.weight_decay)


__all__ = ["L2SGD", "LRTable", "cross_entropy", "make_optimizer"]
