"""Every result table of README.md and docs/*.md, rendered from the committed reports.

    python -m lightning_densenet.report_tables          # rewrite the tables in place
    python -m lightning_densenet.report_tables --check  # exit 1 if a table differs

A document marks each table with two comments, and everything between them is this
script's output, never edited by hand (tests/test_docs.py fails when they differ):

    <!-- table: results -->
    | ... |
    <!-- end table -->

Each table is a function of the files under `reports/`: a figure in the docs is a reading of
a file. Training compute (PFLOP) is the run's logged `train/pflop` where it has one; for runs
logged before it, it is derived from the committed files (the images trained on at each
size, from `metrics.csv`, times `flops.training_flops_per_image`) or marked not measured.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from lightning_densenet.curves import read_epochs
from lightning_densenet.errors import UserError, command
from lightning_densenet.files import markdown_table, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
# At the start of a line: an indented example of the syntax is not a table.
MARKER = re.compile(r"^(<!-- table: ([\w-]+) -->\n)(.*?)^(<!-- end table -->)", re.S | re.M)
NOT_MEASURED = "not measured"


# Reading report files.


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _last(rows: list[dict[str, str]], key: str) -> float | None:
    values = [float(r[key]) for r in rows if r.get(key)]
    return values[-1] if values else None


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _config(run: Path) -> dict[str, Any]:
    return yaml.safe_load((run / "config.yaml").read_text()) or {}


def _times(run: Path) -> dict[str, float]:
    """`times.txt` (`fit_s=1654 test_s=19 total_s=1673`) as numbers."""
    path = run / "times.txt"
    if not path.is_file():
        return {}
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", path.read_text())}


def _elapsed_s(time_v: Path) -> float | None:
    """The wall-clock time of a `/usr/bin/time -v` report."""
    found = re.search(r"Elapsed \(wall clock\) time.*?: ([\d:.]+)", time_v.read_text())
    if not found:
        return None
    seconds = 0.0
    for part in found.group(1).split(":"):
        seconds = 60 * seconds + float(part)
    return seconds


def _val_by_epoch(rows: list[dict[str, str]]) -> dict[int, float]:
    return {int(r["epoch"]): float(r["val/acc"]) for r in rows if r.get("val/acc")}


def _steps(rows: list[dict[str, str]]) -> int:
    return max(int(r["step"]) for r in rows if r.get("step")) + 1


def _epochs_begun(rows: list[dict[str, str]]) -> int:
    return max(int(r["epoch"]) for r in rows if r.get("epoch")) + 1


# Training compute.


@functools.cache
def _flops_per_image(arch: str, num_classes: int, size: int) -> float:
    """Training FLOPs per `size` x `size` image (`arch`: a preset name or JSON fields)."""
    import torch

    from lightning_densenet.arch import resolve_arch
    from lightning_densenet.flops import training_flops_per_image
    from lightning_densenet.model import DenseNet

    with torch.device("meta"):
        model = DenseNet(resolve_arch(json.loads(arch)), num_classes)
    return training_flops_per_image(model, size, size)


def _num_classes(config: dict[str, Any]) -> int:
    return 100 if (config.get("data") or {}).get("dataset") == "cifar100" else 10


@functools.cache
def run_pflop(run: Path) -> tuple[float, bool] | None:
    """(PFLOP, exact) of a fit run kept in `run`: logged, or derived from its metrics.csv and
    config.yaml (inexact where the image size was logged every few steps only: the midpoint
    of the bounds); None where neither can be had."""
    rows = _csv(run / "metrics.csv")
    if (logged := _last(rows, "train/pflop")) is not None:
        return logged, True
    config = _config(run)
    model, data = config.get("model") or {}, config.get("data") or {}
    batch, arch = data.get("batch_size"), json.dumps(model.get("arch"))
    steps = _steps(rows)
    # Every training batch is whole (drop_last) on one process: check it against the log.
    for r in rows:
        if r.get("train/samples") and float(r["train/samples"]) != (int(r["step"]) + 1) * batch:
            return None
    sizes = [
        (int(r["step"]), int(float(r["train/image_size"])))
        for r in rows
        if r.get("train/image_size")
    ]
    if model.get("progressive_size") and not sizes:
        return None
    if not sizes:
        sizes = [(0, 32)]

    def total(pick: Callable[[int], int]) -> float:
        flops = functools.partial(_flops_per_image, arch, _num_classes(config))
        return sum(batch * flops(pick(step)) for step in range(steps)) / 1e15

    def before(step: int) -> int:  # the size last logged at or before the step
        return next((s for t, s in reversed(sizes) if t <= step), sizes[0][1])

    def after(step: int) -> int:  # the size first logged at or after it (sizes only grow)
        return next((s for t, s in sizes if t >= step), sizes[-1][1])

    low, high = total(before), total(after)
    return (low + high) / 2, low == high


def _pflop_cell(value: tuple[float, bool] | None) -> str:
    if value is None:
        return NOT_MEASURED
    pflop, exact = value
    return f"{pflop:.3f}" if exact else f"≈{pflop:.3f}"


# Formatting.


def _minutes_seconds(seconds: float) -> str:
    return f"{int(seconds // 60)} min {round(seconds % 60):02d} s"


def _link(doc: Path, target: Path, text: str | None = None) -> str:
    """A Markdown link from `doc` to `target`, both in the repository (or a copy of it)."""
    root = next(p for p in target.parents if (p / "reports").is_dir())
    rel = os.path.relpath(target, doc.parent) if doc.is_relative_to(root) else target
    return f"[{text or target.relative_to(root).as_posix()}]({Path(rel).as_posix()})"


def _evaluated_on(config: dict[str, Any]) -> str:
    data = config.get("data") or {}
    if data.get("dataset") == "imagefolder" and data.get("holdout_size"):
        return f"{data['holdout_size']:,} held-out images of the JPEG copy"
    if data.get("dataset") in ("cifar10", "cifar100"):
        return "the official test split"
    return "?"


# The tables. Each takes the reports folder and the document it goes into (for links).


def _seeds_row(name: str, runs: list[dict[str, Any]], on: str, link: str) -> list[str]:
    """A results row for the seeds of one recipe: hold-out mean ± std, minutes and GFLOP/s of
    the runs that had the machine to themselves (only those time it)."""
    accs = [r["holdout_acc"] for r in runs]
    alone = [r for r in runs if r["machine"]["alone"]]
    if len(runs) > 1:
        name += f": mean ± std of {len(runs)} seeds"
        accuracy = (
            f"**{statistics.mean(accs):.1f}% ± {statistics.stdev(accs):.2f}** "
            f"({min(accs):.1f}-{max(accs):.1f})"
        )
    else:
        name, accuracy = f"{name}: 1 seed", f"{accs[0]:.1f}%"
    return [
        name,
        accuracy,
        on,
        f"{statistics.mean(r['fit_minutes'] for r in alone):.1f} min (the 2 cores)"
        if alone
        else "not timed alone",
        f"{statistics.mean(r['pflop'] for r in runs):.3f}",
        f"{statistics.mean(r['gflops_per_s'] for r in alone):.0f}" if alone else "-",
        link,
    ]


def results(reports: Path, doc: Path) -> str:
    """The README's results: accuracy with its cost, the TF baseline beside it."""
    rows = []
    compute = reports / "compute_recipe/results.json"
    if compute.is_file():
        found = _json(compute)
        configs = sorted((reports / "compute_recipe").glob("runs/*/config.yaml"))
        on = _evaluated_on(_config(configs[0].parent)) if configs else "held-out images"
        link = _link(doc, reports / "compute_recipe", "compute_recipe")
        budget = f"{found['runs'][0]['budget_pflop']:g} PFLOP"
        rows.append(
            _seeds_row(
                f"CPU compute recipe (`cifar10_short.yaml`), {budget}", found["runs"], on, link
            )
        )
        # Candidates for the recipe, on the same budget: `summarize.py --other "candidate: ..."`.
        candidates: dict[str, list[dict[str, Any]]] = {}
        for r in found.get("others", []):
            if r["label"].startswith("candidate: "):
                candidates.setdefault(r["label"].removeprefix("candidate: "), []).append(r)
        for label, group in candidates.items():
            rows.append(_seeds_row(f"candidate: the same with {label}, {budget}", group, on, link))
    for folder, name in (
        ("cpu_recipe", "CPU time recipe, 27 minutes (`densenet_c_21_k64`): 1 seed"),
        ("cpu_recipe_c15_k64", "the same budget, `densenet_c_15_k64` at full size: 1 seed"),
    ):
        run = reports / folder
        pflop = run_pflop(run)
        minutes = read_epochs(run / "metrics.csv")["minutes"][-1]
        rate = f"{pflop[0] * 1e6 / (60 * minutes):.0f}" if pflop else NOT_MEASURED
        rows.append(
            [
                name,
                f"{100 * _last(_csv(run / 'test_metrics.csv'), 'test/acc'):.1f}%",
                _evaluated_on(_config(run)),
                _minutes_seconds(_times(run)["fit_s"]),
                _pflop_cell(pflop),
                rate,
                _link(doc, run, folder),
            ]
        )
    tf = reports / "tf_baseline"
    found, config = _json(tf / "metrics.json"), _config(tf)
    flops = _flops_per_image(json.dumps(config["model"]["arch"]), _num_classes(config), 32)
    pflop = found["steps"] * found["batch_size"] * flops / 1e15
    wall = _elapsed_s(tf / "time_v.txt")
    rows.append(
        [
            "TensorFlow/Keras baseline, `tf.function` fp32, `densenet_c_15_k64`, 10 epochs",
            f"{100 * found['test_acc']:.1f}%",
            _evaluated_on(config),
            _minutes_seconds(wall) if wall else NOT_MEASURED,
            f"{pflop:.3f}",
            f"{pflop * 1e6 / wall:.0f}" if wall else NOT_MEASURED,
            _link(doc, tf, "tf_baseline"),
        ]
    )
    rows.append(["the paper's recipe on a GPU (`cifar10_paper.yaml`)", *[NOT_MEASURED] * 5, ""])
    rows.append(["the CPU recipe on CIFAR-100 (`cifar100_cpu.yaml`)", *[NOT_MEASURED] * 5, ""])
    header = ["recipe", "accuracy", "measured on", "training wall time", "PFLOP", "GFLOP/s"]
    return markdown_table([*header, "report"], rows, "llllrrl")


