"""The speed report's figures (matplotlib, Agg backend: no display needed).

speedup_vs_flops.png    speed-up over the framework's eager against training FLOPs per
                        image: a colour per case, a marker per model family, one line per
                        case and family (a line never joins a DenseNet to a CNN or an MLP)
throughput_by_mode.png  images/s of every case, grouped by model (min-max as error bars)
gflops_vs_flops.png     achieved GFLOP/s against FLOPs per image, with the machine's measured
                        matmul and conv peaks (fp32 and bf16) as horizontal lines

`python -m parity_tests.speed.plots REPORT_DIR` redraws them from `REPORT_DIR/speed.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKERS = {"densenet": "o", "torchvision densenet": "D", "cnn": "s", "mlp": "^"}


def family(row: dict[str, Any]) -> str:
    """The model family a row's line stays within: densenet, torchvision densenet, cnn, mlp."""
    return "torchvision densenet" if row["arch"].startswith("tv:") else row["model_kind"]


def _lines(
    rows: list[dict[str, Any]], case: str, y: str
) -> list[tuple[str, list[tuple[float, float]]]]:
    """The case's points as (family, points sorted by FLOPs), one entry per model family."""
    by_family: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["case"] == case:
            by_family.setdefault(family(r), []).append((r["flops_per_image"], r[y]))
    return [(name, sorted(points)) for name, points in sorted(by_family.items())]


def _family_legend(rows: list[dict[str, Any]]) -> list[Any]:
    from matplotlib.lines import Line2D

    families = sorted({family(r) for r in rows})
    return [
        Line2D([], [], marker=MARKERS.get(f, "o"), color="0.3", linestyle="", label=f)
        for f in families
    ]


def write_plots(rows: list[dict[str, Any]], peak: dict[str, Any], out: Path) -> list[Path]:
    """Writes the figures into `out` and returns their paths (none without a measured row)."""
    import matplotlib

    matplotlib.use("Agg")
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return []
    colors = _colors(list(dict.fromkeys(r["case"] for r in ok)))  # one colour per case
    paths = [
        _speedup_vs_flops(ok, colors, out / "speedup_vs_flops.png"),
        _throughput_by_mode(ok, colors, out / "throughput_by_mode.png"),
        _gflops_vs_flops(ok, peak, colors, out / "gflops_vs_flops.png"),
    ]
    return [p for p in paths if p is not None]


# PyTorch cases in blues and greens, TensorFlow's in reds and yellows (eager first).
TORCH_COLORS = ("#1f3b73", "#1f77b4", "#17becf", "#2ca02c", "#98df8a", "#9467bd", "#7f7f7f")
TF_COLORS = ("#8c1a1a", "#d62728", "#ff7f0e", "#e6ab02", "#f781bf", "#a6761d")


def _colors(cases: list[str]) -> dict[str, str]:
    torch_cases = [c for c in cases if c.startswith("torch")]
    tf_cases = [c for c in cases if not c.startswith("torch")]
    colors = {c: TORCH_COLORS[i % len(TORCH_COLORS)] for i, c in enumerate(torch_cases)}
    return colors | {c: TF_COLORS[i % len(TF_COLORS)] for i, c in enumerate(tf_cases)}


def _speedup_vs_flops(
    rows: list[dict[str, Any]], colors: dict[str, str], path: Path
) -> Path | None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    usable = [r for r in rows if r.get("flops_per_image") and r.get("speedup")]
    cases = [c for c in dict.fromkeys(r["case"] for r in usable) if not c.endswith("-eager")]
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    ax.axhline(1.0, color="0.6", linewidth=1)
    _draw_cases(ax, usable, cases, colors, "speedup")
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("training FLOPs per image (forward + backward, torch.utils.flop_counter)")
    ax.set_ylabel("speed-up over that framework's eager (images/s ratio)")
    ax.set_title("Graph mode / compilation speed-up against model size")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + _family_legend(usable), fontsize=8, loc="best")
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw_cases(
    ax: Any, rows: list[dict[str, Any]], cases: list[str], colors: dict[str, str], y: str
) -> None:
    """A colour per case (solid PyTorch, dashed TensorFlow), a line per model family."""
    for case in cases:
        style = "-" if case.startswith("torch") else "--"
        for kind, points in _lines(rows, case, y):
            ax.plot(
                [p[0] for p in points], [p[1] for p in points], style,
                marker=MARKERS.get(kind, "o"), color=colors[case], linewidth=1.5, markersize=6,
            )  # fmt: skip
        ax.plot([], [], style, color=colors[case], label=case)


