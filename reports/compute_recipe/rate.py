"""Training-step compute rate: the recipe's DenseNet beside airbench94's net, on one machine.

Time to accuracy is compute needed over compute rate; this measures the rate half. Each case
trains on synthetic images (forward, backward, a Nesterov SGD step under bf16 autocast with
fp32 weights, channels_last) and counts its FLOPs per step with `torch.utils.flop_counter`
on a real step (frozen layers cost no weight gradient), so both nets are counted alike. The
cases run in interleaved rounds (A, B, C, A, B, C, ...) so that a machine slowing down or
speeding up moves them all; each case's GFLOP/s is the median of the rounds, with the
min-max spread. The machine's bf16 matmul peak is measured in the same run.

airbench94 stays outside this project (its own repository, `legacy/airbench94.py`): its net
is built from its own classes and `hyp`, as its `make_net` does, minus `.half().cuda()`.

    python reports/compute_recipe/rate.py --airbench ../cifar10-airbench/legacy/airbench94.py \
        --out reports/compute_recipe/rate

Run it alone on the machine: another job on the cores makes every number meaningless.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_densenet.arch import resolve_arch
from lightning_densenet.files import markdown_table, write_text_atomic
from lightning_densenet.model import DenseNet, freeze_norm_scales

REPO = Path(__file__).resolve().parents[2]


def airbench_net(path: Path) -> nn.Module:
    """airbench94's network, built as its `make_net` builds it, on the CPU in fp32."""
    spec = importlib.util.spec_from_file_location("airbench94", path)
    assert spec is not None and spec.loader is not None
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)
    widths, momentum = ab.hyp["net"]["widths"], ab.hyp["net"]["batchnorm_momentum"]
    whiten_width = 2 * 3 * 2**2
    net = nn.Sequential(
        ab.Conv(3, whiten_width, 2, padding=0, bias=True),
        nn.GELU(),
        ab.ConvGroup(whiten_width, widths["block1"], momentum),
        ab.ConvGroup(widths["block1"], widths["block2"], momentum),
        ab.ConvGroup(widths["block2"], widths["block3"], momentum),
        nn.MaxPool2d(3),
        ab.Flatten(),
        nn.Linear(widths["block3"], 10, bias=False),
        ab.Mul(ab.hyp["net"]["scaling_factor"]),
    )
    net[0].weight.requires_grad = False
    return net


def recipe_net(config: Path) -> nn.Module:
    """The DenseNet of a fit config (`model.arch`), with the config's BatchNorm options."""
    import yaml

    model = yaml.safe_load(config.read_text())["model"]
    net = DenseNet(resolve_arch(model["arch"]), 10)
    if model.get("norm_scale") is False:
        freeze_norm_scales(net)
    return net


def train_step(
    net: nn.Module, batch: int, size: int, compiled: bool
) -> tuple[Callable[[], None], float]:
    """A closure running one training step, and that step's FLOPs."""
    net = net.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))
    model = torch.compile(net) if compiled else net

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter, torch.autocast("cpu", dtype=torch.bfloat16):
        F.cross_entropy(net(x), y).backward()  # eager: the counter sees every op
    opt.zero_grad(set_to_none=True)
    return step, float(counter.get_total_flops())


def matmul_peak(n: int = 2048, seconds: float = 3.0) -> float:
    """GFLOP/s of a bf16 n x n matmul, repeated for `seconds`."""
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - start) / 1e9


