"""Side-by-side short runs of the CPU recipe: a table, a JSON and a plot of accuracy vs time.

    python reports/recipe_options/compare.py OUT_DIR LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Each RUN_DIR is a `fit` run (its `metrics.csv`); OUT_DIR gets `results.json`, `results.md`
(a markdown table: epochs begun, the last maybe cut short by the budget; the last validation
accuracy; training images/s at each image size) and `val_acc_vs_minutes.png`.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from pathlib import Path

from lightning_densenet.curves import read_epochs
from lightning_densenet.files import markdown_table, write_text_atomic


def images_per_sec(metrics_csv: Path) -> dict[int, float]:
    """Median logged training throughput per image size (32 when the run did not resize)."""
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    size, by_size = 32, {}
    for row in rows:
        if row.get("train/image_size"):
            size = int(float(row["train/image_size"]))
        if row.get("train/device/samples_per_sec"):
            by_size.setdefault(size, []).append(float(row["train/device/samples_per_sec"]))
    return {s: round(statistics.median(v), 1) for s, v in sorted(by_size.items())}


def main(out: Path, runs: dict[str, Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    results, fig = {}, plt.figure(figsize=(7, 4))
    for label, run in runs.items():
        curve = read_epochs(run / "metrics.csv")
        results[label] = {
            "run": str(run),
            "epochs": len(curve["epoch"]),
            "minutes": round(curve["minutes"][-1], 2),
            "last_val_acc": round(100 * curve["val_acc"][-1], 2),
            "images_per_sec_by_size": images_per_sec(run / "metrics.csv"),
        }
        plt.plot(curve["minutes"], [100 * a for a in curve["val_acc"]], "o-", label=label)
    plt.xlabel("minutes of training (the budget's clock)")
    plt.ylabel("validation accuracy (%)")
    plt.grid(alpha=0.3)
    plt.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "val_acc_vs_minutes.png", dpi=120)
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    header = ["run", "epochs begun", "minutes", "last val acc", "training images/s by image size"]
    rows = [
        [label, r["epochs"], r["minutes"], f"{r['last_val_acc']:.1f}%",
         ", ".join(f"{s}px: {v:.0f}" for s, v in r["images_per_sec_by_size"].items())]
        for label, r in results.items()
    ]  # fmt: skip
    table = markdown_table(header, rows)
    write_text_atomic(out / "results.md", table)
    print(table, end="")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    pairs = (arg.split("=", 1) for arg in sys.argv[2:])
    main(Path(sys.argv[1]), {label: Path(run) for label, run in pairs})
