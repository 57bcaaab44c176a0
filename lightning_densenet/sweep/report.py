"""The results of a sweep, rewritten after every trial: trials.csv, trials.md and PNG plots.

Plots: the optimisation history of every finished trial (complete, pruned at its last
reported value, failed), Optuna's parameter importances
(`optuna.visualization.matplotlib`, which sees complete trials only), and the metric against
parameter count and against training time (the trials' `params` and `fit_seconds` user
attributes). Accuracies are drawn in %.

`python -m lightning_densenet.sweep.report FOLDER [--metric val/acc]` redraws the history
and the two scatter plots from `FOLDER/trials.csv` alone (the importances need the study).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from lightning_densenet.errors import UserError, command
from lightning_densenet.files import markdown_table, write_bytes_atomic, write_text_atomic

_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}


def rows(study: optuna.Study, metric: str) -> list[dict[str, Any]]:
    """One row per finished trial (complete, pruned or failed), by trial number.

    The metric of a pruned trial is its last reported value; `note` says why a trial was
    pruned or failed, and which trial a re-queued one repeats.
    """
    trials = [t for t in study.get_trials(deepcopy=False) if t.state in _ORDER]
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    out = []
    for t in trials:
        row = {
            "number": t.number,
            "state": t.state.name,
            metric: _metric(t),
            "params": t.user_attrs.get("params"),
            "fit_seconds": t.user_attrs.get("fit_seconds"),
            "epochs": t.user_attrs.get("epochs"),
        }
        row.update({name: t.params.get(name) for name in names})
        row["note"] = _note(t)
        out.append(row)
    if not any(r["note"] for r in out):
        for r in out:
            del r["note"]  # a column only when some trial has something to say
    return out


def write(study: optuna.Study, folder: Path, metric: str) -> None:
    """Writes trials.csv, trials.md and the PNGs into `folder` (each replaced atomically,
    so another process sharing the study never reads half a file)."""
    table = rows(study, metric)
    if not table:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    # Workers sharing the study rewrite these files at once: none removes another's temporary.
    write_text_atomic(folder / "trials.csv", buffer.getvalue(), remove_stale=False)
    markdown = _markdown(table, metric, study.direction)
    write_text_atomic(folder / "trials.md", markdown, remove_stale=False)
    _plots(study, folder, metric, table)


def _metric(t: FrozenTrial) -> float | None:
    if t.state == TrialState.COMPLETE:
        return t.value
    return t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None


def _note(t: FrozenTrial) -> str:
    parts = []
    if "failed_trial" in t.system_attrs:
        parts.append(f"repeats trial {t.system_attrs['failed_trial']}")
    if t.state == TrialState.PRUNED and t.intermediate_values:
        parts.append(f"pruned after epoch {max(t.intermediate_values)}")
    if t.state == TrialState.FAIL:
        parts.append(t.user_attrs.get("error", "interrupted before it finished"))
    return "; ".join(parts)


def _markdown(table: list[dict[str, Any]], metric: str, direction: Any) -> str:
    """Best first: complete trials by the metric, then pruned, then failed."""
    sign = -1 if direction == optuna.study.StudyDirection.MAXIMIZE else 1

    def key(r: dict[str, Any]) -> tuple[int, float]:
        value = r[metric]
        return _ORDER[TrialState[r["state"]]], sign * value if value is not None else 0.0

    columns = list(table[0])
    cells = ([_cell(c, r[c], metric) for c in columns] for r in sorted(table, key=key))
    return markdown_table(columns, cells)


def _cell(column: str, value: Any, metric: str) -> str:
    if value is None:
        return ""
    if column == metric:
        return f"{value:.4f}"
    if column == "params":
        return f"{value:,}"
    if column == "fit_seconds":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)  # markdown_table escapes a `|`


def _plots(study: optuna.Study, folder: Path, metric: str, table: list[dict[str, Any]]) -> None:
    from optuna.visualization import matplotlib as optuna_plots

    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    write_table_plots(table, folder, metric, maximize)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return
    # rc_context: Optuna's plots switch the global style to ggplot; keep that to them.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # importances from a handful of trials
        # Importances need two complete trials that differ in some parameter.
        varying = {n for t in complete for n in t.params if t.params != complete[0].params}
        if len(complete) >= 2 and varying:
            try:
                ax = optuna_plots.plot_param_importances(study, target_name=metric)
                # Optuna fits them to complete trials only: a parameter whose bad values
                # fail or get pruned can look unimportant.
                ax.set_title(
                    f"Hyperparameter importances (from the {len(complete)} complete of "
                    f"{len(table)} finished trials)"
                )
                _save(ax.figure, folder / "param_importances.png")
            except (RuntimeError, ValueError) as err:  # e.g. every trial scored the same
                print(f"sweep: no parameter importances yet ({err})")


def write_table_plots(
    table: list[dict[str, Any]], folder: Path, metric: str, maximize: bool = True
) -> None:
    """The plots drawn from the trials' rows alone: the history and the two scatter plots."""
    _save(history_figure(table, metric, maximize), folder / "optimization_history.png")
    for column, label, log in (
        ("params", "parameters", True),
        ("fit_seconds", "training time per trial (s)", False),
    ):
        _save(
            _scatter(table, column, metric, label, log),
            folder / f"{metric_file(metric)}_vs_{column}.png",
        )


