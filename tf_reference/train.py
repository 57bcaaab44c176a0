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

A run writes `runs/tf/<experiment>/<mode>/version_N/`: config.yaml, TensorBoard scalars,
`checkpoints/` (tf.train.Checkpoint of model and optimiser, each epoch), best.weights.h5 (by
val acc), model.weights.h5 (last) and metrics.json. Throughput excludes the first step, whose
time (tracing and compilation, plus one step) is reported apart; `tf_reference.bench` times
the modes against each other.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import keras
import tensorflow as tf
import yaml

from lightning_densenet.arch import DenseNetConfig
from lightning_densenet.errors import UserError
from tf_reference.config import Experiment
from tf_reference.data import Splits, eval_batches, load_splits, steps_per_epoch, train_batches
from tf_reference.optim import cross_entropy, make_optimizer

Mode = Literal["eager", "function", "loop", "xla", "fit", "fit-xla", "fit-eager"]
ModelKind = Literal["densenet", "cnn", "mlp"]
MODES: tuple[str, ...] = ("eager", "function", "loop", "xla", "fit", "fit-xla", "fit-eager")
MODELS: tuple[str, ...] = ("densenet", "cnn", "mlp")
GRAPH_MODES = ("function", "loop", "xla", "fit", "fit-xla")  # the step is traced (once)
_XLA_MODES = ("xla", "fit-xla")
_EAGER_MODES = ("eager", "fit-eager")


# --- Network --------------------------------------------------------------------------------


def build_network(
    model: ModelKind,
    arch: DenseNetConfig,
    num_classes: int,
    input_shape: Sequence[int] = (32, 32, 3),
    *,
    width: int | None = None,
    depth: int | None = None,
) -> keras.Model:
    """The Keras DenseNet of `arch`, or a plain CNN / MLP (`tf_reference.small_models`)."""
    if model == "densenet":
        from tf_reference.model import build_model

        return build_model(arch, num_classes, "functional", tuple(input_shape))
    from tf_reference import small_models

    shape = tuple(input_shape)
    if model == "cnn":
        return small_models.plain_cnn(num_classes, width or 32, depth or 6, shape)
    if model == "mlp":
        return small_models.mlp(num_classes, width or 512, depth or 2, shape)
    raise UserError(f"--model {model!r} is unknown: use one of {', '.join(MODELS)}.")


# --- The step, the loop, evaluation ---------------------------------------------------------


class TrainStep:
    """One optimiser step on a batch, as plain Python: called directly it runs eagerly;
    `compile_step` and `compile_loop` trace it. `python_calls` counts how often its body ran,
    which in a traced mode is the number of traces."""

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
        return loss, _correct(labels, logits)