def compute_runs(reports: Path, doc: Path) -> str:
    """The compute recipe's seeds and the other recipes on the same budget, once committed."""
    path = reports / "compute_recipe/results.json"
    if not path.is_file():
        return ""
    found = _json(path)

    def cells(label: str, r: dict[str, Any]) -> list[str]:
        return [
            f"{label}, seed {r['seed']}",
            f"{r['pflop']:.3f}",
            str(r["epochs"]),
            f"{r['val_acc']:.2f}%",
            f"{r['holdout_acc']:.2f}%",
            f"{r['fit_minutes']:.1f}",
            f"{r['gflops_per_s']:.0f} ({machine_words(r['machine'])})",
        ]

    rows = [cells("`cifar10_short.yaml`", r) for r in found["runs"]]
    acc, n = found["seeds"]["holdout_acc"], len(found["runs"])
    mean = f"**{acc['mean']:.2f}% ± {acc['std']:.2f}**"
    rows.append([f"**mean of {n} seed{'s' if n > 1 else ''}**", "", "", "", mean, "", ""])
    rows += [cells(r["label"], r) for r in found.get("others", [])]
    header = ["run", "PFLOP", "epochs", "val/acc (1,000)", "hold-out (5,000)", "minutes"]
    return markdown_table([*header, "GFLOP/s (cores)"], rows, "lrrrrrr")


