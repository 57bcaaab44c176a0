"""What `fit` tells you: the model summary's FLOPs and, when training ends, a short report.

The end-of-fit report is a reading of the run's `metrics.csv` (the CSV logger's), so every
number it prints is one the run logged:

    Fit finished: runs/cifar10_cpu/version_0 (29 epochs, 4,873 steps, 27.0 minutes)
      val/acc      best 89.00% (epoch 28), last 89.00%
      compute      0.2531 PFLOP, 156.1 GFLOP/s
      images/s     493.2 over the last 100 batches, 771.0 over the whole run
      checkpoints  best runs/cifar10_cpu/version_0/checkpoints/epoch027-val_acc0.8900.ckpt
                   last runs/cifar10_cpu/version_0/checkpoints/last.ckpt
    Next, test the last weights:
      python -m lightning_densenet test --config runs/.../config.yaml --ckpt_path runs/.../last.ckpt
"""

from __future__ import annotations

import csv
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    ModelSummary,
    RichModelSummary,
    RichProgressBar,
    ThroughputMonitor,
    TQDMProgressBar,
)
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch.utils.flop_counter import FlopCounterMode

from lightning_densenet.callbacks import last_checkpoint_path
from lightning_densenet.flops import training_flops_per_image
from lightning_densenet.model import DenseNet
from lightning_densenet.progress import BudgetRichProgressBar, BudgetTQDMProgressBar

NAN = float("nan")


@dataclass(frozen=True)
class FitReport:
    """A fit run's outcome as its metrics.csv logged it (NaN: not logged)."""

    run: Path
    epochs: int  # epochs begun (a budget can stop one part-way; it is validated too)
    steps: int  # optimiser steps
    best_val_acc: float  # a fraction, as logged
    best_epoch: int  # 1-based
    last_val_acc: float
    minutes: float  # train/minutes: the budget's clock (compilation and validation included)
    pflop: float  # train/pflop: training compute, all processes
    gflops_per_s: float  # train/gflops_per_s: that compute over the budget's clock
    images_per_s: float  # train/device/samples_per_sec: over the throughput window
    run_images_per_s: float  # train/samples over train/time: all training batches so far


def read_fit_report(run: Path) -> FitReport:
    """The report of the run folder `run` (holding metrics.csv)."""
    with (run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))

    def last(key: str) -> float:
        values = [float(r[key]) for r in rows if r.get(key)]
        return values[-1] if values else NAN

    val = {}  # epoch -> val/acc (the last logged for it)
    for r in rows:
        if r.get("val/acc") and r.get("epoch"):
            val[int(r["epoch"])] = float(r["val/acc"])
    epochs = [int(r["epoch"]) for r in rows if r.get("epoch")]
    best_epoch = max(val, key=lambda e: (val[e], -e)) if val else -1
    samples, seconds = last("train/samples"), last("train/time")
    return FitReport(
        run=run,
        epochs=max(epochs) + 1 if epochs else 0,
        steps=max((int(r["step"]) for r in rows if r.get("step")), default=-1) + 1,
        best_val_acc=val[best_epoch] if val else NAN,
        best_epoch=best_epoch + 1,
        last_val_acc=val[max(val)] if val else NAN,
        minutes=last("train/minutes"),
        pflop=last("train/pflop"),
        gflops_per_s=last("train/gflops_per_s"),
        images_per_s=last("train/device/samples_per_sec"),
        run_images_per_s=samples / seconds if seconds > 0 else NAN,
    )


def format_fit_report(
    report: FitReport,
    best_ckpt: str = "",
    last_ckpt: str = "",
    window: int | None = None,
    interrupted: bool = False,
) -> str:
    """The report as printed at the end of `fit`: numbers, checkpoints, the `test` command."""
    r = report
    verb = "interrupted" if interrupted else "finished"
    head = f"{r.epochs} epochs, {r.steps:,} steps"
    if _known(r.minutes):
        head += f", {r.minutes:.1f} minutes"
    lines = [f"Fit {verb}: {r.run} ({head})"]
    if _known(r.best_val_acc):
        lines.append(
            f"  val/acc      best {100 * r.best_val_acc:.2f}% (epoch {r.best_epoch}), "
            f"last {100 * r.last_val_acc:.2f}%"
        )
    if _known(r.pflop):
        rate = f", {r.gflops_per_s:.1f} GFLOP/s" if _known(r.gflops_per_s) else ""
        lines.append(f"  compute      {r.pflop:.4g} PFLOP{rate}")
    speeds = []
    if _known(r.images_per_s):
        speeds.append(f"{r.images_per_s:.1f} over the last {window or 'few'} batches")
    if _known(r.run_images_per_s):
        speeds.append(f"{r.run_images_per_s:.1f} over the whole run")
    if speeds:
        lines.append("  images/s     " + ", ".join(speeds))
    ckpts = [f"{name} {path}" for name, path in (("best", best_ckpt), ("last", last_ckpt)) if path]
    for i, text in enumerate(ckpts):
        lines.append(("  checkpoints  " if i == 0 else " " * 15) + text)
    ckpt = last_ckpt or best_ckpt
    if ckpt:
        which = "last" if ckpt == last_ckpt else "best"
        lines.append(f"Next, test the {which} weights:")
        lines.append("  " + next_test_command(r.run / "config.yaml", ckpt))
    return "\n".join(lines)


