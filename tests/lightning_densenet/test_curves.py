"""The learning-curve plot of a run, from the CSV logger's metrics.csv."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_densenet.curves import main, read_epochs

# As the CSV logger writes it: step rows (lr, train/loss_step) and epoch rows, some epochs
# split over two rows (training metrics, then validation metrics).
METRICS = """epoch,lr,step,train/loss_step,train/loss_epoch,train/epoch_time_s,val/acc
,0.1,0,,,,
0,,9,2.1,,,
0,,9,,,,0.31
0,,9,,2.2,30.0,
,0.05,10,,,,
1,,19,,1.5,60.0,0.52
"""


def _run(tmp_path: Path) -> Path:
    (tmp_path / "metrics.csv").write_text(METRICS)
    return tmp_path


def test_epochs_are_merged_and_minutes_accumulate(tmp_path) -> None:
    curve = read_epochs(_run(tmp_path) / "metrics.csv")  # a run logged before train/minutes
    assert curve["epoch"] == [1, 2] and curve["val_acc"] == [0.31, 0.52]
    assert curve["train_loss"] == [2.2, 1.5] and curve["minutes"] == pytest.approx([0.5, 1.5])
    assert curve["lr_step"] == [0, 10] and curve["lr"] == [0.1, 0.05]


def test_minutes_are_the_budget_clock(tmp_path) -> None:
    metrics = METRICS.replace("train/epoch_time_s", "train/minutes").replace("30.0", "0.75")
    (tmp_path / "metrics.csv").write_text(metrics.replace("60.0", "1.6"))
    curve = read_epochs(tmp_path / "metrics.csv")
    assert curve["epoch"] == [1, 2] and curve["minutes"] == [0.75, 1.6]


# With norm_weight_decay the lr has two groups; train/pflop is logged with the step rows.
METRICS_WITH_COMPUTE = """epoch,lr/pg1,lr/pg2,step,train/pflop,train/minutes,val/acc
,0.1,0.1,0,,,
0,,,9,0.25,,
0,,,9,,0.75,0.31
,0.05,0.05,10,,,
1,,,19,0.5,,
1,,,19,,1.6,0.52
"""


def test_compute_and_grouped_lr_columns_are_read(tmp_path) -> None:
    (tmp_path / "metrics.csv").write_text(METRICS_WITH_COMPUTE)
    curve = read_epochs(tmp_path / "metrics.csv")
    assert curve["lr"] == [0.1, 0.05] and curve["pflop"] == [0.25, 0.5]
    assert main([str(tmp_path)]) == 0


def test_the_command_writes_a_png(tmp_path, capsys) -> None:
    assert main([str(_run(tmp_path))]) == 0
    assert (tmp_path / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "does not exist: pass a run folder" in capsys.readouterr().err
