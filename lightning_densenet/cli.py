"""`python -m lightning_densenet fit|validate|test|predict|convert` through LightningCLI.

Each run writes into `runs/<experiment>/version_N/`: the resolved `config.yaml`,
TensorBoard events, `metrics.csv`, `checkpoints/` (best by val/acc, and last), and for
`predict` a `predictions.csv`. The experiment name is the config file's stem.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from lightning_densenet.callbacks import PredictionWriter, TrainThroughput
from lightning_densenet.data import ImageDataModule
from lightning_densenet.errors import UserError
from lightning_densenet.module import DenseNetClassifier


class DenseNetCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        # Always-on callbacks, still configurable: --checkpoint.monitor, --lr_monitor.*
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "epoch{epoch:03d}-val_acc{val/acc:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.add_lightning_class_args(TrainThroughput, "throughput")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        config = self.config[self.subcommand]
        if config.trainer.logger is None:  # not set by the user: TensorBoard + CSV, one folder
            root = Path(config.trainer.default_root_dir or "runs")
            name = self._experiment_name(config.get("config") or [])
            if self.subcommand != "fit":
                name = f"{name}-{self.subcommand}"
            version = _next_version(root / name)
            kwargs["logger"] = [
                TensorBoardLogger(root, name=name, version=version, default_hp_metric=False),
                CSVLogger(root, name=name, version=version),
            ]
        trainer = super().instantiate_trainer(**kwargs)
        if self.subcommand == "predict":
            trainer.callbacks.append(PredictionWriter())
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        # Checked here, before LightningCLI reads the checkpoint's hyperparameters into the
        # model config (a missing or corrupt file would otherwise end in a traceback).
        self._ckpt_shapes: dict[str, torch.Size] = {}
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt or ckpt in ("last", "best", "hpc", "registry"):
            return
        if not Path(ckpt).is_file():
            raise UserError(f"--ckpt_path {ckpt} does not exist: pass a .ckpt written by fit.")
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
            self._ckpt_shapes = {k: v.shape for k, v in state["state_dict"].items()}
        except Exception as err:
            raise UserError(
                f"--ckpt_path {ckpt} is not a readable Lightning checkpoint ({type(err).__name__}):"
                " pass a .ckpt written by fit."
            ) from None

    def _check_checkpoint(self) -> None:
        """A checkpoint that does not fit the model (e.g. trained on CIFAR-10, now given
        CIFAR-100) ends in one sentence, not a state_dict diff from deep inside Lightning.
        LightningCLI has already rebuilt the model from the checkpoint's hyperparameters."""
        saved = self._ckpt_shapes  # read in parse_arguments; empty without --ckpt_path
        if not saved:
            return
        ckpt = self.config_init[self.subcommand].get("ckpt_path")
        expected = {k: v.shape for k, v in self.model.state_dict().items()}
        for key, shape in expected.items():
            if key not in saved or saved[key] != shape:
                found = "missing" if key not in saved else f"of shape {tuple(saved[key])}"
                raise UserError(
                    f"--ckpt_path {ckpt} does not fit this model and data ({key} is {found}, the "
                    f"model needs {tuple(shape)}): use the data the checkpoint was trained on."
                )

    before_fit = before_validate = before_test = before_predict = _check_checkpoint

    @staticmethod
    def _experiment_name(config_files: list[Any]) -> str:
        if not config_files:
            return "default"
        path = Path(str(config_files[-1]))
        if path.name == "config.yaml" and path.parent.name.startswith("version_"):
            return path.parent.parent.name  # a saved run's config: keep the run's experiment name
        return path.stem


def _next_version(folder: Path) -> int:
    versions = [
        int(m.group(1))
        for p in (folder.iterdir() if folder.is_dir() else [])
        if (m := re.fullmatch(r"version_(\d+)", p.name))
    ]
    return max(versions, default=-1) + 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "convert":
        from lightning_densenet import convert

        return convert.main(args[1:])
    cli_args = None if argv is None else args  # None: LightningCLI reads sys.argv itself
    # The CSV logger shares the run folder that already holds config.yaml; it is a fresh
    # version folder, so nothing is about to be deleted.
    warnings.filterwarnings(
        "ignore", message=r"Experiment logs directory .* exists and is not empty"
    )
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls/convs on Ampere and newer
    try:
        DenseNetCLI(
            DenseNetClassifier,
            ImageDataModule,
            args=cli_args,
            trainer_defaults={"default_root_dir": "runs"},
            auto_configure_optimizers=False,
            parser_kwargs={"prog": "python -m lightning_densenet"},
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