def timed(step: Callable[[], None], seconds: float) -> float:
    """Seconds per step, over as many whole steps as fit in about `seconds`."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or done < 2:
        step()
        done += 1
    return (time.perf_counter() - start) / done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--airbench", type=Path, required=True, help="legacy/airbench94.py")
    parser.add_argument("--config", type=Path, default=REPO / "configs/cifar10_short.yaml")
    parser.add_argument("--out", type=Path, default=REPO / "reports/compute_recipe/rate")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="per case and round")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    # (name, network, batch, image size, compiled): airbench94 as the issue ran it (eager,
    # batch 1024, 32 px), and the recipe's network as its fit trains it (compiled, batch 256,
    # at each size of its progressive resizing) and eager at full size.
    cases: list[tuple[str, Callable[[], nn.Module], int, int, bool]] = [
        ("airbench94, eager", lambda: airbench_net(args.airbench), 1024, 32, False),
        ("airbench94, compiled", lambda: airbench_net(args.airbench), 1024, 32, True),
        ("recipe DenseNet, eager", lambda: recipe_net(args.config), 256, 32, False),
        ("recipe DenseNet, compiled", lambda: recipe_net(args.config), 256, 32, True),
        ("recipe DenseNet, compiled, 24 px", lambda: recipe_net(args.config), 256, 24, True),
        ("recipe DenseNet, compiled, 16 px", lambda: recipe_net(args.config), 256, 16, True),
    ]
    steps, rows = [], []
    for name, build, batch, size, compiled in cases:
        step, flops = train_step(build(), batch, size, compiled)
        start = time.perf_counter()
        step()  # the first step compiles
        step()
        rows.append(
            {
                "case": name,
                "batch": batch,
                "px": size,
                "compiled": compiled,
                "gflop_per_step": flops / 1e9,
                "warmup_s": time.perf_counter() - start,
                "step_s": [],
            }
        )
        steps.append(step)
    peaks = []
    for _ in range(args.rounds):
        peaks.append(matmul_peak())
        for step, row in zip(steps, rows, strict=True):
            row["step_s"].append(timed(step, args.seconds))
    for row in rows:
        rates = [row["gflop_per_step"] / s for s in row["step_s"]]
        row["gflops_per_s"] = statistics.median(rates)
        row["gflops_per_s_range"] = [min(rates), max(rates)]
        row["images_per_s"] = row["batch"] / statistics.median(row["step_s"])
    reference = rows[0]["gflops_per_s"]
    for row in rows:
        row["vs_airbench94_eager"] = row["gflops_per_s"] / reference
    peak = statistics.median(peaks)
    report = {
        "command": "python reports/compute_recipe/rate.py --airbench .../legacy/airbench94.py",
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "bf16_matmul_peak_gflops": peak,
            "bf16_matmul_peak_range": [min(peaks), max(peaks)],
        },
        "rounds": args.rounds,
        "seconds_per_case_and_round": args.seconds,
        "cases": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "rate.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out / "rate.md", _markdown(report))
    print(_markdown(report))


def _markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    header = ["case", "batch", "px", "GFLOP/step", "images/s", "GFLOP/s (min-max)"]
    header += ["x airbench94 eager", "% of bf16 peak"]
    rows = [
        [
            r["case"],
            r["batch"],
            r["px"],
            f"{r['gflop_per_step']:.1f}",
            f"{r['images_per_s']:.0f}",
            f"{r['gflops_per_s']:.0f} ({r['gflops_per_s_range'][0]:.0f}-"
            f"{r['gflops_per_s_range'][1]:.0f})",
            f"{r['vs_airbench94_eager']:.2f}",
            f"{100 * r['gflops_per_s'] / machine['bf16_matmul_peak_gflops']:.0f}%",
        ]
        for r in report["cases"]
    ]
    intro = (
        f"{machine['threads']} threads, torch {machine['torch']}; bf16 matmul peak "
        f"{machine['bf16_matmul_peak_gflops']:.0f} GFLOP/s (median of {report['rounds']} "
        f"readings, {machine['bf16_matmul_peak_range'][0]:.0f}-"
        f"{machine['bf16_matmul_peak_range'][1]:.0f}). Median of {report['rounds']} "
        "interleaved rounds per case.\n\n"
    )
    return intro + markdown_table(header, rows, align="lrrrrrrr")


if __name__ == "__main__":
    main()