def machine_words(machine: dict[str, Any]) -> str:
    """How a run had the machine: `2 cores`, or `1 core, busy` when it shared it."""
    cores = machine["cores"]
    return f"{cores} core{'s' if cores > 1 else ''}" + ("" if machine["alone"] else ", busy")


def compute_proxies(reports: Path, doc: Path) -> str:
    """The proxy study: one option changed at a time from the compute recipe, once run."""
    path = reports / "compute_recipe/proxies/proxies.json"
    if not path.is_file():
        return ""
    rows = [
        [
            r["label"],
            ", ".join(f"`{k}: {v}`" for k, v in r["changes"].items()) or "(the recipe as it is)",
            f"{r['pflop']:.3f}",
            str(r["epochs"]),
            f"{r['val_acc']:.2f}%",
            f"{r['vs_reference']:+.2f}",
        ]
        for r in _json(path)
    ]
    val_size = _json(path)[0]["val_size"]
    header = ["run", "changed from `cifar10_short.yaml`", "PFLOP", "epochs"]
    header.append(f"val/acc ({val_size:,})")
    table = markdown_table([*header, "vs the recipe"], rows, "llrrrr")
    return table + "\n!" + _link(doc, path.with_suffix(".png"), "Proxy runs") + "\n"


def compute_minutes(reports: Path, doc: Path) -> str:
    """Minutes to the compute recipe's accuracy on two machines: its PFLOP over each machine's
    measured rate for the whole fit (this one: the runs that had it alone)."""
    results = reports / "compute_recipe/results.json"
    if not results.is_file():
        return ""
    found = _json(results)
    alone = [r for r in found["runs"] if r["machine"]["alone"]]
    rate = reports / "compute_recipe/rate/rate.json"
    peak = _json(rate)["machine"]["bf16_matmul_peak_gflops"] if rate.is_file() else None
    pflop, acc = found["seeds"]["pflop"]["mean"], found["seeds"]["holdout_acc"]["mean"]
    machines = []
    if alone:
        gflops = statistics.mean(r["gflops_per_s"] for r in alone)
        label = "this project's 2-core AMD EPYC, alone (seed 2's fit)"
        machines.append((label, f"{peak:.0f}" if peak else "-", gflops, "measured"))
    for m in _json(reports / "compute_recipe/reference.json")["machines"]:
        peak_m = f"{m['bf16_matmul_peak_gflops']:.0f}"
        machines.append((m["label"], peak_m, m["sustained_gflops_per_s"], "PFLOP / its rate"))
    rows = [
        [
            label,
            peak,
            f"{gflops:.0f}",
            f"{pflop * 1e6 / gflops / 60:.0f} min ({how})",  # PFLOP -> GFLOP, s -> min
            f"{acc:.1f}%",
        ]
        for label, peak, gflops, how in machines
    ]
    header = ["machine", "bf16 matmul peak, GFLOP/s", "fit's GFLOP/s", f"{pflop:.2g} PFLOP takes"]
    return markdown_table([*header, "hold-out accuracy"], rows, "lrrrr")


