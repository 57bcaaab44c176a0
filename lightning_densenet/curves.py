"""The learning curve of a run as a PNG: `python -m lightning_densenet.curves RUN_DIR [OUT.png]`.

Reads the run's `metrics.csv` (the CSV logger's) and plots validation accuracy and the
training loss per epoch against wall-clock minutes of training (`train/minutes`, the time
budget's clock: validation and resumed runs included; runs logged before it have the sum
of `train/epoch_time_s`), the accuracy against training compute (`train/pflop`, where the
run logged it: the same on any machine), and the learning rate: what a budgeted recipe
looks like from start to end.
"""

from __future__ import annotations

import argparse
import csv
import sys
from itertools import accumulate
from pathlib import Path

from lightning_densenet.errors import UserError, command


def read_epochs(metrics_csv: Path) -> dict[str, list[float]]:
    """Per-epoch columns of a metrics.csv: epoch, val/acc, train/loss_epoch, minutes, PFLOP
    (NaN where not logged), and the lr per step."""
    if not metrics_csv.is_file():
        raise UserError(f"{metrics_csv} does not exist: pass a run folder written by fit.")
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    epochs: dict[int, dict[str, float]] = {}
    lr: list[tuple[int, float]] = []
    for row in rows:
        # One parameter group logs `lr`; several (norm_weight_decay) `lr/pg1`, `lr/pg2`, ...
        if value := row.get("lr") or row.get("lr/pg1"):
            lr.append((int(row["step"]), float(value)))
        if row.get("epoch"):
            merged = epochs.setdefault(int(row["epoch"]), {})
            merged |= {k: float(v) for k, v in row.items() if v and k != "epoch"}
    done = [e for e in sorted(epochs) if "val/acc" in epochs[e]]
    if all("train/minutes" in epochs[e] for e in done):
        minutes = [epochs[e]["train/minutes"] for e in done]
    else:  # a run logged before train/minutes
        seconds = accumulate(epochs[e].get("train/epoch_time_s", 0.0) for e in done)
        minutes = [s / 60 for s in seconds]
    return {
        "epoch": [e + 1 for e in done],
        "val_acc": [epochs[e]["val/acc"] for e in done],
        "train_loss": [epochs[e].get("train/loss_epoch", float("nan")) for e in done],
        "minutes": minutes,
        # The compute at the end of each epoch: the last step's count (rows come in order).
        "pflop": [epochs[e].get("train/pflop", float("nan")) for e in done],
        "lr_step": [s for s, _ in lr],
        "lr": [v for _, v in lr],
    }


def plot_learning_curve(run: Path, out: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = read_epochs(run / "metrics.csv")
    with_compute = any(p == p for p in curve["pflop"])  # not all NaN
    fig, axes = plt.subplots(1, 3 if with_compute else 2, figsize=(15 if with_compute else 10, 3.8))
    acc_ax, lr_ax = axes[0], axes[-1]
    acc_ax.plot(curve["minutes"], [100 * a for a in curve["val_acc"]], "o-", label="val/acc")
    for m, a, e in zip(curve["minutes"], curve["val_acc"], curve["epoch"], strict=True):
        acc_ax.annotate(str(e), (m, 100 * a), textcoords="offset points", xytext=(0, 5), size=7)
    acc_ax.set(xlabel="training minutes (epoch numbers at the points)", ylabel="accuracy, %")
    acc_ax.grid(alpha=0.3)
    loss_ax = acc_ax.twinx()
    loss_ax.plot(curve["minutes"], curve["train_loss"], "s--", color="tab:red", alpha=0.6)
    loss_ax.set_ylabel("training loss (with label smoothing)", color="tab:red")
    if with_compute:
        axes[1].plot(curve["pflop"], [100 * a for a in curve["val_acc"]], "o-")
        axes[1].set(xlabel="training compute, PFLOP", ylabel="val/acc, %", title="per compute")
        axes[1].grid(alpha=0.3)
    lr_ax.plot(curve["lr_step"], curve["lr"])
    lr_ax.set(xlabel="optimiser step", ylabel="learning rate", title="schedule")
    lr_ax.grid(alpha=0.3)
    fig.suptitle(title or str(run))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_densenet.curves",
        description="Draw a fit run's learning curve (accuracy and loss against training "
        "minutes, and the learning rate) from its metrics.csv.",
    )
    parser.add_argument("run", type=Path, help="a run folder written by fit (holds metrics.csv)")
    parser.add_argument("out", type=Path, nargs="?", help="default: RUN/learning_curve.png")
    args = parser.parse_args(argv)
    print(f"Wrote {plot_learning_curve(args.run, args.out or args.run / 'learning_curve.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
