"""The traced train step as TensorBoard shows it: its graph and, optionally, a profile.

    python -m tf_reference trace --config configs/debug.yaml --logdir runs/tf-trace
    tensorboard --logdir runs/tf-trace      # Graphs tab: run "train_step"; Profile tab

`tf.summary.trace_on` records the graphs that TensorFlow executes while it is on; around one
call of the `tf.function` train step that is the step's graph (the call traces it, so the
trace covers tracing, graph optimisation and one execution). `trace_export` writes the
record into the default summary writer. With `profiler=True`, TF 2.21 also starts the
profiler (`profiler_outdir` belongs to `trace_on` since 2.15) and writes an XPlane under
`<logdir>/plugins/profile/`, read by the TensorBoard profile plugin (TF 2.21 then logs a
harmless "Error while stopping profiler": `trace_export` stops the profiler twice).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from lightning_densenet.errors import UserError
from lightning_densenet.files import next_version
from tf_reference.config import Experiment, Network
from tf_reference.data import Splits, load_splits, train_batches
from tf_reference.network import build_network
from tf_reference.optim import make_optimizer
from tf_reference.steps import TrainStep, compile_step

TRACE_NAME = "train_step"


def write_trace(
    exp: Experiment,
    logdir: str | Path,
    *,
    mode: str = "function",
    network: Network = "densenet",
    width: int | None = None,
    depth: int | None = None,
    profiler: bool = False,
    splits: Splits | None = None,
) -> Path:
    """Runs the `mode` ("function" or "xla") train step once on a real batch while tracing,
    and writes the trace into a new `logdir/version_N/`. Returns that folder."""
    if mode not in ("function", "xla"):
        raise UserError(f"--mode {mode!r} cannot be traced: use function or xla.")
    splits = splits or load_splits(exp.data)
    batch = exp.data.batch_size
    images, labels = next(
        iter(train_batches(splits.train, batch, splits.mean, splits.std, seed=exp.data.seed))
    )
    keras.utils.set_random_seed(exp.seed)
    net = build_network(
        network, exp.model.arch, splits.num_classes, splits.image_shape, width=width, depth=depth
    )
    step = compile_step(
        TrainStep(net, make_optimizer(exp.model, 1), exp.model.label_smoothing),
        mode,
        batch,
        splits.image_shape,
    )

    out = next_version(Path(logdir))
    out.mkdir(parents=True)
    writer = tf.summary.create_file_writer(str(out))
    tf.summary.trace_on(
        graph=True, profiler=profiler, profiler_outdir=str(out) if profiler else None
    )
    try:
        step(images, labels)
        with writer.as_default():
            tf.summary.trace_export(name=TRACE_NAME, step=0)
    except BaseException:
        tf.summary.trace_off()  # leave no trace running (trace_export ends it on success)
        raise
    finally:
        writer.close()
    return out


__all__ = ["TRACE_NAME", "write_trace"]
