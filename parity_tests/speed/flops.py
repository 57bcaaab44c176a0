"""The two reference numbers of the speed report, each from a worker process of its own:

    count_flops   FLOPs of one training step per image (torch.utils.flop_counter)
    measure_peak  the machine's matmul and conv GFLOP/s, fp32 and bf16, for comparison

Both use PyTorch (the FLOPs are the network's, whichever framework runs it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lightning_densenet.model import count_parameters
from parity_tests.speed.cases import IMAGE, NUM_CLASSES, ModelSpec
from parity_tests.speed.torch_runner import build_torch_model


def count_flops(spec: ModelSpec, batch: int = 2) -> dict[str, Any]:
    """FLOPs per image of one training step (forward and backward; the optimiser's
    elementwise update is not counted) and of the forward pass alone, as
    `torch.utils.flop_counter` counts them: matmuls and convolutions, 2 per multiply-add.
    Both are linear in the batch, so a small one gives the per-image figure."""
    torch.manual_seed(0)
    model = build_torch_model(spec)
    x = torch.randn(batch, IMAGE[2], *IMAGE[:2])
    y = torch.randint(0, NUM_CLASSES, (batch,))
    with FlopCounterMode(display=False) as forward:
        logits = model(x)
    with FlopCounterMode(display=False) as backward:
        F.cross_entropy(logits, y).backward()
    fwd, bwd = forward.get_total_flops(), backward.get_total_flops()
    return {
        "params": count_parameters(model),
        "forward_flops_per_image": fwd / batch,
        "flops_per_image": (fwd + bwd) / batch,
    }


def measure_peak(threads: int, repeats: int = 5) -> dict[str, dict[str, Any]]:
    """GFLOP/s of a large matmul and of a 3x3 convolution (NHWC), fp32 and bf16, on the CPU
    and, if there is one, the GPU: the best of `repeats` timed runs after two warm-ups. On
    the GPU, fp32 matmuls use TF32 as the timed cases do (`set_float32_matmul_precision`)."""
    torch.set_num_threads(threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices:
        torch.set_float32_matmul_precision("high")
    out: dict[str, dict[str, Any]] = {}
    for device in devices:
        on_gpu = device == "cuda"
        n = 8192 if on_gpu else 2048  # matmul n x n x n
        batch, channels, size = (256, 256, 32) if on_gpu else (64, 128, 16)
        numbers: dict[str, Any] = {}
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
            w = w.contiguous(memory_format=torch.channels_last)
            conv_flops = 2 * batch * size * size * channels * channels * 9
            mm_s = _best_s(repeats, torch.mm, a, b)
            conv_s = _best_s(repeats, F.conv2d, x, w, padding=1)
            numbers[f"matmul_{dtype_name}"] = 2 * n**3 / mm_s / 1e9
            numbers[f"conv_{dtype_name}"] = conv_flops / conv_s / 1e9
        numbers["matmul_size"], numbers["conv_shape"] = n, f"{batch}x{channels}x{size}x{size}"
        out[device] = numbers
    return out


def _best_s(repeats: int, op: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for i in range(repeats + 2):
        sync()
        start = time.perf_counter()
        op(*args, **kwargs)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return min(times)


__all__ = ["count_flops", "measure_peak"]