def compute_rate(reports: Path, doc: Path) -> str:
    """The training-step compute rate beside airbench94's, once measured."""
    path = reports / "compute_recipe/rate/rate.md"
    return path.read_text() if path.is_file() else ""


def compute_figure(reports: Path, doc: Path) -> str:
    """The compute recipe's accuracy against PFLOP, once its report exists."""
    png = reports / "compute_recipe/accuracy_vs_pflop.png"
    if not png.is_file():
        return ""
    return "!" + _link(doc, png, "Accuracy against training compute") + "\n"


def recipe_runs(reports: Path, doc: Path) -> str:
    """The full-budget CPU runs side by side."""
    rows = []
    for folder, name in (
        ("cpu_recipe", "`densenet_c_21_k64`, progressive 16-24-32 px (the recipe)"),
        ("cpu_recipe_c15_progressive", "`densenet_c_15_k64`, the same recipe"),
        ("cpu_recipe_c15_k64", "`densenet_c_15_k64`, full size, 40,000 training images"),
        ("cpu_recipe_c13_k48", "`densenet_c_13_k48`, full size, 40,000 training images"),
    ):
        run = reports / folder
        metrics, config, times = _csv(run / "metrics.csv"), _config(run), _times(run)
        val = _val_by_epoch(metrics)
        no_tta = run / "test_metrics_no_tta.csv"
        rows.append(
            [
                name,
                _minutes_seconds(times["fit_s"]),
                _minutes_seconds(times["test_s"]),
                f"{_epochs_begun(metrics)} ({_steps(metrics):,})",
                _pflop_cell(run_pflop(run)),
                f"{100 * val[max(val)]:.1f}% ({config['data']['val_size']:,})",
                f"{100 * _last(_csv(run / 'test_metrics.csv'), 'test/acc'):.1f}%",
                f"{100 * _last(_csv(no_tta), 'test/acc'):.1f}%"
                if no_tta.is_file()
                else NOT_MEASURED,
                _link(doc, run, folder),
            ]
        )
    header = ["network and recipe", "fit", "test", "epochs begun (steps)", "PFLOP"]
    header += ["last val/acc (images)", "hold-out, flip TTA", "hold-out, no TTA", "report"]
    return markdown_table(header, rows, "lrrrrrrrl")


def _options_table(results_json: Path) -> str:
    rows = [
        [
            label,
            str(r["epochs"]),
            f"{r['minutes']:.2f}",
            f"{r['last_val_acc']:.1f}%",
            ", ".join(
                f"{size} px: {ips:,.0f}" for size, ips in r["images_per_sec_by_size"].items()
            ),
        ]
        for label, r in _json(results_json).items()
    ]
    header = ["run", "epochs begun", "minutes", "last val/acc", "training images/s by size"]
    return markdown_table(header, rows, "lrrrl")


def recipe_options(reports: Path, doc: Path) -> str:
    """The 9-minute runs of the recipe's options."""
    return _options_table(reports / "recipe_options/results.json")


def full_budget_speed(reports: Path, doc: Path) -> str:
    """Training images/s at each image size in the full-budget runs."""
    return _options_table(reports / "recipe_options/full_budget/results.json")


def grid_speed(reports: Path, doc: Path) -> str:
    """The recipe grid's CPU speed of each candidate, and the epochs 25 minutes buy."""
    candidates = _json(reports / "recipe_grid/candidates.json")
    rows = []
    for name, r in sorted(
        _json(reports / "recipe_grid/cpu_probe.json").items(), key=lambda kv: -kv[1]["images_per_s"]
    ):
        arch = candidates.get(name, {})
        rows.append(
            [
                f"`{name}`",
                str(arch.get("growth_rate", "")),
                "-".join(map(str, arch.get("block_config", []))),
                str(arch.get("num_init_features", "")),
                f"{r['params']:,}",
                f"{r['images_per_s']:.0f}",
                f"{25 * 60 * r['images_per_s'] / 40000:.1f}",
            ]
        )
    header = ["candidate", "k", "blocks", "stem", "parameters", "images/s", "epochs in 25 min"]
    return markdown_table(header, rows, "lrlrrrr")


