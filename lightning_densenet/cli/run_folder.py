"""Where a run writes: `<default_root_dir>/<experiment>/version_N/`, one folder for all of it.

TensorBoard picks the next `version_N` and the CSV logger writes `metrics.csv` into the same
folder, beside the `config.yaml` LightningCLI saves. A resumed run keeps its folder and
version (`resume`); TensorBoard hides what the killed run logged past the checkpoint, and
`metrics.csv` is continued rather than replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger, TensorBoardLogger

from lightning_densenet.checkpointing import AppendingCSVLogger
from lightning_densenet.files import version_number


def experiment_name(config_files: list[Any]) -> str:
    """The last config file's stem; a saved run's `version_N/config.yaml` keeps its run's."""
    if not config_files:
        return "default"
    path = Path(str(config_files[-1]))
    if path.name == "config.yaml" and version_number(path.parent.name) is not None:
        return path.parent.parent.name
    return path.stem


def experiment_folder(config: Any, subcommand: str) -> tuple[Path, str]:
    """(root, name) of a subcommand's runs: `fit` runs under the experiment's name, the
    others beside them (`<name>-test`), so evaluating never adds a version to training's."""
    root = Path(config.trainer.default_root_dir or "runs")
    name = experiment_name(config.get("config") or [])
    if subcommand != "fit":
        name = f"{name}-{subcommand}"
    return root, name


def run_loggers(
    root: Path, name: str, version: int | None = None, purge_step: int | None = None
) -> list[Logger]:
    """TensorBoard and CSV into one `root/name/version_N`; `version` None: the next free one,
    else a resumed run's, whose logs past `purge_step` (the checkpoint's) are dropped."""
    tensorboard = TensorBoardLogger(
        root, name=name, version=version, default_hp_metric=False, purge_step=purge_step
    )
    resume = version is not None
    csv = AppendingCSVLogger(root, name=name, version=tensorboard.version, resume=resume)
    return [tensorboard, csv]
