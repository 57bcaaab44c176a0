"""The options both frameworks' configs share, each declared once. Framework-free.

`ModelBlock` and `DataBlock` declare the keys of a config's `model` and `data` blocks (the
arguments of `DenseNetClassifier` and `ImageDataModule`): name, type with its range, default.
The TensorFlow reference (`tf_reference.config`, through jsonargparse) parses the YAML into
them; the PyTorch classes, whose typed signatures LightningCLI reads, check their arguments
against them (`check_block`), and a test holds their signatures to them. The range types
are jsonargparse's constraint types, so a parser rejects a bad value naming its key; `check`
applies one to a value given in Python, and `one_line` turns jsonargparse's report of a bad
value into one sentence.
"""

from __future__ import annotations

import dataclasses
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from jsonargparse.typing import (
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

from lightning_densenet.arch import DenseNetConfig
from lightning_densenet.errors import UserError

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["step", "cosine", "onecycle", "constant"]
DatasetName = Literal["cifar10", "cifar100", "imagefolder"]
Flip = Literal["random", "alternate"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]

# [0, 1): momentum, label smoothing, an EMA decay.
HalfOpenUnitInterval = restricted_number_type("HalfOpenUnitInterval", float, [(">=", 0), ("<", 1)])
# (0, 1]: a point in training, as a fraction of it, that may be its end.
FractionOfTraining = restricted_number_type("FractionOfTraining", float, [(">", 0), ("<=", 1)])

# What each range type asks for, in the words of an error message.
RANGE_WORDS: dict[str, str] = {
    "PositiveInt": "a whole number of at least 1",
    "NonNegativeInt": "a whole number of 0 or more",
    "PositiveFloat": "a positive number",
    "NonNegativeFloat": "a number of 0 or more",
    "OpenUnitInterval": "a fraction in (0, 1)",
    "HalfOpenUnitInterval": "a fraction in [0, 1)",
    "FractionOfTraining": "a fraction in (0, 1]",
}
_TYPE_WORDS = {"int": "a whole number", "float": "a number", "bool": "true or false"}
_TYPE_WORDS |= {"str": "a string", "tuple": "a list", "list": "a list", "NoneType": "null"}


@dataclass(frozen=True)
class ModelBlock:
    """The `model` block: the network and its training recipe (the paper's by default).

    `DenseNetClassifier`'s arguments; its docstring says what each does.
    """

    arch: str | DenseNetConfig = "densenet_bc_100_k12"  # a preset name or the fields
    num_classes: PositiveInt = 10  # the CLI sets it from the data
    optimizer: Optimizer = "sgd"
    lr: PositiveFloat = 0.1  # peak learning rate
    momentum: HalfOpenUnitInterval = 0.9
    nesterov: bool = True
    weight_decay: NonNegativeFloat = 1e-4  # SGD: L2 added to the gradient; AdamW: decoupled
    norm_weight_decay: NonNegativeFloat | None = None  # BatchNorm and biases; None: as above
    norm_scale: bool = True  # False: BatchNorm scales frozen at 1
    norm_lr_scale: PositiveFloat = 1.0  # lr multiple for BatchNorm and biases
    schedule: Schedule = "step"
    milestones: tuple[OpenUnitInterval, ...] = (0.5, 0.75)  # fractions of training: lr / 10
    warmup: OpenUnitInterval = 0.3  # onecycle: fraction of training spent warming up
    label_smoothing: HalfOpenUnitInterval = 0.0
    compile: bool = False
    compile_mode: CompileMode = "default"
    memory_efficient: bool = False
    channels_last: bool = False
    budget_minutes: PositiveFloat | None = None
    budget_pflop: PositiveFloat | None = None
    ema_decay: HalfOpenUnitInterval = 0.0  # 0: off; 0.99-0.999 usual
    lookahead_every: NonNegativeInt = 0  # 0: off
    lookahead_decay: HalfOpenUnitInterval = 0.95
    tta: bool = False
    tta_shift: NonNegativeInt = 0
    progressive_size: PositiveInt | None = None  # None: off
    progressive_until: FractionOfTraining = 0.5


@dataclass(frozen=True)
class DataBlock:
    """The `data` block: which images, how they are split, batched and augmented.

    `ImageDataModule`'s arguments; its docstring says what each does.
    """

    dataset: DatasetName = "cifar10"
    root: str = "data"  # a folder; for imagefolder also a .tar/.tar.gz archive
    download: bool = True  # CIFAR only
    batch_size: PositiveInt = 64
    eval_batch_size: PositiveInt | None = None  # validation and test batches; None: batch_size
    val_size: NonNegativeInt = 5000  # carved from train with `seed` (datasets.train_val_split)
    max_train_images: PositiveInt | None = None  # use only this many training images
    holdout_size: NonNegativeInt = 0  # data without a test split: held out as one
    augment: bool = True  # pad-`crop_padding` random crop + horizontal flip
    crop_padding: NonNegativeInt = 4
    flip: Flip = "random"
    seed: NonNegativeInt = 0  # the split, the shuffle and the augmentation
    num_workers: NonNegativeInt = 0  # PyTorch's loader processes
    cache_dir: str | None = None  # decoded image folders (.npz); None: the user cache


def check(key: str, value: Any, kind: type) -> Any:
    """`value` as the range type `kind`, or a `UserError` naming `key` and what it needs."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        words = RANGE_WORDS.get(kind.__name__, kind.__name__)
        raise UserError(f"{key}={value!r} is invalid: use {words}.") from None


def check_block(block: str, declared: type, values: Mapping[str, Any]) -> None:
    """Check `values` (a block's keys and values) against the range types that `declared`
    (`ModelBlock`, `DataBlock`) gives its keys, None passing where the type allows it: a
    `UserError` naming `block.key` and what it needs, for the first value out of range."""
    hints = get_type_hints(declared)
    for field in dataclasses.fields(declared):
        kinds = get_args(hints[field.name]) if _is_union(hints[field.name]) else ()
        kind = next((k for k in kinds if _is_range(k)), hints[field.name])
        value = values[field.name]
        if _is_range(kind) and not (value is None and type(None) in kinds):
            check(f"{block}.{field.name}", value, kind)


def _is_union(hint: Any) -> bool:
    """`X | None`, and `Optional[X]` / `Union[X, Y]` written the older way."""
    return get_origin(hint) in (Union, types.UnionType)


def _is_range(kind: Any) -> bool:
    return isinstance(kind, type) and kind.__name__ in RANGE_WORDS


def check_milestones(milestones: tuple[float, ...], key: str = "model.milestones") -> None:
    """Milestones are increasing fractions of training in (0, 1)."""
    ms = list(milestones)
    if any(not 0 < m < 1 for m in ms) or ms != sorted(ms):
        raise UserError(
            f"{key}={ms} must be increasing fractions of training in (0, 1), e.g. [0.5, 0.75]."
        )


def one_line(message: str) -> str:
    """jsonargparse's report of a bad value as one sentence naming the key, the value and what
    the key takes: `model.lr=-1 is invalid: use a positive number.`

    Read off the text with regexes because that is all jsonargparse gives: its errors are
    plain TypeError/ValueError/KeyError (and ArgumentError) with no key, value or type
    attached, and a union keeps only its first alternative's exception as the cause
    (`cli/parser.py` says more)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    text = " ".join(lines)
    unknown = r"(Group|Subcommand) '([\w.]+)' does not accept option '([\w.]+)'"
    if match := re.fullmatch(unknown, text):
        key = f"{match[2]}.{match[3]}" if match[1] == "Group" else match[3]  # not `fit.`
        return f"Unknown config key {key}: --print_config lists the keys."
    key = re.match(r'Parser key "([^"]+)":', text)
    if not key or re.search(r"File does not exist|Problems parsing", text):
        return text
    given = next((x.split("value:", 1)[1].strip() for x in lines if "Got value:" in x), None)
    given = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("Given value:")), given)
    if given is None and (value := re.search(r"Not of type \w+: (.+?) does not conform", text)):
        given = value[1]
    if given is None and (value := re.search(r"(?:base 10|convert string to float): (.+)$", text)):
        given = value[1]
    if choices := re.findall(r"Literal\[(.*?)\]", text):  # a union of Literals: all of them
        words = dict.fromkeys(c.strip(" '\"") for group in choices for c in group.split(","))
        need = f"use one of {', '.join(words)}"
    elif kind := re.search(r"Not of type (\w+)", text):
        need = "use " + RANGE_WORDS.get(kind[1], kind[1])
        need += " or null" if "NoneType" in text else ""
    elif types := re.findall(r"Expected a <class '([\w.]+)'>", text):
        need = "give " + " or ".join(dict.fromkeys(_TYPE_WORDS.get(t, t) for t in types))
    else:
        return text
    return f"{key[1]}={given} is invalid: {need}." if given is not None else f"{key[1]}: {need}."


__all__ = [
    "RANGE_WORDS",
    "CompileMode",
    "DataBlock",
    "DatasetName",
    "Flip",
    "FractionOfTraining",
    "HalfOpenUnitInterval",
    "ModelBlock",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OpenUnitInterval",
    "Optimizer",
    "PositiveFloat",
    "PositiveInt",
    "Schedule",
    "check",
    "check_block",
    "check_milestones",
    "one_line",
]
