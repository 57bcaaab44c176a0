"""What `fit` tells you and what reads its runs back: the end-of-fit summary, `runs`, the
learning curve's image-size phases, the progress bar's budget items and the model summary's
FLOPs."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelSummary, RichProgressBar, TQDMProgressBar
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.model_summary.model_summary import get_human_readable_count

from lightning_densenet.__main__ import main
from lightning_densenet.curves import (
    image_size_phases,
    learning_curve_figure,
    read_epochs,
    step_to_minutes,
)
from lightning_densenet.module import DenseNetClassifier
from lightning_densenet.progress import budget_items
from lightning_densenet.runs import find_runs
from lightning_densenet.summary import (
    DenseNetModelSummary,
    forward_flops,
    read_fit_report,
    use_reporting_callbacks,
)
from tests.fake_data import write_cifar
from tests.helpers import QUIET, cli_args, last, metrics


def _stdout_of(args: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real tiny fit runs under one folder, the first one tested with the command its
    summary printed: (root, first run, second run, the first fit's stdout)."""
    tmp = tmp_path_factory.mktemp("reporting")
    cifar = write_cifar(tmp / "cifar", "cifar10", n_train=200, n_test=40)
    root = tmp / "runs"
    # 2 epochs of 5 batches, at 16, 24, then 32 px; the throughput window fills at batch 3.
    first = ["--trainer.max_epochs", "2", "--model.progressive_size", "16"]
    first += ["--throughput.window_size", "3"]
    printed = _stdout_of(cli_args("fit", cifar.root, root, *QUIET, *first))
    _stdout_of(cli_args("fit", cifar.root, root, *QUIET, "--model.lr", "0.05"))
    return root, root / "debug/version_0", root / "debug/version_1", printed


def _number(pattern: str, text: str) -> list[float]:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return [float(g.replace(",", "")) for g in found.groups()]


def test_the_end_of_fit_summary_is_the_runs_metrics(runs) -> None:
    _, run, _, printed = runs
    rows = metrics(run)
    val = {int(r["epoch"]): float(r["val/acc"]) for r in rows if r.get("val/acc")}
    assert printed.count("Fit finished: ") == 1 and str(run) in printed
    epochs, steps, minutes = _number(r"\((\d+) epochs, ([\d,]+) steps, ([\d.]+) minutes\)", printed)
    assert epochs == 2 == len(val)
    assert steps == 10 == max(int(r["step"]) for r in rows) + 1
    assert minutes == pytest.approx(last(rows, "train/minutes"), abs=0.05)
    best, best_epoch, last_acc = _number(r"best ([\d.]+)% \(epoch (\d+)\), last ([\d.]+)%", printed)
    assert best == pytest.approx(100 * max(val.values()), abs=0.005)
    assert best_epoch == 1 + max(val, key=lambda e: (val[e], -e))
    assert last_acc == pytest.approx(100 * val[max(val)], abs=0.005)
    pflop, gflops = _number(r"compute\s+(\S+) PFLOP, ([\d.]+) GFLOP/s", printed)
    assert pflop == pytest.approx(last(rows, "train/pflop"), rel=1e-3)
    assert gflops == pytest.approx(last(rows, "train/gflops_per_s"), abs=0.05)
    window, whole = _number(r"images/s\s+([\d.]+) over the last 3 batches, ([\d.]+) over", printed)
    assert window == pytest.approx(last(rows, "train/device/samples_per_sec"), abs=0.05)
    assert whole == pytest.approx(last(rows, "train/samples") / last(rows, "train/time"), abs=0.05)
    report = read_fit_report(run)
    assert report.pflop == last(rows, "train/pflop") and report.best_val_acc == max(val.values())
    # The checkpoints it names exist, and the test command it prints runs as printed.
    best_ckpt = re.search(r"best (\S+\.ckpt)", printed).group(1)
    assert Path(best_ckpt).is_file() and (run / "checkpoints/last.ckpt").is_file()
    command = printed.splitlines()[-1].strip()
    assert command.startswith("python -m lightning_densenet test --config ")
    assert command.endswith(str(run / "checkpoints/last.ckpt"))
    assert main([*shlex.split(command)[3:], *QUIET]) == 0
    tested = metrics(run.parent.parent / "debug-test/version_0")
    assert last(tested, "test/acc") >= 0


