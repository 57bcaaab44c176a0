"""The results of a sweep, rewritten after every trial: trials.csv, trials.md and PNG plots.

Plots: Optuna's optimisation history and parameter importances
(`optuna.visualization.matplotlib`), and the metric against parameter count and against
training time (the trials' `params` and `fit_seconds` user attributes).
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any

import matplotlib
import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

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
    _replace(folder / "trials.csv", buffer.getvalue().encode())
    _replace(folder / "trials.md", _markdown(table, metric, study.direction).encode())
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
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in sorted(table, key=key):
        lines.append("| " + " | ".join(_cell(c, r[c], metric) for c in columns) + " |")
    return "\n".join(lines) + "\n"


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
    return str(value).replace("|", "\\|")


def _plots(study: optuna.Study, folder: Path, metric: str, table: list[dict[str, Any]]) -> None:
    from optuna.visualization import matplotlib as optuna_plots

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        return
    # rc_context: Optuna's plots switch the global style to ggplot; keep that to them.
    with warnings.catch_warnings(), matplotlib.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # importances from a handful of trials
        ax = optuna_plots.plot_optimization_history(study, target_name=metric)
        _save(ax.figure, folder / "optimization_history.png")
        # Importances need two complete trials that differ in some parameter.
        varying = {n for t in complete for n in t.params if t.params != complete[0].params}
        if len(complete) >= 2 and varying:
            try:
                ax = optuna_plots.plot_param_importances(study, target_name=metric)
                _save(ax.figure, folder / "param_importances.png")
            except (RuntimeError, ValueError) as err:  # e.g. every trial scored the same
                print(f"sweep: no parameter importances yet ({err})")
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


def _scatter(
    table: list[dict[str, Any]], column: str, metric: str, label: str, log: bool
) -> Figure:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for state, color in (("COMPLETE", "tab:blue"), ("PRUNED", "tab:gray")):
        points = [r for r in table if r["state"] == state and r[column] and r[metric] is not None]
        if not points:
            continue
        ax.scatter(
            [r[column] for r in points],
            [r[metric] for r in points],
            color=color,
            label=state.lower(),
        )
        for r in points:
            ax.annotate(
                str(r["number"]),
                (r[column], r[metric]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def _save(fig: Any, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    _replace(path, buffer.getvalue())
    if hasattr(fig, "canvas") and fig.canvas.manager is not None:  # a pyplot figure (Optuna's)
        import matplotlib.pyplot as plt

        plt.close(fig)


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


__all__ = ["metric_file", "rows", "write"]
