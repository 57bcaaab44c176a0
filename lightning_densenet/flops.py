"""Training compute: the FLOPs of one training step per image, counted by PyTorch itself.

`torch.utils.flop_counter` counts matrix multiplies and convolutions (2 FLOPs per
multiply-add) of the forward and the backward pass. The count runs on a twin of the network
on the `meta` device: shapes only, no arithmetic and no memory, so counting a new image size
mid-training costs milliseconds and never touches (or compiles) the real network.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightning_densenet.model import DenseNet


def training_flops_per_image(model: DenseNet, height: int, width: int) -> float:
    """FLOPs of one forward and backward pass of `model` per image of `height` x `width`.

    The twin's parameters are frozen where the model's are (a frozen layer costs no weight
    gradient), so the count is what an optimiser step of `model` computes; the optimiser's own
    update (a few element-wise ops per weight) is left out, as is usual.
    """
    with torch.device("meta"):
        twin = DenseNet(model.config, model.num_classes)
    for twin_param, param in zip(twin.parameters(), model.parameters(), strict=True):
        twin_param.requires_grad_(param.requires_grad)
    batch = 2  # per-image FLOPs do not depend on the batch; 2 keeps BatchNorm in training mode
    images = torch.zeros(batch, 3, height, width, device="meta")
    with FlopCounterMode(display=False) as counter:
        twin(images).sum().backward()
    return counter.get_total_flops() / batch
