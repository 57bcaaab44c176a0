"""An experiment for the TensorFlow reference, read from the same YAML as LightningCLI.

    exp = load_experiment("configs/cifar10_paper.yaml", ["--data.root", "/data"])
    exp = load_experiment("densenet_tiny")  # a bare preset name: the paper's recipe around it

jsonargparse reads the file (`experiment_parser`): the `model` and `data` blocks are the
dataclasses that `lightning_densenet.options` declares for `DenseNetClassifier` and
`ImageDataModule` (`ModelBlock`, `DataBlock`), so the keys, defaults and range checks are
theirs, and dotted overrides (`--model.lr 0.05`) and `--print_config` come with it. Keys that
only steer PyTorch are accepted and ignored (`budget_minutes`, `budget_pflop`, `ema_decay`,
`lookahead_every`, `tta`, `progressive_size`, `norm_weight_decay`, `norm_scale`,
`norm_lr_scale`, data's `crop_padding` and `flip`: with a warning when set).
Of the `trainer` block, free-form here, `max_epochs`, `max_steps`, `limit_train_batches` and
`limit_val_batches` apply. Imports neither TensorFlow nor torch.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from argparse import ArgumentError
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from lightning_densenet.arch import PRESETS, resolve_arch
from lightning_densenet.errors import UserError
from lightning_densenet.options import (
    DataBlock,
    ModelBlock,
    PositiveInt,
    check_milestones,
    one_line,
)

# How a run executes (`tf_reference.train`) and what it trains: besides the YAML.
Mode = Literal["eager", "function", "loop", "xla", "fit", "fit-xla", "fit-eager"]
MODES: tuple[str, ...] = get_args(Mode)
Network = Literal["densenet", "cnn", "mlp"]


@dataclass(frozen=True)
class ModelOptions(ModelBlock):
    """The `model` block (`options.ModelBlock`), its `arch` resolved to a `DenseNetConfig`."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "arch", resolve_arch(self.arch))
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        check_milestones(self.milestones)
        defaults = ModelOptions.__dataclass_fields__
        for key in _PYTORCH_ONLY:  # off at their defaults
            if getattr(self, key) != defaults[key].default:
                warnings.warn(
                    f"model.{key} is ignored: the TensorFlow reference does not have it (it "
                    "trains for trainer.max_epochs at full size, without weight averaging, TTA "
                    "or separate settings for BatchNorm and biases).",
                    stacklevel=3,
                )


# The Lightning module's training options the reference lacks: ignored with a warning when set.
# (num_classes comes from the data; compile, compile_mode, memory_efficient and channels_last
# steer PyTorch only: accepted silently, so one YAML drives both frameworks.)
_PYTORCH_ONLY = (
    "budget_minutes",
    "budget_pflop",
    "ema_decay",
    "lookahead_every",
    "tta",
    "progressive_size",
    "norm_weight_decay",
    "norm_scale",
    "norm_lr_scale",
)


@dataclass(frozen=True)
class DataConfig(DataBlock):
    """The `data` block (`options.DataBlock`). `num_workers` (PyTorch's loader processes) is
    ignored; `crop_padding` and `flip` are ignored with a warning unless 4 and random."""

    def __post_init__(self) -> None:
        if self.augment and (self.crop_padding, self.flip) != (4, "random"):
            warnings.warn(
                "data.crop_padding and data.flip are ignored: the TensorFlow reference "
                "augments with the paper's pad-4 crop and random flips.",
                stacklevel=3,
            )


@dataclass(frozen=True)
class TrainerOptions:
    """What the reference takes from the Lightning `trainer` block (`from_lightning`)."""

    max_epochs: PositiveInt = 300
    max_steps: PositiveInt | None = None  # stop after this many steps whatever max_epochs says
    limit_train_batches: PositiveInt | None = None  # steps per epoch, at most
    limit_val_batches: PositiveInt | None = None  # validation batches per evaluation, at most

    @classmethod
    def from_lightning(cls, block: Mapping[str, Any]) -> TrainerOptions:
        """The keys above, typed; Lightning's "no limit" spellings (-1 for max_steps, 1.0 =
        all batches for limit_*) become None, and every other key is ignored."""
        precision = str(block.get("precision", "32-true"))
        if precision not in ("32", "32-true"):
            warnings.warn(
                f"trainer.precision={precision} is ignored: the TensorFlow reference trains "
                "in float32.",
                stacklevel=3,
            )
        used = {f.name: block[f.name] for f in dataclasses.fields(cls) if f.name in block}
        for key in ("max_steps", "limit_train_batches", "limit_val_batches"):
            value = used.get(key)
            if value == -1 or (isinstance(value, float) and value == 1.0):
                used[key] = None
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, "trainer")
        with _user_errors():
            cfg = parser.parse_object({"trainer": used})
        return cls(**cfg.trainer.as_dict())


