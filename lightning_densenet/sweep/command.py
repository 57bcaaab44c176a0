"""`python -m lightning_densenet sweep`: an Optuna study whose trials are real `fit` runs.

The YAML is a fit config (seed_everything / trainer / model / data) plus a `sweep:` block
(`config`; the space format is in `space`). Trial N writes
`<study dir>/trial_NNN.yaml` (the base config with its sampled values) and runs
`fit --config trial_NNN.yaml <the command line's fit overrides>` in this process through the
same CLI as `fit`, into `<study dir>/trial_NNN/version_0/`. The study dir is
`<trainer.default_root_dir>/sweeps/<study>/`; the default storage is the journal file
`<trainer.default_root_dir>/sweeps/<study>.journal` (`storage`), so the same command
resumes a killed study, and several processes can share it: `--workers K` starts K
(`workers`).
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
import warnings

import optuna
import pytorch_lightning as pl
import torch
import yaml
from optuna.trial import FrozenTrial, TrialState
from pytorch_lightning.callbacks import Callback

from lightning_densenet.cli import run_cli
from lightning_densenet.errors import UserError, command
from lightning_densenet.sweep.config import SAMPLERS, Sweep, build, read_sweep
from lightning_densenet.sweep.report import write as write_report
from lightning_densenet.sweep.space import apply, sample
from lightning_densenet.sweep.storage import fail_orphaned_trials, open_storage, record_worker
from lightning_densenet.sweep.workers import start_and_wait, without_workers


class TrialRejected(Exception):
    """A trial whose sampled config `fit` refused (UserError) or that ran out of memory."""


class FitExit(Exception):
    """fit exited: its parser refused the config (and printed why), or Ctrl+C stopped it."""

    def __init__(self, code: int) -> None:
        super().__init__(f"fit's parser exited with code {code}")
        self.code = code


class OptunaPruning(Callback):
    """Reports `monitor` to the trial after each validation epoch; raises TrialPruned when
    the study's pruner says so, and records the parameter count and run folder.

    optuna_integration's PyTorchLightningPruningCallback does the same but subclasses the
    `lightning` package's Callback (lightning.pytorch), not the `pytorch_lightning` used here.
    """

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.values: list[float] = []
        self.started = False  # fit got past parsing and set-up

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True
        self.trial.set_user_attr("params", sum(p.numel() for p in pl_module.parameters()))
        self.trial.set_user_attr("run_dir", str(trainer.log_dir))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            logged = ", ".join(sorted(trainer.callback_metrics))
            raise UserError(f"sweep.metric={self.monitor} is not logged: use one of {logged}.")
        epoch = trainer.current_epoch
        self.values.append(float(value))
        self.trial.set_user_attr("epochs", epoch + 1)
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor}={float(value):.4f} after epoch {epoch}")


@command
def main(argv: list[str]) -> int:
    """`sweep --config SPACE.yaml [--n_trials N] [--storage URL] [--study_name NAME]
    [--workers K] [fit opts]`."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_densenet sweep",
        description="Search hyperparameters with Optuna; each trial is a real `fit`. Other "
        "options (--data.*, --model.*, --trainer.*) apply to every trial, as in fit.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "--config", required=True, metavar="SPACE.yaml", help="a fit config with a sweep: block"
    )
    parser.add_argument(
        "--n_trials",
        "--n-trials",  # the spelling of earlier versions
        type=int,
        metavar="N",
        help="trials to reach in total, counting those already in the study (complete, "
        "pruned or rejected), so rerunning a killed study redoes no finished trial; "
        "each process sharing the study stops once it is reached, so it may end up to one "
        "trial past N per process (default: sweep.n_trials)",
    )
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="where the study lives: a journal file, for processes on this machine (default: "
        "<trainer.default_root_dir>/sweeps/<study>.journal), sqlite:///FILE (one process; the "
        "default of earlier versions), or a database URL such as "
        "postgresql+psycopg://USER@HOST/DB for workers on several machines (pip install -e "
        "'.[postgres]')",
    )
    parser.add_argument(
        "--study_name", "--study-name", metavar="NAME", help="default: the config file's name"
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="K",
        help="start K worker processes on this machine, each this command without --workers, "
        "on the one study (one per GPU via CUDA_VISIBLE_DEVICES where there are GPUs); wait "
        "for all, then write the results. Each stops once the study holds --n_trials "
        "finished trials, so the study may end with up to K - 1 more",
    )
    parser.add_argument(
        "--worker_index",
        "--worker-index",
        type=int,
        default=0,
        metavar="I",
        help="this worker's number among those sharing the study, added to the sampler's seed "
        "so that workers started together draw different trials (set by --workers; give "
        "workers started by hand on several machines 0, 1, 2, ...)",
    )
    args, overrides = parser.parse_known_args(argv)
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} must be 1 or more.")
    if args.worker_index < 0:
        raise UserError(f"--worker_index {args.worker_index} must be 0 or more.")
    try:
        sweep = read_sweep(args.config, overrides, args.n_trials, args.storage, args.study_name)
        if args.workers is not None:
            return run_workers(sweep, without_workers(argv), args.workers)
        run(sweep, worker=args.worker_index)
    except FitExit as err:
        return err.code
    return 0


