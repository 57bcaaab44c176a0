"""Plain networks of adjustable size in PyTorch, twins of `tf_reference.small_models`: the
speed benchmark asks how much compilation buys as a function of the model's size and kind.

- `PlainCNN`: three stages of 3x3 Conv-BN-ReLU, widths w, 2w, 4w, 2x2 max-pool between
  stages, global average pool, linear classifier. Many small kernels per step.
- `MLP`: flatten, `depth` Linear-ReLU layers of `width` units, linear classifier. A few big
  matmuls per step, so per-op dispatch is a large share of an eager step.

Layers and trainable parameter counts match the Keras models layer for layer (convs carry
no bias, BN has a scale and a shift, Linear/Dense a bias); the Keras MLP flattens HWC, this
one CHW, which changes the order of the first layer's inputs, not the function class.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_densenet.errors import UserError


class PlainCNN(nn.Module):
    """(N, 3, H, W) -> (N, num_classes); `depth` convs (at least 3) split over three stages."""

    def __init__(
        self, num_classes: int = 10, width: int = 32, depth: int = 6, in_channels: int = 3
    ) -> None:
        super().__init__()
        _check("cnn", width, depth, min_depth=3)
        self.features = nn.Sequential()
        per_stage = [depth // 3 + (i < depth % 3) for i in range(3)]
        c_in = in_channels
        for stage, n_convs in enumerate(per_stage):
            if stage:
                self.features.add_module(f"stage{stage + 1}_pool", nn.MaxPool2d(2))
            c_out = width * 2**stage
            for j in range(n_convs):
                name = f"stage{stage + 1}_conv{j + 1}"
                self.features.add_module(name, nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
                # Keras' momentum 0.9 (weight of the old mean) is PyTorch's momentum 0.1.
                self.features.add_module(f"{name}_bn", nn.BatchNorm2d(c_out, 1e-5, 0.1))
                self.features.add_module(f"{name}_relu", nn.ReLU(inplace=True))
                c_in = c_out
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class MLP(nn.Sequential):
    """(N, C, H, W) -> (N, num_classes); `depth` hidden Linear-ReLU layers of `width` units."""

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 512,
        depth: int = 2,
        input_shape: tuple[int, int, int] = (3, 32, 32),
    ) -> None:
        super().__init__()
        _check("mlp", width, depth, min_depth=1)
        self.add_module("flatten", nn.Flatten())
        n_in = input_shape[0] * input_shape[1] * input_shape[2]
        for j in range(depth):
            self.add_module(f"hidden{j + 1}", nn.Linear(n_in if j == 0 else width, width))
            self.add_module(f"hidden{j + 1}_relu", nn.ReLU(inplace=True))
        self.add_module("classifier", nn.Linear(width if depth else n_in, num_classes))


def _check(kind: str, width: int, depth: int, min_depth: int) -> None:
    if width < 1:
        raise UserError(f"--width {width} is invalid for the {kind}: use a positive width.")
    if depth < min_depth:
        raise UserError(f"--depth {depth} is too small for the {kind}: use at least {min_depth}.")


__all__ = ["MLP", "PlainCNN"]
