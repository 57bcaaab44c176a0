"""`python -m lightning_densenet sweep`: real trials, resume after a kill, pruning, bad input."""

from __future__ import annotations

import contextlib
import csv
import datetime
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from lightning_densenet import build_model
from lightning_densenet.__main__ import main
from lightning_densenet.sweep.config import read_sweep
from lightning_densenet.sweep.space import apply, sample
from lightning_densenet.sweep.storage import (
    UNRECORDED_AFTER_S,
    fail_orphaned_trials,
    open_storage,
)
from tests.fake_data import write_cifar
from tests.helpers import DEBUG_CONFIG, REPO, cli_args, error_line, metrics

SWEEP_DEBUG = REPO / "configs/sweep_debug.yaml"
PNGS = ("optimization_history", "param_importances", "val_acc_vs_params", "val_acc_vs_fit_seconds")


@pytest.fixture
def cifar(tmp_path):
    return write_cifar(tmp_path / "cifar", "cifar10", n_train=200, n_test=20)


def _args(config: Path, cifar, tmp_path: Path) -> list[str]:
    return cli_args("sweep", cifar.root, tmp_path / "runs", config=config)


def _config(tmp_path: Path, **sweep: object) -> Path:
    """sweep_debug.yaml with some sweep fields changed, as study.yaml."""
    config = yaml.safe_load(SWEEP_DEBUG.read_text())
    config["sweep"].update(sweep)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _study(tmp_path: Path, name: str, storage: str | None = None) -> optuna.Study:
    """The study in `storage`, by default its journal file (sweep's default storage)."""
    storage = storage or str(tmp_path / "runs/sweeps" / f"{name}.journal")
    return optuna.load_study(study_name=name, storage=open_storage(storage, 60))


