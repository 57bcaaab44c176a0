"""An experiment for the TensorFlow reference, read from the same YAML as LightningCLI.

    exp = load_experiment("configs/cifar10_paper.yaml", {"data.root": "/data"})
    exp = load_experiment("densenet_tiny")  # a bare preset name: the paper's recipe around it

The `model` and `data` blocks mean what they mean to `DenseNetClassifier` and
`ImageDataModule`; keys that only concern PyTorch (`compile`, `num_workers`, ...) are
accepted and ignored, any other unknown key is a `UserError`. Of the `trainer` block only
`max_epochs`, `max_steps`, `limit_train_batches` and `limit_val_batches` apply here.
Imports neither TensorFlow nor torch.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lightning_densenet.arch import PRESETS, DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError

Dataset = Literal["cifar10", "cifar100", "imagefolder"]
OptimizerName = Literal["sgd", "adamw"]
ScheduleName = Literal["step", "cosine", "onecycle", "constant"]

# Keys of the YAML blocks that steer PyTorch only (compilation, loader processes, ...).
_TORCH_ONLY_MODEL_KEYS = {"compile", "compile_mode", "memory_efficient", "channels_last"}
# Training options of the Lightning module the reference does not have: accepted with a
# warning, so one YAML still drives both frameworks.
_TORCH_ONLY_TRAINING_KEYS = {"budget_minutes", "ema_decay", "tta"}
_TORCH_ONLY_DATA_KEYS = {"num_workers"}
_SECTIONS = ("seed_everything", "trainer", "model", "data")


@dataclass(frozen=True)
class DataConfig:
    """The `data` block: which images, how they are split, batched and augmented."""

    dataset: Dataset = "cifar10"
    root: str = "data"  # a folder; for imagefolder also a .tar/.tar.gz archive
    download: bool = True  # CIFAR only
    batch_size: int = 64
    eval_batch_size: int | None = None  # validation and test batches; None: batch_size
    val_size: int = 5000  # carved from train with `seed` (datasets.train_val_split)
    max_train_images: int | None = None  # use only this many training images
    holdout_size: int = 0  # data without a test split: held out as one (datasets.holdout_split)
    augment: bool = True  # pad-4 random crop + horizontal flip
    seed: int = 0  # the split, the shuffle and the augmentation
    cache_dir: str | None = None  # decoded image folders (.npz); None: the user cache


@dataclass(frozen=True)
class Experiment:
    """One training run, in the terms of `DenseNetClassifier` (the paper's recipe by default)."""

    name: str  # the config file's stem or the preset name: names the run directory
    arch: DenseNetConfig = field(default_factory=lambda: PRESETS["densenet_bc_100_k12"])
    optimizer: OptimizerName = "sgd"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4  # SGD: L2 added to the gradient; AdamW: decoupled
    schedule: ScheduleName = "step"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of training where lr drops /10
    warmup: float = 0.3  # onecycle: fraction of training spent warming up
    label_smoothing: float = 0.0
    max_epochs: int = 300
    max_steps: int | None = None  # stop after this many steps whatever max_epochs says
    limit_train_batches: int | None = None  # steps per epoch, at most
    limit_val_batches: int | None = None  # validation batches per evaluation, at most
    seed: int = 0  # weight init (the data block has its own seed, as in the PyTorch CLI)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(float(m) for m in self.milestones))
        self.validate()

    def validate(self) -> None:
        d = self.data
        _choice("model.optimizer", self.optimizer, ("sgd", "adamw"))
        _choice("model.schedule", self.schedule, ("step", "cosine", "onecycle", "constant"))
        _choice("data.dataset", d.dataset, ("cifar10", "cifar100", "imagefolder"))
        _check(self.lr > 0, "model.lr", self.lr, "use a positive learning rate such as 0.1")
        _check(0 <= self.momentum < 1, "model.momentum", self.momentum, "use a value in [0, 1)")
        _check(self.weight_decay >= 0, "model.weight_decay", self.weight_decay, "use >= 0")
        smoothing = self.label_smoothing
        _check(0 <= smoothing < 1, "model.label_smoothing", smoothing, "use a value in [0, 1)")
        ms = list(self.milestones)
        _check(
            all(0 < m < 1 for m in ms) and ms == sorted(ms),
            "model.milestones",
            ms,
            "give increasing fractions of training in (0, 1), e.g. [0.5, 0.75]",
        )
        _check(0 < self.warmup < 1, "model.warmup", self.warmup, "use a fraction in (0, 1)")
        _check(self.max_epochs >= 1, "trainer.max_epochs", self.max_epochs, "use at least 1")
        for key in ("max_steps", "limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            _check(value is None or value >= 1, f"trainer.{key}", value, "use at least 1 or null")
        _check(d.batch_size >= 1, "data.batch_size", d.batch_size, "use a positive batch size")
        eval_batch = d.eval_batch_size
        _check(
            eval_batch is None or eval_batch >= 1,
            "data.eval_batch_size",
            eval_batch,
            "use a positive batch size or null",
        )
        _check(d.val_size >= 0, "data.val_size", d.val_size, "use 0 or more images")
        _check(d.holdout_size >= 0, "data.holdout_size", d.holdout_size, "use 0 or more images")
        n_train = d.max_train_images
        _check(
            n_train is None or n_train >= 1,
            "data.max_train_images",
            n_train,
            "use a positive count or null for all",
        )

    def to_dict(self) -> dict[str, Any]:
        """The experiment as YAML blocks that `load_experiment` reads back (saved with each run)."""
        out = dataclasses.asdict(self)
        del out["name"]
        model = {k: out.pop(k) for k in _MODEL_FIELDS}
        model["arch"] = self.arch.to_dict()
        model["milestones"] = list(self.milestones)
        trainer = {k: out.pop(k) for k in _TRAINER_FIELDS}
        return {
            "seed_everything": out.pop("seed"),
            "trainer": trainer,
            "model": model,
            "data": out.pop("data"),
        }


# Field types as YAML gives them (ints pass for floats); `None` passes for Optional fields.
_MODEL_TYPES: dict[str, type | tuple[type, ...]] = {
    "optimizer": str,
    "lr": float,
    "momentum": float,
    "nesterov": bool,
    "weight_decay": float,
    "schedule": str,
    "milestones": (list, tuple),
    "warmup": float,
    "label_smoothing": float,
}
_DATA_TYPES: dict[str, type | tuple[type, ...]] = {
    "dataset": str,
    "root": str,
    "download": bool,
    "batch_size": int,
    "eval_batch_size": int,
    "val_size": int,
    "max_train_images": int,
    "holdout_size": int,
    "augment": bool,
    "seed": int,
    "cache_dir": str,
}
_TYPE_WORDS = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "a string",
    list: "a list",
}
_OPTIONAL = {"data.max_train_images", "data.cache_dir", "data.eval_batch_size"}
_MODEL_FIELDS = ("arch", *_MODEL_TYPES)
_TRAINER_FIELDS = ("max_epochs", "max_steps", "limit_train_batches", "limit_val_batches")


def load_experiment(source: str | Path, overrides: Mapping[str, Any] | None = None) -> Experiment:
    """An `Experiment` from a YAML file of `configs/` or a preset name, then `overrides`.

    Overrides are dotted keys as on the LightningCLI command line: `data.root`,
    `model.lr`, `trainer.max_epochs`, `seed_everything`.
    """
    path = Path(source)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        raw, name = _read_yaml(path), path.stem
    elif str(source) in PRESETS:
        raw, name = {"model": {"arch": str(source)}}, str(source)
    else:
        raise UserError(
            f"Config {source!r} is neither a YAML file nor a preset: give a path such as "
            f"configs/debug.yaml or one of {', '.join(PRESETS)}."
        )
    for key, value in (overrides or {}).items():
        _set_dotted(raw, key, value)
    return _parse(raw, name)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"Config file {path} does not exist: check the path.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        problem = str(err).replace("\n", " ")
        raise UserError(f"Config file {path} is not valid YAML ({problem}): fix it.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"Config file {path} must hold a mapping of {', '.join(_SECTIONS)}.")
    return raw


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    section, _, leaf = key.partition(".")
    if section not in _SECTIONS or (section == "seed_everything") == bool(leaf):
        raise UserError(
            f"Override {key!r} is not a config key: use model.<name>, data.<name>, "
            "trainer.<name> or seed_everything."
        )
    if not leaf:
        raw[section] = value
    else:
        block = raw.setdefault(section, {})
        if not isinstance(block, dict):
            raise UserError(f"Config section {section!r} must be a mapping, not {block!r}.")
        block[leaf] = value


def _parse(raw: dict[str, Any], name: str) -> Experiment:
    unknown = sorted(set(raw) - set(_SECTIONS) - {"ckpt_path"})
    if unknown:
        raise UserError(
            f"Unknown config section {unknown[0]!r}: the sections are {', '.join(_SECTIONS)}."
        )
    model = _block(raw, "model")
    data = _block(raw, "data")
    trainer = _block(raw, "trainer")

    model.pop("num_classes", None)  # always taken from the data
    for key in _TORCH_ONLY_MODEL_KEYS:
        model.pop(key, None)
    for key in _TORCH_ONLY_DATA_KEYS:
        data.pop(key, None)
    for key in sorted(_TORCH_ONLY_TRAINING_KEYS & set(model)):
        if model.pop(key) not in (None, 0, 0.0, False):
            warnings.warn(
                f"model.{key} is ignored: the TensorFlow reference does not have it "
                "(it trains for trainer.max_epochs, without weight averaging or TTA).",
                stacklevel=3,
            )
    _reject_unknown("model", model, set(_MODEL_FIELDS))
    _reject_unknown("data", data, {f.name for f in dataclasses.fields(DataConfig)})
    precision = str(trainer.get("precision", "32-true"))
    if precision not in ("32", "32-true"):
        warnings.warn(
            f"trainer.precision={precision} is ignored: the TensorFlow reference trains in "
            "float32.",
            stacklevel=3,
        )

    def positive_or_none(key: str) -> int | None:
        # Lightning's "no limit" spellings: -1 for max_steps, 1.0 (all) for limit_*.
        value = trainer.get(key)
        if value is None or value == -1 or (isinstance(value, float) and value == 1.0):
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(
                f"trainer.{key}={value!r} is not supported here: use a whole number of batches."
            )
        return value

    try:
        return Experiment(
            name=name,
            arch=resolve_arch(model.pop("arch", "densenet_bc_100_k12")),
            seed=_typed("seed_everything", raw.get("seed_everything", 0) or 0, int),
            max_epochs=_typed("trainer.max_epochs", trainer.get("max_epochs", 300), int),
            max_steps=positive_or_none("max_steps"),
            limit_train_batches=positive_or_none("limit_train_batches"),
            limit_val_batches=positive_or_none("limit_val_batches"),
            data=DataConfig(**{k: _typed(f"data.{k}", v, _DATA_TYPES[k]) for k, v in data.items()}),
            **{k: _typed(f"model.{k}", v, _MODEL_TYPES[k]) for k, v in model.items()},
        )
    except TypeError as err:  # e.g. milestones: 0.5 instead of a list
        raise UserError(f"Invalid config value: {err}.") from None


def _typed(key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    """`value` if it has the type `key` needs, else a UserError naming the key."""
    if value is None and key in _OPTIONAL:
        return None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, Path):
        return str(value)
    is_bool_for_number = isinstance(value, bool) and kind in (int, float)
    if not isinstance(value, kind) or is_bool_for_number:
        want = _TYPE_WORDS[kind if not isinstance(kind, tuple) else list]
        raise UserError(f"{key}={value!r} is invalid: it must be {want}.")
    return value


def _block(raw: dict[str, Any], section: str) -> dict[str, Any]:
    block = raw.get(section) or {}
    if not isinstance(block, dict):
        raise UserError(f"Config section {section!r} must be a mapping, not {block!r}.")
    return dict(block)


def _reject_unknown(section: str, block: dict[str, Any], known: set[str]) -> None:
    if unknown := sorted(set(block) - known):
        raise UserError(
            f"Unknown key {section}.{unknown[0]}: "
            f"the {section} keys are {', '.join(sorted(known))}."
        )


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise UserError(f"{key}={value!r} is unknown: use one of {', '.join(allowed)}.")


def _check(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is invalid: {fix}.")


__all__ = ["DataConfig", "Experiment", "load_experiment"]
