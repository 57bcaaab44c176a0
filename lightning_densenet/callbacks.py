"""Callbacks the CLI adds to every run: checkpoints (best, last, and last again every few
minutes), a stop on a non-finite loss, throughput (Lightning's, for image batches) and the
predictions file."""

from __future__ import annotations

import csv
import itertools
from datetime import timedelta
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


def last_checkpoints(every_s: float | None = 300.0) -> list[ModelCheckpoint]:
    """Lightning's `ModelCheckpoint`s that keep `last.ckpt` the newest state, mid-epoch included.

    One rewrites `last.ckpt` after every epoch (after its validation), improved or not: with
    no monitor its top-1 file is the latest epoch's, named `last`. (Lightning 2.6's
    `save_last=True` writes `last.ckpt` at an epoch end only when a top-k file was written
    there too.) With `every_s`, the other rewrites it after a training batch once that many
    seconds have passed since its last save (`train_time_interval`: rank 0's clock decides
    for every process). A resumed run continues within the epoch (see
    `batches.ResumableLoader`), so a kill loses at most about `every_s` of training.

    Args:
        every_s: seconds between mid-epoch saves (0: after every batch; None: epoch ends only).
    """
    if every_s is not None and every_s < 0:
        raise UserError(f"checkpoint.last_every_s={every_s} must be 0 or more, or null.")
    # Not OnExceptionCheckpoint (or save_on_exception): tried, it saves on any exception, the
    # NaN stop's too (a file of the broken step), and under DDP a save on the one process that
    # raised waits forever at its barrier (Lightning-AI/pytorch-lightning#6430, won't fix).
    # No version counter: both write the one last.ckpt, and a resumed run rewrites its own.
    at_epoch_end = ModelCheckpoint(filename="last", enable_version_counter=False)
    if every_s is None:
        return [at_epoch_end]
    # Its top-1 file by `step` is the newest state, named `last` (not `save_last`, which
    # also saves once more when training ends, after the loops have finished). With a
    # monitor, and not saving at train epoch ends, ModelCheckpoint defers a save due at an
    # epoch's last batch to the end of that epoch's validation: saved before it, a run killed
    # during validation would resume past it and never validate that epoch.
    timed = ModelCheckpoint(
        filename="last",
        monitor="step",
        mode="max",
        train_time_interval=timedelta(seconds=every_s),
        save_on_train_epoch_end=False,
        enable_version_counter=False,
    )
    return [at_epoch_end, timed]


def run_checkpoints(
    last_every_s: float | None = 300.0, save_last: bool | str | None = True, **best: Any
) -> list[ModelCheckpoint]:
    """The `--checkpoint.*` options as Lightning's `ModelCheckpoint`s: the best checkpoint
    (`best`: ModelCheckpoint's own options) and, with `save_last`, `last_checkpoints`."""
    last = last_checkpoints(last_every_s) if save_last else []
    return [ModelCheckpoint(**best), *last]


def last_checkpoint_path(trainer: pl.Trainer) -> str:
    """The `last.ckpt` a `ModelCheckpoint` of this run names (`save_last`, or a top-k file
    named `last`), once it exists; else ""."""
    named = (
        path
        for callback in trainer.checkpoint_callbacks
        if isinstance(callback, ModelCheckpoint)
        for path in (callback.last_model_path, callback.best_model_path)
        if path and Path(path).stem == ModelCheckpoint.CHECKPOINT_NAME_LAST
    )
    # ModelCheckpoint names the file before writing it: a save refused (a non-finite state)
    # leaves the name of a file that may not exist. Remote paths are taken as written.
    return next((p for p in named if "://" in p or Path(p).is_file()), "")


