"""`python -m lightning_densenet fit|validate|test|predict|sweep` through LightningCLI.

Each run writes into `runs/<experiment>/version_N/`: the resolved `config.yaml`,
TensorBoard events, `metrics.csv`, `checkpoints/` (best by val/acc, and last), and for
`predict` a `predictions.csv`. The experiment name is the config file's stem.

`fit --ckpt_path last` continues the newest run of the experiment that has a
`checkpoints/last.ckpt`, in that run's folder (`last_or_fresh`: or starts a new run when
there is none); `fit --ckpt_path RUN/checkpoints/last.ckpt` continues RUN. Checkpoints are
written atomically (`checkpointing.AtomicCheckpointIO`) and `last.ckpt` also every
`--checkpoint.last_every_s` seconds within an epoch.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lightning_densenet import curves, runs
from lightning_densenet.callbacks import (
    PredictionWriter,
    StopOnNonFiniteLoss,
    TrainThroughput,
    run_checkpoints,
)
from lightning_densenet.checkpointing import (
    AppendingCSVLogger,
    AtomicCheckpointIO,
    find_last_run,
    first_logged_step,
)
from lightning_densenet.data import ImageDataModule
from lightning_densenet.datasets import default_cache_dir
from lightning_densenet.errors import UserError, command
from lightning_densenet.module import DenseNetClassifier
from lightning_densenet.options import NonNegativeFloat, one_line
from lightning_densenet.summary import print_fit_summary, use_reporting_callbacks


class _OneLineErrorParser(LightningArgumentParser):
    """A bad option or config key ends in one `error:` line, not the whole usage text."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse trying alternatives: let it go on
            super().error(message, ex)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"error: {_condense(str(message)).rstrip('.')} (see {prog} --help).\n")
        self.exit(2)


