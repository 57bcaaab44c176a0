"""The network a run trains: the Keras DenseNet of an architecture, or a plain CNN / MLP."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from lightning_densenet.arch import DenseNetConfig
from lightning_densenet.errors import UserError
from tf_reference.config import Network


def build_network(
    network: Network,
    arch: DenseNetConfig | None,
    num_classes: int,
    input_shape: Sequence[int] = (32, 32, 3),
    *,
    width: int | None = None,
    depth: int | None = None,
) -> keras.Model:
    """The functional DenseNet of `arch`, or `tf_reference.small_models`' CNN or MLP of
    `width` and `depth` (default 32 x 6 and 512 x 2; they take no `arch`)."""
    shape = tuple(input_shape)
    if network == "densenet":
        if arch is None:
            raise ValueError("the DenseNet needs its arch")
        from tf_reference.model import build_model

        return build_model(arch, num_classes, "functional", shape)
    from tf_reference import small_models

    if network == "cnn":
        return small_models.plain_cnn(num_classes, width or 32, depth or 6, shape)
    if network == "mlp":
        return small_models.mlp(num_classes, width or 512, depth or 2, shape)
    raise UserError(f"--network {network!r} is unknown: use densenet, cnn or mlp.")


__all__ = ["build_network"]
