"""The learning curve of a run as a PNG: `python -m lightning_densenet curves RUN_DIR [OUT.png]`.

Reads the run's `metrics.csv` (the CSV logger's) and draws, side by side:

- validation accuracy and the training loss per epoch against minutes of training
  (`train/minutes`, the time budget's clock: compilation, validation and resumed runs
  included; runs logged before it have the sum of `train/epoch_time_s`), with the test
  accuracy marked where the run was tested;
- the accuracy against training compute (`train/pflop`, where the run logged it: the same on
  any machine);
- the learning rate against the same minutes.

With progressive resizing the phases at each training image size (`train/image_size`, 16, 24
and 32 px in the CPU recipe) are shaded in every panel. Steps are placed in minutes by
interpolating between the epoch ends, where `train/minutes` is logged, and a phase starts at
the first step that logged its size, so a boundary is exact to within `log_every_n_steps`.
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from lightning_densenet.errors import UserError, command
from lightning_densenet.runs import tested_accuracies

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def read_epochs(metrics_csv: Path) -> dict[str, list[float]]:
    """Per-epoch columns of a metrics.csv: epoch, val/acc, train/loss_epoch, minutes, PFLOP
    (NaN where not logged), the step each epoch ended at; and per logged step the lr, the
    training image size and the compute so far."""
    if not metrics_csv.is_file():
        raise UserError(f"{metrics_csv} does not exist: pass a run folder written by fit.")
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    epochs: dict[int, dict[str, float]] = {}
    lr: list[tuple[int, float]] = []
    sizes: list[tuple[int, float]] = []
    pflop: list[tuple[int, float]] = []
    for row in rows:
        step = int(row["step"]) if row.get("step") else None
        # One parameter group logs `lr`; several (norm_weight_decay) `lr/pg1`, `lr/pg2`, ...
        if (value := row.get("lr") or row.get("lr/pg1")) and step is not None:
            lr.append((step, float(value)))
        if row.get("train/image_size") and step is not None:
            sizes.append((step, float(row["train/image_size"])))
        if row.get("train/pflop") and step is not None:
            pflop.append((step, float(row["train/pflop"])))
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
        "epoch_end_step": [epochs[e].get("step", float("nan")) for e in done],
        "lr_step": [s for s, _ in lr],
        "lr": [v for _, v in lr],
        "size_step": [s for s, _ in sizes],
        "image_size": [v for _, v in sizes],
        "pflop_step": [s for s, _ in pflop],
        "pflop_at_step": [v for _, v in pflop],
    }


def step_to_minutes(curve: dict[str, list[float]], steps: list[float]) -> list[float]:
    """Minutes of training at the given optimiser steps: linear between the epoch ends (a
    step logged as k ends once k + 1 steps are done; training starts at minute 0)."""
    ends = [s + 1 for s in curve["epoch_end_step"]]
    if not ends or any(s != s for s in ends):
        return [float("nan")] * len(steps)
    xs, ys = [0.0, *ends], [0.0, *curve["minutes"]]
    return [float(m) for m in np.interp([s + 1 for s in steps], xs, ys)]


@dataclass(frozen=True)
class Phase:
    """A stretch of training at one image size, in steps and in minutes."""

    size: int
    first_step: int  # the first step that logged this size (0 for the first phase)
    end_step: int  # the first step of the next phase, or the last step logged + 1
    start_minutes: float
    end_minutes: float


def image_size_phases(curve: dict[str, list[float]]) -> list[Phase]:
    """The phases of progressive resizing, from `train/image_size` (none if not logged)."""
    runs: list[list[int]] = []  # [size, first step]
    for step, size in zip(curve["size_step"], curve["image_size"], strict=True):
        if not runs or runs[-1][0] != int(size):
            runs.append([int(size), 0 if not runs else int(step)])
    if not runs:
        return []
    last = max(s for s in [*curve["size_step"], *curve["epoch_end_step"]] if s == s) + 1
    bounds = [first for _, first in runs] + [int(last)]
    minutes = step_to_minutes(curve, [b - 1 for b in bounds])
    minutes[0] = 0.0
    return [
        Phase(size, bounds[i], bounds[i + 1], minutes[i], minutes[i + 1])
        for i, (size, _) in enumerate(runs)
    ]


def run_test_accuracy(run: Path) -> float | None:
    """The test accuracy of the run: its `test_metrics.csv` (a report's copy), else the newest
    `test` run of one of its checkpoints beside it (`runs/<name>-test/version_N/`)."""
    kept = run / "test_metrics.csv"
    if kept.is_file():
        with kept.open() as f:
            values = [float(r["test/acc"]) for r in csv.DictReader(f) if r.get("test/acc")]
        return values[-1] if values else None
    root = run.parent.parent if run.name.startswith("version_") else run.parent
    return tested_accuracies(root).get(run.resolve()) if root.is_dir() else None


def default_title(run: Path) -> str:
    """`<experiment>: <arch> on <data>, <budget>` from the run's config.yaml."""
    try:
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return str(run)
    model, data = config.get("model") or {}, config.get("data") or {}
    name = run.parent.name if run.name.startswith("version_") else run.name
    arch = model.get("arch", "?")
    if isinstance(arch, dict):
        arch = f"DenseNet k={arch.get('growth_rate')} blocks {arch.get('block_config')}"
    dataset = data.get("dataset", "?")
    if dataset == "imagefolder" and data.get("root"):
        dataset = Path(str(data["root"])).name
    if model.get("budget_pflop"):
        budget = f"{model['budget_pflop']:g} PFLOP budget"
    elif model.get("budget_minutes"):
        budget = f"{model['budget_minutes']:g}-minute budget"
    else:
        budget = f"{(config.get('trainer') or {}).get('max_epochs', '?')} epochs"
    return f"{name}: {arch} on {dataset}, {budget}"


PHASE_COLORS = ("#dbe9f6", "#fde0c5", "#e5f5e0", "#f2e1f5")


def learning_curve_figure(
    run: Path, title: str | None = None, test_acc: float | None = None
) -> Figure:
    """The figure `plot_learning_curve` saves; `test_acc` (a fraction) defaults to the run's."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    curve = read_epochs(run / "metrics.csv")
    if test_acc is None:
        test_acc = run_test_accuracy(run)
    phases = image_size_phases(curve)
    with_compute = any(p == p for p in curve["pflop"])  # not all NaN
    fig = Figure(figsize=(15 if with_compute else 10.5, 4.2), layout="constrained")
    axes = fig.subplots(1, 3 if with_compute else 2)
    acc_ax, lr_ax = axes[0], axes[-1]
    acc = [100 * a for a in curve["val_acc"]]

    def shade(ax: Any, bounds: list[tuple[float, float]]) -> None:
        for (lo, hi), color in zip(bounds, PHASE_COLORS * 2, strict=False):
            ax.axvspan(lo, hi, color=color, alpha=0.8, linewidth=0, zorder=0)

    shade(acc_ax, [(p.start_minutes, p.end_minutes) for p in phases])
    acc_ax.plot(curve["minutes"], acc, "o-", ms=3.5, label="validation accuracy")
    for m, a, e in zip(curve["minutes"], acc, curve["epoch"], strict=True):
        acc_ax.annotate(str(e), (m, a), textcoords="offset points", xytext=(0, 5), size=6)
    if test_acc is not None and curve["minutes"]:
        acc_ax.plot(
            [curve["minutes"][-1]], [100 * test_acc], "*", ms=13, color="tab:green",
            label=f"test accuracy {100 * test_acc:.2f}%",
        )  # fmt: skip
    acc_ax.set(xlabel="minutes of training (epoch numbers at the points)", ylabel="accuracy, %")
    acc_ax.set_title("accuracy and training loss", fontsize=10)
    acc_ax.grid(alpha=0.3)
    loss_ax = acc_ax.twinx()
    loss_ax.plot(
        curve["minutes"], curve["train_loss"], "s--", ms=3, color="tab:red", alpha=0.6,
        label="training loss",
    )  # fmt: skip
    loss_ax.set_ylabel("training loss (with label smoothing)", color="tab:red")
    handles = acc_ax.get_legend_handles_labels()[0] + loss_ax.get_legend_handles_labels()[0]
    handles += [
        Patch(color=color, label=f"trained at {p.size} px")
        for p, color in zip(phases, PHASE_COLORS * 2, strict=False)
    ]
    loss_ax.legend(handles=handles, fontsize=7, loc="center right", framealpha=0.9)

    if with_compute:
        pflop_ax = axes[1]
        if phases and curve["pflop_step"]:
            at = np.interp(
                [p.first_step for p in phases] + [phases[-1].end_step - 1],
                curve["pflop_step"], curve["pflop_at_step"],
            )  # fmt: skip
            shade(pflop_ax, [(float(at[i]), float(at[i + 1])) for i in range(len(phases))])
        pflop_ax.plot(curve["pflop"], acc, "o-", ms=3.5)
        if test_acc is not None:
            pflop_ax.plot([curve["pflop"][-1]], [100 * test_acc], "*", ms=13, color="tab:green")
        pflop_ax.set(xlabel="training compute, PFLOP", ylabel="validation accuracy, %")
        pflop_ax.set_title("accuracy against compute (the same on any machine)", fontsize=10)
        pflop_ax.grid(alpha=0.3)

    shade(lr_ax, [(p.start_minutes, p.end_minutes) for p in phases])
    lr_ax.plot(step_to_minutes(curve, curve["lr_step"]), curve["lr"])
    lr_ax.set(xlabel="minutes of training", ylabel="learning rate")
    lr_ax.set_title("learning rate (the schedule runs on the budget's clock)", fontsize=10)
    lr_ax.grid(alpha=0.3)
    fig.suptitle(title or default_title(run))
    return fig


def plot_learning_curve(run: Path, out: Path, title: str | None = None) -> Path:
    fig = learning_curve_figure(run, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_densenet curves",
        description="Draw a fit run's learning curve (accuracy and loss against training "
        "minutes and compute, the learning rate, the image-size phases, the test accuracy "
        "where the run was tested) from its metrics.csv.",
    )
    parser.add_argument("run", type=Path, help="a run folder written by fit (holds metrics.csv)")
    parser.add_argument("out", type=Path, nargs="?", help="default: RUN/learning_curve.png")
    parser.add_argument("--title", help="default: the config's name, network, data and budget")
    args = parser.parse_args(argv)
    out = plot_learning_curve(args.run, args.out or args.run / "learning_curve.png", args.title)
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