def tf_vs_torch(reports: Path, doc: Path) -> str:
    """The TF baseline against PyTorch on the same network and data."""
    tf, torch_run = reports / "tf_baseline", reports / "cpu_recipe_c15_k64"
    found, metrics = _json(tf / "metrics.json"), _csv(torch_run / "metrics.csv")
    # Logged per epoch by runs of that time (`train/images_per_sec`), later over a window.
    key = "train/images_per_sec"
    if metrics[0].get(key) is None:
        key = "train/device/samples_per_sec"
    throughput = [float(r[key]) for r in metrics if r.get(key)]
    val = _val_by_epoch(metrics)
    rows = [
        [
            "TensorFlow `tf.function`, fp32",
            _minutes_seconds(_elapsed_s(tf / "time_v.txt") or 0),
            f"{found['images_per_s']:.0f}",
            str(found["epochs"]),
            f"{100 * found['val_acc']:.1f}%",
            f"{100 * found['test_acc']:.1f}%",
        ],
        [
            "PyTorch bf16, `torch.compile`, flip TTA",
            _minutes_seconds(_times(torch_run)["fit_s"]),
            f"{statistics.median(throughput):.0f}",
            f"{_epochs_begun(metrics)}",
            f"{100 * val[max(val)]:.1f}%",
            f"{100 * _last(_csv(torch_run / 'test_metrics.csv'), 'test/acc'):.1f}%",
        ],
    ]
    header = ["densenet_c_15_k64, 40,000 images", "wall time", "training images/s (median)"]
    header += ["epochs", "val/acc (5,000)", "hold-out (5,000)"]
    return markdown_table(header, rows, "lrrrrr")


def _speed_rows(report: Path) -> list[dict[str, Any]]:
    return [r for r in _json(report / "speed.json")["results"] if "error" not in r]


def speed_recipe_model(reports: Path, doc: Path) -> str:
    """The bare training step of the recipe's earlier network in every framework mode."""
    names = {
        "torch-compile-bf16": "PyTorch bf16 + `torch.compile`",
        "torch-bf16": "PyTorch bf16 eager",
        "torch-eager": "PyTorch fp32 eager",
        "tf-bf16": "TensorFlow `tf.function`, `mixed_bfloat16`",
        "tf-function": "TensorFlow `tf.function`, fp32",
        "tf-xla": "TensorFlow XLA (`jit_compile=True`), fp32",
    }
    rows = sorted(_speed_rows(reports / "speed/recipe_model"), key=lambda r: -r["images_per_s"])
    body = [
        [
            names.get(r["case"], r["case"]),
            f"{r['images_per_s']:.0f}",
            f"{25 * 60 * r['images_per_s'] / 40000:.1f}",
        ]
        for r in rows
    ]
    return markdown_table(
        ["mode (batch 256)", "images/s", "epochs of 40,000 in 25 min"], body, "lrr"
    )


def speed_study(reports: Path, doc: Path) -> str:
    """The speed study's DenseNet rows and the two ends of its size range."""
    keep = (
        "densenet_bc_40_k12",
        "densenet_bc_100_k12",
        "tv:densenet_bc_40_k12",
        "cnn:w64",
        "mlp:w128",
    )
    rows = [r for r in _speed_rows(reports / "speed/study") if r["arch"] in keep]
    rows.sort(key=lambda r: keep.index(r["arch"]))
    body = []
    for r in rows:
        compile_s = f"{r['compile_s']:.2f}"  # with the cache a cold run wrote: warm
        if "compile_s_cold" in r:
            compile_s = f"{r['compile_s_cold']:.2f} / {compile_s}"
        body.append(
            [
                r["arch"],
                f"{r['flops_per_image'] / 1e9:.4g}",
                r["case"],
                compile_s,
                f"{r['images_per_s']:.0f}",
                f"{r['min_ms']:.1f}-{r['max_ms']:.1f}",
                f"{r['speedup']:.2f}x",
                f"{r['gflops_per_s']:.3g}",
                f"{r['pct_of_peak']:.2g}",
                f"{r['peak_mb']:.0f}",
            ]
        )
    header = ["model", "GFLOP/image", "case", "compile s (cold / warm)", "images/s"]
    header += ["ms/step (min-max)", "vs eager", "GFLOP/s", "% of peak", "peak MB"]
    return markdown_table(header, body, "lrlrrrrrrr")