def metric_file(metric: str) -> str:
    """A metric name as part of a file name: val/acc -> val_acc."""
    return metric.replace("/", "_")


def _percent(metric: str) -> bool:
    """Whether the metric is an accuracy (a fraction), drawn in %."""
    return metric.rsplit("/", 1)[-1].startswith("acc")


def _label(metric: str) -> str:
    return f"{metric}, %" if _percent(metric) else metric


def _value(metric: str, value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return 100 * float(value) if _percent(metric) else float(value)


# How each state is drawn; failed trials have no value and sit on the axis' floor.
_STYLE = {
    "COMPLETE": {"marker": "o", "color": "tab:blue", "label": "complete"},
    "PRUNED": {"marker": "v", "color": "tab:gray", "label": "pruned (last reported value)"},
    "FAIL": {"marker": "x", "color": "tab:red", "label": "failed (no value)"},
}


def _floor(table: list[dict[str, Any]], metric: str) -> float:
    values = [v for r in table if (v := _value(metric, r[metric])) is not None]
    return min([0.0, *values]) if _percent(metric) else (min(values) if values else 0.0)


def history_figure(table: list[dict[str, Any]], metric: str, maximize: bool = True) -> Figure:
    """Every finished trial by number: complete, pruned, failed; the best so far as a step."""
    fig = Figure(figsize=(7.5, 4.2), layout="constrained")
    ax = fig.subplots()
    floor = _floor(table, metric)
    for state, style in _STYLE.items():
        points = [r for r in table if r["state"] == state]
        if points:
            ys = [_value(metric, r[metric]) for r in points]
            ax.scatter(
                [r["number"] for r in points],
                [floor if y is None else y for y in ys],
                marker=style["marker"], color=style["color"],
                label=f"{style['label']}: {len(points)}", zorder=3,
            )  # fmt: skip
    complete = sorted(
        (r["number"], _value(metric, r[metric])) for r in table if r["state"] == "COMPLETE"
    )
    if complete:
        best, xs, ys = None, [], []
        for number, value in complete:
            if value is not None and (best is None or (value > best if maximize else value < best)):
                best = value
            xs.append(number)
            ys.append(best)
        last = max(r["number"] for r in table)
        ax.step([*xs, last], [*ys, ys[-1]], where="post", color="tab:blue", alpha=0.5,
                label="best complete so far")  # fmt: skip
    ax.set(xlabel="trial", ylabel=_label(metric))
    ax.set_title(f"Sweep history: {len(table)} finished trials")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _scatter(
    table: list[dict[str, Any]], column: str, metric: str, label: str, log: bool
) -> Figure:
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    floor = _floor(table, metric)
    for state, style in _STYLE.items():
        points = [r for r in table if r["state"] == state and r[column]]
        if not points:
            continue
        ys = [_value(metric, r[metric]) for r in points]
        ys = [floor if y is None else y for y in ys]
        ax.scatter(
            [r[column] for r in points], ys, marker=style["marker"], color=style["color"],
            label=style["label"],
        )  # fmt: skip
        for r, y in zip(points, ys, strict=True):
            ax.annotate(
                str(r["number"]), (r[column], y), fontsize=7, xytext=(3, 3),
                textcoords="offset points",
            )  # fmt: skip
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel(_label(metric))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def read_trials_csv(path: Path) -> list[dict[str, Any]]:
    """The rows of a trials.csv, numbers as numbers (empty cells: None)."""
    with path.open() as f:
        table = list(csv.DictReader(f))

    def number(text: str) -> Any:
        if text == "":
            return None
        try:
            return int(text)
        except ValueError:
            try:
                return float(text)
            except ValueError:
                return text

    return [{k: number(v) for k, v in r.items()} for r in table]


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_bytes_atomic(path, buffer.getvalue(), remove_stale=False)  # as in `write`
    if hasattr(fig, "canvas") and fig.canvas.manager is not None:  # a pyplot figure (Optuna's)
        import matplotlib.pyplot as plt

        plt.close(fig)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_densenet.sweep.report",
        description="Redraw a sweep's history and scatter plots from its trials.csv.",
    )
    parser.add_argument("folder", type=Path, help="a sweep's results folder (holds trials.csv)")
    parser.add_argument("--metric", default="val/acc")
    parser.add_argument("--minimize", action="store_true", help="a metric to minimise")
    args = parser.parse_args(argv)
    trials = args.folder / "trials.csv"
    if not trials.is_file():
        raise UserError(f"{trials} does not exist: pass the folder a sweep wrote its results to.")
    table = read_trials_csv(trials)
    if not table or args.metric not in table[0]:
        raise UserError(f"{trials} has no {args.metric!r} column: pass --metric.")
    write_table_plots(table, args.folder, args.metric, not args.minimize)
    print(f"Wrote the plots into {args.folder}")
    return 0


__all__ = ["history_figure", "metric_file", "read_trials_csv", "rows", "write"]

if __name__ == "__main__":
    sys.exit(main())
