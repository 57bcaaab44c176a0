"""`DenseNetCLI`: LightningCLI with this project's options, callbacks and run folders.

`run_cli` runs one subcommand (fit, validate, test, predict); the jobs it wires in live in
their own modules of this package (see its docstring).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightning_densenet.callbacks import (
    PredictionWriter,
    StopOnNonFiniteLoss,
    TrainThroughput,
    run_checkpoints,
)
from lightning_densenet.checkpointing import AtomicCheckpointIO
from lightning_densenet.cli.checkpoint_check import check_fits, read_checkpoint
from lightning_densenet.cli.parser import OneLineErrorParser, condense
from lightning_densenet.cli.process_setup import set_up_process
from lightning_densenet.cli.resume import ResumedRun, resolve_last, resumed_run
from lightning_densenet.cli.run_folder import experiment_folder, run_loggers
from lightning_densenet.cli.runtime_options import apply_overrides, runtime_overrides
from lightning_densenet.data import ImageDataModule
from lightning_densenet.errors import UserError
from lightning_densenet.module import DenseNetClassifier
from lightning_densenet.options import NonNegativeFloat
from lightning_densenet.summary import use_reporting_callbacks


class DenseNetCLI(LightningCLI):
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        self.parser_class = OneLineErrorParser
        return super().init_parser(**kwargs)

    def before_instantiate_classes(self) -> None:
        apply_overrides(self.config, self.config.get("subcommand"), self._runtime_overrides)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # a UserError of a union-typed value, as jsonargparse reports it
            if "Does not validate against any of the Union subtypes" not in str(err):
                raise
            raise UserError(condense(str(err))) from None

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        # Always-on callbacks, still configurable: --checkpoint.monitor, --lr_monitor.*
        # `checkpoint`: ModelCheckpoint's options for the best checkpoint, and how last.ckpt
        # is kept; `callbacks.run_checkpoints` makes Lightning's ModelCheckpoints of them.
        parser.add_class_arguments(
            ModelCheckpoint, "checkpoint", fail_untyped=False, instantiate=False, sub_configs=True
        )
        parser.add_argument(
            "--checkpoint.last_every_s",
            type=NonNegativeFloat | None,
            default=300.0,
            help="Also rewrite last.ckpt within an epoch once this many seconds have passed since"
            " its last save (0: after every batch; null: at epoch ends only).",
        )
        parser.set_defaults(
            {
                # Each DDP process takes its own share in data.BatchIndexSampler; Lightning's
                # DistributedSampler would replace it and pad evaluation with duplicates.
                "trainer.use_distributed_sampler": False,
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
            if self._resumed is not None:  # continue that run's folder and logs
                run = self._resumed
                kwargs["logger"] = run_loggers(run.root, run.name, run.version, run.step)
                self.save_config_kwargs["overwrite"] = True  # config.yaml: the latest command
            else:
                kwargs["logger"] = run_loggers(*experiment_folder(config, self.subcommand))
        init = self.config_init[self.subcommand]
        kwargs["callbacks"] = [
            *_as_list(init.trainer.callbacks),
            *run_checkpoints(**init.checkpoint.as_dict()),
        ]
        trainer = super().instantiate_trainer(**kwargs)
        use_reporting_callbacks(trainer)  # budget in the progress bar, FLOPs in the summary
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # not a user's own plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if self.subcommand == "fit":
            trainer.callbacks.append(StopOnNonFiniteLoss())
        if self.subcommand == "predict":
            trainer.callbacks.append(PredictionWriter())
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        command_line = sys.argv[1:] if args is None else args
        self._runtime_overrides = runtime_overrides(self.config, subcommand, command_line)
        # Checked here, before LightningCLI reads the checkpoint's hyperparameters into the
        # model config (a missing or corrupt file would otherwise end in a traceback).
        self._ckpt_shapes: dict[str, torch.Size] = {}
        self._resumed: ResumedRun | None = None  # where fit continues a run
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand == "fit" and ckpt in ("last", "last_or_fresh"):
            ckpt = resolve_last(self.config.fit, ckpt)
        if not ckpt or ckpt in ("last", "best", "hpc", "registry"):
            return
        state, self._ckpt_shapes = read_checkpoint(ckpt)
        if subcommand == "fit":  # the run's newest state: continue in its folder
            self._resumed = resumed_run(Path(ckpt), state)

    def _check_checkpoint(self) -> None:
        """LightningCLI has rebuilt the model from the checkpoint's hyperparameters; the data
        can still disagree with it (`checkpoint_check.check_fits`)."""
        if self._ckpt_shapes:  # read in parse_arguments; empty without --ckpt_path
            ckpt = self.config_init[self.subcommand].get("ckpt_path")
            check_fits(ckpt, self._ckpt_shapes, self.model)

    before_fit = before_validate = before_test = before_predict = _check_checkpoint


def _as_list(callbacks: Callback | list[Callback] | None) -> list[Callback]:
    """`trainer.callbacks` as the Trainer takes it (none, one or a list), as a list."""
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, list) else [callbacks]


def run_cli(args: list[str] | None, callbacks: Sequence[Callback] = ()) -> DenseNetCLI:
    """Runs one subcommand (`args` None: read sys.argv); a user's mistake raises UserError.

    `callbacks` are added to the Trainer but not to the saved config.yaml (the sweep's
    pruning callback holds a live Optuna trial).
    """
    set_up_process()
    try:
        return DenseNetCLI(
            DenseNetClassifier,
            ImageDataModule,
            args=args,
            trainer_defaults={"default_root_dir": "runs", "callbacks": list(callbacks)},
            auto_configure_optimizers=False,
            parser_kwargs={"prog": "python -m lightning_densenet"},
        )
    except MisconfigurationException as err:  # Lightning's check of a trainer option
        raise UserError(str(err)) from None
