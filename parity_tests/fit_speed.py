"""`fit` itself, fp32 eager against the fast path: throughput and accuracy, side by side.

    python -m parity_tests.fit_speed --config configs/cifar10_cpu.yaml \
        [--arch densenet_c_13_k48 densenet_bc_100_k12] [--settings fp32-eager bf16 ...] \
        [--steps 12] [--repeats 2] [--accuracy-seeds 0 1 2] [--out DIR] [-- FIT OVERRIDES]

Every run is a real `python -m lightning_densenet fit` in its own process (Lightning's loop,
logging, metrics and the per-batch augmentation included), on the config's data with the
overrides after `--`. Throughput is the run's own `train/device/samples_per_sec` (Lightning's
`ThroughputMonitor`, logged at the last step over a window of all batches but the first
two, which compile: training batches only). Settings change only what the issue calls speed
options, never the model:

    fp32-eager       precision 32-true, NCHW, no torch.compile: the old default
    bf16             bf16-mixed autocast + channels_last, eager
    bf16-compile     the same, with torch.compile of the network
    fp32-compile     fp32, channels_last, torch.compile

The repeats visit the settings in turn (reversed every other repeat), so a change in the
machine's load hits all of them alike. `--accuracy-seeds` adds short training runs
(`--accuracy-epochs` epochs on `--accuracy-images` images) of fp32-eager and the other
settings per seed, and reports validation accuracy: the fast path must not cost accuracy.
The report (`fit_speed.json`, `fit_speed.md`) goes to `--out`, by default `runs/fit_speed`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from lightning_densenet.errors import UserError, command
from lightning_densenet.files import markdown_table
from parity_tests.speed.driver import machine_info

SETTINGS: dict[str, list[str]] = {
    "fp32-eager": ["--trainer.precision", "32-true", "--model.channels_last", "false",
                   "--model.compile", "false"],
    "bf16": ["--trainer.precision", "bf16-mixed", "--model.channels_last", "true",
             "--model.compile", "false"],
    "bf16-compile": ["--trainer.precision", "bf16-mixed", "--model.channels_last", "true",
                     "--model.compile", "true"],
    "fp32-compile": ["--trainer.precision", "32-true", "--model.channels_last", "true",
                     "--model.compile", "true"],
}  # fmt: skip
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
IMAGES_PER_SEC = "train/device/samples_per_sec"  # the ThroughputMonitor's, of one process


def fit(config: str, arch: str | None, setting: str, extra: list[str], root: Path) -> dict:
    """One `fit` in a fresh interpreter; returns its last logged epoch metrics."""
    args = [sys.executable, "-m", "lightning_densenet", "fit", "--config", config, *QUIET]
    args += ["--model.arch", arch] if arch else []
    args += [*SETTINGS[setting], "--model.budget_minutes", "null"]
    args += ["--trainer.default_root_dir", str(root), *extra]
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"}
    (metrics,) = root.glob("*/version_*/metrics.csv")
    with metrics.open() as f:
        rows = list(csv.DictReader(f))
    last: dict[str, float] = {}
    for row in rows:
        last |= {k: float(v) for k, v in row.items() if v not in ("", None)}
    return last


def throughput(
    config: str, archs: list[str | None], settings: list[str], steps: int, repeats: int,
    batch: int, extra: list[str],
) -> list[dict[str, Any]]:  # fmt: skip
    limit = ["--trainer.max_epochs", "1", "--data.max_train_images", str(steps * batch)]
    limit += ["--trainer.limit_val_batches", "1", "--trainer.num_sanity_val_steps", "0"]
    # One log, at the last step, of the images per second from the end of batch 2 on.
    limit += ["--trainer.log_every_n_steps", str(steps), "--throughput.window_size", str(steps - 1)]
    rows = []
    for arch in archs:
        runs: dict[str, list[float]] = {s: [] for s in settings}
        errors: dict[str, str] = {}
        for r in range(repeats):
            for setting in settings if r % 2 == 0 else settings[::-1]:
                with tempfile.TemporaryDirectory() as tmp:
                    out = fit(config, arch, setting, [*limit, *extra], Path(tmp))
                if "error" in out:
                    errors[setting] = out["error"]
                    continue
                runs[setting].append(out[IMAGES_PER_SEC])
                print(f"{arch} {setting}: {runs[setting][-1]:.1f} images/s", flush=True)
        base = statistics.median(runs["fp32-eager"]) if runs.get("fp32-eager") else None
        for setting in settings:
            values = sorted(runs[setting])
            row: dict[str, Any] = {"arch": arch or "(config)", "setting": setting}
            if not values:
                rows.append(row | {"error": errors.get(setting, "no run")})
                continue
            median = statistics.median(values)
            rows.append(
                row
                | {
                    "images_per_s": values,
                    "median": median,
                    "min": values[0],
                    "max": values[-1],
                    "vs_fp32_eager": median / base if base else None,
                }
            )
    return rows


def accuracy(
    config: str, arch: str | None, settings: list[str], seeds: list[int], epochs: int,
    images: int, extra: list[str],
) -> list[dict[str, Any]]:  # fmt: skip
    rows = []
    for seed in seeds:
        for setting in settings:
            args = ["--seed_everything", str(seed), "--data.seed", str(seed)]
            args += ["--trainer.max_epochs", str(epochs), "--data.max_train_images", str(images)]
            with tempfile.TemporaryDirectory() as tmp:
                out = fit(config, arch, setting, [*args, *extra], Path(tmp))
            row: dict[str, Any] = {"seed": seed, "setting": setting}
            if "error" in out:
                row["error"] = out["error"]
            else:
                # Over the last 100 batches, where the run has that many.
                row |= {"val_acc": out["val/acc"], "images_per_s": out.get(IMAGES_PER_SEC)}
            rows.append(row)
            print(f"seed {seed} {setting}: {rows[-1]}", flush=True)
    return rows


def markdown(meta: dict[str, Any], speed: list[dict], acc: list[dict]) -> str:
    lines = [
        "# `fit` throughput: fp32 eager vs the fast path",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}; {meta['machine']['cpu']}, {meta['machine']['usable_cores']} usable "
        f"cores, load average {meta['machine']['load_average_at_start'][0]:.1f} at the start. "
        f"Each figure is a whole `fit` process's `{IMAGES_PER_SEC}`.",
        "",
    ]
    rows = []
    for r in speed:
        if "error" in r:
            rows.append([r["arch"], r["setting"], f"failed: {r['error']}", "", ""])
            continue
        ratio = f"{r['vs_fp32_eager']:.2f}x" if r["vs_fp32_eager"] else "-"
        spread = f"{r['min']:.1f}-{r['max']:.1f}"
        rows.append([r["arch"], r["setting"], f"{r['median']:.1f}", spread, ratio])
    head = ["arch", "setting", "images/s (median)", "spread (min-max)", "vs fp32 eager"]
    lines.append(markdown_table(head, rows, "llrrr").rstrip("\n"))
    if acc:
        lines += ["", "Validation accuracy after the same short training, per seed:", ""]
        rows = []
        for setting in dict.fromkeys(r["setting"] for r in acc):
            values = [r["val_acc"] for r in acc if r["setting"] == setting and "val_acc" in r]
            if not values:
                continue
            per_seed = ", ".join(f"{v:.4f}" for v in values)
            spread = f"{min(values):.4f}-{max(values):.4f}"
            rows.append([setting, per_seed, f"{statistics.mean(values):.4f}", spread])
        head = ["setting", "val/acc per seed", "mean", "spread"]
        lines.append(markdown_table(head, rows, "llrr").rstrip("\n"))
    return "\n".join(lines) + "\n"


@command
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python -m parity_tests.fit_speed", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--arch", nargs="*", default=[], help="default: the config's")
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["fp32-eager", "bf16", "bf16-compile"],
        help=f"some of {', '.join(SETTINGS)}, separated by spaces or commas",
    )
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--batch-size", type=int, default=256, help="the config's batch size")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--accuracy-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--accuracy-epochs", type=int, default=1)
    parser.add_argument("--accuracy-images", type=int, default=5000)
    parser.add_argument("--out", default="runs/fit_speed", help="default: runs/fit_speed")
    args = parser.parse_args(own)
    settings = [s.strip() for text in args.settings for s in text.split(",") if s.strip()]
    if unknown := [s for s in settings if s not in SETTINGS]:
        raise UserError(f"--settings {unknown[0]!r} is unknown: use {', '.join(SETTINGS)}.")
    if args.steps < 3:
        raise UserError("--steps must be 3 or more: the first two, which compile, are left out.")
    if "fp32-eager" not in settings:
        settings.insert(0, "fp32-eager")  # the baseline every ratio is against
    meta = {
        "command": "python -m parity_tests.fit_speed " + " ".join(argv),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "threads": os.environ.get("OMP_NUM_THREADS", "all"),
    }
    archs: list[str | None] = list(args.arch) or [None]
    speed = throughput(
        args.config, archs, settings, args.steps, args.repeats, args.batch_size, extra
    )
    acc = accuracy(
        args.config, archs[0], settings, args.accuracy_seeds, args.accuracy_epochs,
        args.accuracy_images, extra,
    )  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = meta | {"throughput": speed, "accuracy": acc}
    (out / "fit_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "fit_speed.md").write_text(markdown(meta, speed, acc))
    print(markdown(meta, speed, acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