def _condense(message: str) -> str:
    """jsonargparse's multi-line report of a bad value, as one sentence."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    # A union type lists why each alternative failed; ours (a UserError) says the most.
    ours = [x[2:] for x in lines if x.startswith("- ") and not x.startswith("- Expected a <")]
    return ours[0] if ours else one_line(message)


# Options that change how the network runs, not what it is. LightningCLI replaces the model
# config with a checkpoint's hyperparameters (Lightning-AI/pytorch-lightning#20310), which
# would drop `test --ckpt_path X --model.tta false`; given on the command line, they win.
RUNTIME_OPTIONS = (
    "tta",
    "tta_shift",
    "compile",
    "compile_mode",
    "channels_last",
    "memory_efficient",
)


class DenseNetCLI(LightningCLI):
    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        self.parser_class = _OneLineErrorParser
        return super().init_parser(**kwargs)

    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        for key, value in self._runtime_overrides.items():
            self.config[subcommand]["model"][key] = value

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # a UserError of a union-typed value, as jsonargparse reports it
            if "Does not validate against any of the Union subtypes" not in str(err):
                raise
            raise UserError(_condense(str(err))) from None

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
            root, name = self._experiment_folder(config, self.subcommand)
            version: int | None = None  # None: TensorBoard takes the next version_N
            resume_step = None
            if self._resume_run is not None:  # continue that run's folder and logs
                root, name, version = self._resume_run
                resume_step = self._resume_step
                self.save_config_kwargs["overwrite"] = True  # config.yaml: the latest command
            # purge_step: TensorBoard hides what the killed run logged past the checkpoint.
            tensorboard = TensorBoardLogger(
                root, name=name, version=version, default_hp_metric=False, purge_step=resume_step
            )
            resume = self._resume_run is not None
            kwargs["logger"] = [
                tensorboard,
                AppendingCSVLogger(root, name=name, version=tensorboard.version, resume=resume),
            ]
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

    def _experiment_folder(self, config: Any, subcommand: str) -> tuple[Path, str]:
        root = Path(config.trainer.default_root_dir or "runs")
        name = self._experiment_name(config.get("config") or [])
        if subcommand != "fit":
            name = f"{name}-{subcommand}"
        return root, name

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        given = _model_options_on_command_line(sys.argv[1:] if args is None else args)
        self._runtime_overrides = {
            key: self.config[subcommand]["model"][key]
            for key in RUNTIME_OPTIONS
            if subcommand and key in given
        }
        # Checked here, before LightningCLI reads the checkpoint's hyperparameters into the
        # model config (a missing or corrupt file would otherwise end in a traceback).
        self._ckpt_shapes: dict[str, torch.Size] = {}
        self._resume_run: tuple[Path, str, int] | None = None  # (root, name, version) of fit
        self._resume_step: int | None = None
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if subcommand == "fit" and ckpt in ("last", "last_or_fresh"):
            ckpt = self._resolve_last(ckpt)
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
        if subcommand == "fit" and (run := _run_of(Path(ckpt), state)) is not None:
            # The run's newest state: continue in its folder, not in a new version_N.
            self._resume_run = (run.parent.parent, run.parent.name, int(run.name[8:]))
            self._resume_step = first_logged_step(state)

    def _resolve_last(self, ckpt: str) -> str | None:
        """`--ckpt_path last`: the newest run of this experiment with checkpoints/last.ckpt."""
        config = self.config.fit
        if config.trainer.logger is not None:
            return ckpt  # the user's own logger: Lightning looks for last.ckpt itself
        root, name = self._experiment_folder(config, "fit")
        version = find_last_run(root / name)
        if version is not None:
            path = str(root / name / f"version_{version}" / "checkpoints" / "last.ckpt")
        elif ckpt == "last_or_fresh":
            path = None  # nothing to resume: a fresh run, as asked
        else:
            raise UserError(
                f"--ckpt_path last found no run to resume ({root / name} holds no "
                "version_N/checkpoints/last.ckpt): drop --ckpt_path to start afresh, or pass "
                "--ckpt_path last_or_fresh to resume if possible and start afresh otherwise."
            )
        config.ckpt_path = path
        return path

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


def _model_options_on_command_line(args: Any) -> set[str]:
    """`--model.tta false`, `--model.tta=false` -> {"tta"}."""
    if not isinstance(args, (list, tuple)):
        return set()
    return {
        arg.removeprefix("--model.").split("=")[0]
        for arg in args
        if isinstance(arg, str) and arg.startswith("--model.")
    }


def _as_list(callbacks: Callback | list[Callback] | None) -> list[Callback]:
    """`trainer.callbacks` as the Trainer takes it (none, one or a list), as a list."""
    if callbacks is None:
        return []
    return list(callbacks) if isinstance(callbacks, list) else [callbacks]


def _run_of(ckpt: Path, state: dict[str, Any]) -> Path | None:
    """RUN for RUN/checkpoints/last*.ckpt (a run's newest state), else None.

    Spelled as the run spelled its checkpoint folder (relative or absolute) where that is
    the same folder: ModelCheckpoint restores its state (best and last paths) only when
    the folder's name is unchanged, and would otherwise write last-v1.ckpt beside last.ckpt.
    """
    if not ckpt.name.startswith("last") or ckpt.parent.name != "checkpoints":
        return None
    folder = ckpt.parent
    for callback in (state.get("callbacks") or {}).values():
        saved = callback.get("dirpath") if isinstance(callback, dict) else None
        if saved and Path(saved).resolve() == folder.resolve():
            folder = Path(saved)
            break
    run = folder.parent
    return run if re.fullmatch(r"version_\d+", run.name) else None


def run_cli(args: list[str] | None, callbacks: Sequence[Callback] = ()) -> DenseNetCLI:
    """Runs one subcommand (`args` None: read sys.argv); a user's mistake raises UserError.

    `callbacks` are added to the Trainer but not to the saved config.yaml (the sweep's
    pruning callback holds a live Optuna trial).
    """
    # The CSV logger shares the run folder that already holds config.yaml; it is a fresh
    # version folder, so nothing is about to be deleted.
    warnings.filterwarnings(
        "ignore", message=r"Experiment logs directory .* exists and is not empty"
    )
    # Throughput in images per second is what we report; FLOPs would need a model count.
    warnings.filterwarnings("ignore", message=r"When using the `ThroughputMonitor`")
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls/convs on Ampere and newer
    # Inductor's default cache, /tmp/torchinductor_$USER, is lost at every reboot: keep
    # compiled kernels beside the decoded datasets, so a second run compiles from the cache.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(default_cache_dir() / "inductor"))
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


@command
def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "convert":  # moved above both frameworks, whose weights it ports
        raise UserError(
            "the weight port is now `python -m parity_tests.convert SRC DST` (same arguments)."
        )
    if args and args[0] == "sweep":
        from lightning_densenet import sweep

        return sweep.main(args[1:])
    if args and args[0] in ("runs", "curves"):  # reading runs, not training: no LightningCLI
        return (runs.main if args[0] == "runs" else curves.main)(args[1:])
    cli = run_cli(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
    if cli.subcommand == "fit":
        print_fit_summary(cli.trainer)
    return 0
