"""Checkpoints that survive a kill, and resuming a run in its own directory.

- `AtomicCheckpointIO`: every checkpoint is written to a temporary file beside its target,
  fsynced, then renamed over it, so a kill during a save leaves the previous file whole.
  Checkpoints are read with `weights_only=True`: a file from elsewhere cannot run code.
- `find_last_run`: the run directory `fit --ckpt_path last` continues.
- `AppendingCSVLogger`: Lightning's CSV writer deletes `metrics.csv` when its folder is not
  empty; resuming keeps the rows written up to the checkpoint and appends after them.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightning_densenet.files import atomic_write, version_number


class AtomicCheckpointIO(TorchCheckpointIO):
    """`torch.save` through `files.atomic_write`: a temporary file beside the target, fsynced,
    then renamed onto it.

    Lightning's own save (an fsspec transaction) writes to the system temp folder and then
    moves the file: where that folder is another filesystem the move is a copy onto the
    target, which a kill can stop halfway, and nothing is fsynced. A rename within one
    directory is atomic on POSIX, so readers see the old file or the new one, never half of
    one. Remote paths (s3://, gs://) keep Lightning's behaviour.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_write(path, lambda f: torch.save(checkpoint, f))

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # Our checkpoints hold tensors and plain data only; refuse anything that runs code.
        return super().load_checkpoint(
            path, map_location, True if weights_only is None else weights_only
        )


def find_last_run(folder: Path) -> int | None:
    """The highest N whose `version_N/checkpoints/last.ckpt` exists, or None.

    Kept because Lightning's `ckpt_path="last"` looks only in the new run's own folder.
    """
    found = [
        version_number(ckpt.parent.parent.name)
        for ckpt in folder.glob("version_*/checkpoints/last.ckpt")
        if ckpt.is_file()
    ]
    return max((n for n in found if n is not None), default=None)


def first_logged_step(checkpoint: dict[str, Any]) -> int:
    """The first logger step of a run resumed from `checkpoint`.

    Lightning logs by batches stepped, not `global_step`; it saves that count before adding
    the batch in progress, and adds 1 back on restart unless the checkpoint was written after
    the batch completed (the end of an epoch): `TrainingEpochLoop.reset`.
    """
    try:
        fit = checkpoint["loops"]["fit_loop"]
        # Private (private_api.py): the checkpoint holds no public form of this count.
        stepped = int(fit["epoch_loop.state_dict"]["_batches_that_stepped"])
        total = fit["epoch_loop.batch_progress"]["total"]
    except (KeyError, TypeError):
        return int(checkpoint.get("global_step", 0))
    on_last = total["ready"] == total["started"] == total["processed"] == total["completed"]
    return stepped if on_last else stepped + 1


class _AppendingWriter(ExperimentWriter):
    """Continues an existing `metrics.csv` (Lightning's writer deletes it).

    Rows the killed run logged after its checkpoint are logged again by the resumed run, so
    at the first save the old rows from the first new step on are dropped. Until then the
    file is untouched: a run killed again before it logs anything loses nothing.
    """

    def __init__(self, log_dir: str, resume: bool) -> None:
        self._resume = resume
        super().__init__(log_dir)

    # Private (private_api.py), as `_fs`: the writer's __init__ calls this check, which
    # deletes metrics.csv, and no option keeps the file.
    def _check_log_dir_exists(self) -> None:
        if not self._resume:
            super()._check_log_dir_exists()  # a fresh run: Lightning's behaviour
        elif self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])  # sorted

    def save(self) -> None:
        if self._resume and self.metrics and self._fs.isfile(self.metrics_file_path):
            first = min(int(m["step"]) for m in self.metrics)
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step") and int(r["step"]) < first]
            with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(rows)
        self._resume = False
        super().save()


class AppendingCSVLogger(CSVLogger):
    """`CSVLogger` that, with `resume=True`, continues the `metrics.csv` in its folder."""

    def __init__(self, *args: Any, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resume = resume

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        # Private (private_api.py): CSVLogger.experiment, with our writer in Lightning's place.
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self._resume)
        return self._experiment
