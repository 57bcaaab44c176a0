"""CPU images/s of candidate DenseNets for the 30-minute recipe (the grid's first column).

One bf16-autocast, channels_last SGD training step at batch 256, as `fit` runs it (eager),
2 warm-up steps then the median of 4 timed ones. Run alone on the machine:

    OMP_NUM_THREADS=2 python reports/recipe_grid/cpu_probe.py \
        reports/recipe_grid/candidates.json reports/recipe_grid/cpu_probe.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_densenet.arch import DenseNetConfig
from lightning_densenet.model import DenseNet


def images_per_second(fields: dict, batch: int = 256, steps: int = 4) -> tuple[int, list[float]]:
    """(parameters, images/s of each timed step)."""
    model = DenseNet(DenseNetConfig(**fields), num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, fused=True)
    x = torch.randn(batch, 3, 32, 32).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(), step()
    rates = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        rates.append(batch / (time.perf_counter() - t))
    return sum(p.numel() for p in model.parameters()), rates


def main(candidates: str, out: str) -> None:
    torch.manual_seed(0)
    report = {}
    for name, fields in json.loads(Path(candidates).read_text()).items():
        params, rates = images_per_second(fields)
        report[name] = {"params": params, "images_per_s": statistics.median(rates), "all": rates}
        print(f"{name:20s} {params:>10,d} {statistics.median(rates):7.1f} images/s", flush=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:3])
