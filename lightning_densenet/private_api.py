"""Every private attribute of Lightning (and of torch) this package uses, in one place.

Each stays because no public API does its job (the reason below, and in a line where it is
used). `tests/lightning_densenet/test_lightning_pieces.py` fails, naming the attribute and
its use, when the installed version no longer has one: an upgrade breaks a test, not a run.
"""

from __future__ import annotations

from typing import NamedTuple


class PrivateUse(NamedTuple):
    owner: str  # the class, module or saved state that holds it
    path: tuple[str, ...]  # attribute names, or keys of a saved state
    why: str  # where it is used and why no public API does

    @property
    def name(self) -> str:
        return f"{self.owner}.{'.'.join(self.path)}"


PRIVATE_API: tuple[PrivateUse, ...] = (
    PrivateUse(
        "pytorch_lightning.callbacks.ThroughputMonitor",
        ("_update",),
        "callbacks.TrainThroughput times validation batches without logging them, so that "
        "validation is taken out of train/time; only this method records a batch's time",
    ),
    PrivateUse(
        "pytorch_lightning.loggers.csv_logs.ExperimentWriter",
        ("_check_log_dir_exists",),
        "checkpointing._AppendingWriter keeps a resumed run's metrics.csv: the writer's "
        "__init__ calls this check, which deletes the file, and no option turns it off",
    ),
    PrivateUse(
        "pytorch_lightning.loggers.csv_logs.ExperimentWriter",
        ("_fs",),
        "checkpointing._AppendingWriter reads and rewrites metrics.csv on the filesystem the "
        "writer itself uses (local or remote)",
    ),
    PrivateUse(
        "pytorch_lightning.loggers.CSVLogger",
        ("_experiment",),
        "checkpointing.AppendingCSVLogger builds its own writer where CSVLogger.experiment "
        "builds Lightning's, and caches it where the logger looks for it",
    ),
    PrivateUse(
        "pytorch_lightning.loggers.CSVLogger",
        ("_fs",),
        "checkpointing.AppendingCSVLogger creates the log folder as CSVLogger.experiment does",
    ),
    PrivateUse(
        "a checkpoint's loops.fit_loop",
        ("epoch_loop.state_dict", "_batches_that_stepped"),
        "checkpointing.first_logged_step: the logger's step a resumed run starts at (TensorBoard "
        "purges from it, metrics.csv is cut there); the checkpoint holds no public count of it",
    ),
    PrivateUse(
        "torch",
        ("_foreach_norm",),
        "callbacks.StopOnNonFiniteLoss: the largest |weight| of every tensor in one fused "
        "kernel each step; torch.nn.utils.get_total_norm, its public form, needs torch 2.6",
    ),
)