def _correct(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
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


def make_eval_step(model: keras.Model, mode: str, image_shape: Sequence[int]) -> Callable:
    """(images, labels) -> (summed loss, correct); traced like the mode's train step, but for
    any batch size (the last evaluation batch is smaller)."""

    def eval_step(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        logits = model(images, training=False)
        return tf.reduce_sum(cross_entropy(labels, logits)), _correct(labels, logits)

    if mode in _EAGER_MODES:
        return eval_step
    signature = (
        tf.TensorSpec((None, *image_shape), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    return tf.function(eval_step, input_signature=signature, jit_compile=mode in _XLA_MODES)


def evaluate(eval_step: Callable, dataset: tf.data.Dataset) -> dict[str, float]:
    loss, correct, n = 0.0, 0, 0
    for images, labels in dataset:
        batch_loss, hits = eval_step(images, labels)
        loss, correct, n = loss + float(batch_loss), correct + int(hits), n + len(labels)
    return {"loss": loss / max(n, 1), "acc": correct / max(n, 1)}


# --- Runs -----------------------------------------------------------------------------------


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
    model: ModelKind = "densenet",
    width: int | None = None,
    depth: int | None = None,
    root_dir: str | Path | None = "runs",
    validate: bool = True,
    splits: Splits | None = None,
    one_batch: bool = False,
    log: Callable[[str], None] | None = print,
) -> TrainResult:
    """Trains `exp` in `mode`. `root_dir=None` writes nothing (benchmarks); `splits` reuses
    data already loaded (`tf_reference.data.load_splits(exp.data)`). `one_batch` trains on
    the first batch over and over: an overfitting check, and a way to time the step alone,
    without the input pipeline."""
    if mode not in MODES:
        raise UserError(f"--mode {mode!r} is unknown: use one of {', '.join(MODES)}.")
    say = log or (lambda _: None)
    splits = splits or load_splits(exp.data)
    batch = exp.data.batch_size
    eval_batch = exp.data.eval_batch_size or batch
    spe = steps_per_epoch(len(splits.train), batch, exp.limit_train_batches)
    if spe < 1:
        raise UserError(
            f"The {len(splits.train)} training images make no full batch of {batch}: lower "
            "data.batch_size or use more images."
        )
    total = spe * exp.max_epochs
    total = min(total, exp.max_steps) if exp.max_steps else total
    epoch_steps = [min(spe, total - e * spe) for e in range(math.ceil(total / spe))]

    keras.utils.set_random_seed(exp.seed)  # the same initial weights in every mode
    net = build_network(
        model, exp.arch, splits.num_classes, splits.image_shape, width=width, depth=depth
    )
    optimizer = make_optimizer(exp, total)
    step = TrainStep(net, optimizer, exp.label_smoothing)
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

    run = _RunOutputs.create(root_dir, exp, model, mode, net, optimizer) if root_dir else None
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
                splits.val, eval_batch, splits.mean, splits.std, max_batches=exp.limit_val_batches
            )
            entry |= {f"val_{k}": v for k, v in evaluate(eval_step, val_data).items()}
        history.append(entry)
        if run:
            run.log_epoch(entry)
            if entry.get("val_acc", -1.0) > best_val:
                best_val = entry["val_acc"]
                net.save_weights(run.path / "best.weights.h5")
        say(_epoch_line(entry, len(epoch_steps), batch))

    if mode.startswith("fit"):
        traces = _fit(net, optimizer, exp, mode, train_data, epoch_steps, clock, end_epoch)
    else:
        runner = _step_runner(step, mode, batch, splits.image_shape, iter(train_data))
        for epoch, n in enumerate(epoch_steps):
            loss, acc = _run_epoch(runner, n, clock)
            end_epoch(epoch, loss, acc)
        traces = step.python_calls if mode in GRAPH_MODES else None

    metrics = _summary(exp, mode, model, net, clock, traces, history)
    if validate and splits.test is not None:
        test_data = eval_batches(splits.test, eval_batch, splits.mean, splits.std)
        metrics |= {f"test_{k}": v for k, v in evaluate(eval_step, test_data).items()}
    if metrics.get("retraces"):
        warnings.warn(
            f"The {mode} train step was traced {traces} times: every trace after the first "
            "rebuilds the graph; keep batch shapes and dtypes fixed.",
            stacklevel=2,
        )
    say(_summary_line(metrics))
    if run:
        run.finish(metrics)
        say(f"Wrote {run.path}")
    return TrainResult(metrics, history, net, run.path if run else None)


_Runner = Callable[[int], tuple[tf.Tensor, tf.Tensor]]  # n steps -> (loss sum, correct)


def _step_runner(
    step: TrainStep, mode: str, batch: int, image_shape: Sequence[int], it: Iterator[Any]
) -> _Runner:
    if mode == "loop":
        run_steps = compile_loop(step)
        return lambda n: run_steps(it, tf.constant(n, tf.int32))
    one_step = compile_step(step, mode, batch, image_shape)

    def run_steps_in_python(n: int) -> tuple[tf.Tensor, tf.Tensor]:
        losses, hits = [], []
        for _ in range(n):
            images, labels = next(it)
            loss, correct = one_step(images, labels)
            losses.append(loss)  # summed once at the end, not with an op per step
            hits.append(correct)
        return tf.add_n(losses), tf.add_n(hits)

    return run_steps_in_python


def _run_epoch(run_steps: _Runner, n: int, clock: Throughput) -> tuple[float, float]:
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


def _fit(
    net: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    exp: Experiment,
    mode: str,
    train_data: tf.data.Dataset,
    epoch_steps: list[int],
    clock: Throughput,
    end_epoch: Callable[[int, float, float], None],
) -> int | None:
    """Keras' own loop. Returns the number of traces of its train function."""
    traces = 0

    def loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        nonlocal traces
        if not isinstance(logits, keras.KerasTensor):  # not Keras' symbolic build
            traces += 1  # once per trace; once per step when run eagerly
        return cross_entropy(labels, logits, exp.label_smoothing)

    net.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="acc")],
        jit_compile=mode == "fit-xla",
        run_eagerly=mode == "fit-eager",
    )
    hooks = _FitHooks(clock, sum(epoch_steps), end_epoch)
    net.fit(
        train_data,
        epochs=len(epoch_steps),
        steps_per_epoch=epoch_steps[0],
        callbacks=[hooks],
        shuffle=False,  # the pipeline shuffles, seeded
        verbose=0,
    )
    return traces if mode != "fit-eager" else None


