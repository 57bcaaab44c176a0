"""Where a DenseNet training step spends its time: torch.profiler's operator table.

    python -m parity_tests.profile_step ARCH {eager,compile} {fp32,bf16} [BATCH]

Builds `ARCH` (bf16 also puts model and input in channels_last), runs 3 warm-up steps
(compilation included), times 5, then profiles 3 and prints the 18 operators with the most
self CPU time. `reports/profile/` holds the output quoted in the README ("Why compiled fp32
pays little here"), made with OMP_NUM_THREADS=2 on the quiet 2-core machine.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from lightning_densenet.model import build_model


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if (
        len(args) not in (3, 4)
        or args[1] not in ("eager", "compile")
        or args[2]
        not in (
            "fp32",
            "bf16",
        )
    ):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    arch, mode, precision = args[:3]
    batch = int(args[3]) if len(args) == 4 else 64
    bf16 = precision == "bf16"
    torch.set_num_threads(2)
    model = build_model(arch, 10, channels_last=bf16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, fused=True)
    net = torch.compile(model) if mode == "compile" else model
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    if bf16:
        x = x.contiguous(memory_format=torch.channels_last)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(5):
        step()
    print(
        f"{arch} {mode} {precision} bs{batch}: {(time.perf_counter() - start) / 5e-3:.1f} ms/step"
    )
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(3):
            step()
    table = prof.key_averages().table(
        sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60
    )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
