"""The speed report: statistics of each case's raw timings, the derived columns (speed-up over
the framework's eager, achieved GFLOP/s against the machine's peak), and the files:
`speed.json` (everything), `speed.md` (the tables) and the plots of `plots`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from lightning_densenet.files import markdown_table
from parity_tests.speed.plots import write_plots

COLUMNS = (
    "model",
    "params",
    "GFLOP/image",
    "case",
    "device",
    "compile s (cold / warm)",
    "ms/step (median)",
    "spread (min-max)",
    "images/s",
    "speed-up vs eager",
    "GFLOP/s",
    "% of peak",
    "peak MB",
)
ALIGN = "lrrllrrrrrrrr"  # one letter a column: numbers right, names left


def with_stats(row: dict[str, Any]) -> dict[str, Any]:
    """A worker's raw row plus median, spread, images/s and compile time."""
    ms = sorted(row["ms_per_step"])
    median = statistics.median(ms)
    q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else ms * 3
    return row | {
        "median_ms": median,
        "min_ms": ms[0],
        "max_ms": ms[-1],
        "iqr_ms": [q1, q3],
        "images_per_s": row["batch_size"] / median * 1e3,
        # Tracing/compilation: what the first step took beyond a steady step.
        "compile_s": max(0.0, row["first_step_s"] - median / 1e3),
    }