def _table(tmp_path: Path, name: str) -> list[dict[str, str]]:
    with (tmp_path / "runs/sweeps" / name / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def _is_the_trials_fit_time(seconds: str, trial: optuna.trial.FrozenTrial) -> bool:
    """The report's fit_seconds is the trial's own, rounded to 0.01 s, and fits inside the
    trial's span as Optuna recorded it: seconds, not another unit (how long the fit took
    depends on the machine, and is not tested)."""
    value = float(seconds)
    span = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return value == trial.user_attrs["fit_seconds"] == round(value, 2) and 0 <= value <= span


def test_debug_study_runs_real_fits_and_reports_them(tmp_path, cifar) -> None:
    args = _args(SWEEP_DEBUG, cifar, tmp_path)
    assert main(args) == 0
    study, folder = _study(tmp_path, "sweep_debug"), tmp_path / "runs/sweeps/sweep_debug"
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    space = yaml.safe_load(SWEEP_DEBUG.read_text())["sweep"]["space"]
    for t in trials:
        assert set(t.params) == set(space)
        run = Path(t.user_attrs["run_dir"])
        assert run == folder / f"trial_{t.number:03d}/version_0"
        # The trial's value: the best val/acc its run logged.
        val_acc = [float(r["val/acc"]) for r in metrics(run) if r.get("val/acc")]
        assert t.value == pytest.approx(max(val_acc), rel=1e-6)
        # The sampled values reached the fit: its saved config, and the network it built.
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"]["lr"] == t.params["model.lr"]
        assert config["data"]["batch_size"] == t.params["data.batch_size"]
        arch = config["model"]["arch"]
        assert arch["growth_rate"] == t.params["model.arch.growth_rate"]
        assert str(arch["block_config"]) == t.params["model.arch.block_config"]
        assert arch["num_init_features"] == 8  # the rest of the densenet_tiny preset
        net_params = sum(p.numel() for p in build_model(arch, 10).parameters())
        assert t.user_attrs["params"] == net_params
        assert list(run.glob("events.out.tfevents.*")) and (run / "metrics.csv").is_file()
        assert (run / "checkpoints/last.ckpt").is_file()

    rows = _table(tmp_path, "sweep_debug")
    assert [int(r["number"]) for r in rows] == [0, 1, 2]
    assert all(value != "" for r in rows for value in r.values()), rows
    for r, t in zip(rows, trials, strict=True):
        assert r["state"] == "COMPLETE" and float(r["val/acc"]) == pytest.approx(t.value)
        assert _is_the_trials_fit_time(r["fit_seconds"], t)
        assert int(r["params"]) == t.user_attrs["params"]
    markdown = (folder / "trials.md").read_text().splitlines()
    assert len(markdown) == 2 + 3 and all(name in markdown[0] for name in space)
    for name in PNGS:
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # The same command finds the study complete; --n-trials raises the total it aims for.
    assert main(args) == 0 and len(_study(tmp_path, "sweep_debug").trials) == 3
    assert main([*args, "--n-trials", "4"]) == 0
    assert (
        len(_study(tmp_path, "sweep_debug").trials) == 4
        and len(_table(tmp_path, "sweep_debug")) == 4
    )


def _age_heartbeat(file: Path, trial: optuna.trial.FrozenTrial) -> None:
    """Dates the last heartbeat of `trial` in the SQLite study `file` a day back, as though
    the grace period had passed (instead of waiting it out). Optuna's table, by its name."""
    with contextlib.closing(sqlite3.connect(file)) as db, db:
        aged = db.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 day') "
            "WHERE trial_id = (SELECT trial_id FROM trials WHERE number = ?)",
            (trial.number,),  # the file holds one study
        )
        assert aged.rowcount == 1, "optuna's trial_heartbeats table changed: update the test"


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_killed_study_resumes_without_losing_finished_trials(tmp_path, cifar, storage) -> None:
    """SIGKILL mid-trial, then the same command. The default journal file fails the killed
    trial because its process is gone; SQLite (as any database) once its heartbeat is stale."""
    # Three epochs a trial (the command line outranks the budget) leave time to kill one.
    config = _config(tmp_path, n_trials=2, heartbeat_seconds=1)
    args = [*_args(config, cifar, tmp_path), "--trainer.max_epochs", "3"]
    file = tmp_path / f"runs/sweeps/study.{'db' if storage == 'sqlite' else 'journal'}"
    if storage == "sqlite":
        args += ["--storage", f"sqlite:///{file}"]
    location = f"sqlite:///{file}" if storage == "sqlite" else str(file)
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_densenet", *args], cwd=tmp_path, stdout=log, stderr=log
    )
    try:
        # Until one trial has finished and the next has sampled its parameters, recorded its
        # worker and begun its fit (`run_dir`): killed there, it is a trial in mid-training.
        while True:
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            trials = []
            # Only once the first trial's config is written does the study exist: opening a
            # storage before would create it (SQLite: beside the sweep, which then fails).
            if (tmp_path / "runs/sweeps/study/trial_000.yaml").is_file():
                trials = _study(tmp_path, "study", location).trials
            done = any(t.state == TrialState.COMPLETE for t in trials)
            if (
                done
                and trials[-1].state == TrialState.RUNNING
                and "run_dir" in trials[-1].user_attrs
            ):
                break
            time.sleep(0.1)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    before = _study(tmp_path, "study", location).trials
    done = {t.number: (t.params, t.value) for t in before if t.state == TrialState.COMPLETE}
    killed = before[-1]
    assert killed.state == TrialState.RUNNING and done

    if storage == "sqlite":  # the trial is stale once its heartbeat is older than 2 x 1 s
        _age_heartbeat(file, killed)
    assert main(args) == 0
    assert file.is_file() and len(list(file.parent.glob("study.*"))) == 1  # no second storage
    after = _study(tmp_path, "study", location).trials
    for number, (params, value) in done.items():
        assert after[number].params == params and after[number].value == value
    assert after[killed.number].state == TrialState.FAIL
    retry = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retry) == 1 and retry[0].params == killed.params
    assert retry[0].state == TrialState.COMPLETE
    assert sum(t.state == TrialState.COMPLETE for t in after) == 2
    rows = {int(r["number"]): r for r in _table(tmp_path, "study")}
    assert (
        rows[killed.number]["state"] == "FAIL"
        and rows[killed.number]["note"] == "interrupted before it finished"
    )
    assert f"repeats trial {killed.number}" in rows[retry[0].number]["note"]


