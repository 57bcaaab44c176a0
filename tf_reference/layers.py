"""Keras building blocks of the DenseNet, and the model as a `keras.Sequential` of custom layers.

The functions `*_layers` return the plain Keras layers of one PyTorch unit, named by the
PyTorch module path (`tf_reference.names`). The functional model (`tf_reference.model`)
applies them to tensors; the custom layers below own them, so both APIs hold the same
layers under the same names and compute the same function.

PyTorch conventions kept so that ported weights compute the same function:
- BatchNorm: epsilon 1e-5 and momentum 0.9 (Keras' momentum is PyTorch's 1 - 0.1). One
  residual difference: PyTorch updates `running_var` with the unbiased batch variance
  (times n/(n-1), n = N*H*W values per channel), Keras `moving_variance` with the biased
  one (`tf.nn.moments`). At n = 64*8*8 that is a factor 1.00024 on the update; the forward
  pass, in either mode, is identical.
- Padding: PyTorch pads symmetrically; Keras `padding="same"` with stride 2 pads only the
  bottom/right on even inputs, so the strided ImageNet stem pads explicitly first.
- Init: convs He-normal with fan_out (PyTorch's kaiming_normal_(mode="fan_out")), the
  classifier U(+-1/sqrt(fan_in)) (PyTorch's nn.Linear default) with a zero bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
from keras import ops

from lightning_densenet.arch import DenseNetConfig

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9  # Keras keeps `momentum` of the old value; PyTorch's momentum=0.1 is the new


def he_normal_fan_out() -> keras.initializers.Initializer:
    return keras.initializers.VarianceScaling(
        2.0, mode="fan_out", distribution="untruncated_normal"
    )


def torch_linear_init() -> keras.initializers.Initializer:
    # Uniform with limit sqrt(3 * scale / fan_in) = 1/sqrt(fan_in), as nn.Linear draws.
    return keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")


def conv(
    name: str, filters: int, kernel: int, *, bias: bool, strides: int = 1, padding: str = "same"
) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        use_bias=bias,
        kernel_initializer=he_normal_fan_out(),
        name=name,
    )


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=name)


def norm_relu_conv_layers(
    prefix: str, idx: str, filters: int, kernel: int, *, batch_norm_on: bool, drop_rate: float
) -> list[keras.layers.Layer]:
    """`{prefix}.norm{idx}`, `.relu{idx}`, `.conv{idx}`, `.drop{idx}`: BN-ReLU-Conv(-Dropout)."""
    layers: list[keras.layers.Layer] = []
    if batch_norm_on:
        layers.append(batch_norm(f"{prefix}.norm{idx}"))
    layers.append(keras.layers.ReLU(name=f"{prefix}.relu{idx}"))
    layers.append(conv(f"{prefix}.conv{idx}", filters, kernel, bias=not batch_norm_on))
    if drop_rate > 0:
        layers.append(keras.layers.Dropout(drop_rate, name=f"{prefix}.drop{idx}"))
    return layers


def stem_layers(init_features: int, stem: str, batch_norm_on: bool) -> list[keras.layers.Layer]:
    """CIFAR: conv0 3x3. ImageNet: conv0 7x7/2, norm0, relu0, pool0 max 3x3/2 (PyTorch padding).
    Whitening: conv0 2x2 without padding, with a bias (PyTorch sets its kernel from the data and
    freezes it; here it is a plain layer, holding ported weights)."""
    if stem == "cifar":
        return [conv("features.conv0", init_features, 3, bias=not batch_norm_on)]
    if stem == "whitening":
        return [conv("features.conv0", init_features, 2, bias=True, padding="valid")]
    layers: list[keras.layers.Layer] = [
        keras.layers.ZeroPadding2D(3, name="features.conv0_pad"),
        conv(
            "features.conv0", init_features, 7, bias=not batch_norm_on, strides=2, padding="valid"
        ),
    ]
    if batch_norm_on:
        layers.append(batch_norm("features.norm0"))
    # Padding the max-pool with zeros instead of -inf is exact: its inputs are ReLU outputs.
    layers += [
        keras.layers.ReLU(name="features.relu0"),
        keras.layers.ZeroPadding2D(1, name="features.pool0_pad"),
        keras.layers.MaxPooling2D(3, 2, name="features.pool0"),
    ]
    return layers


def dense_layer_layers(
    prefix: str,
    growth_rate: int,
    bottleneck: bool,
    bn_size: int,
    drop_rate: float,
    batch_norm_on: bool,
) -> list[keras.layers.Layer]:
    """The new-features path of a dense layer: (N, H, W, c) -> (N, H, W, k)."""
    opts = {"batch_norm_on": batch_norm_on, "drop_rate": drop_rate}
    if not bottleneck:
        return norm_relu_conv_layers(prefix, "1", growth_rate, 3, **opts)
    return norm_relu_conv_layers(prefix, "1", bn_size * growth_rate, 1, **opts) + (
        norm_relu_conv_layers(prefix, "2", growth_rate, 3, **opts)
    )


def transition_layers(
    prefix: str, out_channels: int, drop_rate: float, batch_norm_on: bool
) -> list[keras.layers.Layer]:
    """BN-ReLU-Conv1x1(theta*m)(-Dropout)-AvgPool2x2, PyTorch's `norm relu conv [drop] pool`."""
    layers: list[keras.layers.Layer] = []
    if batch_norm_on:
        layers.append(batch_norm(f"{prefix}.norm"))
    layers.append(keras.layers.ReLU(name=f"{prefix}.relu"))
    layers.append(conv(f"{prefix}.conv", out_channels, 1, bias=not batch_norm_on))
    if drop_rate > 0:
        layers.append(keras.layers.Dropout(drop_rate, name=f"{prefix}.drop"))
    layers.append(keras.layers.AveragePooling2D(2, 2, name=f"{prefix}.pool"))
    return layers


