"""The search space of `sweep`: the `sweep.space` block of a YAML, checked, sampled, applied.

Each entry names a distribution; the name is a dotted key of the `fit` config:

    model.lr: {type: float, low: 0.02, high: 0.8, log: true}
    model.arch.growth_rate: {type: int, low: 8, high: 32, step: 4}
    model.arch.block_config: {type: categorical, choices: [[6, 6, 6], [12, 12, 12]]}

Two optional fields make a conditional space: `when: {model.optimizer: adamw}` samples the
entry only in trials where the earlier entries took those values, and `key:` names the config
key when the entry's name differs (so `adamw_lr` and `sgd_lr` can both set `model.lr`).
Architecture keys are the fields of `DenseNetConfig`; a preset name in the base config is
expanded to its fields before sampled fields replace some of them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
import pytorch_lightning as pl

from lightning_densenet.arch import DenseNetConfig, resolve_arch
from lightning_densenet.data import ImageDataModule
from lightning_densenet.errors import UserError
from lightning_densenet.module import DenseNetClassifier

_FIELDS = {"type", "low", "high", "step", "log", "choices", "when", "key"}


@dataclass(frozen=True)
class Param:
    """One entry of the space: an Optuna distribution for one config key."""

    name: str  # the Optuna parameter name (a column of the results table)
    key: str  # the dotted fit-config key it sets
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: dict[str, Any] = field(default_factory=dict)

    @property
    def as_text(self) -> bool:
        # Optuna stores only None/bool/int/float/str choices; lists such as a block_config
        # are stored as their JSON text, which also reads well in the results table.
        return any(not isinstance(c, (type(None), bool, int, float, str)) for c in self.choices)


def config_keys() -> dict[str, set[str]]:
    """The keys a space entry may set, by section (what `fit --print_config` shows)."""

    def params(fn: Any) -> set[str]:
        return {p for p in inspect.signature(fn).parameters if p != "self"}

    return {
        "model": params(DenseNetClassifier.__init__) - {"num_classes"},  # linked from the data
        "model.arch": {f.name for f in dataclasses.fields(DenseNetConfig)},
        "data": params(ImageDataModule.__init__),
        "trainer": params(pl.Trainer.__init__),
    }


def check_key(key: str, where: str) -> None:
    """A UserError unless `key` is a config key a trial can set."""
    parts, known = key.split("."), config_keys()
    section = ".".join(parts[:-1])
    if key == "seed_everything" or (section in known and parts[-1] in known[section]):
        return
    sections = ", ".join(f"{s}.*" for s in known)
    raise UserError(
        f"{where}: {key!r} is not a key of the fit config: use seed_everything or one of "
        f"{sections} (e.g. model.lr, model.arch.growth_rate, data.batch_size)."
    )


def parse_space(space: Any) -> list[Param]:
    """The `sweep.space` mapping as Params, in order; a UserError names the first bad entry."""
    if not isinstance(space, Mapping) or not space:
        raise UserError(
            "sweep.space must map config keys to distributions, e.g. "
            "'model.lr: {type: float, low: 0.01, high: 1, log: true}'."
        )
    params: list[Param] = []
    for name, spec in space.items():
        params.append(_parse_entry(str(name), spec, {p.name: p for p in params}))
    return params


def _parse_entry(name: str, spec: Any, earlier: dict[str, Param]) -> Param:
    where = f"sweep.space.{name}"
    if not isinstance(spec, Mapping) or "type" not in spec:
        raise UserError(f"{where} must be a mapping with a type: float, int or categorical.")
    unknown = sorted(set(spec) - _FIELDS)
    if unknown:
        raise UserError(
            f"{where} has unknown field(s) {', '.join(unknown)}: use {', '.join(sorted(_FIELDS))}."
        )
    key = str(spec.get("key", name))
    check_key(key, where + (" key" if "key" in spec else ""))
    if not isinstance(spec.get("when") or {}, Mapping):
        raise UserError(
            f"{where}.when must map earlier entries to values, e.g. {{model.optimizer: sgd}}."
        )
    when = dict(spec.get("when") or {})
    for other, value in when.items():
        if other not in earlier or earlier[other].type != "categorical":
            raise UserError(
                f"{where}.when names {other!r}: it must be an earlier categorical "
                "entry of sweep.space."
            )
        if value not in earlier[other].choices:
            raise UserError(f"{where}.when {other}={value!r} is not one of its choices.")
    kind = spec["type"]
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where} needs a non-empty list of choices.")
        return Param(name, key, kind, choices=tuple(choices), when=when)
    if kind not in ("float", "int"):
        raise UserError(f"{where} has type {kind!r}: use float, int or categorical.")
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log")
    number = int if kind == "int" else (int, float)
    if not all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high)):
        raise UserError(f"{where} needs {kind} bounds low and high, got {low!r} and {high!r}.")
    if low > high:
        raise UserError(f"{where} has low={low} above high={high}: swap them.")
    if log and low <= 0:
        raise UserError(f"{where} has log: true with low={low}: a log range needs low > 0.")
    if step is not None and (not isinstance(step, number) or step <= 0 or log):
        raise UserError(f"{where} has step={step!r}: use a positive step, and no step with log.")
    return Param(name, key, kind, low, high, step, bool(log), when=when)


def sample(trial: optuna.Trial, params: list[Param]) -> dict[str, Any]:
    """The values of one trial, by config key; entries whose `when` does not hold are skipped."""
    taken: dict[str, Any] = {}  # by entry name, for the `when` conditions
    values: dict[str, Any] = {}
    for p in params:
        if any(taken.get(other) != value for other, value in p.when.items()):
            continue
        if p.type == "float":
            value = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        elif p.type == "int":
            value = trial.suggest_int(
                p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log
            )
        elif p.as_text:
            value = json.loads(
                trial.suggest_categorical(p.name, [json.dumps(c) for c in p.choices])
            )
        else:
            value = trial.suggest_categorical(p.name, list(p.choices))
        taken[p.name] = values[p.key] = value
    return values


def apply(config: dict[str, Any], key: str, value: Any) -> None:
    """Sets a dotted key in a fit config (nested dicts), expanding an arch preset to fields."""
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and parts[: depth + 1] == ["model", "arch"]:
            child = node[part] = resolve_arch(child).to_dict()  # a preset -> its fields
        elif not isinstance(child, dict):
            raise UserError(
                f"Cannot set {key}: {'.'.join(parts[: depth + 1])} is {child!r}, "
                "not a mapping, in the base config."
            )
        node = child
    node[parts[-1]] = value


def overlaps(a: str, b: str) -> bool:
    """Whether setting dotted key `a` touches `b` (equal, or one holds the other)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


__all__ = ["Param", "apply", "check_key", "config_keys", "overlaps", "parse_space", "sample"]
