"""Faults, for real: runs SIGKILLed mid-epoch and mid-save, resumed; atomic saves; NaN stops.

Every run here is a real `python -m lightning_densenet` subprocess on tiny CIFAR-format data
written by the test, killed with SIGKILL (no handler can run, as with an OOM kill or a
lost node), then resumed with `--ckpt_path last`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_densenet.__main__ import main
from lightning_densenet.checkpointing import AtomicCheckpointIO
from tests.fake_data import write_cifar
from tests.helpers import QUIET, cli_args, error_line, metrics

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def cifar(tmp_path):
    # 360 training images: 11 batches of 32 per epoch; 40 validation images.
    return write_cifar(tmp_path / "cifar", "cifar10", n_train=400, n_test=40)


def _args(cifar, root: Path, *extra: str) -> list[str]:
    """2 epochs of `fit` on all 360 training images, deterministic."""
    all_data = ["--data.max_train_images", "null", "--trainer.limit_train_batches", "null"]
    deterministic = ["--trainer.max_epochs", "2", "--trainer.deterministic", "true"]
    return cli_args("fit", cifar.root, root, *all_data, *deterministic, *QUIET, *extra)


def _start(args: list[str], log: Path, env: dict[str, str] = ENV) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lightning_densenet", *args]
    return subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)


def _run(args: list[str], log: Path, env: dict[str, str] = ENV, code: int = 0) -> None:
    proc = _start(args, log, env)
    assert proc.wait(timeout=600) == code, log.read_text()[-3000:]


def _step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


# Faults at chosen moments, from inside the run (`--trainer.callbacks+=faults.<name>`): a
# SIGKILL of its own process is as abrupt as one from outside, and lands where it is meant to.
FAULTS = """
import io, os, signal
import pytorch_lightning as pl
import torch


