"""`sweep` workers sharing one study on a real PostgreSQL server, one of them SIGKILLed.

The server is started here (PostgreSQL's own `initdb` and `pg_ctl`, in a temporary folder,
listening on a Unix socket in that folder only) and stopped when the session ends. Skipped
where PostgreSQL is not installed (`.ci/run` installs it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from lightning_densenet.sweep.storage import open_storage
from tests.fake_data import write_cifar
from tests.helpers import REPO, cli_args


def _postgres_bin() -> Path | None:
    """The folder of `initdb` and `pg_ctl`: Debian's /usr/lib/postgresql/<version>/bin (the
    newest), else wherever PATH finds them."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server for this session: the SQLAlchemy URL of its `postgres` database."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (no initdb in /usr/lib/postgresql/*/bin or PATH)")
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[postgres]'")
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` system user, in a
    # folder of its own (pytest's tmp_path sits under a folder only root may enter).
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(folder, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log = folder / "data", folder / "server.log"

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    started = False
    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-N")
        options = f"-c listen_addresses='' -k {folder} -c fsync=off"  # a socket in folder only
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
        started = True
        yield f"postgresql+psycopg://postgres@/postgres?host={folder}"
    finally:
        if started:
            pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_three_workers_share_one_study_and_a_killed_trial_is_run_again(postgres, tmp_path) -> None:
    cifar = write_cifar(tmp_path / "cifar", "cifar10", n_train=200, n_test=20)
    config = yaml.safe_load((REPO / "configs/sweep_debug.yaml").read_text())
    # No pruning (every trial runs its 2 epochs); a heartbeat a second, so a dead worker's
    # trial is stale after 2 s.
    config["sweep"].update(pruner="none", heartbeat_seconds=1)
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    n_trials, workers = 5, 3
    args = cli_args("sweep", cifar.root, tmp_path / "runs", config=tmp_path / "study.yaml")
    args += ["--trainer.max_epochs", "2", "--storage", postgres, "--study-name", "pg"]
    args += ["--n-trials", str(n_trials), "--workers", str(workers)]
    log = tmp_path / "sweep.log"
    with log.open("w") as out:
        parent = subprocess.Popen(
            [sys.executable, "-m", "lightning_densenet", *args],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    storage = open_storage(postgres, 60)
    try:
        while True:  # until a worker's trial is RUNNING inside its fit (or the sweep ends)
            assert parent.poll() is None, log.read_text()[-3000:]
            running = []
            try:
                trials = optuna.load_study(study_name="pg", storage=storage).get_trials()
                running = [t for t in trials if t.state == TrialState.RUNNING and _in_fit(t)]
            except KeyError:
                pass  # the parent has not created the study yet
            if running:
                break
            time.sleep(0.1)
        victim = running[0]
        pid = victim.user_attrs["worker"]["pid"]
        os.kill(pid, signal.SIGKILL)
        before = optuna.load_study(study_name="pg", storage=storage).get_trials()
        parent.wait(timeout=600)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    text = log.read_text()
    assert parent.returncode == 128 + signal.SIGKILL, text[-3000:]  # a worker failed: so did it
    assert f"(pid {pid}) was killed by SIGKILL" in text
    assert before[victim.number].state == TrialState.RUNNING  # killed mid-trial

    trials = optuna.load_study(study_name="pg", storage=storage).get_trials()
    # The requested number of trials, each of the K workers at most one past it (the killed
    # one none).
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert n_trials <= len(complete) <= n_trials + workers - 1
    # The killed trial failed (by the heartbeat of the others) and ran again, once.
    assert trials[victim.number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == victim.params
    assert retry[0].state == TrialState.COMPLETE
    assert [t.state for t in trials].count(TrialState.FAIL) == 1
    # No finished trial lost: what was complete at the kill is still there, unchanged.
    for t in before:
        if t.state == TrialState.COMPLETE:
            assert (trials[t.number].params, trials[t.number].value) == (t.params, t.value)
    # One study holds every worker's trials (what each worker's sampler reads), numbered
    # 0..N-1: the three workers all ran trials, the retry ran on a survivor.
    assert [t.number for t in trials] == list(range(len(trials)))
    pids = {t.user_attrs["worker"]["pid"] for t in trials if "worker" in t.user_attrs}
    assert len(pids) == workers and pid in pids
    assert retry[0].user_attrs["worker"]["pid"] != pid
    assert len({str(t.params) for t in trials if t.number != retry[0].number}) == len(trials) - 1
    # The parent wrote the report once all had ended: every finished trial, the failed one too.
    table = (tmp_path / "runs/sweeps/pg/trials.csv").read_text().splitlines()
    assert len(table) == 1 + len(complete) + 1


def _in_fit(trial: optuna.trial.FrozenTrial) -> bool:
    """The trial's own worker recorded itself and its fit has started (`run_dir`)."""
    worker = trial.user_attrs.get("worker")
    return (
        isinstance(worker, dict)
        and worker.get("trial") == trial.number
        and "run_dir" in trial.user_attrs
    )
