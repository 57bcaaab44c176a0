"""The proxy study: one option changed at a time from a recipe, on a small compute budget.

    python reports/compute_recipe/proxies.py OUT_DIR REFERENCE_RUN "LABEL=RUN_DIR" ...

Each RUN_DIR holds a fit run's `config.yaml` and `metrics.csv`; the score is the last
validation accuracy (the validation split, never the hold-out). REFERENCE_RUN is the
unchanged recipe; each other run is described by the options its config changes from it
(found by comparing the two configs). OUT_DIR gets `proxies.json`, `proxies.md` and
`proxies.png` (validation accuracy against PFLOP, one line per run).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import yaml

from lightning_densenet.curves import read_epochs
from lightning_densenet.files import markdown_table, write_text_atomic

# Keys that differ between runs without being an option under study.
_BOOKKEEPING = {
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.enable_progress_bar",
    "ckpt_path",
    "config",
}


def _flat(block: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(block, dict):
        return {prefix[:-1]: block}
    out: dict[str, Any] = {}
    for key, value in block.items():
        out |= _flat(value, f"{prefix}{key}.")
    return out


def changed(reference: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The options whose value in `run`'s config differs from `reference`'s (dotted keys)."""
    a, b = _flat(reference), _flat(run)
    keys = sorted((a.keys() | b.keys()) - _BOOKKEEPING)

    def replaced(key: str) -> bool:  # under a block `run` sets to one value (an arch preset)
        parts = key.split(".")
        return key not in b and any(".".join(parts[:i]) in b for i in range(1, len(parts)))

    return {k: b.get(k) for k in keys if a.get(k) != b.get(k) and not replaced(k)}


def summary(label: str, run: Path, reference: dict[str, Any] | None) -> dict[str, Any]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    curve = read_epochs(run / "metrics.csv")
    pflop = [p for p in curve["pflop"] if not math.isnan(p)]
    if not pflop:
        raise SystemExit(f"{run}: no train/pflop logged (a run of this project's fit is needed)")
    return {
        "label": label,
        "run": str(run),
        "changes": changed(reference, config) if reference is not None else {},
        "val_size": config["data"]["val_size"],
        "pflop": round(pflop[-1], 4),
        "epochs": len(curve["epoch"]),
        "val_acc": round(100 * curve["val_acc"][-1], 2),
        "curve": {"pflop": curve["pflop"], "val_acc": curve["val_acc"]},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("reference", type=Path, help="the unchanged recipe's run folder")
    parser.add_argument("runs", nargs="*", help="LABEL=RUN_DIR")
    args = parser.parse_args(argv)
    base_config = yaml.safe_load((args.reference / "config.yaml").read_text())
    rows = [summary("reference", args.reference, None)]
    for spec in args.runs:
        label, _, path = spec.partition("=")
        rows.append(summary(label, Path(path), base_config))
    base = rows[0]["val_acc"]
    for row in rows:
        row["vs_reference"] = round(row["val_acc"] - base, 2)

    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "proxies.json", json.dumps(rows, indent=2) + "\n")
    table = markdown_table(
        ["run", "changes from the reference", "PFLOP", "epochs", "val acc", "vs reference"],
        [
            [
                r["label"],
                ", ".join(f"`{k}: {v}`" for k, v in r["changes"].items()) or "-",
                f"{r['pflop']:.3f}",
                r["epochs"],
                f"{r['val_acc']:.2f}%",
                f"{r['vs_reference']:+.2f}",
            ]
            for r in rows
        ],
        align="llrrrr",
    )
    write_text_atomic(args.out / "proxies.md", table)
    print(table)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.plot(
            r["curve"]["pflop"],
            [100 * a for a in r["curve"]["val_acc"]],
            "o-",
            label=f"{r['label']} ({r['val_acc']:.1f}%)",
        )
    ax.set_xlabel("training compute (PFLOP)")
    ax.set_ylabel(f"validation accuracy, {rows[0]['val_size']:,} images (%)")
    ax.set_ylim(bottom=max(0, min(100 * r["curve"]["val_acc"][-1] for r in rows) - 15))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "proxies.png", dpi=120)


if __name__ == "__main__":
    main()