def run(sweep: Sweep, worker: int = 0) -> optuna.Study:
    """Runs trials until the study holds `n_trials` finished ones; writes the results.

    `worker` (`--worker_index`) offsets the sampler's seed: workers that start together on
    one study would otherwise draw the same trials."""
    # Trials pass their own args while sys.argv still holds the sweep command: intended here.
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    logger = logging.getLogger("optuna.study._optimize")
    if _no_traceback not in logger.filters:
        logger.addFilter(_no_traceback)
    study, storage = _open_study(sweep)
    # Seeded by the trials already there: a resumed study must not replay the first draws.
    seed = sweep.seed + len(study.get_trials(deepcopy=False)) + 1_000_003 * worker
    study.sampler = build(sweep.sampler, SAMPLERS, "sampler", seed=seed)
    failures = 0
    ended: list[FrozenTrial] = []  # this process's trials, as Optuna hands them back
    while True:
        fail_orphaned_trials(study, storage)  # a journal's trials whose process died
        if _finished(study) >= sweep.n_trials:
            break
        study.optimize(
            lambda trial: _objective(trial, sweep),
            n_trials=1,
            catch=(TrialRejected,),
            callbacks=[lambda _, trial: ended.append(trial)],
        )
        write_report(study, sweep.study_dir, sweep.metric)
        error = ended[-1].user_attrs.get("error") if ended[-1].state == TrialState.FAIL else None
        failures = failures + 1 if error else 0
        if failures >= sweep.max_failures:
            raise UserError(f"{failures} trials in a row failed, the last with: {error}")
    _report(study, sweep)
    return study


def run_workers(sweep: Sweep, argv: list[str], workers: int) -> int:
    """`--workers K`: the study opened (and created) once here, then K processes of
    `sweep <argv> --worker_index i`; the results written once all have ended."""
    study, storage = _open_study(sweep)
    codes = start_and_wait(argv, workers)
    fail_orphaned_trials(study, storage)  # a killed worker's trial: failed and queued again
    _report(study, sweep)
    return next((code for code in codes if code != 0), 0)


def _open_study(sweep: Sweep) -> tuple[optuna.Study, optuna.storages.BaseStorage]:
    storage = open_storage(sweep.storage, sweep.heartbeat_seconds)
    sweep.study_dir.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(
            study_name=sweep.study_name,
            storage=storage,
            pruner=sweep.pruner,
            direction=sweep.direction,
            load_if_exists=True,
        )
    except ValueError as err:  # an existing study of the other direction
        raise UserError(f"Study {sweep.study_name} in {sweep.storage}: {err}") from None
    print(
        f"Study {sweep.study_name} ({sweep.storage}): {_finished(study)} of {sweep.n_trials} "
        f"trials done; results in {sweep.study_dir}"
    )
    return study, storage


def _report(study: optuna.Study, sweep: Sweep) -> None:
    write_report(study, sweep.study_dir, sweep.metric)
    if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        best = study.best_trial
        print(f"Best: trial {best.number}, {sweep.metric}={best.value:.4f}, {best.params}")


def _objective(trial: optuna.Trial, sweep: Sweep) -> float:
    record_worker(trial)
    config = copy.deepcopy(sweep.base)
    if "epochs" in sweep.budget:
        apply(config, "trainer.max_epochs", int(sweep.budget["epochs"]))
    if "minutes" in sweep.budget:  # the time-aware schedule: it ends when the budget does
        apply(config, "model.budget_minutes", float(sweep.budget["minutes"]))
    if "pflop" in sweep.budget:  # the same, on training compute: alike on every machine
        apply(config, "model.budget_pflop", float(sweep.budget["pflop"]))
    for key, value in sample(trial, sweep.params).items():
        apply(config, key, value)
    path = sweep.study_dir / f"trial_{trial.number:03d}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    pruning = OptunaPruning(trial, sweep.metric)
    args = ["fit", "--config", str(path), *sweep.overrides]
    args += ["--trainer.default_root_dir", str(sweep.study_dir)]
    start = time.perf_counter()
    try:
        run_cli(args, callbacks=[pruning])
    except (UserError, torch.OutOfMemoryError) as err:
        trial.set_user_attr("error", (str(err) or type(err).__name__).splitlines()[0])
        raise TrialRejected(str(err)) from None
    except SystemExit as exit_:
        # Before fit starts, the parser refused the config (and said why); after, Lightning
        # exits this way on Ctrl+C, and the trial is left uncounted, to be run again.
        if not pruning.started:
            trial.set_user_attr("error", "fit's parser refused the trial's config")
        raise FitExit(exit_.code if isinstance(exit_.code, int) else 2) from None
    finally:
        trial.set_user_attr("fit_seconds", round(time.perf_counter() - start, 2))
    if not pruning.values:
        trial.set_user_attr("error", f"no validation ran, so {sweep.metric} was never logged")
        raise TrialRejected(trial.user_attrs["error"])
    return max(pruning.values) if sweep.direction == "maximize" else min(pruning.values)


def _finished(study: optuna.Study) -> int:
    """Trials that count towards n_trials: complete, pruned, or rejected with a reason.
    A trial killed with its process is failed and re-queued instead (`storage`)."""
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and "error" in t.user_attrs)
        for t in study.get_trials(deepcopy=False)
    )


def _no_traceback(record: logging.LogRecord) -> bool:
    """Optuna logs a failed trial with its traceback; the reason it records (a `UserError`'s
    one sentence) is what a user needs, so the traceback is dropped from the log."""
    record.exc_info, record.exc_text = None, None
    return True
