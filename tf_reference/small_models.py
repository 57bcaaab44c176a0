"""Plain networks of adjustable size, to ask how much graph mode (tf.function, XLA) buys
as a function of the model's size and kind, next to the DenseNet.

- `plain_cnn`: three stages of 3x3 Conv-BN-ReLU, widths w, 2w, 4w, 2x2 max-pool between
  stages, global average pool, linear classifier. Many small kernels per step.
- `mlp`: flatten, `depth` Dense-ReLU layers of `width` units, linear classifier. A few big
  matmuls per step, so per-op dispatch is a large share of an eager step.
"""

from __future__ import annotations

import keras

from lightning_densenet.errors import UserError


def plain_cnn(
    num_classes: int = 10,
    width: int = 32,
    depth: int = 6,
    input_shape: tuple[int, int, int] = (32, 32, 3),
) -> keras.Model:
    """`depth` conv layers (at least 3), split as evenly as possible over three stages."""
    _check("cnn", width, depth, min_depth=3)
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    per_stage = [depth // 3 + (i < depth % 3) for i in range(3)]
    for stage, n_convs in enumerate(per_stage):
        if stage:
            x = keras.layers.MaxPooling2D(2, name=f"stage{stage + 1}.pool")(x)
        for j in range(n_convs):
            name = f"stage{stage + 1}.conv{j + 1}"
            conv = keras.layers.Conv2D(
                width * 2**stage, 3, padding="same", use_bias=False, name=name
            )
            x = conv(x)
            x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name=f"{name}.bn")(x)
            x = keras.layers.ReLU(name=f"{name}.relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"cnn_w{width}_d{depth}")


def mlp(
    num_classes: int = 10,
    width: int = 512,
    depth: int = 2,
    input_shape: tuple[int, int, int] = (32, 32, 3),
) -> keras.Model:
    """`depth` hidden Dense-ReLU layers of `width` units on the flattened image."""
    _check("mlp", width, depth, min_depth=1)
    inputs = keras.Input(input_shape, name="images")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for j in range(depth):
        x = keras.layers.Dense(width, activation="relu", name=f"hidden{j + 1}")(x)
    outputs = keras.layers.Dense(num_classes, name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"mlp_w{width}_d{depth}")


def _check(kind: str, width: int, depth: int, min_depth: int) -> None:
    if width < 1:
        raise UserError(f"--width {width} is invalid for the {kind}: use a positive width.")
    if depth < min_depth:
        raise UserError(f"--depth {depth} is too small for the {kind}: use at least {min_depth}.")


__all__ = ["mlp", "plain_cnn"]
