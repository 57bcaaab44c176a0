"""The speed report's figures (matplotlib, Agg backend: no display needed).

speedup_vs_flops.png    speed-up over the framework's eager against training FLOPs per
                        image, one line per framework and mode, a marker per model kind
throughput_by_mode.png  images/s of every case, grouped by model (min-max as error bars)
gflops_vs_flops.png     achieved GFLOP/s against FLOPs per image, with the machine's peaks
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MARKERS = {"densenet": "o", "cnn": "s", "mlp": "^"}


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
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    usable = [r for r in rows if r.get("flops_per_image") and r.get("speedup")]
    cases = [c for c in dict.fromkeys(r["case"] for r in usable) if not c.endswith("-eager")]
    if not cases:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5), layout="constrained")
    ax.axhline(1.0, color="0.6", linewidth=1)
    for case in cases:
        points = sorted(
            (r["flops_per_image"], r["speedup"], r["model_kind"])
            for r in usable
            if r["case"] == case
        )
        style = "-" if case.startswith("torch") else "--"
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, style, color=colors[case], label=case, linewidth=1.5)
        for x, y, kind in points:
            ax.plot(x, y, MARKERS.get(kind, "o"), color=colors[case], markersize=6)
    ax.set_xscale("log")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.set_xlabel("training FLOPs per image (forward + backward, torch.utils.flop_counter)")
    ax.set_ylabel("speed-up over that framework's eager (images/s ratio)")
    ax.set_title("Graph mode / compilation speed-up against model size")
    kinds = sorted({r["model_kind"] for r in usable})
    marks = [
        Line2D([], [], marker=MARKERS.get(k, "o"), color="0.3", linestyle="", label=k)
        for k in kinds
    ]
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + marks, fontsize=8, loc="best")
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
    for case in cases:
        points = sorted(
            (r["flops_per_image"], r["gflops_per_s"], r["model_kind"])
            for r in usable
            if r["case"] == case
        )
        style = "-" if case.startswith("torch") else "--"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, color=colors[case])
        for x, y, kind in points:
            ax.plot(x, y, MARKERS.get(kind, "o"), color=colors[case], markersize=5)
        ax.plot([], [], style, color=colors[case], label=case)
    devices = {r.get("device_type", "cpu") for r in usable}
    for device in sorted(devices & set(peak)):
        for key, line in (("matmul_fp32", ":"), ("matmul_bf16", "-."), ("conv_fp32", ":")):
            if key in peak[device]:
                ax.axhline(peak[device][key], color="0.4", linestyle=line, linewidth=1)
                ax.annotate(
                    f"{device} {key.replace('_', ' ')} peak",
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
    ax.legend(fontsize=7, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["write_plots"]