def head_layers(num_classes: int, batch_norm_on: bool) -> list[keras.layers.Layer]:
    """norm5, ReLU, global average pool, classifier: (N, H, W, C) -> logits (N, num_classes)."""
    layers: list[keras.layers.Layer] = [batch_norm("features.norm5")] if batch_norm_on else []
    # The classifier's bias starts at zero (Keras' default), as in the PyTorch model.
    classifier = keras.layers.Dense(
        num_classes, kernel_initializer=torch_linear_init(), name="classifier"
    )
    return [
        *layers,
        keras.layers.ReLU(name="final_relu"),
        keras.layers.GlobalAveragePooling2D(name="avgpool"),
        classifier,
    ]


class _Chain(keras.layers.Layer):
    """A custom layer that owns `self.chain`, a list of Keras layers applied in order."""

    chain: list[keras.layers.Layer]

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        # Build every sub-layer now (not lazily in call) so that `load_model` finds the
        # variables to restore right after `build_from_config`.
        shape = input_shape
        for layer in self.chain:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)

    def _apply_chain(self, x: Any, training: bool | None) -> Any:
        for layer in self.chain:
            x = layer(x, training=training)
        return x

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self._apply_chain(inputs, training)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        shape = input_shape
        for layer in self.chain:
            shape = layer.compute_output_shape(shape)
        return shape


@keras.saving.register_keras_serializable(package="tf_reference")
class Stem(_Chain):
    """`features.conv0` (CIFAR) or conv0-norm0-relu0-pool0 (ImageNet): images -> c0 channels."""

    def __init__(
        self, init_features: int, stem: str = "cifar", batch_norm: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.init_features, self.stem, self.batch_norm = init_features, stem, batch_norm
        self.chain = stem_layers(init_features, stem, batch_norm)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "init_features": self.init_features,
            "stem": self.stem,
            "batch_norm": self.batch_norm,
        }


