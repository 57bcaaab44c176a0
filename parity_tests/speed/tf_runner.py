"""The TensorFlow cases: the Keras networks of the models, and a case's step ready to time.

Imported only by a worker process that times TensorFlow: it imports TensorFlow and Keras,
never torch. The step is the shipped `tf_reference.steps.TrainStep` with `L2SGD`, run as
`tf_reference.train` runs it in each mode.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf

from lightning_densenet.arch import resolve_arch
from lightning_densenet.errors import UserError
from parity_tests.speed.cases import IMAGE, NUM_CLASSES, Case, ModelSpec, Settings
from parity_tests.speed.timing import Runner, max_rss_mb
from tf_reference.network import build_network
from tf_reference.optim import L2SGD, cross_entropy
from tf_reference.steps import TrainStep, compile_loop, compile_step
from tf_reference.train import configure_threads


def build_tf_model(spec: ModelSpec) -> keras.Model:
    """The Keras network of `spec` (functional DenseNet, or a `small_models` network)."""
    if spec.kind == "torchvision":
        raise UserError(f"{spec.name} is torchvision's DenseNet: it has no Keras twin.")
    arch = resolve_arch(spec.preset) if spec.preset else None  # cnn and mlp have none
    return build_network(spec.kind, arch, NUM_CLASSES, IMAGE, width=spec.width, depth=spec.depth)


def tf_runner(spec: ModelSpec, case: Case, settings: Settings) -> Runner:
    """`case` on `spec`: the Keras network + L2SGD + `TrainStep` on one synthetic batch, run
    step by step (eager, function, xla), as one traced loop (loop) or by `fit`."""
    configure_threads(settings.threads)
    base_mb = max_rss_mb()
    keras.utils.set_random_seed(0)
    if case.bf16:  # layers compute in bf16, variables stay fp32
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_tf_model(spec)
    optimizer = L2SGD(0.1, momentum=0.9, nesterov=True, weight_decay_l2=1e-4)
    train_step = TrainStep(model, optimizer)
    batch = settings.batch_size
    x = tf.random.normal((batch, *IMAGE), seed=0)
    y = tf.random.uniform((batch,), 0, NUM_CLASSES, tf.int64, seed=0)

    if case.mode == "loop":  # tf_reference.train's loop mode: n steps per call, one trace
        run_steps = compile_loop(train_step)
        batches = iter(tf.data.Dataset.from_tensors((x, y)).repeat())

        def run(n: int) -> Any:
            loss_sum, _ = run_steps(batches, tf.constant(n, tf.int32))
            return loss_sum / n

    elif case.mode.startswith("fit"):  # tf_reference.train's fit modes; one fit call per run
        model.compile(
            optimizer=optimizer,
            loss=cross_entropy,
            jit_compile=case.mode == "fit-xla",
            run_eagerly=case.mode == "fit-eager",
        )
        repeated = tf.data.Dataset.from_tensors((x, y)).repeat()

        def run(n: int) -> Any:
            history = model.fit(repeated, epochs=1, steps_per_epoch=n, shuffle=False, verbose=0)
            return history.history["loss"][-1]

    else:
        one_step = compile_step(train_step, case.mode, batch, IMAGE)

        def run(n: int) -> Any:
            for _ in range(n):
                loss, _ = one_step(x, y)
            return loss

    gpus = tf.config.list_physical_devices("GPU")
    info = {
        "params": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
        "device": "gpu" if gpus else "cpu",
        "device_type": "cuda" if gpus else "cpu",
        "dtype": "bf16" if case.bf16 else "fp32",
        "memory": "max RSS",
        "base_mb": base_mb,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    return run, lambda loss: float(loss), max_rss_mb, info


__all__ = ["build_tf_model", "tf_runner"]
