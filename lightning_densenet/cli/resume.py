"""`fit --ckpt_path last|last_or_fresh|RUN/checkpoints/last.ckpt`: which run continues.

A run's newest state (`last*.ckpt` in its `checkpoints/`) continues in that run's folder and
version, its logs cut back to the checkpoint's step, not in a new `version_N`. Lightning's
own `ckpt_path="last"` looks only in the new run's folder, so `last` is found here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from lightning_densenet.checkpointing import find_last_run, first_logged_step
from lightning_densenet.cli.run_folder import experiment_folder
from lightning_densenet.errors import UserError
from lightning_densenet.files import version_number


class ResumedRun(NamedTuple):
    """The folder `root/name/version_<version>` a resumed fit continues in."""

    root: Path
    name: str
    version: int
    step: int  # the logger step it starts at (`checkpointing.first_logged_step`)


def resolve_last(config: Any, ckpt: str) -> str | None:
    """`--ckpt_path last` (or `last_or_fresh`) of `fit`'s `config`: the path of the newest
    run of this experiment with checkpoints/last.ckpt, set in `config.ckpt_path` too."""
    if config.trainer.logger is not None:
        return ckpt  # the user's own logger: Lightning looks for last.ckpt itself
    root, name = experiment_folder(config, "fit")
    version = find_last_run(root / name)
    if version is not None:
        path = str(root / name / f"version_{version}" / "checkpoints" / "last.ckpt")
    elif ckpt == "last_or_fresh":
        path = None  # nothing to resume: a fresh run, as asked
    else:
        raise UserError(
            f"--ckpt_path last found no run to resume ({root / name} holds no "
            "version_N/checkpoints/last.ckpt): drop --ckpt_path to start afresh, or pass "
            "--ckpt_path last_or_fresh to resume if possible and start afresh otherwise."
        )
    config.ckpt_path = path
    return path


def resumed_run(ckpt: Path, state: dict[str, Any]) -> ResumedRun | None:
    """The run `fit --ckpt_path ckpt` continues in its own folder, or None (a new run)."""
    run = run_of(ckpt, state)
    if run is None:
        return None
    version = version_number(run.name)
    assert version is not None  # run_of checked it
    return ResumedRun(run.parent.parent, run.parent.name, version, first_logged_step(state))


def run_of(ckpt: Path, state: dict[str, Any]) -> Path | None:
    """RUN for RUN/checkpoints/last*.ckpt (a run's newest state), else None.

    Spelled as the run spelled its checkpoint folder (relative or absolute) where that is
    the same folder: ModelCheckpoint restores its state (best and last paths) only when
    the folder's name is unchanged, and would otherwise write last-v1.ckpt beside last.ckpt.
    """
    if not ckpt.name.startswith("last") or ckpt.parent.name != "checkpoints":
        return None
    folder = ckpt.parent
    for callback in (state.get("callbacks") or {}).values():
        saved = callback.get("dirpath") if isinstance(callback, dict) else None
        if saved and Path(saved).resolve() == folder.resolve():
            folder = Path(saved)
            break
    run = folder.parent
    return run if version_number(run.name) is not None else None