def annotate(
    rows: list[dict[str, Any]], flops: dict[str, dict[str, Any]], peak: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Adds to each measured row its FLOPs per image, achieved GFLOP/s, the peak of its device
    and dtype (the better of matmul and conv) and the speed-up over its framework's eager
    case on the same model (None where that case is missing or failed)."""
    out = []
    for r in rows:
        if "error" in r:
            out.append(r)
            continue
        eager = _find(rows, r["arch"], f"{r['framework']}-eager")
        r = r | {"speedup": eager["median_ms"] / r["median_ms"] if eager else None}
        per_image = flops.get(r["arch"], {}).get("flops_per_image")
        achieved = per_image * r["images_per_s"] / 1e9 if per_image else None
        dev = peak.get(r.get("device_type", "cpu"), {})
        best = max((dev.get(f"{k}_{r['dtype']}", 0.0) for k in ("matmul", "conv")), default=0.0)
        r |= {
            "flops_per_image": per_image,
            "gflops_per_s": achieved,
            "peak_gflops_per_s": best or None,
            "pct_of_peak": 100 * achieved / best if achieved and best else None,
        }
        out.append(r)
    return out


def _find(rows: list[dict[str, Any]], arch: str, case: str) -> dict[str, Any] | None:
    for r in rows:
        if r["arch"] == arch and r["case"] == case and "error" not in r:
            return r
    return None


def write_report(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[Path]:
    """`speed.json` with everything, `speed.md` with the tables, and the plots (PNG).
    Returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(rows, meta.get("peak", {}), out)
    meta = meta | {"plots": [p.name for p in plots]}
    (out / "speed.json").write_text(json.dumps(meta | {"results": rows}, indent=2) + "\n")
    (out / "speed.md").write_text(markdown(rows, meta))
    return [out / "speed.json", out / "speed.md", *plots]


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    m, s = meta["machine"], meta["settings"]
    versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    load = m["load_average_at_start"]
    load = f"{load[0]:.1f} at the start" if load else "unknown"
    loads = [r["load_average_before"] for r in rows if r.get("load_average_before") is not None]
    if loads:
        load += f", {min(loads):.1f}-{max(loads):.1f} before the cases"
    caches = {
        "cold": "torch.compile from scratch (Inductor's disk caches off)",
        "cold-and-warm": "torch.compile timed from an empty Inductor cache (cold) and again "
        "from the cache that run wrote (warm)",
    }.get(s.get("compile_cache", ""), "torch.compile may reuse Inductor's on-disk cache")
    steps = f"{s['steps']} steps" + (
        f" (fewer where {s['repeat_s']:g} s suffice)" if s.get("repeat_s") else ""
    )
    lines = [
        f"# Training-step speed: {', '.join(s['archs'])}",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['date']}; {m['cpu']}, {m['usable_cores']} usable cores (load average "
        f"{load}), {s['threads']} threads per case; {versions}. Batch "
        f"{s['batch_size']} (or the model's @N) of synthetic 32x32 images; "
        f"{s['repeats']} repeats of {steps} "
        f"after {s['warmup']} warm-up steps. compile s: the first step minus a steady one; "
        f"{caches}. On a shared machine the spread (min-max of the repeats) shows how much "
        "the timings moved; compare numbers within one table.",
        "",
        *_peak_lines(meta.get("peak", {})),
        markdown_table(COLUMNS, [_cells(r) for r in rows], ALIGN),
        *_best_lines(rows),
    ]
    plots = meta.get("plots", [])
    lines += [f"![{p.removesuffix('.png')}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _cells(r: dict[str, Any]) -> list[str]:
    if "error" in r:
        return [r["arch"], "", "", r["case"], "", f"failed: {r['error']}"] + [""] * 7
    flops = r.get("flops_per_image")
    compile_s = f"{r['compile_s']:.2f}"
    if "compile_s_cold" in r:
        compile_s = f"{r['compile_s_cold']:.2f} / {compile_s}"
    return [
        r["arch"],
        f"{r['params']:,}",
        f"{flops / 1e9:.4g}" if flops else "-",
        r["case"],
        r["device"],
        compile_s,
        f"{r['median_ms']:.1f}",
        f"{r['min_ms']:.1f}-{r['max_ms']:.1f}",
        f"{r['images_per_s']:.0f}",
        f"{r['speedup']:.2f}x" if r.get("speedup") else "-",
        _number(r.get("gflops_per_s")),
        f"{r['pct_of_peak']:.2g}" if r.get("pct_of_peak") else "-",
        f"{r['peak_mb']:.0f}",
    ]


def _number(x: float | None) -> str:
    """Three significant digits, without exponents: 0.0123, 4.56, 789, 12,345."""
    if not x:
        return "-"
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _peak_lines(peak: dict[str, dict[str, Any]]) -> list[str]:
    if not peak:
        return []
    parts = [
        f"{device}: matmul {p['matmul_size']}^3 fp32 {p['matmul_fp32']:,.0f}, "
        f"bf16 {p['matmul_bf16']:,.0f}; 3x3 conv {p['conv_shape']} NHWC fp32 "
        f"{p['conv_fp32']:,.0f}, bf16 {p['conv_bf16']:,.0f}"
        for device, p in peak.items()
    ]
    if "cuda" in peak:
        parts[-1] += " (fp32 on the GPU: TF32, as the fp32 cases run)"
    return [
        "Peak GFLOP/s measured in this run (PyTorch, best of 5): " + "; ".join(parts) + ". "
        "% of peak: a row's GFLOP/s (training FLOPs per image from torch.utils.flop_counter, "
        "times images/s) over the better of matmul and conv in the row's dtype. peak MB: the "
        "case's process at its largest (max RSS; on a GPU, CUDA memory allocated).",
        "",
    ]


def _best_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per model, the fastest case of each framework and its speed-up over that eager."""
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    frameworks = list(dict.fromkeys(r["framework"] for r in rows))
    head = ["model", *(f"fastest {f} case (vs eager)" for f in frameworks)]
    lines = []
    for arch in archs:
        cells = [arch]
        for f in frameworks:
            ok = [r for r in rows if r["arch"] == arch and r["framework"] == f and "error" not in r]
            best = max(ok, key=lambda r: r["images_per_s"], default=None)
            speedup = f", {best['speedup']:.2f}x" if best and best.get("speedup") else ""
            cells.append(f"{best['case']} ({best['images_per_s']:.0f}/s{speedup})" if best else "-")
        lines.append(cells)
    return [markdown_table(head, lines)]


__all__ = ["COLUMNS", "annotate", "markdown", "with_stats", "write_report"]
