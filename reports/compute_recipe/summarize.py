"""Seeds of a compute-budgeted recipe: a table, a JSON and accuracy against training compute.

    python reports/compute_recipe/summarize.py OUT_DIR RUN_DIR [RUN_DIR ...] \
        [--other LABEL=RUN_DIR ...]

Each RUN_DIR holds a fit run's `config.yaml` and `metrics.csv`, the `test_metrics.csv` of
`test` on its last checkpoint (the hold-out, read once) and `machine.json`, how the run had
the machine (`{"cores": 1, "alone": false}`: its minutes and GFLOP/s are a benchmark only
when it had both cores to itself). The RUN_DIRs are seeds of one
recipe; an `--other` is another recipe on the same budget (a baseline, a candidate), shown
beside them under its label. OUT_DIR gets
`results.json`, `results.md` (one row per run; the seeds' mean, sample standard deviation and
range) and `accuracy_vs_pflop.png`, with the reference points of `OUT_DIR/reference.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

import yaml

from lightning_densenet.curves import read_epochs
from lightning_densenet.files import markdown_table, write_text_atomic
from lightning_densenet.report_tables import machine_words


def _last(path: Path, key: str) -> float:
    with path.open() as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)][-1]


def run_summary(run: Path) -> dict:
    config = yaml.safe_load((run / "config.yaml").read_text())
    curve = read_epochs(run / "metrics.csv")
    metrics_csv = run / "metrics.csv"
    return {
        "run": run.name,
        "seed": config["seed_everything"],
        "pflop": round(_last(metrics_csv, "train/pflop"), 4),
        "budget_pflop": config["model"]["budget_pflop"],
        "epochs": len(curve["epoch"]),
        "fit_minutes": round(curve["minutes"][-1], 2),
        "gflops_per_s": round(_last(metrics_csv, "train/gflops_per_s"), 1),
        "val_acc": round(100 * curve["val_acc"][-1], 2),
        "holdout_acc": round(100 * _last(run / "test_metrics.csv", "test/acc"), 2),
        "machine": json.loads((run / "machine.json").read_text()),
    }


def spread(values: list[float]) -> dict:
    return {
        "mean": round(statistics.mean(values), 2),
        "std": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def _cells(label: str, r: dict) -> list[str]:
    return [
        label,
        str(r["seed"]),
        f"{r['pflop']:.3f}",
        str(r["epochs"]),
        str(r["fit_minutes"]),
        f"{r['gflops_per_s']} ({machine_words(r['machine'])})",
        f"{r['val_acc']:.2f}%",
        f"{r['holdout_acc']:.2f}%",
    ]


def main(out: Path, runs: list[Path], other_runs: list[tuple[str, Path]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [run_summary(run) for run in runs]
    others = [(label, run_summary(run), run) for label, run in other_runs]  # labels may repeat
    stats = {key: spread([r[key] for r in rows]) for key in ("holdout_acc", "val_acc", "pflop")}
    results = {
        "runs": rows,
        "seeds": stats,
        "others": [{"label": label, **r} for label, r, _ in others],
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")

    h = stats["holdout_acc"]
    mean = [
        f"**{len(rows)} seed{'s' if len(rows) > 1 else ''}**",
        "",
        f"{stats['pflop']['mean']:.3f}",
        "",
        "",
        "",
        f"{stats['val_acc']['mean']:.2f}%",
        f"**{h['mean']:.2f}% ± {h['std']:.2f}** ({h['min']:.2f}-{h['max']:.2f})",
    ]
    table = markdown_table(
        [
            "run",
            "seed",
            "PFLOP",
            "epochs",
            "fit minutes",
            "GFLOP/s (cores)",
            "val acc (1,000)",
            "hold-out acc (5,000)",
        ],
        [
            *(_cells(r["run"], r) for r in rows),
            mean,
            *(_cells(label, r) for label, r, _ in others),
        ],
        align="lrrrrrrr",
    )
    write_text_atomic(out / "results.md", table)

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    curves = [
        (f"{r['run']} (seed {r['seed']})", r, run, "-") for r, run in zip(rows, runs, strict=True)
    ]
    curves += [(f"{label} (seed {r['seed']})", r, run, "--") for label, r, run in others]
    for label, r, run, style in curves:
        curve = read_epochs(run / "metrics.csv")
        (line,) = ax.plot(
            curve["pflop"],
            [100 * a for a in curve["val_acc"]],
            style,
            alpha=0.6,
            label=f"{label}: validation, 1,000 images",
        )
        ax.plot(
            [r["pflop"]],
            [r["holdout_acc"]],
            "o",
            color=line.get_color(),
            label=f"{label}: hold-out, 5,000 images",
        )
    for point in json.loads((out / "reference.json").read_text())["points"]:
        ax.plot(
            [point["pflop"]],
            [point["accuracy"]],
            point.get("marker", "*"),
            markersize=10,
            label=point["label"],
        )
    ax.set(
        xlabel="training compute, PFLOP",
        ylabel="accuracy, %",
        title="CIFAR-10 (shared JPEG copy): accuracy against training compute",
    )
    ax.set_xlim(0.1, 0.36)
    ax.set_ylim(70, 92)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_pflop.png", dpi=120)
    print(table, end="")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("runs", type=Path, nargs="+")
    parser.add_argument("--other", action="append", default=[], metavar="LABEL=RUN_DIR")
    args = parser.parse_args()
    others = [(label, Path(run)) for label, run in (b.split("=", 1) for b in args.other)]
    main(args.out, args.runs, others)