def _throughput_by_mode(rows: list[dict[str, Any]], colors: dict[str, str], path: Path) -> Path:
    import matplotlib.pyplot as plt

    archs = sorted(
        dict.fromkeys(r["arch"] for r in rows),
        key=lambda a: next((r.get("flops_per_image") or 0 for r in rows if r["arch"] == a), 0),
    )
    cases = list(dict.fromkeys(r["case"] for r in rows))
    width = 0.8 / len(cases)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(archs) + 3), 5.5), layout="constrained")
    for i, case in enumerate(cases):
        xs, ys, low, high = [], [], [], []
        for j, arch in enumerate(archs):
            r = next((r for r in rows if r["arch"] == arch and r["case"] == case), None)
            if r is None:
                continue
            ips = r["images_per_s"]
            xs.append(j - 0.4 + (i + 0.5) * width)
            ys.append(ips)
            # min-max of the repeats' step times, as images/s (the slowest repeat is lowest)
            low.append(ips - r["batch_size"] / r["max_ms"] * 1e3)
            high.append(r["batch_size"] / r["min_ms"] * 1e3 - ips)
        ax.bar(xs, ys, width, color=colors[case], label=case, yerr=[low, high], capsize=1.5)
    ax.set_xticks(range(len(archs)), archs, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("training images/s (median; bars: min-max of repeats)")
    ax.set_title("Throughput by mode (models ordered by FLOPs per image)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _gflops_vs_flops(
    rows: list[dict[str, Any]], peak: dict[str, Any], colors: dict[str, str], path: Path
) -> Path | None:
    import matplotlib.pyplot as plt

    usable = [r for r in rows if r.get("gflops_per_s")]
    if not usable:
        return None
    cases = list(dict.fromkeys(r["case"] for r in usable))
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    _draw_cases(ax, usable, cases, colors, "gflops_per_s")
    devices = {r.get("device_type", "cpu") for r in usable}
    for device in sorted(devices & set(peak)):
        for key, line in PEAK_LINES:
            if key in peak[device]:
                ax.axhline(peak[device][key], color="0.35", linestyle=line, linewidth=1)
                ax.annotate(
                    f"{device} {key.replace('_', ' ')} peak: {peak[device][key]:,.0f}",
                    (0.01, peak[device][key]),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    va="bottom",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training FLOPs per image")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("Achieved GFLOP/s against model size, next to the measured peaks")
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + _family_legend(usable), fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# The measured peaks drawn, each with its own line style.
PEAK_LINES = (
    ("matmul_fp32", ":"),
    ("conv_fp32", (0, (1, 4))),
    ("matmul_bf16", "-."),
    ("conv_bf16", "--"),
)


def main(argv: list[str] | None = None) -> int:
    import json
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not (Path(args[0]) / "speed.json").is_file():
        print(
            "usage: python -m parity_tests.speed.plots REPORT_DIR (holding speed.json)",
            file=sys.stderr,
        )
        return 2
    out = Path(args[0])
    report = json.loads((out / "speed.json").read_text())
    for path in write_plots(report["results"], report.get("peak", {}), out):
        print(f"Wrote {path}")
    return 0


__all__ = ["family", "write_plots"]

if __name__ == "__main__":
    raise SystemExit(main())
