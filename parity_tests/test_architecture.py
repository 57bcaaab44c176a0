"""PyTorch, Keras functional and Keras Sequential list the same layers.

For every preset and for seeded random architectures: the layers that hold weights, by
PyTorch name, in the same order, with the same output shapes (NHWC) and the same trainable
and non-trainable (BN running statistics) parameter counts, layer by layer.

Shapes come from shape inference, not arithmetic, so the biggest presets cost only their
build: PyTorch runs one 32x32 image on the meta device (shapes, no data), Keras traces its
graph symbolically. Real forward passes are the business of test_function.py.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest
import torch

from lightning_densenet import DenseNetConfig, build_model
from parity_tests.frameworks import RANDOM_ARCHS, describe
from tests.helpers import PRESET_PARAMS
from tf_reference.model import APIS
from tf_reference.model import build_model as build_keras
from tf_reference.names import named_weights

# (layer, output shape NHWC, trainable parameters, non-trainable parameters)
Row = tuple[str, tuple[int, ...], int, int]


def _nhwc(shape: torch.Size | tuple[int | None, ...]) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else tuple(shape)


def torch_layers(cfg: DenseNetConfig | str, num_classes: int) -> list[Row]:
    with torch.device("meta"):
        model = build_model(cfg, num_classes).eval()
        x = torch.empty(1, 3, 32, 32)
    shapes: dict[str, tuple[int, ...]] = {}
    owners = [(n, m) for n, m in model.named_modules() if list(m.parameters(recurse=False))]
    for name, m in owners:
        m.register_forward_hook(
            lambda _m, _i, y, name=name: shapes.__setitem__(name, _nhwc(y.shape))
        )
    model(x)

    def size(tensors: list[torch.Tensor]) -> int:
        return sum(t.numel() for t in tensors)

    return [
        (
            name,
            shapes[name],
            size(list(m.parameters(recurse=False))),
            size([b for n, b in m.named_buffers(recurse=False) if n != "num_batches_tracked"]),
        )
        for name, m in owners
    ]


def keras_output_shapes(model: keras.Model) -> dict[str, tuple[int, ...]]:
    """Output shape of every layer, nested ones included, for a batch of one."""
    shapes = {}
    if isinstance(model, keras.Sequential):
        for layer in model.layers:  # Stem, DenseLayer, Transition, Head: each owns a chain
            shape = layer.input.shape
            for sub in layer.chain:
                shape = sub.compute_output_shape(shape)
                shapes[sub.name] = shape
    else:
        shapes = {layer.name: layer.output.shape for layer in model.layers}
    return {name: (1, *shape[1:]) for name, shape in shapes.items()}


def keras_layers(model: keras.Model) -> list[Row]:
    counts: dict[str, list[int]] = {}  # layer -> [trainable, non-trainable], in weight order
    for name, variable in named_weights(model).items():
        layer = name.split("/")[0]
        counts.setdefault(layer, [0, 0])[0 if variable.trainable else 1] += int(
            np.prod(variable.shape)
        )
    shapes = keras_output_shapes(model)
    return [(name, shapes[name], t, nt) for name, (t, nt) in counts.items()]


def assert_same_layers(cfg: DenseNetConfig | str, num_classes: int = 10) -> None:
    expected = torch_layers(cfg, num_classes)
    for api in APIS:
        actual = keras_layers(build_keras(cfg, num_classes, api))
        for i, (want, got) in enumerate(zip(expected, actual, strict=False)):
            assert want == got, f"{api}, layer {i}: PyTorch {want} vs Keras {got}"
        assert len(actual) == len(expected), f"{api}: {len(actual)} layers vs {len(expected)}"


@pytest.mark.parametrize("name", PRESET_PARAMS)
def test_presets_have_the_same_layers(name: str) -> None:
    assert_same_layers(name)


@pytest.mark.parametrize("name", list(RANDOM_ARCHS))
def test_random_architectures_have_the_same_layers(name: str) -> None:
    cfg = RANDOM_ARCHS[name]
    try:
        assert_same_layers(cfg, num_classes=1 + int(name.removeprefix("random")))
    except AssertionError as err:
        raise AssertionError(f"{describe(cfg)}: {err}") from None


def test_random_architectures_vary_every_option() -> None:
    configs = list(RANDOM_ARCHS.values())
    for field in dataclasses.fields(DenseNetConfig):
        values = {getattr(cfg, field.name) for cfg in configs}
        assert len(values) >= 2, f"every random architecture has {field.name}={values.pop()}"
    assert {len(cfg.block_config) for cfg in configs} >= {1, 3, 4}
    assert {cfg.bottleneck for cfg in configs if not cfg.batch_norm} != set()


def test_layer_table_counts_every_parameter() -> None:
    # The tables above would agree vacuously if they missed layers: check their totals.
    rows = torch_layers("densenet_bc_100_k12", 10)
    with torch.device("meta"):
        model = build_model("densenet_bc_100_k12", 10)
    assert sum(row[2] for row in rows) == sum(p.numel() for p in model.parameters())
    running = [b for name, b in model.named_buffers() if name.endswith(("_mean", "_var"))]
    assert sum(row[3] for row in rows) == sum(b.numel() for b in running)
    assert len(rows) == 1 + 48 * 4 + 2 * 2 + 2  # conv0; 48 dense layers; 2 transitions; head
    assert rows[-1] == ("classifier", (1, 10), 342 * 10 + 10, 0)