class KillMidSave(pl.Callback):
    \"\"\"SIGKILLs its own process halfway through writing the checkpoint of global step 5
    (mid-epoch 0): torch.save writes half the bytes, then the process dies.\"\"\"

    def setup(self, trainer, pl_module, stage):
        save = torch.save

        def half_then_kill(obj, f, *args, **kwargs):
            if isinstance(obj, dict) and obj.get("global_step") == 5:
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                f.write(buffer.getvalue()[: buffer.tell() // 2])
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            save(obj, f, *args, **kwargs)

        torch.save = half_then_kill


class KillAtStep15(pl.Callback):
    \"\"\"SIGKILLs its own process as the batch after global step 15 starts (mid-epoch 1).\"\"\"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 15:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def _values(rows: list[dict[str, str]]) -> dict[tuple[int, str, str], str]:
    """(step, metric, epoch) -> value, for every value logged."""
    return {
        (int(r["step"]), k, r["epoch"]): v
        for r in rows
        for k, v in r.items()
        if v and k not in ("step", "epoch")
    }


# Epoch-level training aggregates (train/acc, train/loss_epoch) and the ThroughputMonitor's
# counts cover only the batches a process ran; after a mid-epoch resume they cover the rest
# of that epoch. Timings differ from run to run.
PER_PROCESS = (
    "train/acc",
    "train/loss_epoch",
    "train/minutes",
    "train/time",
    "train/batches",
    "train/samples",
    "train/device/batches_per_sec",
    "train/device/samples_per_sec",
    "train/device/flops_per_sec",
    "train/gflops_per_s",  # the compute so far over the budget's clock: a timing
)


def test_killed_mid_save_and_mid_epoch_then_resumed_equals_uninterrupted(tmp_path, cifar) -> None:
    every_batch = ["--checkpoint.last_every_s", "0"]  # last.ckpt after every batch: many saves
    _run(_args(cifar, tmp_path / "ref", *every_batch), tmp_path / "ref.log")
    ref = tmp_path / "ref/debug/version_0"

    root = tmp_path / "runs"
    run = root / "debug/version_0"
    ckpts = run / "checkpoints"
    last = ckpts / "last.ckpt"
    (tmp_path / "faults.py").write_text(FAULTS)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}

    # Kill 1, during a checkpoint write in epoch 0: halfway through the temporary file of
    # step 5's save of last.ckpt.
    kill1 = _args(cifar, root, *every_batch, "--trainer.callbacks+=faults.KillMidSave")
    _run(kill1, tmp_path / "kill1.log", env, code=-signal.SIGKILL)
    assert list(ckpts.glob(".last.ckpt.*.tmp")), "the kill did not land inside a save"
    assert _step(last) == 4  # loads: the kill left the previous last.ckpt whole

    # Kill 2: resumed, then killed mid-epoch 1, between saves.
    resume = ["--ckpt_path", "last"]
    kill2 = _args(cifar, root, *every_batch, *resume, "--trainer.callbacks+=faults.KillAtStep15")
    _run(kill2, tmp_path / "kill2.log", env, code=-signal.SIGKILL)
    assert _step(last) == 15

    # Resumed again, to the end.
    _run(_args(cifar, root, *every_batch, "--ckpt_path", "last"), tmp_path / "resume.log")
    log = (tmp_path / "resume.log").read_text()
    assert "Restored all states from the checkpoint" in log
    assert "No checkpoint will be loaded" not in log

    # One run folder holds the whole history.
    assert sorted(p.name for p in (root / "debug").iterdir()) == ["version_0"]
    assert not list(ckpts.glob(".*.tmp")), "a killed save's temporary file was not cleaned up"

    # The same weights, bit for bit, and the same logged numbers at every logged step.
    ours = torch.load(last, weights_only=True)
    theirs = torch.load(ref / "checkpoints/last.ckpt", weights_only=True)
    assert ours["global_step"] == theirs["global_step"] == 22
    for key, value in theirs["state_dict"].items():
        assert torch.equal(ours["state_dict"][key], value), key
    got, want = _values(metrics(run)), _values(metrics(ref))
    shared = {k for k in want if k[1] not in PER_PROCESS}
    assert {k for k in got if k[1] not in PER_PROCESS} == shared  # no gaps, no duplicates
    assert {k: got[k] for k in shared} == {k: want[k] for k in shared}
    val = sorted((k, v) for k, v in got.items() if k[1] == "val/acc")
    assert [k[2] for k, _ in val] == ["0", "1"]  # validation of both epochs, once each


def test_kills_during_saves_never_corrupt_last_ckpt(tmp_path) -> None:
    """A process saving ~8 MB checkpoints in a loop through AtomicCheckpointIO is SIGKILLed,
    now halfway through a write (it kills itself there), now from outside wherever it is;
    each time last.ckpt loads and is one whole checkpoint, and the next process counts on
    from it."""
    target = tmp_path / "last.ckpt"
    script = (
        "import io, os, signal, sys, torch\n"
        "from lightning_densenet.checkpointing import AtomicCheckpointIO\n"
        "path, ckpt_io, die_in = sys.argv[1], AtomicCheckpointIO(), int(sys.argv[2])\n"
        "i = torch.load(path, weights_only=True)['i'] if os.path.exists(path) else 0\n"
        "save = torch.save\n"
        "def half_then_kill(obj, f, *args, **kwargs):  # the write of save number die_in\n"
        "    if obj['i'] == die_in:\n"
        "        buffer = io.BytesIO()\n"
        "        save(obj, buffer)\n"
        "        f.write(buffer.getvalue()[: buffer.tell() // 2])\n"
        "        f.flush()\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    save(obj, f, *args, **kwargs)\n"
        "torch.save = half_then_kill\n"
        "while True:\n"
        "    i += 1\n"
        "    ckpt_io.save_checkpoint({'i': i, 'w': torch.full((2_000_000,), float(i))}, path)\n"
        "    print(i, flush=True)\n"
    )
    seen = [0]
    for round_ in range(4):
        mid_write = round_ % 2 == 0  # else killed from outside, after its second save
        die_in = seen[-1] + 3 if mid_write else -1
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(target), str(die_in)],
            env=ENV,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        if mid_write:
            assert proc.wait(timeout=600) == -signal.SIGKILL
            assert any(tmp_path.glob(".last.ckpt.*.tmp")), "the kill did not land in a write"
        else:
            assert proc.stdout.readline() and proc.stdout.readline()  # two saves landed
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        state = torch.load(target, weights_only=True)
        assert torch.equal(state["w"], torch.full((2_000_000,), float(state["i"])))
        if mid_write:
            assert state["i"] == die_in - 1  # the save before the one cut short
        seen.append(state["i"])
    assert seen == sorted(set(seen))  # every process saved on from the last whole file


def test_atomic_io_loads_weights_only(tmp_path) -> None:
    """A checkpoint from elsewhere that would run code on loading is refused."""

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Boom()}, evil)
    with pytest.raises(Exception, match="Weights only load failed"):
        AtomicCheckpointIO().load_checkpoint(evil)
    assert not (tmp_path / "ran").exists()