def next_test_command(config: Path | str, ckpt: Path | str) -> str:
    """The `test` command of a run's saved config and one of its checkpoints."""
    args = ["test", "--config", str(config), "--ckpt_path", str(ckpt)]
    return "python -m lightning_densenet " + shlex.join(args)


def print_fit_summary(trainer: pl.Trainer) -> None:
    """Prints the end-of-fit report (rank 0 only) when the run has a CSV logger."""
    if not trainer.is_global_zero:
        return
    csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if csv_logger is None or not (Path(csv_logger.log_dir) / "metrics.csv").is_file():
        return
    report = read_fit_report(Path(csv_logger.log_dir))
    ckpt = trainer.checkpoint_callback
    best = getattr(ckpt, "best_model_path", "") or ""
    last = last_checkpoint_path(trainer)  # written by one of several ModelCheckpoints
    monitor = next((c for c in trainer.callbacks if isinstance(c, ThroughputMonitor)), None)
    window = monitor.kwargs.get("window_size", 100) if monitor is not None else None
    interrupted = trainer.interrupted
    print(format_fit_report(report, best, last, window, interrupted), flush=True)


def _known(value: float) -> bool:
    return not math.isnan(value)


# The model summary's FLOPs.


def forward_flops(model: DenseNet, batch: int, height: int, width: int) -> float:
    """FLOPs of `model`'s forward pass on `batch` images, counted on a meta-device twin."""
    with torch.device("meta"):
        twin = DenseNet(model.config, model.num_classes)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        twin(torch.zeros(batch, 3, height, width, device="meta"))
    return float(counter.get_total_flops())


def _image_size(trainer: pl.Trainer) -> tuple[int, int]:
    """The training images' height and width (32 x 32 if the data module does not say)."""
    images = getattr(getattr(trainer.datamodule, "train_set", None), "images", None)
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return int(images.shape[-2]), int(images.shape[-1])
    return 32, 32


class _FlopsInSummary:
    """Lightning's summary counts FLOPs by running `example_input_array` through the model.
    A compiled DenseNetClassifier sets it to None (the summary's batch would compile a graph
    of its own), and Lightning then prints "Total FLOPs: 0". Here the same count, a forward
    pass of a batch of 2, is taken on a meta-device twin of the network, which compiles
    nothing, followed by the training FLOPs per image that `train/pflop` adds up."""

    _flops: tuple[float, float, tuple[int, int]] | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = getattr(pl_module, "model", None)
        self._flops = None
        if isinstance(model, DenseNet):
            h, w = _image_size(trainer)
            self._flops = (
                forward_flops(model, 2, h, w),
                training_flops_per_image(model, h, w),
                (h, w),
            )
        super().on_fit_start(trainer, pl_module)  # type: ignore[misc]

    def summarize(self, *args: Any, total_flops: int = 0, **kwargs: Any) -> None:
        if self._flops is not None and not total_flops:
            total_flops = int(self._flops[0])
        super().summarize(*args, total_flops=total_flops, **kwargs)  # type: ignore[misc]
        if self._flops is not None:
            (h, w), per_image = self._flops[2], self._flops[1]
            rank_zero_info(
                f"Training FLOPs per {h}x{w} image (forward + backward): "
                f"{per_image / 1e9:.3g} G; train/pflop adds them up."
            )


class DenseNetModelSummary(_FlopsInSummary, ModelSummary):
    pass


class DenseNetRichModelSummary(_FlopsInSummary, RichModelSummary):
    pass


# The Trainer builds its progress bar and model summary itself, from the trainer options
# `enable_progress_bar` and `enable_model_summary` (Rich's when `rich` is installed, which
# also takes a user's own instances). Turning those objects into our subclasses, which add
# behaviour but no state, keeps both switches and every setting a user gave them.
_OURS: dict[type, type] = {
    TQDMProgressBar: BudgetTQDMProgressBar,
    RichProgressBar: BudgetRichProgressBar,
    ModelSummary: DenseNetModelSummary,
    RichModelSummary: DenseNetRichModelSummary,
}


def use_reporting_callbacks(trainer: pl.Trainer) -> None:
    """The budget's minutes, PFLOP and image size in the progress bar; FLOPs in the summary."""
    for callback in trainer.callbacks:
        ours = _OURS.get(type(callback))
        if ours is not None:
            callback.__class__ = ours


__all__ = [
    "FitReport",
    "format_fit_report",
    "next_test_command",
    "print_fit_summary",
    "read_fit_report",
    "use_reporting_callbacks",
]
