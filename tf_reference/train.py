"""Training in TensorFlow, one objective, seven ways of executing it.

    eager      a Python loop; each step runs op by op under a GradientTape
    function   the step in `tf.function(jit_compile=False)` with a fixed input_signature
    loop       the epoch's loop itself inside one `tf.function`: `for _ in tf.range(n)`
               reads batches with `next(iterator)`, so Python is entered once per epoch
    xla        the step in `tf.function(jit_compile=True)`: fused and compiled by XLA
    fit        Keras `compile(jit_compile=False)` + `fit` (Keras 3's default "auto" is XLA)
    fit-xla    Keras `compile(jit_compile=True)` + `fit`
    fit-eager  Keras `compile(run_eagerly=True)` + `fit`: Keras' loop without any graph

Every mode uses the same network, data, loss, optimiser and schedule (`tf_reference.optim`):
SGD with Nesterov momentum and the L2 term added to the gradient, PyTorch's convention
(`L2SGD`, not Keras' decoupled `weight_decay`), and the learning rate of
`lightning_densenet.schedules.lr_factor`, step by step. On the same seed they follow the same
trajectory up to float rounding.

The pieces: `steps` (the train step and its traced forms), `loop` (the hand-written loop,
timed), `fit` (Keras' loop, timed alike), `evaluate`, `runs` (what a run writes). Throughput
excludes the first step, whose time (tracing and compilation, plus one step) is reported
apart; `python -m parity_tests.speed` times the modes against each other.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from lightning_densenet.errors import UserError
from tf_reference.config import MODES, Experiment, Mode, Network
from tf_reference.data import Splits, eval_batches, load_splits, steps_per_epoch, train_batches
from tf_reference.evaluate import evaluate, make_eval_step
from tf_reference.fit import fit_epochs
from tf_reference.loop import Throughput, run_epoch, step_runner
from tf_reference.network import build_network
from tf_reference.optim import make_optimizer
from tf_reference.runs import RunOutputs, epoch_line, summary_line
from tf_reference.steps import TrainStep

GRAPH_MODES = ("function", "loop", "xla", "fit", "fit-xla")  # the step is traced (once)


@dataclass
class TrainResult:
    metrics: dict[str, Any]  # final numbers: losses, accuracies, throughput, traces
    history: list[dict[str, Any]]  # one entry per epoch
    model: keras.Model
    run_dir: Path | None


def train(
    exp: Experiment,
    mode: Mode = "function",
    *,
    network: Network = "densenet",
    width: int | None = None,
    depth: int | None = None,
    root_dir: str | Path | None = "runs",
    validate: bool = True,
    splits: Splits | None = None,
    one_batch: bool = False,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Trains `exp` in `mode`. `root_dir=None` writes nothing; `splits` reuses data already
    loaded (`tf_reference.data.load_splits(exp.data)`). `one_batch` trains on the first
    batch over and over: an overfitting check, and a way to time the step alone, without
    the input pipeline."""
    if mode not in MODES:
        raise UserError(f"--mode {mode!r} is unknown: use one of {', '.join(MODES)}.")
    say = log or (lambda _: None)
    splits = splits or load_splits(exp.data)
    batch = exp.data.batch_size
    eval_batch = exp.data.eval_batch_size or batch
    spe = steps_per_epoch(len(splits.train), batch, exp.trainer.limit_train_batches)
    if spe < 1:
        raise UserError(
            f"The {len(splits.train)} training images make no full batch of {batch}: lower "
            "data.batch_size or use more images."
        )
    total = spe * exp.trainer.max_epochs
    total = min(total, exp.trainer.max_steps) if exp.trainer.max_steps else total
    epoch_steps = [min(spe, total - e * spe) for e in range(math.ceil(total / spe))]

    keras.utils.set_random_seed(exp.seed)  # the same initial weights in every mode
    net = build_network(
        network, exp.model.arch, splits.num_classes, splits.image_shape, width=width, depth=depth
    )
    optimizer = make_optimizer(exp.model, total)
    eval_step = make_eval_step(net, mode, splits.image_shape)
    train_data = train_batches(
        splits.train,
        batch,
        splits.mean,
        splits.std,
        augment=exp.data.augment,
        seed=exp.data.seed,
        epochs=len(epoch_steps),
        steps_per_epoch=spe,
    )
    if one_batch:
        train_data = tf.data.Dataset.from_tensors(next(iter(train_data))).repeat(total)

    run = RunOutputs.create(root_dir, exp, network, mode, net, optimizer) if root_dir else None
    clock = Throughput(batch)
    history: list[dict[str, Any]] = []
    best_val = -1.0

    def end_epoch(epoch: int, loss: float, acc: float) -> None:
        nonlocal best_val
        done = sum(epoch_steps[: epoch + 1])
        entry: dict[str, Any] = {"epoch": epoch + 1, "step": done, "train_loss": loss}
        entry |= {"train_acc": acc, "lr": float(optimizer.learning_rate)}
        if clock.epoch_rates:
            entry["steps_per_s"] = clock.epoch_rates[-1]
        if validate and splits.val is not None:
            val_data = eval_batches(
                splits.val,
                eval_batch,
                splits.mean,
                splits.std,
                max_batches=exp.trainer.limit_val_batches,
            )
            entry |= {f"val_{k}": v for k, v in evaluate(eval_step, val_data).items()}
        history.append(entry)
        if run:
            run.log_epoch(entry)
            if entry.get("val_acc", -1.0) > best_val:
                best_val = entry["val_acc"]
                net.save_weights(run.path / "best.weights.h5")
        say(epoch_line(entry, len(epoch_steps), batch))

    smoothing = exp.model.label_smoothing
    if mode.startswith("fit"):
        traces = fit_epochs(
            net, optimizer, smoothing, mode, train_data, epoch_steps, clock, end_epoch
        )
    else:
        step = TrainStep(net, optimizer, smoothing)
        runner = step_runner(step, mode, batch, splits.image_shape, iter(train_data))
        for epoch, n in enumerate(epoch_steps):
            end_epoch(epoch, *run_epoch(runner, n, clock))
        traces = step.python_calls if mode in GRAPH_MODES else None

    metrics = _summary(exp, mode, network, net, clock, traces, history)
    if validate and splits.test is not None:
        test_data = eval_batches(splits.test, eval_batch, splits.mean, splits.std)
        metrics |= {f"test_{k}": v for k, v in evaluate(eval_step, test_data).items()}
    if metrics.get("retraces"):
        warnings.warn(
            f"The {mode} train step was traced {traces} times: every trace after the first "
            "rebuilds the graph; keep batch shapes and dtypes fixed.",
            stacklevel=2,
        )
    say(summary_line(metrics))
    if run:
        run.finish(metrics)
        say(f"Wrote {run.path}")
    return TrainResult(metrics, history, net, run.path if run else None)


def _summary(
    exp: Experiment,
    mode: str,
    network: str,
    net: keras.Model,
    clock: Throughput,
    traces: int | None,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    last = history[-1] if history else {}
    metrics: dict[str, Any] = {
        "experiment": exp.name,
        "mode": mode,
        "model": network,
        "params": int(sum(math.prod(v.shape) for v in net.trainable_weights)),
        "batch_size": clock.batch_size,
        "epochs": len(history),
        "steps": last.get("step", 0),
        "first_step_s": clock.first_step_s,
        "steps_per_s": clock.steps_per_s,
        "images_per_s": clock.steps_per_s * clock.batch_size,
        "traces": traces,
        "retraces": max(0, traces - 1) if traces is not None else None,
    }
    metrics |= {k: v for k, v in last.items() if k.startswith(("train_", "val_"))}
    return metrics


def configure_threads(threads: int | None) -> None:
    """Pins TensorFlow's thread pools; must run before TensorFlow executes anything."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


__all__ = ["GRAPH_MODES", "MODES", "TrainResult", "configure_threads", "train"]
