"""Lightning DDP on CPU, 2 processes over gloo: shares, exact counts, synchronised metrics.

The DDP runs are real `python -m lightning_densenet` subprocesses (Lightning launches the
second process itself); the one-process runs they are compared with go through the same
command line in the test's own process. A small recording callback, loaded by class path
like any user callback, writes what each process trained, validated and tested on, by image
content.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_densenet.__main__ import main
from tests.fake_data import write_cifar
from tests.helpers import QUIET, cli_args, ddp_env, is_fraction_of, last, metrics

RECORDER = '''
import hashlib, json, os
from pathlib import Path
import pytorch_lightning as pl


def _hashes(images):
    return [hashlib.sha1(x.contiguous().numpy().tobytes()).hexdigest() for x in images.cpu()]


class Recorder(pl.Callback):
    """Writes rank<N>.json: the images each stage's batches held on this process."""

    def __init__(self):
        self.seen = {"train": {}, "val": {}, "test": {}, "predict": {}}

    def _add(self, stage, trainer, batch):
        epoch = str(trainer.current_epoch)
        self.seen[stage].setdefault(epoch, []).extend(_hashes(batch[0]))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._add("train", trainer, batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._add("val", trainer, batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._add("test", trainer, batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._add("predict", trainer, batch)

    def _dump(self, trainer):
        dm = trainer.datamodule
        splits = {"train": dm.train_set, "val": dm.val_set, "test": dm.test_set}
        full = {k: _hashes(dm._normalize(s.images)) for k, s in splits.items() if s is not None}
        record = {"world": trainer.world_size, "seen": self.seen, "full": full}
        name = f"{trainer.state.fn.value}-rank{trainer.global_rank}.json"
        out = Path(os.environ["RECORD_DIR"], name)
        out.write_text(json.dumps(record))

    def on_fit_end(self, trainer, pl_module):
        self._dump(trainer)

    def on_test_end(self, trainer, pl_module):
        self._dump(trainer)

    def on_predict_end(self, trainer, pl_module):
        self._dump(trainer)
'''

# 360 training images: per process 11 batches of 16 (the one shuffled order dealt out by
# whole batches), 41 validation and 23 test images: odd counts, so an even split is
# impossible and padding (as DistributedSampler does) would show.
N_VAL, N_TEST, BATCH = 41, 23, 16


@pytest.fixture
def setup(tmp_path, monkeypatch):
    cifar = write_cifar(tmp_path / "cifar", "cifar10", n_train=360 + N_VAL, n_test=N_TEST)
    (tmp_path / "recorder.py").write_text(RECORDER)
    env = ddp_env(tmp_path)
    # The one-process runs (`_one`) load the recorder here, as the subprocesses do.
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setenv("RECORD_DIR", env["RECORD_DIR"])
    return cifar, env


def _cli(tmp_path: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "lightning_densenet", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _one(*args: str) -> None:
    """A one-process run, through the command line, in this process (no start-up cost)."""
    assert main(list(args)) == 0


def _args(command: str, cifar, root: Path, *extra: str) -> list[str]:
    """`command` on all the data (no limits), without augmentation: records compare raw
    images (the crops are tested elsewhere)."""
    return cli_args(
        command,
        cifar.root,
        root,
        *("--data.max_train_images", "null", "--data.eval_batch_size", "8"),
        *("--data.augment", "false", "--trainer.limit_train_batches", "null"),
        *("--trainer.limit_val_batches", "null", "--trainer.limit_test_batches", "null"),
        *QUIET,
        "--trainer.callbacks+=recorder.Recorder",
        *extra,
        val_size=N_VAL,
    )


DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
# A tiny DenseNet without batch norm (see the comparison with one process), 2 epochs.
TRAIN = [
    "--model.arch",
    "{growth_rate: 4, block_config: [2, 2], batch_norm: false}",
    "--trainer.max_epochs",
    "2",
]


def _records(folder: Path, fn: str) -> list[dict]:
    return [json.loads((folder / f"{fn}-rank{r}.json").read_text()) for r in (0, 1)]


def test_ddp_two_processes_share_count_once_and_match_one_process(tmp_path, setup) -> None:
    cifar, env = setup
    fit = _args("fit", cifar, tmp_path / "ddp", *TRAIN, "--data.batch_size", str(BATCH))
    result = _cli(tmp_path, env, *fit, *DDP)
    assert "sync_dist" not in result.stderr  # every epoch-level metric is synchronised

    # Training: disjoint shares of each epoch, equal in size, drawn from the training split.
    ranks = _records(tmp_path / "rec", "fit")
    assert [r["world"] for r in ranks] == [2, 2]
    train = set(ranks[0]["full"]["train"])
    for epoch in ("0", "1"):
        a, b = (r["seen"]["train"][epoch] for r in ranks)
        assert len(a) == len(b) == 11 * BATCH and len(set(a)) == len(set(b)) == len(a)
        assert not set(a) & set(b) and set(a) | set(b) <= train
    assert ranks[0]["seen"]["train"]["0"] != ranks[0]["seen"]["train"]["1"]  # reshuffled
    # Validation: every image exactly once over both processes, no padding duplicates.
    val = ranks[0]["full"]["val"]
    assert len(val) == N_VAL
    for epoch in ("0", "1"):
        seen = ranks[0]["seen"]["val"][epoch] + ranks[1]["seen"]["val"][epoch]
        assert sorted(seen) == sorted(val)

    # One run folder, one set of checkpoints (written by rank 0 only).
    runs = list((tmp_path / "ddp/debug").iterdir())
    assert [p.name for p in runs] == ["version_0"]
    ddp_run = runs[0]
    ckpts = sorted(p.name for p in (ddp_run / "checkpoints").iterdir())
    assert len(ckpts) == 2 and "last.ckpt" in ckpts, ckpts
    ddp_acc = last(metrics(ddp_run), "val/acc")
    ddp_loss = last(metrics(ddp_run), "val/loss")

    # The logged DDP metrics are those of the whole validation split: one process
    # validating the DDP checkpoint gets the same accuracy (counts: exact) and loss.
    ckpt = str(ddp_run / "checkpoints/last.ckpt")
    _one(*_args("validate", cifar, tmp_path / "one", "--ckpt_path", ckpt))
    single = metrics(tmp_path / "one/debug-validate/version_0")
    assert last(single, "val/acc") == ddp_acc
    assert is_fraction_of(ddp_acc, N_VAL)  # k of 41 images: nothing counted twice
    assert last(single, "val/loss") == pytest.approx(ddp_loss, rel=1e-5)

    # Test: each of the 23 test images once over both processes; the same accuracy as one.
    _cli(tmp_path, env, *_args("test", cifar, tmp_path / "ddp", "--ckpt_path", ckpt), *DDP)
    ranks = _records(tmp_path / "rec", "test")
    seen = ranks[0]["seen"]["test"]["0"] + ranks[1]["seen"]["test"]["0"]
    assert sorted(seen) == sorted(ranks[0]["full"]["test"]) and len(seen) == N_TEST
    ddp_test = last(metrics(tmp_path / "ddp/debug-test/version_0"), "test/acc")
    _one(*_args("test", cifar, tmp_path / "one", "--ckpt_path", ckpt))
    assert last(metrics(tmp_path / "one/debug-test/version_0"), "test/acc") == ddp_test

    # Against one process trained on the same data, batch 32 = 2 x 16: each step sees the
    # same 32 images (process r takes global batch 2k + r of the one order; one process
    # takes batch k of 32, the same images) and the same gradient (DDP averages the two
    # processes' mean gradients over 16 into the mean over 32). The network has no batch
    # norm: its statistics would differ (16 images against 32; DDP keeps rank 0's running
    # averages) and SyncBatchNorm needs a GPU. Only the order of floating-point sums
    # differs, ~1e-7 relative per step, over 22 SGD steps: the weights agree to ~1e-5, the
    # validation loss to its 4th significant digit (rel 1e-3), and at most one of the 41
    # predictions may flip on a near tie, so |delta acc| <= 1/41.
    one = _args("fit", cifar, tmp_path / "one", *TRAIN, "--data.batch_size", str(2 * BATCH))
    _one(*one)
    one_rows = metrics(tmp_path / "one/debug/version_0")
    assert abs(last(one_rows, "val/acc") - ddp_acc) <= 1 / N_VAL + 1e-9
    assert last(one_rows, "val/loss") == pytest.approx(ddp_loss, rel=1e-3)
    one_state = torch.load(tmp_path / "one/debug/version_0/checkpoints/last.ckpt")["state_dict"]
    ddp_state = torch.load(ckpt)["state_dict"]
    for key, value in one_state.items():
        if value.is_floating_point():
            torch.testing.assert_close(ddp_state[key], value, rtol=1e-3, atol=1e-4)


def test_ddp_predict_shares_the_images_and_writes_one_file_in_their_order(tmp_path, setup) -> None:
    """`predict` on 2 processes: each predicts its share of the 23 test images, and one
    predictions.csv holds every image once, in order, as one process writes it. (No
    checkpoint: seed_everything gives both runs the same initial weights.)"""
    cifar, env = setup
    limits = ["--trainer.limit_predict_batches", "null"]
    result = _cli(tmp_path, env, *_args("predict", cifar, tmp_path / "ddp", *limits), *DDP)
    ranks = _records(tmp_path / "rec", "predict")
    a, b = (r["seen"]["predict"]["0"] for r in ranks)
    assert len(a) == 12 and len(b) == 11 and not set(a) & set(b)  # 23 = 12 + 11, no padding
    assert sorted(a + b) == sorted(ranks[0]["full"]["test"])
    assert result.stdout.count("Wrote 23 predictions") == 1  # rank 0 alone writes

    _one(*_args("predict", cifar, tmp_path / "one", *limits))
    ddp, one = (
        _rows(root / "debug-predict/version_0/predictions.csv")
        for root in (tmp_path / "ddp", tmp_path / "one")
    )
    assert [r["index"] for r in ddp] == [str(i) for i in range(N_TEST)]
    for d, o in zip(ddp, one, strict=True):  # the same image behind each index
        assert (d["index"], d["label"], d["class"]) == (o["index"], o["label"], o["class"])
        assert float(d["confidence"]) == pytest.approx(float(o["confidence"]), abs=2e-6)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --- The shards themselves, without processes ------------------------------------------------


@pytest.mark.parametrize(("n", "batch", "world"), [(41, 8, 2), (23, 8, 2), (10, 4, 3), (97, 7, 4)])
def test_evaluation_shards_count_each_image_once(n: int, batch: int, world: int) -> None:
    from lightning_densenet.batches import BatchIndexSampler

    shards = [
        [b.tolist() for b in BatchIndexSampler(n, batch, shuffle=False, drop_last=False,
                                                rank=r, world_size=world)]
        for r in range(world)
    ]  # fmt: skip
    assert len({len(s) for s in shards}) == 1  # the same number of batches on every process
    assert all(0 < len(b) <= batch for s in shards for b in s)
    assert sorted(i for s in shards for b in s for i in b) == list(range(n))  # each once


def test_training_shards_deal_out_whole_batches_of_one_order() -> None:
    from lightning_densenet.batches import BatchIndexSampler

    one = BatchIndexSampler(100, 8, shuffle=True, drop_last=True, seed=3)
    one.set_epoch(2)
    order = [b.tolist() for b in one]  # 12 batches of 8
    shards = []
    for rank in range(3):
        sampler = BatchIndexSampler(100, 8, shuffle=True, drop_last=True, seed=3, rank=rank,
                                    world_size=3)  # fmt: skip
        sampler.set_epoch(2)
        shards.append([b.tolist() for b in sampler])
    assert [len(s) for s in shards] == [4, 4, 4]
    assert [shards[r][k] for k in range(4) for r in range(3)] == order  # batch 3k + r