@dataclass(frozen=True)
class Experiment:
    """One training run, in the blocks of a LightningCLI config."""

    name: str = "experiment"  # the config file's stem or the preset name: names run folders
    seed: int = 0  # seed_everything: the weight init (the data block has its own seed)
    trainer: TrainerOptions = field(default_factory=TrainerOptions)
    model: ModelOptions = field(default_factory=ModelOptions)
    data: DataConfig = field(default_factory=DataConfig)

    def to_dict(self) -> dict[str, Any]:
        """The experiment as YAML blocks that `load_experiment` reads back (saved with each run)."""
        model = dataclasses.asdict(self.model) | {"arch": self.model.arch.to_dict()}
        blocks = {
            "seed_everything": self.seed,
            "trainer": dataclasses.asdict(self.trainer),
            "model": model,
            "data": dataclasses.asdict(self.data),
        }
        return json.loads(json.dumps(blocks))  # plain ints, floats and lists for yaml.safe_dump


class _ConfigOrPreset(ActionConfigFile):
    """`--config FILE` (or a YAML string), or a preset name: the paper's recipe around it."""

    def __call__(self, parser: Any, cfg: Any, values: Any, option_string: Any = None) -> None:
        if isinstance(values, str) and not Path(values).is_file() and values.isidentifier():
            if values not in PRESETS:
                raise UserError(
                    f"Config {values!r} is neither a YAML file nor a preset: give a path such "
                    f"as configs/debug.yaml or one of {', '.join(PRESETS)}."
                )
            values = json.dumps({"model": {"arch": values}})
        super().__call__(parser, cfg, values, option_string)


def experiment_parser(**kwargs: Any) -> ArgumentParser:
    """A jsonargparse parser of the config blocks: `--config`, `--print_config`,
    `--seed_everything`, `--trainer.*`, `--model.*`, `--data.*`."""
    parser = ArgumentParser(exit_on_error=False, **kwargs)
    parser.add_argument(
        "--config", action=_ConfigOrPreset, help="a YAML file of configs/ or a preset name"
    )
    parser.add_argument("--seed_everything", type=int, default=0, help="weight init seed")
    parser.add_argument(
        "--trainer", type=dict[str, Any], default={}, help="Lightning's trainer block"
    )
    parser.add_argument("--model", type=ModelOptions, default=ModelOptions())
    parser.add_argument("--data", type=DataConfig, default=DataConfig())
    return parser


def experiment_from(cfg: Namespace) -> Experiment:
    """The `Experiment` of what an `experiment_parser` parsed (the blocks' own checks run here)."""
    files = [p for p in cfg.get("config") or [] if p is not None]
    arch = cfg.model.arch
    name = Path(str(files[-1])).stem if files else arch if isinstance(arch, str) else "experiment"
    return Experiment(
        name=name,
        seed=cfg.seed_everything,
        trainer=TrainerOptions.from_lightning(cfg.trainer),
        model=ModelOptions(**cfg.model.as_dict()),
        data=DataConfig(**cfg.data.as_dict()),
    )


def load_experiment(source: str | Path | None = None, args: Sequence[str] = ()) -> Experiment:
    """An `Experiment` from a YAML file of `configs/` or a preset name, then `args`: dotted
    overrides as on the command line (`["--data.root", "DIR", "--model.lr=0.05"]`)."""
    parser = experiment_parser()
    argv = ([] if source is None else ["--config", str(source)]) + list(args)
    return experiment_from(parse(parser, argv))


def parse(parser: ArgumentParser, argv: Sequence[str]) -> Namespace:
    """`parser.parse_args(argv)`; a mistake in the input is a one-sentence `UserError`."""
    with _user_errors():
        return parser.parse_args(list(argv))


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except ArgumentError as err:  # jsonargparse's report of a bad key or value
        raise UserError(one_line(str(err))) from None


__all__ = [
    "MODES",
    "DataConfig",
    "Experiment",
    "Mode",
    "ModelOptions",
    "Network",
    "TrainerOptions",
    "experiment_from",
    "experiment_parser",
    "load_experiment",
    "parse",
]