class _FitHooks(keras.callbacks.Callback):
    """Times `fit` as the other modes are timed, stops after the planned steps, and hands each
    epoch to the shared end-of-epoch routine (evaluation, logging, checkpoints)."""

    def __init__(self, clock: Throughput, total: int, end_epoch: Callable) -> None:
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


def _summary(
    exp: Experiment,
    mode: str,
    model: str,
    net: keras.Model,
    clock: Throughput,
    traces: int | None,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    last = history[-1] if history else {}
    metrics: dict[str, Any] = {
        "experiment": exp.name,
        "mode": mode,
        "model": model,
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


def _epoch_line(entry: dict[str, Any], epochs: int, batch: int) -> str:
    parts = [f"epoch {entry['epoch']}/{epochs}", f"train loss {entry['train_loss']:.4f}"]
    parts.append(f"acc {entry['train_acc']:.4f}")
    if "val_loss" in entry:
        parts.append(f"val loss {entry['val_loss']:.4f} acc {entry['val_acc']:.4f}")
    if "steps_per_s" in entry:
        rate = entry["steps_per_s"]
        parts.append(f"{rate:.2f} steps/s ({rate * batch:.0f} images/s)")
    return "  ".join(parts)


def _summary_line(m: dict[str, Any]) -> str:
    traces = "" if m["traces"] is None else f"; traces: {m['traces']}"
    first = m["first_step_s"]
    return (
        f"{m['mode']}: first step (trace/compile + 1 step) {first:.2f} s; then "
        f"{m['steps_per_s']:.2f} steps/s, {m['images_per_s']:.0f} images/s{traces}"
    )


@dataclass
class _RunOutputs:
    path: Path
    writer: Any
    manager: tf.train.CheckpointManager

    @classmethod
    def create(
        cls,
        root: str | Path,
        exp: Experiment,
        model: str,
        mode: str,
        net: keras.Model,
        optimizer: keras.optimizers.Optimizer,
    ) -> _RunOutputs:
        name = exp.name if model == "densenet" else f"{exp.name}-{model}"
        path = next_version(Path(root) / "tf" / name / mode)
        path.mkdir(parents=True)
        (path / "config.yaml").write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
        checkpoint = tf.train.Checkpoint(model=net, optimizer=optimizer)
        manager = tf.train.CheckpointManager(checkpoint, path / "checkpoints", max_to_keep=1)
        return cls(path, tf.summary.create_file_writer(str(path)), manager)

    def log_epoch(self, entry: dict[str, Any]) -> None:
        with self.writer.as_default():
            for key, value in entry.items():
                if key not in ("epoch", "step"):
                    tag = key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key
                    tf.summary.scalar(tag, value, step=entry["step"])
        self.writer.flush()
        self.manager.save(checkpoint_number=entry["step"])

    def finish(self, metrics: dict[str, Any]) -> None:
        self.manager.checkpoint.model.save_weights(self.path / "model.weights.h5")
        (self.path / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        self.writer.close()


def next_version(folder: Path) -> Path:
    """`folder/version_N` for the first N not taken: runs are never overwritten."""
    taken = [
        int(m.group(1))
        for p in (folder.iterdir() if folder.is_dir() else [])
        if (m := re.fullmatch(r"version_(\d+)", p.name))
    ]
    return folder / f"version_{max(taken, default=-1) + 1}"


def configure_threads(threads: int | None) -> None:
    """Pins TensorFlow's thread pools; must run before TensorFlow executes anything."""
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


__all__ = [
    "MODELS",
    "MODES",
    "Throughput",
    "TrainResult",
    "TrainStep",
    "build_network",
    "compile_loop",
    "compile_step",
    "configure_threads",
    "evaluate",
    "make_eval_step",
    "next_version",
    "train",
]
