"""Callbacks the CLI adds to every run: training throughput and the predictions file."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter, Callback


class TrainThroughput(Callback):
    """Logs `train/images_per_sec` and `train/epoch_time_s` for each training epoch.

    Timed from the first to the last training batch of the epoch, so validation, the
    sanity check and start-up are left out; with `skip_first_batches` the first batches of
    the first epoch (torch.compile's compilation, cuDNN autotuning) are left out too.
    """

    def __init__(self, skip_first_batches: int = 2) -> None:
        self.skip_first_batches = skip_first_batches
        self._skip, self._images, self._start, self._end = 0, 0, 0.0, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._skip = self.skip_first_batches if trainer.current_epoch == 0 else 0
        self._images, self._start = 0, time.perf_counter()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx < self._skip - 1:
            return
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        # Validation runs before on_train_epoch_end, so the clock stops at the last batch.
        self._end = time.perf_counter()
        if batch_idx == self._skip - 1:
            self._start = self._end  # the clock starts after the skipped batches
        else:
            self._images += batch[0].shape[0]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._images == 0:
            return
        seconds = self._end - self._start
        pl_module.log("train/images_per_sec", self._images / seconds)
        pl_module.log("train/epoch_time_s", seconds)


class PredictionWriter(BasePredictionWriter):
    """Writes `predictions.csv` (index, label, class, confidence) into the run directory."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Any,
        batch_indices: Any,
    ) -> None:
        classes = getattr(trainer.datamodule, "classes", None)
        labels = torch.cat([p["label"] for p in predictions]).tolist()
        confidence = torch.cat([p["confidence"] for p in predictions]).tolist()
        path = Path(trainer.log_dir or ".") / "predictions.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "label", "class", "confidence"])
            for i, (label, conf) in enumerate(zip(labels, confidence, strict=True)):
                name = classes[label] if classes else ""
                writer.writerow([i, label, name, f"{conf:.6f}"])
        print(f"Wrote {len(labels)} predictions to {path}")
