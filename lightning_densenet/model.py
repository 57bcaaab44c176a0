"""DenseNet in plain PyTorch: every variant of the paper, with torchvision's module names.

    features.conv0                                   stem: CIFAR 3x3 conv; ImageNet 7x7/2 conv;
                                                     or a frozen 2x2 whitening conv (airbench)
    [features.norm0 .relu0 .pool0]                   + BN-ReLU-MaxPool3x3/2 (ImageNet only)
    features.denseblock{i}.denselayer{j}
        .norm1 .relu1 .conv1 [.drop1]                BN-ReLU-Conv1x1(bn_size*k) with a bottleneck,
        .norm2 .relu2 .conv2 [.drop2]                then BN-ReLU-Conv3x3(k); without one only the
                                                     first unit, and conv1 is the 3x3 conv
    features.transition{i}.norm .relu .conv [.drop] .pool     BN-ReLU-Conv1x1(theta*m)-AvgPool2
    features.norm5                                   final BN (named norm5 whatever the block count)
    classifier                                       Linear after ReLU + global average pooling

Because the names are torchvision's, a `torchvision.models.densenet121` state_dict loads
into `build_model("densenet121", 1000)` and the Keras port is a table of names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor, nn

from lightning_densenet.arch import DenseNetConfig, resolve_arch


def _norm_relu_conv(
    unit: nn.Module, idx: str, cfg: DenseNetConfig, c_in: int, c_out: int, kernel: int
) -> None:
    """Adds norm{idx}, relu{idx}, conv{idx} and drop{idx} to `unit`: one BN-ReLU-Conv(-Dropout)."""
    if cfg.batch_norm:
        unit.add_module(f"norm{idx}", nn.BatchNorm2d(c_in))
    unit.add_module(f"relu{idx}", nn.ReLU(inplace=True))
    conv = nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=not cfg.batch_norm)
    unit.add_module(f"conv{idx}", conv)
    if cfg.drop_rate > 0:
        unit.add_module(f"drop{idx}", nn.Dropout(cfg.drop_rate))


class DenseLayer(nn.Module):
    """Reads the concatenation of all earlier feature maps; returns k new channels."""

    def __init__(self, cfg: DenseNetConfig, c_in: int, memory_efficient: bool = False) -> None:
        super().__init__()
        k = cfg.growth_rate
        if cfg.bottleneck:
            _norm_relu_conv(self, "1", cfg, c_in, cfg.bn_size * k, kernel=1)
            _norm_relu_conv(self, "2", cfg, cfg.bn_size * k, k, kernel=3)
        else:
            _norm_relu_conv(self, "1", cfg, c_in, k, kernel=3)
        self.bottleneck = cfg.bottleneck
        self.memory_efficient = memory_efficient

    def _unit(self, idx: str, x: Tensor) -> Tensor:
        for name in (f"norm{idx}", f"relu{idx}", f"conv{idx}", f"drop{idx}"):
            if name in self._modules:
                x = self._modules[name](x)
        return x

    def _first_unit(self, *features: Tensor) -> Tensor:
        # concat + BN + ReLU + conv1: the part whose activations grow with depth.
        return self._unit("1", torch.cat(features, 1))

    def forward(self, features: list[Tensor]) -> Tensor:
        if self.memory_efficient and any(f.requires_grad for f in features):
            # Pleiss et al. / torchvision: recompute the concatenation, BN and 1x1 conv in the
            # backward pass instead of storing them, so memory grows linearly with depth.
            # Dropout draws fresh noise when recomputed unless RNG state is preserved (it is).
            out = cp.checkpoint(self._first_unit, *features, use_reentrant=False)
        else:
            out = self._first_unit(*features)
        return self._unit("2", out) if self.bottleneck else out


class DenseBlock(nn.ModuleDict):
    """denselayer1..n; layer j sees c_in + (j-1)k channels. Returns all of them concatenated."""

    def __init__(self, cfg: DenseNetConfig, n_layers: int, c_in: int, memory_efficient: bool):
        super().__init__()
        for j in range(n_layers):
            layer = DenseLayer(cfg, c_in + j * cfg.growth_rate, memory_efficient)
            self.add_module(f"denselayer{j + 1}", layer)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-Conv1x1(-Dropout)-AvgPool2x2: compresses channels by theta, halves H and W."""

    def __init__(self, cfg: DenseNetConfig, c_in: int, c_out: int) -> None:
        super().__init__()
        if cfg.batch_norm:
            self.add_module("norm", nn.BatchNorm2d(c_in))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("conv", nn.Conv2d(c_in, c_out, 1, bias=not cfg.batch_norm))
        if cfg.drop_rate > 0:
            self.add_module("drop", nn.Dropout(cfg.drop_rate))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    """DenseNet (Huang et al. 2017) for images of any size; (N, 3, H, W) -> (N, num_classes)."""

    def __init__(
        self,
        config: DenseNetConfig,
        num_classes: int = 10,
        memory_efficient: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.channels_last = channels_last
        c0 = config.init_features
        stem: list[tuple[str, nn.Module]]
        if config.stem == "cifar":
            stem = [("conv0", nn.Conv2d(3, c0, 3, padding=1, bias=not config.batch_norm))]
        elif config.stem == "whitening":
            # Its weights are set from data (`init_whitening`) and never trained; its bias is.
            stem = [("conv0", nn.Conv2d(3, c0, 2, padding=0, bias=True))]
        else:
            stem = [("conv0", nn.Conv2d(3, c0, 7, stride=2, padding=3, bias=not config.batch_norm))]
            if config.batch_norm:
                stem.append(("norm0", nn.BatchNorm2d(c0)))
            stem += [("relu0", nn.ReLU(inplace=True)), ("pool0", nn.MaxPool2d(3, 2, padding=1))]
        self.features = nn.Sequential()
        for name, module in stem:
            self.features.add_module(name, module)

        channels = config.channels()
        for i, (n_layers, (c_in, c_out)) in enumerate(
            zip(config.block_config, channels, strict=True), 1
        ):
            block = DenseBlock(config, n_layers, c_in, memory_efficient)
            self.features.add_module(f"denseblock{i}", block)
            if i < len(channels):
                self.features.add_module(
                    f"transition{i}", Transition(config, c_out, channels[i][0])
                )
        c_final = channels[-1][1]
        if config.batch_norm:
            self.features.add_module("norm5", nn.BatchNorm2d(c_final))
        self.classifier = nn.Linear(c_final, num_classes)
        self.reset_parameters()
        if config.stem == "whitening":
            self.features.conv0.weight.requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def reset_parameters(self) -> None:
        """He initialisation as in the paper's Torch code (normal, std sqrt(2 / (k*k*c_out)))."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def init_whitening(self, images: Tensor, eps: float = 5e-4) -> None:
        """Sets the whitening stem's conv to the PCA whitening of `images`' 2x2 patches.

        `images`: (N, 3, H, W), normalised as in training (a few thousand are plenty). Each
        output channel projects a patch on one eigenvector of the patches' second-moment
        matrix, scaled by 1/sqrt(eigenvalue + eps), once with each sign: the stem's outputs
        are decorrelated with unit variance, the largest-variance directions first.
        """
        if self.config.stem != "whitening":
            raise ValueError(f"init_whitening needs stem='whitening', not {self.config.stem!r}")
        conv = self.features.conv0
        kh, kw = conv.kernel_size
        patches = images.float().unfold(2, kh, 1).unfold(3, kw, 1)  # (N, C, H', W', kh, kw)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * kh * kw).double()
        moments = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(moments)  # ascending
        order = eigenvalues.argsort(descending=True)[: conv.out_channels // 2]
        filters = eigenvectors.T[order] / torch.sqrt(eigenvalues[order, None] + eps)
        filters = filters.reshape(-1, 3, kh, kw)
        conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight))

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, 3, H, W) -> pooled features (N, C) before the classifier."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.features(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x))


def build_model(
    arch: str | DenseNetConfig | Mapping[str, Any],
    num_classes: int = 10,
    *,
    memory_efficient: bool = False,
    channels_last: bool = False,
) -> DenseNet:
    """A DenseNet from a preset name (`"densenet_bc_100_k12"`) or an architecture config.

    `memory_efficient` (gradient checkpointing) and `channels_last` change speed and
    memory, never the function computed or the state_dict.
    """
    return DenseNet(resolve_arch(arch), num_classes, memory_efficient, channels_last)


def freeze_norm_scales(model: nn.Module) -> None:
    """Freezes every BatchNorm's scale at its value (1 when new): `model.norm_scale: false`."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.requires_grad_(False)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
