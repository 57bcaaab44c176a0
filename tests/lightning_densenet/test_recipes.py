"""The CPU recipes end to end on tiny official-format CIFAR-10/100: fit, then test.

Only the model and the data are shrunk; every other setting of the recipe (bf16 autocast,
channels_last, the time budget, flip TTA, batch handling) runs as configured.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lightning_densenet.cli import main

REPO = Path(__file__).resolve().parents[2]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def _last(run: Path, key: str) -> float:
    with (run / "metrics.csv").open() as f:
        return float([r[key] for r in csv.DictReader(f) if r.get(key)][-1])


@pytest.mark.parametrize(
    ("name", "dataset"), [("cifar10_cpu", "cifar10"), ("cifar100_cpu", "cifar100")]
)
def test_cpu_recipe_fits_and_tests(tmp_path, make_cifar, name: str, dataset: str) -> None:
    cifar = make_cifar(tmp_path / "data", dataset, n_train=120, n_test=30)
    root = tmp_path / "runs"
    data = ["--data.root", str(cifar.root), "--data.download", "false"]
    args = ["fit", "--config", str(REPO / f"configs/{name}.yaml"), *data, *QUIET]
    args += ["--model.arch", "densenet_tiny", "--data.batch_size", "16", "--data.val_size", "40"]
    args += ["--data.eval_batch_size", "32", "--trainer.max_steps", "3"]
    args += ["--trainer.default_root_dir", str(root)]
    assert main(args) == 0
    run = root / name / "version_0"
    test = ["test", "--config", str(run / "config.yaml"), *data, *QUIET]
    test += [
        "--ckpt_path",
        str(run / "checkpoints/last.ckpt"),
        "--trainer.default_root_dir",
        str(root),
    ]
    assert main(test) == 0
    tested = root / f"{name}-test" / "version_0"
    accuracy = _last(tested, "test/acc")
    assert accuracy * 30 == pytest.approx(round(accuracy * 30))  # a count of the 30 images
    if dataset == "cifar100":  # top-5 next to top-1, in training and in test
        assert _last(run, "val/acc_top5") >= _last(run, "val/acc")
        assert _last(tested, "test/acc_top5") >= accuracy
