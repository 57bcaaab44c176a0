"""What a training run leaves behind: its folder, scalars, checkpoints, and printed lines.

A run writes `ROOT/tf/<experiment>/<mode>/version_N/`: config.yaml, TensorBoard scalars,
`checkpoints/` (tf.train.Checkpoint of model and optimiser, each epoch), best.weights.h5
(by val acc), model.weights.h5 (last) and metrics.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
import yaml

from lightning_densenet.files import next_version
from tf_reference.config import Experiment


@dataclass
class RunOutputs:
    path: Path
    writer: Any
    manager: tf.train.CheckpointManager

    @classmethod
    def create(
        cls,
        root: str | Path,
        exp: Experiment,
        network: str,
        mode: str,
        net: keras.Model,
        optimizer: keras.optimizers.Optimizer,
    ) -> RunOutputs:
        name = exp.name if network == "densenet" else f"{exp.name}-{network}"
        path = next_version(Path(root) / "tf" / name / mode)
        path.mkdir(parents=True)
        config = exp.to_dict()
        # The classes the network was built for (from the data), as PyTorch's CLI records them.
        config["model"]["num_classes"] = int(net.output_shape[-1])
        (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
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


def epoch_line(entry: dict[str, Any], epochs: int, batch: int) -> str:
    parts = [f"epoch {entry['epoch']}/{epochs}", f"train loss {entry['train_loss']:.4f}"]
    parts.append(f"acc {entry['train_acc']:.4f}")
    if "val_loss" in entry:
        parts.append(f"val loss {entry['val_loss']:.4f} acc {entry['val_acc']:.4f}")
    if "steps_per_s" in entry:
        rate = entry["steps_per_s"]
        parts.append(f"{rate:.2f} steps/s ({rate * batch:.0f} images/s)")
    return "  ".join(parts)


def summary_line(m: dict[str, Any]) -> str:
    traces = "" if m["traces"] is None else f"; traces: {m['traces']}"
    first = m["first_step_s"]
    return (
        f"{m['mode']}: first step (trace/compile + 1 step) {first:.2f} s; then "
        f"{m['steps_per_s']:.2f} steps/s, {m['images_per_s']:.0f} images/s{traces}"
    )


__all__ = ["RunOutputs", "epoch_line", "summary_line"]
