"""`python -m lightning_densenet`: fit, validate, test, predict, configs, checkpoints, errors."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml

from lightning_densenet.__main__ import main
from lightning_densenet.cli import run_cli
from lightning_densenet.module import load_network
from tests.fake_data import write_cifar
from tests.helpers import (
    DEBUG_CONFIG,
    FIT_CONFIGS,
    QUIET,
    cli_args,
    error_line,
    is_fraction_of,
    last,
    metrics,
)


@pytest.fixture
def cifar(tmp_path):
    """Tiny official-format CIFAR-10 (train + test split) written by the test."""
    return write_cifar(tmp_path / "cifar", "cifar10", n_train=200, n_test=40)


def _fit(tmp_path: Path, cifar, *extra: str) -> Path:
    assert main(cli_args("fit", cifar.root, tmp_path / "runs", *QUIET, *extra)) == 0
    runs = sorted((tmp_path / "runs/debug").glob("version_*"))
    return runs[-1]


class StepClock(pl.Callback):
    """The budget's clock, injected: `seconds` per optimiser step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.clock = lambda: self.seconds * pl_module.global_step


def test_fit_writes_a_complete_run(tmp_path, cifar) -> None:
    args = cli_args("fit", cifar.root, tmp_path / "runs", *QUIET, "--throughput.window_size", "3")
    run_cli(args, callbacks=[StepClock(6.0)])
    run = tmp_path / "runs/debug/version_0"
    assert run.is_dir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["arch"] == "densenet_tiny" and config["data"]["val_size"] == 40
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("epoch000-val_acc") for n in ckpts)
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    rows = metrics(run)
    assert is_fraction_of(last(rows, "val/acc"), 40)  # over the 40 validation images
    # Random labels, one short epoch: the mean loss per image stays at chance, ln 10.
    assert last(rows, "train/loss_epoch") == pytest.approx(math.log(10), abs=0.5)
    assert any(r.get("lr") for r in rows), "the learning-rate monitor logged nothing"
    # Lightning's ThroughputMonitor, every 2nd of the 5 batches of 32 (log_every_n_steps: 2),
    # images per second once the window of 3 has filled; validation is timed, not logged.
    assert last(rows, "train/batches") == 4 and last(rows, "train/samples") == 4 * 32
    seconds = {
        int(float(r["train/batches"])): float(r["train/time"]) for r in rows if r.get("train/time")
    }
    assert sorted(seconds) == [2, 4]
    # The window at batch 4 holds batches 2-4: the 64 images of batches 3 and 4 in their time.
    samples_per_sec = last(rows, "train/device/samples_per_sec")
    assert samples_per_sec == pytest.approx(64 / (seconds[4] - seconds[2]))
    assert not [k for k in rows[0] if k.startswith("validate/")]
    # The budget's clock (for curves.py), in minutes: 5 steps of 6 s each.
    assert last(rows, "train/minutes") == 0.5
    # A second run never touches the first.
    assert _fit(tmp_path, cifar).name == "version_1"
    assert {p.name for p in (run / "checkpoints").iterdir()} == ckpts


