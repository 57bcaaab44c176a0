"""The DenseNet architecture description shared by PyTorch and Keras.

This module imports neither torch nor TensorFlow: `lightning_densenet.model`
and `tf_reference` both build their networks from a `DenseNetConfig`, and the
`model.arch` block of a YAML in `configs/` is parsed into one.

Paper: Huang et al., "Densely Connected Convolutional Networks" (arXiv 1608.06993).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lightning_densenet.errors import UserError

# 2x2 patches of 3 channels have 12 principal directions; the whitening stem keeps each with
# both signs, so that the ReLU after it loses nothing.
WHITENING_CHANNELS = 2 * 3 * 2 * 2


@dataclass(frozen=True)
class DenseNetConfig:
    """One DenseNet, in the paper's terms. Defaults are DenseNet-BC (L=100, k=12)."""

    growth_rate: int = 12  # k: channels each dense layer adds to the running concatenation
    block_config: tuple[int, ...] = (16, 16, 16)  # dense layers per dense block
    bottleneck: bool = True  # DenseNet-B: BN-ReLU-Conv1x1(bn_size*k) before each 3x3 conv
    bn_size: int = 4  # bottleneck width as a multiple of k (the paper uses 4)
    compression: float = 0.5  # theta: a transition keeps floor(theta*m) of its m channels
    drop_rate: float = 0.0  # dropout after each conv but the stem (the paper: 0.2 w/o augmentation)
    batch_norm: bool = True  # False drops every BN layer; convs then carry a bias
    # cifar: a 3x3 conv. imagenet: 7x7/2 conv + BN-ReLU + maxpool/2. whitening: a 2x2 conv
    # (no padding: 32 -> 31 px) frozen at the PCA whitening of the training images' 2x2
    # patches, each direction with both signs (airbench's first layer), so 24 channels at most.
    stem: Literal["cifar", "imagenet", "whitening"] = "cifar"
    num_init_features: int | None = None  # stem width; None: 2k for DenseNet-BC, else 16

    def __post_init__(self) -> None:
        # YAML gives lists; a frozen dataclass wants a hashable tuple.
        object.__setattr__(self, "block_config", tuple(self.block_config))
        self.validate()

    @property
    def init_features(self) -> int:
        """Channels out of the stem."""
        if self.num_init_features is not None:
            return self.num_init_features
        if self.stem == "whitening":
            return WHITENING_CHANNELS
        if self.stem == "imagenet":
            return 2 * self.growth_rate
        return 2 * self.growth_rate if self.bottleneck and self.compression < 1 else 16

    @property
    def depth(self) -> int:
        """L in the paper: conv and linear layers on the longest path."""
        convs_per_layer = 2 if self.bottleneck else 1
        return 1 + convs_per_layer * sum(self.block_config) + (len(self.block_config) - 1) + 1

    def channels(self) -> list[tuple[int, int]]:
        """(channels into, channels out of) each dense block, in order."""
        out, c = [], self.init_features
        for i, n_layers in enumerate(self.block_config):
            c_out = c + n_layers * self.growth_rate
            out.append((c, c_out))
            c = c_out if i == len(self.block_config) - 1 else int(c_out * self.compression)
        return out

    def validate(self) -> None:
        def bad(field_name: str, value: Any, fix: str) -> UserError:
            return UserError(f"DenseNet {field_name}={value!r} is invalid: {fix}.")

        if not isinstance(self.growth_rate, int) or self.growth_rate < 1:
            raise bad("growth_rate", self.growth_rate, "use a positive integer such as 12")
        if not self.block_config or any(not isinstance(n, int) or n < 1 for n in self.block_config):
            raise bad("block_config", self.block_config, "give one positive layer count per block")
        if not isinstance(self.bn_size, int) or self.bn_size < 1:
            raise bad("bn_size", self.bn_size, "use a positive integer such as 4")
        if not 0 < self.compression <= 1:
            raise bad("compression", self.compression, "theta must lie in (0, 1]")
        if not 0 <= self.drop_rate < 1:
            raise bad("drop_rate", self.drop_rate, "use a probability in [0, 1)")
        if self.stem not in ("cifar", "imagenet", "whitening"):
            raise bad("stem", self.stem, "use 'cifar', 'imagenet' or 'whitening'")
        if self.num_init_features is not None and self.num_init_features < 1:
            raise bad("num_init_features", self.num_init_features, "use a positive integer")
        if self.stem == "whitening" and not (
            self.init_features % 2 == 0 and self.init_features <= WHITENING_CHANNELS
        ):
            raise bad(
                "num_init_features",
                self.num_init_features,
                f"the whitening stem takes an even width of at most {WHITENING_CHANNELS} "
                "(2 signs x 12 directions of a 2x2x3 patch)",
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["block_config"] = list(self.block_config)
        return d


def cifar_densenet(depth: int, growth_rate: int, bc: bool) -> DenseNetConfig:
    """The paper's CIFAR DenseNets: three equal blocks, L = 3n + 4 (x2 convs per layer for BC)."""
    convs_per_layer = 2 if bc else 1
    n, rem = divmod(depth - 4, 3 * convs_per_layer)
    if rem or n < 1:
        raise UserError(
            f"depth={depth} does not fit a 3-block CIFAR DenseNet{'-BC' if bc else ''}: "
            f"use depth = {3 * convs_per_layer}n + 4."
        )
    return DenseNetConfig(
        growth_rate=growth_rate,
        block_config=(n, n, n),
        bottleneck=bc,
        compression=0.5 if bc else 1.0,
    )


PRESETS: dict[str, DenseNetConfig] = {
    # Table 2 of the paper (CIFAR). Parameter counts with 10 classes are checked in tests.
    "densenet_40_k12": cifar_densenet(40, 12, bc=False),  # 1.0M
    "densenet_100_k12": cifar_densenet(100, 12, bc=False),  # 7.0M
    "densenet_100_k24": cifar_densenet(100, 24, bc=False),  # 27.2M
    "densenet_bc_100_k12": cifar_densenet(100, 12, bc=True),  # 0.8M (769,162)
    "densenet_bc_250_k24": cifar_densenet(250, 24, bc=True),  # 15.3M
    "densenet_bc_190_k40": cifar_densenet(190, 40, bc=True),  # 25.6M
    # Small models for a 2-core CPU (docs/cpu-recipe.md has how they were chosen).
    "densenet_bc_40_k12": cifar_densenet(40, 12, bc=True),  # 0.18M
    # DenseNet-C (no bottleneck, theta 0.5), L=13, k=48, a 64-wide stem. Few, wide layers: on
    # 2 CPU cores its convolutions run at ~2.4x the GFLOP/s of BC-40's 12-channel ones, so it
    # trains at ~70% of BC-40's images per second with 3.5x the parameters.
    "densenet_c_13_k48": DenseNetConfig(
        growth_rate=48, block_config=(3, 3, 3), bottleneck=False, num_init_features=64
    ),
    # Four blocks (32, 16, 8 and 4 pixels), one 64-channel layer at full resolution, the rest
    # at 16 pixels or less: 1.7x the parameters of densenet_c_13_k48 at 2x its images/s.
    "densenet_c_15_k64": DenseNetConfig(
        growth_rate=64, block_config=(1, 3, 3, 3), bottleneck=False, num_init_features=64
    ),
    # The CPU recipes' network (configs/cifar10_cpu.yaml; cifar10_short.yaml swaps its stem
    # for the whitening one): twice the layers of densenet_c_15_k64 in the last two blocks (8
    # and 4 pixels) and a 32-wide stem, 2.6x its parameters at ~94% of its images/s.
    "densenet_c_21_k64": DenseNetConfig(
        growth_rate=64, block_config=(1, 3, 6, 6), bottleneck=False, num_init_features=32
    ),
    "densenet_tiny": DenseNetConfig(growth_rate=4, block_config=(2, 2), num_init_features=8),
    # ImageNet layout (torchvision's densenet121); works on 32x32 inputs too.
    "densenet121": DenseNetConfig(
        growth_rate=32, block_config=(6, 12, 24, 16), stem="imagenet", num_init_features=64
    ),
}


def resolve_arch(arch: str | DenseNetConfig | Mapping[str, Any]) -> DenseNetConfig:
    """A preset name, a `DenseNetConfig`, or its fields as a mapping (a YAML block)."""
    if isinstance(arch, DenseNetConfig):
        return arch
    if isinstance(arch, str):
        try:
            return PRESETS[arch]
        except KeyError:
            raise UserError(
                f"Unknown DenseNet preset {arch!r}: use one of {', '.join(PRESETS)} "
                "or give the architecture fields (growth_rate, block_config, ...)."
            ) from None
    if isinstance(arch, Mapping):
        known = {f.name for f in dataclasses.fields(DenseNetConfig)}
        unknown = sorted(set(arch) - known)
        if unknown:
            raise UserError(
                f"Unknown DenseNet field(s) {', '.join(unknown)}: "
                f"the fields are {', '.join(sorted(known))}."
            )
        return DenseNetConfig(**arch)
    raise UserError(f"Cannot read a DenseNet architecture from {type(arch).__name__}.")


__all__ = ["PRESETS", "DenseNetConfig", "cifar_densenet", "resolve_arch"]
