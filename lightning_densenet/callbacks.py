"""Callbacks the CLI adds to every run: checkpoints (best, last, and last again every few
minutes), a stop on a non-finite loss, throughput (Lightning's, for image batches) and the
predictions file."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any, NoReturn

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import (
    BasePredictionWriter,
    Callback,
    ModelCheckpoint,
    ThroughputMonitor,
)
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.rank_zero import rank_zero_only, rank_zero_warn

from lightning_densenet.errors import UserError


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` whose `last.ckpt` is always the newest state, mid-epoch included.

    Args:
        last_every_s: also rewrite `last.ckpt` after a training batch once this many seconds
            have passed since the last save (None: only at epoch ends). A resumed run
            continues within the epoch (see `data.ResumableLoader`), so a kill loses at most
            this much training. 300 s costs little even for a large model's checkpoint.

    Lightning 2.6 rewrites `last.ckpt` at an epoch end only when a top-k checkpoint was
    saved there too; here it is rewritten after every epoch, improved or not.
    """

    def __init__(self, *args: Any, last_every_s: float | None = 300.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if last_every_s is not None and last_every_s < 0:
            raise UserError(f"checkpoint.last_every_s={last_every_s} must be 0 or more, or null.")
        self.last_every_s = last_every_s
        self._last_save_time = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_save_time = time.monotonic()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.last_every_s is None or not self.save_last:
            return
        due = time.monotonic() - self._last_save_time >= self.last_every_s
        due = trainer.strategy.broadcast(due)  # rank 0 decides: every process must save
        # The last batch of an epoch is saved at the epoch's end, after validation.
        if due and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last(trainer)

    def _save_last(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if self._last_global_step_saved == trainer.global_step:
            self._last_save_time = time.monotonic()


class StopOnNonFiniteLoss(Callback):
    """Stops training with one sentence when the loss, or a weight, is NaN or infinite.

    The loss is checked before the backward pass, so the weights never take a step from a
    non-finite loss; the weights are checked after each step, before any checkpoint of that
    step (Lightning runs checkpoint callbacks last), since a finite loss can still step the
    weights past float32's range. So `last.ckpt` stays the last good state.
    """

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        finite = bool(torch.isfinite(loss.detach()).all())
        if not self._all_finite(trainer, finite):
            value = loss.item() if not finite else "non-finite on another process"
            self._stop(trainer, f"The training loss became {value} at global step")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        params = [p.detach() for p in pl_module.parameters()]
        # The largest |weight| of each tensor: one fused reduction, one host sync.
        finite = bool(torch.stack(torch._foreach_norm(params, float("inf"))).isfinite().all())
        if not self._all_finite(trainer, finite):
            self._stop(trainer, "The weights became NaN or infinite in the update of global step")

    @staticmethod
    def _all_finite(trainer: pl.Trainer, finite: bool) -> bool:
        # Every process stops together, or the others would wait for it forever.
        return trainer.strategy.reduce_boolean_decision(finite, all=True)

    @staticmethod
    def _stop(trainer: pl.Trainer, what: str) -> NoReturn:
        ckpt = trainer.checkpoint_callback
        last = getattr(ckpt, "last_model_path", "") if ckpt is not None else ""
        kept = f"{last} keeps the last good state" if last else "no checkpoint had been written"
        step = trainer.global_step if "loss" in what else trainer.global_step - 1
        raise UserError(
            f"{what} {step} (epoch {trainer.current_epoch}, batch "
            f"{trainer.fit_loop.epoch_loop.batch_idx}), so training stopped and {kept}: lower "
            "--model.lr or check the data, then start again."
        )


def images_in(batch: Any) -> int:
    """The number of images in an `(images, labels)` batch or a batch of images."""
    return len(batch[0] if isinstance(batch, (tuple, list)) else batch)


class TrainThroughput(ThroughputMonitor):
    """Lightning's `ThroughputMonitor` for image batches; in `fit` it logs training only.

    Every `trainer.log_every_n_steps` steps: `train/time` (seconds of training batches since
    this process began training, validation left out), `train/samples`, `train/batches`, and,
    once `window_size` batches have run, `train/device/samples_per_sec` over the last
    `window_size` batches, so compilation and cuDNN autotuning fall out of the window (with
    DDP also `train/samples_per_sec`: rank 0's times the processes). `validate`, `test` and
    `predict` log Lightning's `validate/...`, `test/...`, `predict/...` figures.

    Args:
        window_size: batches in the rolling average (at least 2).
        skip_first_batches: no longer used (the window leaves the first batches out); read so
            that the `config.yaml` of older runs still loads.
    """

    def __init__(self, window_size: int = 100, skip_first_batches: int | None = None) -> None:
        if window_size < 2:
            raise UserError(f"throughput.window_size={window_size} must be 2 or more.")
        if skip_first_batches is not None:
            rank_zero_warn("throughput.skip_first_batches is no longer used: see window_size.")
        super().__init__(batch_size_fn=images_in, window_size=window_size)

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, *args, **kwargs)
        elif not trainer.sanity_checking:
            # Timed, so that validation is taken out of `train/time`, but not logged: Lightning
            # numbers these rows by validation batch, amid the training steps in metrics.csv.
            self._update(trainer, pl_module, batch, 0)


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
        if not trainer.is_global_zero:
            return  # with DDP every process predicted every image; one writes them
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