def test_test_and_predict_from_a_saved_run(tmp_path, trained_run) -> None:
    run, cifar = trained_run.run, trained_run.cifar
    ckpt = str(trained_run.ckpt)
    common = ["--config", str(run / "config.yaml"), "--ckpt_path", ckpt]
    common += ["--data.root", str(cifar.root), "--trainer.default_root_dir", str(tmp_path / "runs")]
    assert main(["test", *common, *QUIET]) == 0
    test_run = tmp_path / "runs/debug-test/version_0"
    # The accuracy, recomputed by hand from the checkpoint on the official test split.
    net = load_network(ckpt)
    state = torch.load(ckpt, weights_only=False)["ImageDataModule"]
    mean, std = torch.tensor(state["mean"]).view(3, 1, 1), torch.tensor(state["std"]).view(3, 1, 1)
    x = (torch.from_numpy(cifar.test_images).permute(0, 3, 1, 2) / 255 - mean) / std
    with torch.no_grad():
        probs = net(x).softmax(1)
    confidence, label = probs.max(1)
    acc = (label == torch.from_numpy(cifar.test_labels)).float().mean().item()
    assert last(metrics(test_run), "test/acc") == pytest.approx(acc, abs=1e-6)

    assert main(["predict", *common, *QUIET]) == 0
    with (tmp_path / "runs/debug-predict/version_0/predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 40
    assert rows[0]["class"] == cifar.classes[int(rows[0]["label"])]
    # Each image's most likely class and its softmax probability, as computed by hand.
    assert [int(r["label"]) for r in rows] == label.tolist()
    got = torch.tensor([float(r["confidence"]) for r in rows])
    torch.testing.assert_close(got, confidence, rtol=0, atol=2e-6)  # written with 6 decimals


def test_validate_subcommand(tmp_path, trained_run) -> None:
    run = trained_run.run
    args = ["validate", "--config", str(run / "config.yaml"), "--ckpt_path", str(trained_run.ckpt)]
    args += ["--data.root", str(trained_run.cifar.root)]
    args += ["--trainer.default_root_dir", str(tmp_path / "runs")]
    assert main([*args, *QUIET]) == 0
    # last.ckpt holds the weights the fit validated at its end: the same split, the same numbers.
    fitted, validated = metrics(run), metrics(tmp_path / "runs/debug-validate/version_0")
    assert last(validated, "val/acc") == last(fitted, "val/acc")
    assert last(validated, "val/loss") == pytest.approx(last(fitted, "val/loss"), rel=1e-6)


def test_runtime_options_on_the_command_line_beat_the_checkpoint(tmp_path, cifar) -> None:
    # LightningCLI loads a checkpoint's hyperparameters over the model config; options that
    # only change how the network runs must still follow the command line.
    run = _fit(tmp_path, cifar, "--model.tta", "true", "--trainer.limit_train_batches", "1")
    args = ["validate", "--ckpt_path", str(run / "checkpoints/last.ckpt"), *QUIET]
    args += ["--data.root", str(cifar.root), "--data.val_size", "40"]
    args += ["--trainer.default_root_dir", str(tmp_path / "runs")]
    assert run_cli(args).model.hparams.tta is True  # from the checkpoint
    cli = run_cli([*args, "--model.tta", "false", "--model.channels_last=true"])
    assert cli.model.hparams.tta is False and cli.model.hparams.channels_last is True
    assert cli.model.hparams.arch == "densenet_tiny"  # what the network is: the checkpoint's


def test_print_config(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        # skip_first_batches: in the config.yaml of runs before the ThroughputMonitor.
        args = ["--throughput.skip_first_batches", "2", "--print_config"]
        main(["fit", "--config", str(DEBUG_CONFIG), *args])
    assert exit_info.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["throughput"]["window_size"] == 100
    assert config["model"]["arch"] == "densenet_tiny"
    assert config["data"]["dataset"] == "cifar10" and config["checkpoint"]["monitor"] == "val/acc"
    assert config["trainer"]["max_epochs"] == 1


@pytest.mark.parametrize("config", FIT_CONFIGS, ids=lambda p: p.stem)  # sweeps: test_sweep.py
def test_every_config_parses(config: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out)["model"]["arch"]


def test_architecture_fields_in_yaml(tmp_path, cifar) -> None:
    arch = "{growth_rate: 4, block_config: [1, 2], bottleneck: false, compression: 1.0}"
    run = _fit(tmp_path, cifar, "--model.arch", arch)
    hparams = torch.load(run / "checkpoints/last.ckpt", weights_only=False)["hyper_parameters"]
    assert hparams["arch"]["block_config"] == [1, 2]


def test_offline_download_fails_in_one_sentence(tmp_path) -> None:
    # The real entry point, in a subprocess: exit code 2 and one line, no traceback.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_densenet",
            "fit",
            "--config",
            str(DEBUG_CONFIG),
            "--data.root",
            str(tmp_path / "none"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = error_line(result.stderr)
    assert "Downloading cifar10" in line and "--data.root" in line


# Bad input (configs, data, checkpoints) is the table in test_errors.py.


def test_real_data_learns(tmp_path, cifar10_jpeg_tar, image_cache) -> None:
    """Two epochs of densenet_tiny on 4,000 real CIFAR-10 images beat chance (10%) clearly."""
    args = ["fit", "--config", str(DEBUG_CONFIG), "--data.dataset", "imagefolder"]
    args += ["--data.root", str(cifar10_jpeg_tar), "--data.cache_dir", str(image_cache)]
    args += [
        "--data.max_train_images",
        "4000",
        "--data.val_size",
        "1000",
        "--data.batch_size",
        "32",
    ]
    args += ["--trainer.max_epochs", "2", "--trainer.limit_train_batches", "null"]
    args += ["--trainer.limit_val_batches", "null", "--model.schedule", "onecycle"]
    args += ["--model.lr", "0.2", "--trainer.default_root_dir", str(tmp_path / "runs")]
    assert main([*args, *QUIET]) == 0
    rows = metrics(tmp_path / "runs/debug/version_0")
    val_acc = last(rows, "val/acc")
    print(f"densenet_tiny, 2 epochs on 4,000 images: val/acc = {val_acc:.3f}")
    assert val_acc > 0.25


def test_bf16_mixed_precision_on_cpu(tmp_path, cifar) -> None:
    run = _fit(
        tmp_path, cifar, "--trainer.precision", "bf16-mixed", "--model.channels_last", "true"
    )
    rows = metrics(run)
    # bf16 autocast on random labels: still the loss of chance, validated on all 40 images.
    assert last(rows, "train/loss_epoch") == pytest.approx(math.log(10), abs=0.5)
    assert is_fraction_of(last(rows, "val/acc"), 40)
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert state["state_dict"]["model.classifier.weight"].dtype == torch.float32  # fp32 master