@keras.saving.register_keras_serializable(package="tf_reference")
class DenseLayer(_Chain):
    """One dense layer: (N, H, W, c) -> concat(inputs, k new channels) = (N, H, W, c + k).

    PyTorch keeps the block's feature maps as a list and concatenates them in each layer;
    returning the running concatenation holds the same channels in the same order and
    lets a dense block be a run of layers in a `keras.Sequential`.
    """

    def __init__(
        self,
        growth_rate: int,
        bottleneck: bool = True,
        bn_size: int = 4,
        drop_rate: float = 0.0,
        batch_norm: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.growth_rate, self.bottleneck, self.bn_size = growth_rate, bottleneck, bn_size
        self.drop_rate, self.batch_norm = drop_rate, batch_norm
        self.chain = dense_layer_layers(
            self.name, growth_rate, bottleneck, bn_size, drop_rate, batch_norm
        )

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return ops.concatenate([inputs, self._apply_chain(inputs, training)], axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (*input_shape[:-1], input_shape[-1] + self.growth_rate)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "growth_rate": self.growth_rate,
            "bottleneck": self.bottleneck,
            "bn_size": self.bn_size,
            "drop_rate": self.drop_rate,
            "batch_norm": self.batch_norm,
        }


@keras.saving.register_keras_serializable(package="tf_reference")
class Transition(_Chain):
    """Between dense blocks: (N, H, W, m) -> (N, H/2, W/2, out_channels = floor(theta*m))."""

    def __init__(
        self, out_channels: int, drop_rate: float = 0.0, batch_norm: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.out_channels, self.drop_rate, self.batch_norm = out_channels, drop_rate, batch_norm
        self.chain = transition_layers(self.name, out_channels, drop_rate, batch_norm)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "out_channels": self.out_channels,
            "drop_rate": self.drop_rate,
            "batch_norm": self.batch_norm,
        }


@keras.saving.register_keras_serializable(package="tf_reference")
class Head(_Chain):
    """`features.norm5`, ReLU, global average pool and `classifier`: features -> logits."""

    def __init__(self, num_classes: int, batch_norm: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes, self.batch_norm = num_classes, batch_norm
        self.chain = head_layers(num_classes, batch_norm)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "batch_norm": self.batch_norm,
        }


def sequential_layers(cfg: DenseNetConfig, num_classes: int) -> list[keras.layers.Layer]:
    """Stem, the dense layers block by block with transitions between blocks, head."""
    layers: list[keras.layers.Layer] = [
        Stem(cfg.init_features, cfg.stem, cfg.batch_norm, name="stem")
    ]
    channels = cfg.channels()
    for i, n_layers in enumerate(cfg.block_config, 1):
        for j in range(1, n_layers + 1):
            layers.append(
                DenseLayer(
                    cfg.growth_rate,
                    cfg.bottleneck,
                    cfg.bn_size,
                    cfg.drop_rate,
                    cfg.batch_norm,
                    name=f"features.denseblock{i}.denselayer{j}",
                )
            )
        if i < len(channels):
            layers.append(
                Transition(
                    channels[i][0], cfg.drop_rate, cfg.batch_norm, name=f"features.transition{i}"
                )
            )
    layers.append(Head(num_classes, cfg.batch_norm, name="head"))
    return layers


def sequential_densenet(
    cfg: DenseNetConfig, num_classes: int, input_shape: Sequence[int], name: str = "densenet"
) -> keras.Sequential:
    """The DenseNet as a `keras.Sequential` of `Stem`, `DenseLayer`s, `Transition`s, `Head`."""
    inputs = keras.Input(tuple(input_shape), name="image")
    return keras.Sequential([inputs, *sequential_layers(cfg, num_classes)], name=name)


__all__ = [
    "BN_EPSILON",
    "BN_MOMENTUM",
    "DenseLayer",
    "Head",
    "Stem",
    "Transition",
    "dense_layer_layers",
    "head_layers",
    "sequential_densenet",
    "stem_layers",
    "transition_layers",
]
