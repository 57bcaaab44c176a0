"""The option declarations both frameworks read: the PyTorch signatures are theirs."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import types
from typing import Any, Literal, get_args, get_origin, get_type_hints

import pytest

from lightning_densenet import UserError
from lightning_densenet.data import ImageDataModule
from lightning_densenet.module import DenseNetClassifier
from lightning_densenet.options import RANGE_WORDS, DataBlock, ModelBlock


def _plain(hint: Any) -> Any:
    """`hint` with each range type as its number type: `PositiveFloat | None` -> `float | None`."""
    if isinstance(hint, type) and hint.__name__ in RANGE_WORDS:
        return next(base for base in hint.__mro__ if base in (int, float))
    args, origin = get_args(hint), get_origin(hint)
    if not args or origin is Literal:
        return hint
    plain = tuple(_plain(a) for a in args)
    if origin is types.UnionType:
        return functools.reduce(operator.or_, plain)
    return origin[plain]


@pytest.mark.parametrize(
    ("cls", "block"), [(DenseNetClassifier, ModelBlock), (ImageDataModule, DataBlock)]
)
def test_pytorch_arguments_are_the_declared_options(cls: type, block: type) -> None:
    """Names, order, defaults and types (ranges aside: LightningCLI reads plain numbers and
    the class checks the ranges itself), so a key added to one side alone fails here."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    hints = get_type_hints(cls.__init__)
    declared = get_type_hints(block)
    assert [(p.name, p.default) for p in params] == [
        (f.name, f.default) for f in dataclasses.fields(block)
    ]
    assert {p.name: hints[p.name] for p in params} == {
        name: _plain(hint) for name, hint in declared.items()
    }


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DenseNetClassifier(momentum=1.0), r"model\.momentum=1\.0 is invalid"),
        (lambda: DenseNetClassifier(lr=0), r"model\.lr=0 is invalid: use a positive number"),
        (lambda: DenseNetClassifier(budget_pflop=-1.0), r"model\.budget_pflop=-1\.0"),
        (lambda: ImageDataModule(batch_size=0), r"data\.batch_size=0 is invalid"),
        (lambda: ImageDataModule(eval_batch_size=0), r"data\.eval_batch_size=0 is invalid"),
        (lambda: ImageDataModule(seed=-1), r"data\.seed=-1 is invalid: use a whole number"),
    ],
    ids=["momentum", "lr", "budget", "batch", "eval-batch", "seed"],
)
def test_pytorch_checks_the_declared_ranges(make: Any, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make()
