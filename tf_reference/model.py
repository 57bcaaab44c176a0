"""The Keras DenseNet, functional API: blocks are small functions on tensors, `x -> x`.

Same architectures, options and weight names as `lightning_densenet.model` (see
`tf_reference.names`), NHWC: (N, H, W, 3) -> logits (N, num_classes).

    stem          features.conv0 [features.norm0 relu0 pool0]
    dense layer   features.denseblock{i}.denselayer{j}.{norm1,relu1,conv1,drop1,norm2,...},
                  then a Concatenate named features.denseblock{i}.denselayer{j}: its output,
                  concat(inputs, k new channels), is what the Sequential model's
                  `DenseLayer` of that name returns
    transition    features.transition{i}.{norm,relu,conv,drop,pool}
    head          features.norm5, final_relu, avgpool, classifier
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import keras

from lightning_densenet.arch import DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError
from tf_reference import layers as L

Api = Literal["functional", "sequential"]
APIS = ("functional", "sequential")


def _apply(x: Any, layers: Iterable[keras.layers.Layer]) -> Any:
    for layer in layers:
        x = layer(x)
    return x


def stem(x: Any, cfg: DenseNetConfig) -> Any:
    return _apply(x, L.stem_layers(cfg.init_features, cfg.stem, cfg.batch_norm))


def dense_layer(x: Any, cfg: DenseNetConfig, name: str) -> Any:
    """(N, H, W, c) -> (N, H, W, c + k): the inputs with k new feature maps appended."""
    new = _apply(
        x,
        L.dense_layer_layers(
            name, cfg.growth_rate, cfg.bottleneck, cfg.bn_size, cfg.drop_rate, cfg.batch_norm
        ),
    )
    return keras.layers.Concatenate(name=name)([x, new])


def dense_block(x: Any, cfg: DenseNetConfig, n_layers: int, name: str) -> Any:
    for j in range(1, n_layers + 1):
        x = dense_layer(x, cfg, f"{name}.denselayer{j}")
    return x


def transition(x: Any, cfg: DenseNetConfig, out_channels: int, name: str) -> Any:
    return _apply(x, L.transition_layers(name, out_channels, cfg.drop_rate, cfg.batch_norm))


def head(x: Any, cfg: DenseNetConfig, num_classes: int) -> Any:
    return _apply(x, L.head_layers(num_classes, cfg.batch_norm))


def functional_densenet(
    cfg: DenseNetConfig, num_classes: int, input_shape: Sequence[int], name: str = "densenet"
) -> keras.Model:
    inputs = keras.Input(tuple(input_shape), name="image")
    x = stem(inputs, cfg)
    channels = cfg.channels()
    for i, n_layers in enumerate(cfg.block_config, 1):
        x = dense_block(x, cfg, n_layers, f"features.denseblock{i}")
        if i < len(channels):
            x = transition(x, cfg, channels[i][0], f"features.transition{i}")
    return keras.Model(inputs, head(x, cfg, num_classes), name=name)


def build_model(
    arch: str | DenseNetConfig | Mapping[str, Any],
    num_classes: int = 10,
    api: Api = "functional",
    input_shape: Sequence[int] = (32, 32, 3),
) -> keras.Model:
    """A Keras DenseNet from a preset name (`"densenet_bc_100_k12"`) or an architecture config.

    `api="functional"` builds a graph of plain Keras layers; `api="sequential"` a
    `keras.Sequential` of the custom layers in `tf_reference.layers`. Both hold the same
    weights under the same names and compute the same function.
    """
    cfg = resolve_arch(arch)
    if api not in APIS:
        raise UserError(f"Keras api={api!r} is invalid: use 'functional' or 'sequential'.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes={num_classes!r} is invalid: use a positive integer.")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != 3:
        raise UserError(
            f"input_shape={input_shape} is invalid: give (height, width, 3), channels last."
        )
    if api == "sequential":
        return L.sequential_densenet(cfg, num_classes, input_shape)
    return functional_densenet(cfg, num_classes, input_shape)


__all__ = [
    "APIS",
    "Api",
    "build_model",
    "dense_block",
    "dense_layer",
    "functional_densenet",
    "head",
    "stem",
    "transition",
]