def test_ckpt_path_last_without_a_run_is_one_error_or_a_fresh_run(tmp_path, cifar, capsys) -> None:
    args = _args(cifar, tmp_path / "runs", "--trainer.max_epochs", "1")
    args += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    assert main([*args, "--ckpt_path", "last"]) == 2
    line = error_line(capsys.readouterr().err)
    assert "found no run to resume" in line and "last_or_fresh" in line
    assert not (tmp_path / "runs").exists()

    assert main([*args, "--ckpt_path", "last_or_fresh"]) == 0  # nothing there: a fresh run
    assert (tmp_path / "runs/debug/version_0/checkpoints/last.ckpt").is_file()
    # Now there is a run: last_or_fresh continues it instead of starting version_1.
    more = ["--trainer.max_epochs", "2", "--ckpt_path", "last_or_fresh"]
    assert main([*args, *more]) == 0
    assert sorted(p.name for p in (tmp_path / "runs/debug").iterdir()) == ["version_0"]
    assert torch.load(tmp_path / "runs/debug/version_0/checkpoints/last.ckpt")["epoch"] == 1


def test_explicit_last_ckpt_resumes_in_its_own_run(tmp_path, cifar) -> None:
    args = _args(cifar, tmp_path / "runs", "--trainer.max_epochs", "1")
    args += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    assert main(args) == 0
    assert main(args) == 0  # a second, separate run: version_1
    run0 = tmp_path / "runs/debug/version_0"
    ckpt = run0 / "checkpoints/last.ckpt"
    before = metrics(run0)
    assert main([*args, "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt)]) == 0
    # version_0 goes on (metrics appended, last.ckpt updated); version_1 is untouched.
    assert sorted(p.name for p in (tmp_path / "runs/debug").iterdir()) == ["version_0", "version_1"]
    after = metrics(run0)
    assert after[: len(before)] == before and len(after) > len(before)
    assert {r["epoch"] for r in after if r.get("val/acc")} == {"0", "1"}
    assert torch.load(ckpt)["epoch"] == 1
    assert not list((run0 / "checkpoints").glob("last-v*.ckpt"))  # no second "last"
    assert len(list(run0.glob("events.out.tfevents.*"))) == 2  # TensorBoard: one folder


def test_nan_loss_stops_in_one_sentence_and_keeps_the_last_good_checkpoint(tmp_path, cifar) -> None:
    # lr 1e30 with weight decay multiplies the weights by about -1e26 in the first step;
    # the next forward pass overflows. last.ckpt is written after every batch until then.
    root = tmp_path / "runs"
    args = _args(cifar, root, "--model.lr", "1e30", "--checkpoint.last_every_s", "0")
    result = subprocess.run(
        [sys.executable, "-m", "lightning_densenet", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result.stderr)
    found = re.search(r"(The training loss became (nan|inf|-inf) at|The weights became NaN or "
                      r"infinite in the update of) global step (\d+)", line)  # fmt: skip
    assert found, line
    step = int(found.group(3))
    last = root / "debug/version_0/checkpoints/last.ckpt"
    assert f"{last} keeps the last good state" in line
    state = torch.load(last, weights_only=True)
    assert state["global_step"] == step  # the state before the step whose loss was not finite
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert not list(last.parent.glob("epoch*.ckpt"))  # no checkpoint of the broken state


def test_data_resumed_mid_epoch_gives_the_same_batches_and_crops(cifar) -> None:
    """The data path alone: a data module restored from another's state mid-epoch hands
    out the same remaining batches, augmented identically (one seed per batch)."""
    from lightning_densenet.data import ImageDataModule

    def batches(dm: ImageDataModule, epoch: int, stop: int | None = None) -> list:
        loader = dm.train_dataloader() if dm._train_loader is None else dm._train_loader
        loader.sampler.set_epoch(epoch)
        out = []
        for images, labels in loader:
            out.append((dm.on_after_batch_transfer((images, labels), 0)[0], labels))
            if stop is not None and len(out) == stop:
                break
        return out

    class Training:  # what on_after_batch_transfer asks of a trainer
        training, global_rank, world_size = True, 0, 1

    def module() -> ImageDataModule:
        dm = ImageDataModule("cifar10", str(cifar.root), download=False, val_size=40, batch_size=32)
        dm.trainer = Training()  # type: ignore[assignment]
        dm.setup("fit")
        return dm

    whole = batches(module(), 1)
    assert len(whole) == 11
    killed = module()
    batches(killed, 1, stop=4)  # 4 batches of epoch 1 done, then the checkpoint
    state = killed.state_dict()
    assert state["train_position"] == {"epoch": 1, "batches_done": 4}
    resumed = module()
    resumed.load_state_dict(state)
    rest = batches(resumed, 1)
    assert len(rest) == 7
    for (x, y), (x_ref, y_ref) in zip(rest, whole[4:], strict=True):
        assert torch.equal(y, y_ref) and torch.equal(x, x_ref)
    # The next epoch starts at its beginning again, with new crops.
    assert len(batches(resumed, 2)) == 11