class StopOnNonFiniteLoss(Callback):
    """Stops training with one sentence when the loss, or a weight, is NaN or infinite.

    On the CPU every step is checked as it runs: the loss before the backward pass, so the
    weights never take a step from a non-finite loss, and the weights after each step, since
    a finite loss can still step them past float32's range. On a GPU that would make the host
    wait for the device every step; there the checks run on the device, which keeps the first
    bad step, and the host reads it every `check_every_n_steps` steps and whenever a
    checkpoint is about to be written (`on_save_checkpoint` runs before the file is), before
    validation and when training ends. Either way no checkpoint holds a broken step, so
    `last.ckpt` stays the last good state. With DDP every process stops at the same check.

    Args:
        check_every_n_steps: steps between the host's reads of the device's flags; None: 1
            on the CPU (each step at once, as a read there costs nothing), else 100.
    """

    def __init__(self, check_every_n_steps: int | None = None) -> None:
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise UserError(f"check_every_n_steps={check_every_n_steps} must be 1 or more.")
        self.check_every_n_steps = check_every_n_steps
        self._every = 1
        # Deferred checks: the first bad [loss step, weights step] (-1: none yet) and that
        # loss, on the device; (epoch, batch) of each step since the last read, on the host.
        self._first: torch.Tensor | None = None
        self._loss = torch.zeros(())
        self._where: dict[int, tuple[int, int]] = {}
        self._batches = 0
        self._batch_idx = 0  # of the batch in progress, within its epoch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        device = trainer.strategy.root_device
        every = self.check_every_n_steps
        self._every = every if every is not None else (1 if device.type == "cpu" else 100)
        self._first, self._where, self._batches = None, {}, 0
        if self._every > 1:
            self._first = torch.full((2,), -1, dtype=torch.long, device=device)
            self._loss = torch.zeros((), device=device)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        step = trainer.global_step
        if self._first is None:
            finite = bool(torch.isfinite(loss.detach()).all())
            if not self._all_finite(trainer, finite):
                value = loss.item() if not finite else "non-finite on another process"
                self._stop(trainer, f"The training loss became {value} at global step", step)
            return
        self._where[step] = (trainer.current_epoch, self._batch_idx)
        bad = ~torch.isfinite(loss.detach()).all()
        first = bad & (self._first[0] < 0)
        self._loss = torch.where(first, loss.detach().float(), self._loss)
        self._first[0] = torch.where(first, step, self._first[0])  # no host sync

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        params = [p.detach() for p in pl_module.parameters()]
        # The largest |weight| of each tensor: one fused reduction. Private (private_api.py):
        # its public form, torch.nn.utils.get_total_norm, needs torch 2.6.
        bad = ~torch.stack(torch._foreach_norm(params, float("inf"))).isfinite().all()
        step = trainer.global_step - 1  # the update that just ran
        if self._first is None:
            if not self._all_finite(trainer, not bool(bad)):
                self._stop(trainer, self._WEIGHTS, step)
            return
        self._first[1] = torch.where(bad & (self._first[1] < 0), step, self._first[1])
        self._batches += 1
        if self._batches % self._every == 0:
            self._check(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._check(trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._check(trainer)  # raising here stops the save: the file is written after this

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)

    _WEIGHTS = "The weights became NaN or infinite in the update of global step"

    def _check(self, trainer: pl.Trainer) -> None:
        """The deferred checks' one host read; every process stops if any found a bad step."""
        if self._first is None or trainer.state.fn != TrainerFn.FITTING:
            return
        loss_step, weights_step = self._first.tolist()
        found = loss_step >= 0 or weights_step >= 0
        if not found:
            self._where.clear()  # (epoch, batch) are kept for the steps since the last read
        if self._all_finite(trainer, not found):
            return
        if not found:
            self._stop(trainer, "Another process found a NaN or infinite loss or weight by step")
        if loss_step >= 0 and (weights_step < 0 or loss_step <= weights_step):
            what = f"The training loss became {self._loss.item()} at global step"
            self._stop(trainer, what, loss_step)
        self._stop(trainer, self._WEIGHTS, weights_step)

    @staticmethod
    def _all_finite(trainer: pl.Trainer, finite: bool) -> bool:
        # Every process stops together, or the others would wait for it forever.
        return trainer.strategy.reduce_boolean_decision(finite, all=True)

    def _stop(self, trainer: pl.Trainer, what: str, step: int | None = None) -> NoReturn:
        last = last_checkpoint_path(trainer)
        kept = f"{last} keeps the last good state" if last else "no checkpoint had been written"
        step = trainer.global_step if step is None else step
        here = (trainer.current_epoch, self._batch_idx)
        epoch, batch = self._where.get(step, here)
        raise UserError(
            f"{what} {step} (epoch {epoch}, batch {batch}), so training stopped and {kept}: "
            "lower --model.lr or check the data, then start again."
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
            # Private (private_api.py): no public call records a batch's time alone.
            self._update(trainer, pl_module, batch, 0)


class PredictionWriter(BasePredictionWriter):
    """Writes `predictions.csv` (index, label, class, confidence) into the run directory.

    With DDP each process predicts its share of the images (the data module shards them);
    the shares are gathered with their indices and rank 0 writes one file in image order.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        predictions: Any,
        batch_indices: Any,
    ) -> None:
        path = Path(trainer.log_dir or ".") / "predictions.csv"  # log_dir: a collective
        loader = trainer.predict_dataloaders
        # The index of each image this process predicted: the loader's sampler yields one
        # index tensor per batch (batches.BatchIndexSampler), in the order predicted.
        batches = list(itertools.islice(iter(loader.sampler), len(predictions)))
        share = {
            "index": torch.cat(batches).tolist(),
            "label": torch.cat([p["label"] for p in predictions]).tolist(),
            "confidence": torch.cat([p["confidence"] for p in predictions]).tolist(),
        }
        if len(share["index"]) != len(share["label"]):
            raise RuntimeError("the predict loader's sampler must yield one index per image")
        shares = [share]
        if trainer.world_size > 1:
            shares = [{}] * trainer.world_size
            torch.distributed.all_gather_object(shares, share)
        if not trainer.is_global_zero:
            return
        rows = sorted(
            (i, label, conf)
            for s in shares
            for i, label, conf in zip(s["index"], s["label"], s["confidence"], strict=True)
        )
        if [i for i, _, _ in rows] != list(range(len(rows))):
            raise RuntimeError("the processes' predictions do not cover each image once")
        classes = getattr(trainer.datamodule, "classes", None)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "label", "class", "confidence"])
            for i, label, conf in rows:
                name = classes[label] if classes else ""
                writer.writerow([i, label, name, f"{conf:.6f}"])
        print(f"Wrote {len(rows)} predictions to {path}")