def memory_efficient(reports: Path, doc: Path) -> str:
    """`memory_efficient` against eager in the speed study: memory above the framework's own,
    and time per step."""
    rows = []
    for arch in ("densenet_bc_40_k12", "densenet_bc_100_k12"):
        cases = {r["case"]: r for r in _speed_rows(reports / "speed/study") if r["arch"] == arch}
        eager, lean = cases["torch-eager"], cases["torch-memory-efficient"]
        mb = [r["peak_mb"] - r["base_mb"] for r in (eager, lean)]
        rows.append(
            [
                arch,
                f"{mb[0]:,.0f}",
                f"{mb[1]:,.0f}",
                f"{mb[1] / mb[0]:.2f}x",
                f"{eager['median_ms']:,.0f}",
                f"{lean['median_ms']:,.0f}",
                f"{lean['median_ms'] / eager['median_ms']:.2f}x",
            ]
        )
    header = ["batch 64, eager", "MB, plain", "MB, memory_efficient", "memory"]
    header += ["ms/step, plain", "ms/step, memory_efficient", "time"]
    return markdown_table(header, rows, "lrrrrrr")


def ours_vs_torchvision(reports: Path, doc: Path) -> str:
    """Our DenseNet-BC-40 against torchvision's class with the same sizes, case by case."""
    rows = _speed_rows(reports / "speed/study")
    ours = {r["case"]: r for r in rows if r["arch"] == "densenet_bc_40_k12"}
    theirs = {r["case"]: r for r in rows if r["arch"] == "tv:densenet_bc_40_k12"}
    body = [
        [
            case,
            f"{ours[case]['images_per_s']:.0f}",
            f"{theirs[case]['images_per_s']:.0f}",
            f"{ours[case]['images_per_s'] / theirs[case]['images_per_s']:.2f}",
            f"{ours[case]['min_ms']:.1f} / {theirs[case]['min_ms']:.1f}",
        ]
        for case in ours
        if case in theirs
    ]
    header = ["DenseNet-BC-40, batch 64", "ours, images/s", "torchvision's", "ours / theirs"]
    return markdown_table([*header, "fastest repeat, ms/step (ours / theirs)"], body, "lrrrr")


def speed_peaks(reports: Path, doc: Path) -> str:
    """The peaks measured in the speed study's run."""
    peak = _json(reports / "speed/study/speed.json")["peak"]["cpu"]
    rows = [
        [
            f"matmul {peak['matmul_size']}^3",
            f"{peak['matmul_fp32']:,.0f}",
            f"{peak['matmul_bf16']:,.0f}",
        ],
        [
            f"3x3 conv {peak['conv_shape']} NHWC",
            f"{peak['conv_fp32']:,.0f}",
            f"{peak['conv_bf16']:,.0f}",
        ],
    ]
    return markdown_table(["measured peak, GFLOP/s", "fp32", "bf16"], rows, "lrr")


def fit_speed(reports: Path, doc: Path) -> str:
    """`fit`'s own throughput per setting."""
    rows = [
        [
            r["arch"],
            r["setting"],
            f"{r['median']:.1f}",
            f"{r['min']:.1f}-{r['max']:.1f}",
            f"{r['vs_fp32_eager']:.2f}x",
        ]
        for r in _json(reports / "fit_speed/fit_speed.json")["throughput"]
    ]
    header = ["arch", "setting", "images/s (median)", "spread (min-max)", "vs fp32 eager"]
    return markdown_table(header, rows, "llrrr")


def fit_speed_accuracy(reports: Path, doc: Path) -> str:
    """Validation accuracy after the same short training per setting and seed."""
    by_setting: dict[str, list[float]] = {}
    for r in _json(reports / "fit_speed/fit_speed.json")["accuracy"]:
        by_setting.setdefault(r["setting"], []).append(100 * r["val_acc"])
    rows = [
        [
            setting,
            ", ".join(f"{v:.1f}%" for v in values),
            f"{statistics.mean(values):.1f}%",
            f"{min(values):.1f}-{max(values):.1f}%",
        ]
        for setting, values in by_setting.items()
    ]
    return markdown_table(["setting", "val/acc per seed", "mean", "spread"], rows, "llrr")