def test_runs_lists_both_runs_with_the_test_accuracy(runs, capsys) -> None:
    root, first, second, _ = runs
    if not (root / "debug-test/version_0").is_dir():  # run alone: test as the summary says
        ckpt = first / "checkpoints/last.ckpt"
        args = ["test", "--config", str(first / "config.yaml"), "--ckpt_path", str(ckpt)]
        assert main([*args, *QUIET]) == 0
    tested = last(metrics(root / "debug-test/version_0"), "test/acc")
    found = find_runs(root)
    assert [r.path for r in found] == [first, second]  # the test run is not a fit run
    for row in found:
        rows = metrics(row.path)
        assert row.best_val_acc == max(float(r["val/acc"]) for r in rows if r.get("val/acc"))
        assert row.minutes == last(rows, "train/minutes")
        assert row.checkpoint == row.path / "checkpoints/last.ckpt"
        assert row.config == "debug" and row.arch == "densenet_tiny"
    assert [r.epochs for r in found] == [2, 1]
    assert found[0].test_acc == tested and found[1].test_acc != found[1].test_acc  # NaN

    capsys.readouterr()
    assert main(["runs", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["run", "config", "arch", "date"]
    assert [line.split()[0] for line in lines[1:]] == ["debug/version_0", "debug/version_1"]
    assert f"{100 * tested:.2f}%" in lines[1] and lines[2].split()[7] == "-"  # not tested
    assert main(["runs", str(root / "nowhere")]) == 2


def test_the_curves_phases_are_the_logged_image_sizes(runs) -> None:
    _, run, _, _ = runs
    rows = [r for r in metrics(run) if r.get("train/image_size")]
    logged = [(int(r["step"]), int(float(r["train/image_size"]))) for r in rows]
    curve = read_epochs(run / "metrics.csv")
    phases = image_size_phases(curve)
    sizes = list(dict.fromkeys(size for _, size in logged))
    assert [p.size for p in phases] == sizes == [16, 24, 32]
    firsts = [next(step for step, size in logged if size == s) for s in sizes]
    assert [p.first_step for p in phases] == [0, *firsts[1:]]
    assert phases[-1].end_minutes == pytest.approx(curve["minutes"][-1])
    # Shaded in the accuracy panel over exactly those minutes, and the test accuracy marked.
    fig = learning_curve_figure(run, test_acc=0.5)
    spans = [p.get_x() for p in fig.axes[0].patches]
    assert spans == pytest.approx([p.start_minutes for p in phases])
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]  # the twin's legend
    assert "test accuracy 50.00%" in labels and "trained at 24 px" in labels
    assert fig.get_suptitle().startswith("debug: densenet_tiny on cifar10, 2 epochs")


# A run logged every 2 steps, 3 epochs of 4 steps, at 16 px then 32 px.
PHASES_CSV = """epoch,step,train/image_size,train/minutes,val/acc
0,1,16.0,,
0,3,16.0,,
0,3,,1.0,0.2
1,5,16.0,,
1,7,32.0,,
1,7,,2.0,0.4
2,9,32.0,,
2,11,32.0,,
2,11,,3.5,0.5
"""


def test_phases_and_minutes_from_a_metrics_csv(tmp_path) -> None:
    (tmp_path / "metrics.csv").write_text(PHASES_CSV)
    curve = read_epochs(tmp_path / "metrics.csv")
    # Step k ends once k + 1 steps are done; minutes are linear between epoch ends.
    assert step_to_minutes(curve, [3, 5, 11]) == pytest.approx([1.0, 1.5, 3.5])
    phases = image_size_phases(curve)
    assert [(p.size, p.first_step, p.end_step) for p in phases] == [(16, 0, 7), (32, 7, 12)]
    assert [p.start_minutes for p in phases] == pytest.approx([0.0, 1.75])
    assert [p.end_minutes for p in phases] == pytest.approx([1.75, 3.5])
    plain = read_epochs(tmp_path / "metrics.csv") | {"size_step": [], "image_size": []}
    assert image_size_phases(plain) == []


def test_the_progress_bar_shows_the_budget_and_the_image_size() -> None:
    trainer = SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING),
        sanity_checking=False,
        callback_metrics={
            "train/pflop": torch.tensor(0.125),
            "train/image_size": torch.tensor(24.0),
        },
    )
    module = SimpleNamespace(
        hparams={"budget_minutes": 27, "budget_pflop": 0.25}, budget_used_s=lambda: 600.0
    )
    assert budget_items(trainer, module) == {"min": "10.0/27", "PFLOP": "0.125/0.25", "px": "24"}
    module.hparams = {"budget_minutes": None, "budget_pflop": None}
    trainer.callback_metrics = {}
    assert budget_items(trainer, module) == {"min": "10.0"}
    trainer.state.fn = TrainerFn.TESTING
    assert budget_items(trainer, module) == {}


def test_the_trainers_own_bar_and_summary_become_ours() -> None:
    trainer = pl.Trainer(logger=False, enable_checkpointing=False)
    bar = trainer.progress_bar_callback
    use_reporting_callbacks(trainer)
    assert trainer.progress_bar_callback is bar  # the same object, its settings kept
    assert isinstance(bar, (TQDMProgressBar, RichProgressBar)) and hasattr(bar, "get_metrics")
    assert type(bar).__name__.startswith("Budget")
    summaries = [c for c in trainer.callbacks if isinstance(c, ModelSummary)]
    assert len(summaries) == 1 and type(summaries[0]).__name__.startswith("DenseNet")
    quiet = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    use_reporting_callbacks(quiet)
    assert quiet.progress_bar_callback is None
    assert not [c for c in quiet.callbacks if isinstance(c, ModelSummary)]


def test_a_compiled_modules_summary_counts_its_flops(caplog) -> None:
    """`compile` sets example_input_array to None; the summary then counts on a twin."""
    module = DenseNetClassifier("densenet_tiny", lr=0.01)
    module.example_input_array = None  # what setup() does when compiling
    data = torch.utils.data.TensorDataset(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
    trainer = pl.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[DenseNetModelSummary()],
    )  # fmt: skip
    with caplog.at_level(logging.INFO):
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4))
    text = caplog.text
    flops = get_human_readable_count(int(forward_flops(module.model, 2, 32, 32)))
    assert re.search(rf"{re.escape(flops)}\s+Total Flops", text), text
    assert "Training FLOPs per 32x32 image (forward + backward): 0.013 G" in text