def test_two_workers_share_the_default_journal_and_an_old_sqlite_study_opens(
    tmp_path, cifar, capsys
) -> None:
    # --workers 2: two processes on the default journal file finish the study together.
    args = _args(SWEEP_DEBUG, cifar, tmp_path)
    assert main([*args, "--n-trials", "4", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    trials = _study(tmp_path, "sweep_debug").trials
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    assert 4 <= len(finished) == len(trials) <= 4 + 1  # each worker at most one past the total
    workers = {t.user_attrs["worker"]["pid"] for t in trials}
    assert len(workers) == 2 and os.getpid() not in workers  # both processes ran trials
    assert len({str(t.params) for t in trials}) == len(trials)  # no two drew the same trial
    assert len(_table(tmp_path, "sweep_debug")) == len(trials)  # the parent's report: all
    assert "Best: trial" in out and out.count("Worker ") == 2

    # A study in a SQLite file of an earlier version: its URL opens it, and so does the
    # default command when the .db is there and no journal (the command that began it).
    old = tmp_path / "old"
    url = f"sqlite:///{old / 'runs/sweeps/sweep_debug.db'}"
    old_args = _args(SWEEP_DEBUG, cifar, old)
    assert main([*old_args, "--storage", url, "--n-trials", "1"]) == 0
    assert main([*old_args, "--n-trials", "2"]) == 0
    assert f"(sqlite:///{old / 'runs/sweeps/sweep_debug.db'}): 1 of 2" in capsys.readouterr().out
    assert not list((old / "runs/sweeps").glob("*.journal"))
    trials = _study(old, "sweep_debug", url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2


def test_a_pruned_trial_is_recorded_as_pruned(tmp_path, cifar) -> None:
    # val/acc can never reach 1.01, so the first report prunes every trial.
    config = _config(tmp_path, n_trials=2, pruner={"threshold": {"lower": 1.01}})
    assert main(_args(config, cifar, tmp_path)) == 0
    trials = _study(tmp_path, "study").trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2  # pruned trials count
    assert all(list(t.intermediate_values) == [0] for t in trials)
    for r, t in zip(_table(tmp_path, "study"), trials, strict=True):
        assert r["state"] == "PRUNED" and r["note"] == "pruned after epoch 0"
        assert float(r["val/acc"]) == pytest.approx(t.intermediate_values[0])
        config = yaml.safe_load((Path(t.user_attrs["run_dir"]) / "config.yaml").read_text())
        net = build_model(config["model"]["arch"], 10)
        assert int(r["params"]) == sum(p.numel() for p in net.parameters())
        assert _is_the_trials_fit_time(r["fit_seconds"], t)


def test_rejected_trials_are_recorded_and_stop_the_study_when_all_fail(
    tmp_path, cifar, capsys
) -> None:
    # 4096 exceeds the 160 training images: fit refuses every trial with a UserError.
    config = yaml.safe_load(SWEEP_DEBUG.read_text())
    config["sweep"]["space"] = {"data.batch_size": {"type": "categorical", "choices": [4096]}}
    config["sweep"]["max_failures"] = 2
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    line = _error_line(capsys, *_args(path, cifar, tmp_path))
    assert "2 trials in a row failed" in line and "data.batch_size=4096" in line
    trials = _study(tmp_path, "study").trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    assert all("data.batch_size=4096" in t.user_attrs["error"] for t in trials)
    assert all("batch_size=4096" in r["note"] for r in _table(tmp_path, "study"))


def _error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 2
    return error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"model.bogus": {"type": "float", "low": 0, "high": 1}}, "'model.bogus' is not a key"),
        ({"model.arch.depth": {"type": "int", "low": 1, "high": 2}}, "'model.arch.depth'"),
        ({"model.lr": {"type": "float", "low": 1, "high": 0.1}}, "low=1 above high=0.1"),
        ({"model.lr": {"type": "float", "low": 0, "high": 1, "log": True}}, "low > 0"),
        ({"model.lr": {"type": "uniform", "low": 0, "high": 1}}, "type 'uniform'"),
        ({"data.batch_size": {"type": "categorical", "choices": []}}, "non-empty list"),
    ],
)
def test_a_bad_space_entry_is_one_error_line(tmp_path, cifar, capsys, entry, expected) -> None:
    config = yaml.safe_load(SWEEP_DEBUG.read_text())
    config["sweep"]["space"] = entry
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert expected in _error_line(capsys, *_args(path, cifar, tmp_path))
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing was written


