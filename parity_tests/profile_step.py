"""Where a DenseNet training step spends its time: torch.profiler's operator table.

    python -m parity_tests.profile_step ARCH {eager,compile} {fp32,bf16} [BATCH] [--out DIR]

Builds `ARCH` (bf16 also puts model and input in channels_last), runs 3 warm-up steps
(compilation included), times 5, then profiles 3 and prints the 18 operators with the most
self CPU time; the same text goes to `DIR/ARCH-MODE-PRECISION-bsBATCH.txt` (default DIR:
`runs/profile`). `reports/profile/` holds the output quoted in docs/speed.md, made with
OMP_NUM_THREADS=2 on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from lightning_densenet.model import build_model
from parity_tests.train_step import torch_train_step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m parity_tests.profile_step",
        description="Profile a DenseNet training step with torch.profiler.",
    )
    parser.add_argument("arch", help="a DenseNet preset name")
    parser.add_argument("mode", choices=("eager", "compile"))
    parser.add_argument("precision", choices=("fp32", "bf16"))
    parser.add_argument("batch", type=int, nargs="?", default=64)
    parser.add_argument(
        "--out", type=Path, default=Path("runs/profile"), help="default: %(default)s"
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    arch, mode, precision, batch = args.arch, args.mode, args.precision, args.batch
    bf16 = precision == "bf16"
    torch.set_num_threads(2)
    model = build_model(arch, 10, channels_last=bf16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, fused=True)
    net = torch.compile(model) if mode == "compile" else model
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        torch_train_step(net, optimizer, x, y, bf16=bf16)

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(5):
        step()
    timing = (
        f"{arch} {mode} {precision} bs{batch}: {(time.perf_counter() - start) / 5e-3:.1f} ms/step"
    )
    print(timing)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    table = prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60
    )
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{arch}-{mode}-{precision}-bs{batch}.txt"
    path.write_text(f"{timing}\n{table}\n")
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
