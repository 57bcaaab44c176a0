"""Where a sweep's study lives: the Optuna storage named by `--storage`.

- a file path, by default `<trainer.default_root_dir>/sweeps/<study>.journal`: Optuna's
  `JournalStorage` on a `JournalFileBackend`, the storage Optuna recommends for several
  processes on one machine (each change is a line appended under a file lock; SQLite, with
  one lock for the whole database, fails parallel workers with "database is locked").
- `sqlite:///FILE`: a SQLite study, the default of earlier versions.
- any other SQLAlchemy URL, e.g. `postgresql+psycopg://user@host/db` (`pip install -e
  '.[postgres]'`): `RDBStorage`, for workers on several machines.

A trial whose process died (killed, out of memory, the machine lost) is failed and its
parameters queued again, at most twice. RDB storages do this with Optuna's heartbeat: a trial
silent for twice `heartbeat_seconds` is stale. `JournalStorage` has no heartbeat (Optuna
5.1); its workers share one machine, so a worker failing a trial whose process on this
machine is gone does the same (`fail_orphaned_trials`).
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from lightning_densenet.errors import UserError

MAX_RETRY = 2  # a trial whose process died is queued again at most this many times


def is_url(location: str) -> bool:
    """`sqlite:///...`, `postgresql+psycopg://...`: a database; anything else: a journal file."""
    return "://" in location


def open_storage(location: str, heartbeat_seconds: int) -> BaseStorage:
    """The storage at `location` (a journal file path or a database URL)."""
    if not is_url(location):
        return _journal(Path(location))
    with warnings.catch_warnings():  # Optuna calls its heartbeat experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sqlite = location.startswith("sqlite:///")
        if sqlite and location != "sqlite:///:memory:":  # SQLite creates the file, not its folder
            Path(location.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            return RDBStorage(
                location,
                # Another process holding SQLite's lock is waited for, not an error.
                engine_kwargs={"connect_args": {"timeout": 60}} if sqlite else None,
                heartbeat_interval=heartbeat_seconds,
                grace_period=2 * heartbeat_seconds,
                heartbeat_stale_trial_callback=_retry(),
            )
        except ImportError as err:  # the URL's driver is not installed
            raise UserError(
                f"--storage {location} needs {err.name or 'its database driver'}, which is not "
                "installed: for postgresql+psycopg:// run pip install -e '.[postgres]'."
            ) from None
        except (ValueError, sqlalchemy.exc.SQLAlchemyError) as err:
            raise UserError(
                f"--storage {location} cannot be opened ({type(err).__name__}: "
                f"{str(err).splitlines()[0]}): use a .journal file, sqlite:///FILE or a "
                "database URL such as postgresql+psycopg://USER@HOST/DB."
            ) from None


def _retry() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Queues a failed trial's parameters again, as a WAITING trial that notes which trial it
    repeats (`failed_trial`), unless it was already retried MAX_RETRY times."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def _journal(path: Path) -> JournalStorage:
    if path.is_file() and _head(path) == b"SQLite format 3\x00":
        raise UserError(
            f"--storage {path} is a SQLite database: pass it as --storage sqlite:///{path}."
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except OSError as err:
        raise UserError(
            f"--storage {path} cannot be opened as a journal file ({err.strerror}): "
            "pass a file path in a folder you can write to."
        ) from None


def record_worker(trial: optuna.Trial) -> None:
    """Notes which process runs `trial`, so that the trial can be failed if it dies."""
    trial.set_user_attr(
        "worker", {"host": socket.gethostname(), "pid": os.getpid(), "trial": trial.number}
    )


# A worker records itself first thing in a trial (`record_worker`), within a second of the
# trial's start: a RUNNING trial with no record this long after it started was killed before.
UNRECORDED_AFTER_S = 120.0


def fail_orphaned_trials(
    study: optuna.Study, storage: BaseStorage, now: datetime.datetime | None = None
) -> list[int]:
    """Journal storage only: fails the RUNNING trials whose worker process on this machine is
    gone, or that never recorded a worker `UNRECORDED_AFTER_S` after they started (killed
    before `record_worker`), and queues each again (as Optuna's heartbeat does on RDB
    storages). Returns the numbers of the trials failed here. Several workers may try at
    once: one succeeds. `now`: the time to judge by (default: the clock's)."""
    if not isinstance(storage, JournalStorage):
        return []  # RDB storages: the heartbeat does it, for workers on any machine
    study_id = storage.get_study_id_from_name(study.study_name)
    host, failed = socket.gethostname(), []
    now = now or datetime.datetime.now()  # Optuna's datetime_start is naive local time
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker: Any = t.user_attrs.get("worker")
        # A re-queued trial carries the attribute of the trial it repeats until its own
        # worker records itself: only a trial's own record counts.
        if not isinstance(worker, dict) or worker.get("trial") != t.number:
            started = t.datetime_start
            if started is None or (now - started).total_seconds() < UNRECORDED_AFTER_S:
                continue  # its worker may be about to record itself
        elif worker.get("host") != host or _alive(int(worker["pid"])):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker failed it first
        _retry()(study, copy.deepcopy(storage.get_trial(trial_id)))
        failed.append(t.number)
    return failed


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(16)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:  # a process that ended but was not yet waited for (a zombie) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS)


__all__ = [
    "MAX_RETRY",
    "UNRECORDED_AFTER_S",
    "fail_orphaned_trials",
    "is_url",
    "open_storage",
    "record_worker",
]