def test_other_bad_input_is_one_error_line(tmp_path, cifar, capsys) -> None:
    args = _args(SWEEP_DEBUG, cifar, tmp_path)
    line = _error_line(capsys, *args, "--model.lr", "0.1")
    assert "--model.lr sets model.lr, which sweep.space samples" in line
    line = _error_line(capsys, *args, "--model.arch", "densenet_tiny")
    assert "model.arch.growth_rate" in line
    line = _error_line(capsys, *args, "--storage", "nosuchdb://x")
    assert "--storage nosuchdb://x cannot be opened" in line
    line = _error_line(capsys, *args, "--workers", "0")
    assert "--workers 0 must be 1 or more" in line
    line = _error_line(capsys, "sweep", "--config", str(tmp_path / "none.yaml"))
    assert "does not exist" in line
    line = _error_line(capsys, "sweep", "--config", str(DEBUG_CONFIG))
    assert "has no sweep: block" in line
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["sweep_debug", "sweep_cpu"])
def test_sweep_configs_give_trial_configs_that_fit_accepts(name, tmp_path, capsys) -> None:
    """Three sampled trial configs of each shipped study parse as fit configs."""
    sweep = read_sweep(str(REPO / f"configs/{name}.yaml"), [])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(3):
        trial = study.ask()
        config = yaml.safe_load(yaml.safe_dump(sweep.base))
        values = sample(trial, sweep.params)
        for key, value in values.items():
            apply(config, key, value)
        path = tmp_path / f"trial_{i}.yaml"
        path.write_text(yaml.safe_dump(config))
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(path), "--print_config"])
        assert exit_info.value.code == 0
        printed = yaml.safe_load(capsys.readouterr().out)
        for key, value in values.items():
            section, *rest = key.split(".")
            node = printed[section]
            for part in rest:
                node = node[part]
            assert node == value, key


def test_worker_arguments_drop_either_spelling_of_the_worker_flags() -> None:
    from lightning_densenet.sweep.workers import without_workers

    argv = ["--config", "S.yaml", "--workers", "2", "--worker_index", "1", "--worker-index=3"]
    assert without_workers([*argv, "--n_trials", "4"]) == ["--config", "S.yaml", "--n_trials", "4"]


def test_a_trial_killed_before_recording_its_worker_is_failed_once_unrecorded_long_enough(
    tmp_path,
) -> None:
    storage = open_storage(str(tmp_path / "study.journal"), heartbeat_seconds=60)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()  # RUNNING, and no worker recorded: as if killed right after ask
    started = study.trials[trial.number].datetime_start
    soon = started + datetime.timedelta(seconds=UNRECORDED_AFTER_S / 2)
    assert fail_orphaned_trials(study, storage, now=soon) == []  # may still record itself
    late = started + datetime.timedelta(seconds=UNRECORDED_AFTER_S + 1)
    assert fail_orphaned_trials(study, storage, now=late) == [trial.number]
    trials = study.trials
    assert trials[trial.number].state == TrialState.FAIL
    assert [t.state for t in trials[trial.number + 1 :]] == [TrialState.WAITING]  # queued again


def test_a_compute_budget_sets_each_trials_budget_pflop(tmp_path, cifar) -> None:
    config = _config(tmp_path, n_trials=1, budget={"pflop": 1e-9})  # less than one step's
    assert main(_args(config, cifar, tmp_path)) == 0
    (trial,) = _study(tmp_path, "study").trials
    assert trial.state == TrialState.COMPLETE
    run = Path(trial.user_attrs["run_dir"])
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["budget_pflop"] == 1e-9
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 1  # the first step used the budget up: the fit ended there