def loop_overhead(reports: Path, doc: Path) -> str:
    """The bare step against `fit`, measured one right after the other."""
    folder = reports / "fit_speed/loop_overhead"
    bare = {r["case"]: r["images_per_s"] for r in _json(folder / "bare_step.json")["results"]}
    fitted = {r["setting"]: r["median"] for r in _json(folder / "fit_speed.json")["throughput"]}
    rows = []
    for case, setting in (("torch-bf16", "bf16"), ("torch-compile-bf16", "bf16-compile")):
        if case in bare and setting in fitted:
            rows.append(
                [
                    setting,
                    f"{bare[case]:.0f}",
                    f"{fitted[setting]:.1f}",
                    f"{fitted[setting] / bare[case]:.2f}",
                ]
            )
    return markdown_table(
        ["densenet_c_13_k48, batch 256", "bare step, images/s", "fit, images/s", "fit / bare"],
        rows,
        "lrrr",
    )


def profile(reports: Path, doc: Path) -> str:
    """torch.profiler's step time and top operators for DenseNet-BC-40."""
    text = (reports / "profile/densenet_bc_40_k12.txt").read_text()
    rows = []
    for block in re.split(r"\n(?=densenet_bc_40_k12 \w+ \w+ bs\d+: )", text):
        head = re.search(r"densenet_bc_40_k12 (\w+) (\w+) bs(\d+): ([\d.]+) ms/step", block)
        if not head:
            continue
        ops = re.findall(r"^\s*(\S.*?)\s{2,}([\d.]+)%\s", block, re.M)[:3]
        top = "; ".join(f"{_operator(name)} {float(pct):.0f}%" for name, pct in ops)
        rows.append([f"{head.group(1)} {head.group(2)}", head.group(4), top])
    return markdown_table(
        ["DenseNet-BC-40, batch 64", "ms/step", "top operators (self CPU %)"], rows, "lrl"
    )


def _operator(name: str) -> str:
    name = name.strip()
    if name.startswith("## Call CompiledFxGraph"):
        return "an Inductor-generated kernel"
    return f"`{name}`"


def _config_block(path: Path) -> str:
    name = path.relative_to(path.parents[1]).as_posix()
    return f"`{name}`:\n\n```yaml\n{path.read_text()}```\n"


def cpu_config(reports: Path, doc: Path) -> str:
    """The CPU recipe's config file, verbatim."""
    return _config_block(reports.parent / "configs/cifar10_cpu.yaml")


def compute_config(reports: Path, doc: Path) -> str:
    """The compute-budgeted recipe's config, verbatim, once its report is committed."""
    config = reports.parent / "configs/cifar10_short.yaml"
    if not (reports / "compute_recipe/results.json").is_file() or not config.is_file():
        return ""
    return _config_block(config)


def fit_summary(reports: Path, doc: Path) -> str:
    """What `fit` printed at the end of the CPU recipe's run, from its metrics.csv."""
    from dataclasses import replace

    from lightning_densenet.summary import format_fit_report, read_fit_report

    report = read_fit_report(reports / "cpu_recipe")
    run = Path("runs/cifar10_cpu/version_0")
    val = _val_by_epoch(_csv(reports / "cpu_recipe/metrics.csv"))
    best_epoch = report.best_epoch - 1
    best = run / f"checkpoints/epoch{best_epoch:03d}-val_acc{val[best_epoch]:.4f}.ckpt"
    text = format_fit_report(
        replace(report, run=run), str(best), str(run / "checkpoints/last.ckpt"), window=100
    )
    return f"```text\n{text}\n```\n"


def h100_check(reports: Path, doc: Path) -> str:
    """The training step of two small models on one H100."""
    rows = [
        [
            r["arch"],
            r["case"],
            f"{r['median_ms']:.1f}",
            f"{r['images_per_s']:,.0f}",
            f"{r['speedup']:.2f}x",
        ]
        for r in _speed_rows(reports / "speed/h100_check")
        if r["case"].startswith("torch")
    ]
    return markdown_table(
        ["model (batch 64)", "case", "ms/step", "images/s", "vs eager"], rows, "llrrr"
    )


def sweep_trials(reports: Path, doc: Path) -> str:
    """The CPU sweep's trials, best first, failed ones with their reason."""
    trials = _csv(reports / "sweep_cpu/trials.csv")
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
    trials.sort(key=lambda t: (order[t["state"]], -float(t["val/acc"] or 0)))
    rows = []
    for t in trials:
        lr = t.get("sgd_lr") or t.get("adamw_lr") or ""
        note = t.get("note", "")
        if t["state"] == "FAIL":
            note = "diverged (NaN loss)" if "nan" in note.lower() else note
        rows.append(
            [
                t["number"],
                t["state"].lower(),
                f"{100 * float(t['val/acc']):.1f}%" if t["val/acc"] else "",
                f"{int(t['params']):,}",
                t["fit_seconds"],
                t["epochs"],
                t["model.arch.growth_rate"],
                t["model.arch.block_config"],
                t["model.arch.bottleneck"],
                t["model.arch.compression"],
                t["model.arch.batch_norm"],
                t["model.optimizer"],
                f"{float(lr):.3g}" if lr else "",
                t["data.batch_size"],
                f"{float(t['model.label_smoothing']):.2f}",
                t["data.augment"],
                note if t["state"] != "COMPLETE" else "",
            ]
        )
    header = ["trial", "state", "val/acc", "params", "s", "epochs", "k", "blocks", "bottleneck"]
    header += ["θ", "BN", "optimiser", "lr", "batch", "smoothing", "augment", "note"]
    return markdown_table(header, rows, "llrrrrrllrllrrrll")


