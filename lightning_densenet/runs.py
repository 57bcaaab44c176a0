"""`python -m lightning_densenet runs [DIR]`: the fit runs under DIR (default `runs`) as a table.

    run              config       arch               date              epochs  best val/acc ...
    debug/version_0  debug        densenet_tiny      2026-12-03 15:16       2        12.50%

A fit run is a folder with a `metrics.csv` that logged training (`runs/<config>/version_N/`,
a sweep's `trial_NNN/version_0/`, or a copy kept in `reports/`). Its test accuracy is that
of the newest `test` run whose `--ckpt_path` was one of its checkpoints
(`runs/<config>-test/version_N/`), or of a `test_metrics.csv` kept beside it.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_densenet.errors import UserError, command

NAN = float("nan")


@dataclass(frozen=True)
class RunRow:
    path: Path  # the run folder
    config: str  # the experiment: the name of the config file it was started with
    arch: str
    date: dt.datetime  # when config.yaml was written: the start of the run
    epochs: int
    best_val_acc: float  # a fraction; NaN: never validated
    test_acc: float  # NaN: not tested
    minutes: float  # train/minutes, the budget's clock; NaN: not logged
    checkpoint: Path | None  # last.ckpt, else the newest checkpoint


def _rows(metrics_csv: Path) -> list[dict[str, str]]:
    with metrics_csv.open() as f:
        return list(csv.DictReader(f))


def _last(rows: list[dict[str, str]], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key)]
    return values[-1] if values else NAN


def _config(run: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _experiment(run: Path) -> str:
    """runs/<experiment>/version_N -> experiment; a report folder's own name otherwise."""
    return run.parent.name if run.name.startswith("version_") else run.name


def _arch(config: dict[str, Any]) -> str:
    arch = (config.get("model") or {}).get("arch", "")
    if isinstance(arch, dict):  # the architecture's fields
        return "k{}-{}".format(
            arch.get("growth_rate", "?"), "-".join(map(str, arch.get("block_config", [])))
        )
    return str(arch)


def _resolved(path: str | Path, base: Path) -> Path:
    path = Path(path)
    return (path if path.is_absolute() else base / path).resolve()


def tested_accuracies(root: Path) -> dict[Path, float]:
    """Run folder (resolved) -> test/acc of the newest `test` run of one of its checkpoints."""
    found: dict[Path, tuple[float, float]] = {}  # run -> (mtime, acc)
    for metrics_csv in root.rglob("metrics.csv"):
        folder = metrics_csv.parent
        ckpt = _config(folder).get("ckpt_path")
        if not ckpt:
            continue
        acc = _last(_rows(metrics_csv), "test/acc")
        if acc != acc:  # NaN: a validate or predict run
            continue
        # The path as the test command was given it: relative to where it ran (most likely
        # here), or to the folder above DIR.
        for base in (Path.cwd(), root.parent):
            path = _resolved(ckpt, base)
            if path.parent.name == "checkpoints" and path.parent.is_dir():
                run, mtime = path.parent.parent, metrics_csv.stat().st_mtime
                if run not in found or found[run][0] < mtime:
                    found[run] = (mtime, acc)
                break
    return {run: acc for run, (_, acc) in found.items()}


def read_run(run: Path, tested: dict[Path, float] | None = None) -> RunRow | None:
    """The row of the fit run `run`, or None if it is not one (a test run, say)."""
    metrics_csv = run / "metrics.csv"
    if not metrics_csv.is_file():
        return None
    rows = _rows(metrics_csv)
    columns = set(rows[0]) if rows else set()
    if not any(c.startswith("train/") for c in columns) and not (run / "checkpoints").is_dir():
        return None
    config = _config(run)
    val: dict[int, float] = {}
    for r in rows:
        if r.get("val/acc") and r.get("epoch"):
            val[int(r["epoch"])] = float(r["val/acc"])
    epochs = [int(r["epoch"]) for r in rows if r.get("epoch")]
    test_acc = (tested or {}).get(run.resolve(), NAN)
    if test_acc != test_acc and (run / "test_metrics.csv").is_file():  # a report's copy
        test_acc = _last(_rows(run / "test_metrics.csv"), "test/acc")
    stamp = run / "config.yaml" if (run / "config.yaml").is_file() else metrics_csv
    return RunRow(
        path=run,
        config=_experiment(run),
        arch=_arch(config),
        date=dt.datetime.fromtimestamp(stamp.stat().st_mtime),
        epochs=max(epochs) + 1 if epochs else 0,
        best_val_acc=max(val.values()) if val else NAN,
        test_acc=test_acc,
        minutes=_last(rows, "train/minutes"),
        checkpoint=_checkpoint(run),
    )


def _checkpoint(run: Path) -> Path | None:
    folder = run / "checkpoints"
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    ckpts = (
        sorted(folder.glob("*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    )
    return ckpts[-1] if ckpts else None


def find_runs(root: Path) -> list[RunRow]:
    """Every fit run under `root`, oldest first."""
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: pass the folder fit writes its runs to.")
    tested = tested_accuracies(root)
    found = (read_run(p.parent, tested) for p in root.rglob("metrics.csv"))
    return sorted((r for r in found if r is not None), key=lambda r: (r.date, str(r.path)))


def table(runs: list[RunRow], root: Path) -> str:
    """The runs as an aligned text table (numbers right-aligned)."""
    header = ("run", "config", "arch", "date", "epochs", "best val/acc", "test acc", "minutes")
    header += ("checkpoint",)
    lines = [header]
    for r in runs:
        run = r.path.relative_to(root) if r.path.is_relative_to(root) else r.path
        lines.append(
            (
                str(run),
                r.config,
                r.arch,
                r.date.strftime("%Y-%m-%d %H:%M"),
                str(r.epochs),
                _percent(r.best_val_acc),
                _percent(r.test_acc),
                "-" if r.minutes != r.minutes else f"{r.minutes:.1f}",
                str(r.checkpoint) if r.checkpoint else "-",
            )
        )
    right = {4, 5, 6, 7}
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for line in lines:
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in pairs]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def _percent(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}%"


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_densenet runs",
        description="List the fit runs under DIR: config, date, epochs, best val/acc, test "
        "accuracy where a test run used one of their checkpoints, minutes, checkpoint.",
    )
    parser.add_argument("dir", nargs="?", type=Path, default=Path("runs"), metavar="DIR")
    args = parser.parse_args(argv)
    runs = find_runs(args.dir)
    if not runs:
        print(f"No fit runs under {args.dir}.")
        return 0
    print(table(runs, args.dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
