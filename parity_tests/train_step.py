"""The PyTorch training step that the benchmark, the profiler and the parity tests share.

Its TensorFlow twin is the shipped `tf_reference.steps.TrainStep` (a gradient tape, the mean
`cross_entropy`, `optimizer.apply`), which the benchmark's TensorFlow cases and the parity
test of one SGD step use as they are. This module imports torch only, so a benchmark
worker that times PyTorch loads no TensorFlow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def torch_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    bf16: bool = False,
) -> torch.Tensor:
    """One optimiser step on a batch: the gradient of the mean cross-entropy, then
    `optimizer.step()`. `bf16` runs the forward pass under `torch.autocast(bfloat16)` on the
    images' device. Returns the loss before the update, detached (not synchronised)."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


__all__ = ["torch_train_step"]
