"""The run's checkpoints are Lightning's own `ModelCheckpoint`s (`callbacks.run_checkpoints`),
and `last.ckpt` written by them resumes a run killed anywhere, validation included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_densenet.callbacks import run_checkpoints
from lightning_densenet.errors import UserError
from tests.fake_data import write_cifar
from tests.helpers import QUIET, cli_args, metrics


def test_run_checkpoints_are_stock_model_checkpoints() -> None:
    best, at_epoch_end, timed = run_checkpoints(monitor="val/acc", mode="max")
    assert all(type(c) is ModelCheckpoint for c in (best, at_epoch_end, timed))
    assert (best.monitor, best.save_last) == ("val/acc", None)
    assert at_epoch_end.filename == "last" and at_epoch_end.every_n_epochs == 1
    assert timed.filename == "last" and not timed.save_last  # no extra save at the end
    # Lightning restores each one's state by its key: they must differ.
    assert len({c.state_key for c in (best, at_epoch_end, timed)}) == 3
    assert len(run_checkpoints(last_every_s=None)) == 2  # last.ckpt at epoch ends only
    assert len(run_checkpoints(save_last=False)) == 1  # the best checkpoint alone
    with pytest.raises(UserError, match=r"checkpoint.last_every_s=-1 must be 0 or more"):
        run_checkpoints(last_every_s=-1)


KILLER = '''
import os, signal
import pytorch_lightning as pl


class KillInValidation(pl.Callback):
    """SIGKILLs its own process as epoch 0's validation starts (not the sanity check)."""

    def on_validation_start(self, trainer, pl_module):
        if not trainer.sanity_checking and trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGKILL)
'''


def test_killed_during_validation_resumes_and_validates_that_epoch(tmp_path) -> None:
    """With last.ckpt due after every batch, the save due at an epoch's last batch waits for
    the epoch's validation: a run killed during it resumes before it and validates the epoch
    (saved before validation, Lightning's resume would skip it)."""
    cifar = write_cifar(tmp_path / "cifar", "cifar10", n_train=400, n_test=40)  # 11 batches
    (tmp_path / "killer.py").write_text(KILLER)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
    }

    def fit(root: Path, *extra: str) -> subprocess.CompletedProcess:
        args = cli_args("fit", cifar.root, root, *QUIET, "--checkpoint.last_every_s", "0")
        args += ["--data.max_train_images", "null", "--trainer.limit_train_batches", "null"]
        args += ["--trainer.max_epochs", "2", "--trainer.deterministic", "true", *extra]
        cmd = [sys.executable, "-m", "lightning_densenet", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    assert fit(tmp_path / "ref").returncode == 0
    run = tmp_path / "runs/debug/version_0"
    killed = fit(tmp_path / "runs", "--trainer.callbacks+=killer.KillInValidation")
    assert killed.returncode == -9, killed.stderr[-3000:]
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert state["global_step"] < 11  # not the last batch's state before its validation
    resumed = fit(tmp_path / "runs", "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    val_epochs = [r["epoch"] for r in metrics(run) if r.get("val/acc")]
    assert val_epochs == ["0", "1"]  # each epoch validated, once
    assert any(p.name.startswith("epoch000-") for p in (run / "checkpoints").iterdir())
    ours = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    ref = torch.load(tmp_path / "ref/debug/version_0/checkpoints/last.ckpt", weights_only=True)
    assert ours["global_step"] == ref["global_step"] == 22
    for key, value in ref["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
