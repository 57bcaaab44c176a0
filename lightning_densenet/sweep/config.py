"""What a sweep is: the `sweep:` block of a YAML next to its fit config, and the command line.

    sweep:
      n_trials: 20            # trials to reach in total (complete + pruned + rejected)
      direction: maximize     # or minimize
      metric: val/acc         # any metric fit logs per validation
      budget: {epochs: 2}     # and/or {minutes: 3} or {pflop: 0.05}: trainer.max_epochs,
                              # model.budget_minutes, model.budget_pflop
      sampler: tpe            # random, or {tpe: {n_startup_trials: 5, multivariate: true}}
      pruner: {median: {n_warmup_steps: 1}}  # percentile, hyperband, successive_halving,
                                             # threshold, none
      heartbeat_seconds: 60   # database storages: a trial silent for twice this is failed
                              # and re-queued (a journal file checks its worker's process)
      max_failures: 3         # rejected trials in a row that stop the study
      space: {...}            # the format: space.py

Everything is checked here, before the first trial starts, so a mistake costs no training.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from lightning_densenet.errors import UserError
from lightning_densenet.sweep.space import Param, overlaps, parse_space

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
PRUNERS = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    "threshold": optuna.pruners.ThresholdPruner,
    "none": optuna.pruners.NopPruner,
}
_SWEEP_FIELDS = {
    "n_trials",
    "direction",
    "metric",
    "budget",
    "sampler",
    "pruner",
    "space",
    "heartbeat_seconds",
    "max_failures",
}


@dataclass
class Sweep:
    """A study, read from the YAML and the command line."""

    base: dict[str, Any]  # the fit config blocks of the YAML
    params: list[Param]
    overrides: list[str]  # fit options from the command line, applied to every trial
    n_trials: int
    direction: str
    metric: str
    budget: dict[str, float]
    sampler: Any  # the sweep.sampler spec, built in run()
    seed: int
    pruner: optuna.pruners.BasePruner
    heartbeat_seconds: int
    max_failures: int
    study_name: str
    study_dir: Path
    storage: str  # a journal file's path or a database URL (storage.py)


def read_sweep(
    config: str,
    overrides: list[str],
    n_trials: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
) -> Sweep:
    """Reads and checks everything a study needs before its first trial starts."""
    path = Path(config)
    if not path.is_file():
        raise UserError(f"--config {config} does not exist: pass a YAML with a sweep: block.")
    try:
        base = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"--config {config} is not valid YAML ({err}).") from None
    block = base.pop("sweep", None) if isinstance(base, dict) else None
    if not isinstance(block, dict):
        raise UserError(f"--config {config} has no sweep: block (see configs/sweep_debug.yaml).")
    unknown = sorted(set(block) - _SWEEP_FIELDS)
    if unknown:
        raise UserError(
            f"sweep.{unknown[0]} is unknown: the sweep fields are "
            f"{', '.join(sorted(_SWEEP_FIELDS))}."
        )
    params = parse_space(block.get("space"))
    build(block.get("sampler", "tpe"), SAMPLERS, "sampler")  # a bad spec fails here, not later
    keys = _override_keys(overrides)
    for p in params:
        for key in keys:
            if overlaps(p.key, key):
                raise UserError(f"--{key} sets {p.key}, which sweep.space samples: drop one.")
    n_trials = block.get("n_trials", 10) if n_trials is None else n_trials
    if not isinstance(n_trials, int) or n_trials < 1:
        raise UserError(f"n_trials={n_trials!r} must be a positive integer.")
    direction = block.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise UserError(f"sweep.direction={direction!r}: use maximize or minimize.")
    seed = base.get("seed_everything") if isinstance(base.get("seed_everything"), int) else 0
    name = study_name or path.stem
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise UserError(f"--study_name {name!r}: use letters, digits, '_', '-' and '.' only.")
    root = Path(
        _override_value(overrides, "trainer.default_root_dir")
        or (base.get("trainer") or {}).get("default_root_dir")
        or "runs"
    )
    return Sweep(
        base=base,
        params=params,
        overrides=overrides,
        n_trials=n_trials,
        direction=direction,
        metric=str(block.get("metric", "val/acc")),
        budget=_budget(block.get("budget")),
        sampler=block.get("sampler", "tpe"),
        seed=seed,
        pruner=build(block.get("pruner", "median"), PRUNERS, "pruner"),
        heartbeat_seconds=_positive_int(block, "heartbeat_seconds", 60),
        max_failures=_positive_int(block, "max_failures", 3),
        study_name=name,
        study_dir=root / "sweeps" / name,
        storage=storage or _default_storage((root / "sweeps").resolve(), name),
    )


def _default_storage(folder: Path, name: str) -> str:
    """`<folder>/<name>.journal`; a study begun when the default was SQLite stays there."""
    journal, db = folder / f"{name}.journal", folder / f"{name}.db"
    if db.is_file() and not journal.exists():
        return f"sqlite:///{db}"
    return str(journal)


def build(spec: Any, table: dict[str, type], what: str, **defaults: Any) -> Any:
    """`name` or `{name: {kwargs}}` -> an Optuna sampler or pruner."""
    name, kwargs = (spec, {}) if isinstance(spec, str) else next(iter(spec.items()), (None, {}))
    if name not in table or (isinstance(spec, dict) and len(spec) != 1):
        raise UserError(
            f"sweep.{what}={spec!r}: use one of {', '.join(table)}, or {{name: {{options}}}}."
        )
    if name in ("tpe", "random"):
        kwargs = {**defaults, **(kwargs or {})}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return table[name](**(kwargs or {}))
    except (TypeError, ValueError) as err:
        raise UserError(f"sweep.{what} {name}: {err}.") from None


def _budget(spec: Any) -> dict[str, float]:
    if spec is None:
        return {}
    if not isinstance(spec, dict) or not spec or set(spec) - {"epochs", "minutes", "pflop"}:
        raise UserError(
            f"sweep.budget={spec!r}: use {{epochs: N}}, {{minutes: M}} and/or {{pflop: P}}."
        )
    for key, value in spec.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise UserError(f"sweep.budget.{key}={value!r} must be a positive number.")
    if "epochs" in spec and not isinstance(spec["epochs"], int):
        raise UserError(f"sweep.budget.epochs={spec['epochs']!r} must be an integer.")
    return dict(spec)


def _positive_int(block: dict[str, Any], key: str, default: int) -> int:
    value = block.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"sweep.{key}={value!r} must be a positive integer.")
    return value


def _override_keys(overrides: list[str]) -> list[str]:
    return [a[2:].split("=", 1)[0] for a in overrides if a.startswith("--")]


def _override_value(overrides: list[str], key: str) -> str | None:
    value = None
    for i, arg in enumerate(overrides):
        if arg == f"--{key}" and i + 1 < len(overrides):
            value = overrides[i + 1]
        elif arg.startswith(f"--{key}="):
            value = arg.split("=", 1)[1]
    return value


__all__ = ["PRUNERS", "SAMPLERS", "Sweep", "build", "read_sweep"]