# DenseNet-BC and DenseNet in Table 2 of Huang et al.: the parameter counts it rounds.
PAPER = {
    "densenet_40_k12": "1.0M",
    "densenet_100_k12": "7.0M",
    "densenet_100_k24": "27.2M",
    "densenet_bc_100_k12": "0.8M",
    "densenet_bc_250_k24": "15.3M",
    "densenet_bc_190_k40": "25.6M",
}


def presets(reports: Path, doc: Path) -> str:
    """The architecture presets, their depth and parameter count at 10 classes (1,000 for
    the ImageNet layout), counted on the meta device."""
    import torch

    from lightning_densenet.arch import PRESETS
    from lightning_densenet.model import DenseNet

    rows = []
    for name, config in PRESETS.items():
        classes = 1000 if config.stem == "imagenet" else 10
        with torch.device("meta"):
            params = sum(p.numel() for p in DenseNet(config, classes).parameters())
        layers = sum(config.block_config) * (2 if config.bottleneck else 1)
        depth = 1 + layers + len(config.block_config) - 1 + 1  # stem, layers, transitions, fc
        rows.append(
            [
                f"`{name}`",
                str(depth),
                str(config.growth_rate),
                "-".join(map(str, config.block_config)),
                "yes" if config.bottleneck else "no",
                f"{config.compression:g}",
                config.stem,
                f"{params:,}" + (" (1,000 classes)" if classes == 1000 else ""),
                PAPER.get(name, ""),
            ]
        )
    header = ["preset", "depth L", "k", "blocks", "bottleneck", "θ", "stem", "parameters"]
    return markdown_table([*header, "paper"], rows, "lrrllrlrr")


TABLES: dict[str, Callable[[Path, Path], str]] = {
    "results": results,
    "compute-runs": compute_runs,
    "compute-figure": compute_figure,
    "compute-proxies": compute_proxies,
    "compute-rate": compute_rate,
    "compute-minutes": compute_minutes,
    "fit-summary": fit_summary,
    "cpu-config": cpu_config,
    "compute-config": compute_config,
    "recipe-runs": recipe_runs,
    "recipe-options": recipe_options,
    "full-budget-speed": full_budget_speed,
    "grid-speed": grid_speed,
    "tf-vs-torch": tf_vs_torch,
    "speed-recipe-model": speed_recipe_model,
    "speed-study": speed_study,
    "speed-peaks": speed_peaks,
    "memory-efficient": memory_efficient,
    "ours-vs-torchvision": ours_vs_torchvision,
    "fit-speed": fit_speed,
    "fit-speed-accuracy": fit_speed_accuracy,
    "loop-overhead": loop_overhead,
    "profile": profile,
    "h100-check": h100_check,
    "sweep-trials": sweep_trials,
    "presets": presets,
}


def render(text: str, doc: Path, reports: Path = REPO / "reports") -> str:
    """`text` (the document `doc`) with every marked table rendered afresh."""

    def one(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise UserError(f"{doc}: no table named {name!r}: use one of {', '.join(TABLES)}.")
        return match.group(1) + TABLES[name](reports, doc) + match.group(4)

    return MARKER.sub(one, text)


def documents(root: Path = REPO) -> list[Path]:
    """The documents whose tables are rendered: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def table_names(text: str) -> list[str]:
    return [m.group(2) for m in MARKER.finditer(text)]


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_densenet.report_tables",
        description="Render the result tables of README.md and docs/*.md from reports/.",
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 on drift")
    args = parser.parse_args(argv)
    stale = []
    for doc in documents():
        text = doc.read_text()
        rendered = render(text, doc)
        if rendered != text:
            stale.append(doc)
            if not args.check:
                write_text_atomic(doc, rendered)
    verb = "differ from their reports" if args.check else "rewritten"
    for doc in stale:
        print(f"{doc.relative_to(REPO)}: tables {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["TABLES", "documents", "machine_words", "main", "render", "run_pflop"]
