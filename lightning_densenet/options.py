"""The option types both frameworks' configs share, each declared once. Framework-free.

`DenseNetClassifier` and `ImageDataModule` (through LightningCLI) and the TensorFlow
reference (`tf_reference.config`, through jsonargparse) read the same YAML; these types say
what a key may hold. The range types are jsonargparse's constraint types, so a parser
rejects a bad value naming its key; `check` applies one to a value given in Python, and
`one_line` turns jsonargparse's report of a bad value into one sentence.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from jsonargparse.typing import (
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

from lightning_densenet.errors import UserError

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["step", "cosine", "onecycle", "constant"]
DatasetName = Literal["cifar10", "cifar100", "imagefolder"]
Flip = Literal["random", "alternate"]

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


def check(key: str, value: Any, kind: type) -> Any:
    """`value` as the range type `kind`, or a `UserError` naming `key` and what it needs."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        words = RANGE_WORDS.get(kind.__name__, kind.__name__)
        raise UserError(f"{key}={value!r} is invalid: use {words}.") from None


def check_milestones(milestones: tuple[float, ...], key: str = "model.milestones") -> None:
    """Milestones are increasing fractions of training in (0, 1)."""
    ms = list(milestones)
    if any(not 0 < m < 1 for m in ms) or ms != sorted(ms):
        raise UserError(
            f"{key}={ms} must be increasing fractions of training in (0, 1), e.g. [0.5, 0.75]."
        )


def one_line(message: str) -> str:
    """jsonargparse's report of a bad value as one sentence naming the key, the value and what
    the key takes: `model.lr=-1 is invalid: use a positive number.`"""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    text = " ".join(lines)
    if match := re.fullmatch(r"Group '([\w.]+)' does not accept option '([\w.]+)'", text):
        return f"Unknown config key {match[1]}.{match[2]}: --print_config lists the keys."
    key = re.match(r'Parser key "([^"]+)":', text)
    if not key or re.search(r"File does not exist|Problems parsing", text):
        return text
    given = next((x.split("value:", 1)[1].strip() for x in lines if "Got value:" in x), None)
    given = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("Given value:")), given)
    if given is None and (value := re.search(r"Not of type \w+: (.+?) does not conform", text)):
        given = value[1]
    if given is None and (value := re.search(r"(?:base 10|convert string to float): (.+)$", text)):
        given = value[1]
    if choices := re.search(r"Literal\[(.*?)\]", text):
        words = ", ".join(c.strip(" '\"") for c in choices[1].split(","))
        need = f"use one of {words}"
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
    "DatasetName",
    "Flip",
    "HalfOpenUnitInterval",
    "NonNegativeFloat",
    "NonNegativeInt",
    "OpenUnitInterval",
    "Optimizer",
    "PositiveFloat",
    "PositiveInt",
    "Schedule",
    "check",
    "check_milestones",
    "one_line",
]
