"""Helpers that hold one DenseNet in PyTorch and in Keras side by side.

A PyTorch model is ported to Keras with the real converter (`parity_tests.convert`);
both then run on the same images and are compared stage by stage (stem, each dense block,
each transition, logits), so a failure names the first stage where the frameworks part.
Activations are compared in NHWC; PyTorch's NCHW tensors are permuted.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

# isort: off
import tf_reference  # noqa: F401  (first: loads Triton ahead of TensorFlow, see its __init__)
import keras

# isort: on
import numpy as np
import tensorflow as tf
import torch
import torch.nn.functional as F
from torch import nn

from lightning_densenet import DenseNetConfig, build_model
from parity_tests.convert import torch_to_keras
from tf_reference.model import build_model as build_keras
from tf_reference.names import named_weights


def random_arch(seed: int) -> DenseNetConfig:
    """A small DenseNet with every option drawn: growth, blocks, bottleneck, bn_size,
    compression, dropout, batch norm, stem, stem width. Runs on 32x32 images."""
    rng = random.Random(seed)
    return DenseNetConfig(
        growth_rate=rng.randint(2, 6),
        block_config=tuple(rng.randint(1, 3) for _ in range(rng.randint(1, 4))),
        bottleneck=rng.random() < 0.5,
        bn_size=rng.randint(1, 4),
        compression=rng.choice((0.5, 0.7, 1.0, 0.33)),
        drop_rate=rng.choice((0.0, 0.1, 0.2)),
        batch_norm=rng.random() < 0.7,
        stem=rng.choice(("cifar", "imagenet")),
        num_init_features=rng.choice((None, rng.randint(3, 12))),
    )


# Seeds chosen only by count; test_architecture checks that the draw covers every option.
RANDOM_ARCHS = {f"random{seed}": random_arch(seed) for seed in range(10)}


def without_dropout(cfg: DenseNetConfig) -> DenseNetConfig:
    # Function parity needs drop_rate 0: the frameworks draw different dropout masks.
    return dataclasses.replace(cfg, drop_rate=0.0)


def stage_names(cfg: DenseNetConfig) -> list[str]:
    names = ["stem"]
    for i in range(1, len(cfg.block_config) + 1):
        names.append(f"denseblock{i}")
        if i < len(cfg.block_config):
            names.append(f"transition{i}")
    return [*names, "logits"]


def randomized_torch(cfg: DenseNetConfig | str, num_classes: int, seed: int = 0) -> nn.Module:
    """A PyTorch DenseNet as training leaves one: random BN scales and shifts, conv biases,
    classifier bias, and running statistics measured on random images (as after training:
    eval mode then keeps activations at their train-mode scale). Nothing is an identity
    that could hide a bad port. Returned in eval mode."""
    torch.manual_seed(seed)
    model = build_model(cfg, num_classes)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for module in norms:
            module.weight.uniform_(0.5, 1.5)
            module.bias.normal_(0, 0.1)
            module.momentum = None  # running statistics: the plain average over the batches
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and module.bias is not None:
                module.bias.normal_(0, 0.1)
        model.classifier.bias.normal_(0, 0.1)
        model.train()
        for batch in range(2):
            model(nchw(images(8, seed=1000 + seed + batch)))
    for module in norms:
        module.momentum = 0.1
    return model.eval()


def ported(torch_model: nn.Module, api: str = "functional", dtype: str = "float32") -> keras.Model:
    """The Keras twin of `torch_model`, weights copied by the real converter. float64
    models (with float32 weights, held exactly) measure the math without rounding noise."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype)
    try:
        keras_model = build_keras(torch_model.config, torch_model.num_classes, api)
    finally:
        keras.config.set_dtype_policy(policy)
    assert all(v.dtype == dtype for v in keras_model.weights)
    torch_to_keras(torch_model, keras_model)
    return keras_model


def images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """(n, size, size, 3) float32 NHWC, standard normal like normalised CIFAR."""
    return np.random.default_rng(seed).standard_normal((n, size, size, 3)).astype(np.float32)


def nchw(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def nhwc(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


def _torch_stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    cfg = model.config
    stem = model.features.pool0 if cfg.stem == "imagenet" else model.features.conv0
    modules = {"stem": stem}
    for name, module in model.features.named_children():
        if name.startswith(("denseblock", "transition")):
            modules[name] = module
    return modules


def torch_stages(model: nn.Module, x: np.ndarray, train: bool = False) -> dict[str, np.ndarray]:
    """Per-stage outputs of one forward pass (hooks clone before any in-place ReLU)."""
    out: dict[str, np.ndarray] = {}
    hooks = [
        module.register_forward_hook(
            lambda _m, _i, y, name=name: out.__setitem__(name, nhwc(y.clone()))
        )
        for name, module in _torch_stage_modules(model).items()
    ]
    model.train(train)
    try:
        with torch.no_grad():
            out["logits"] = model(nchw(x)).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return out


def keras_stage_layers(model: keras.Model, cfg: DenseNetConfig) -> dict[str, str]:
    """Stage -> the Keras layer whose output it is. Dense blocks end in a layer named like
    PyTorch's last dense layer in both APIs; stem and transitions differ by API."""
    sequential = isinstance(model, keras.Sequential)
    stem = "features.pool0" if cfg.stem == "imagenet" else "features.conv0"
    layers = {"stem": "stem" if sequential else stem}
    for i, n_layers in enumerate(cfg.block_config, 1):
        layers[f"denseblock{i}"] = f"features.denseblock{i}.denselayer{n_layers}"
        if i < len(cfg.block_config):
            layers[f"transition{i}"] = f"features.transition{i}" + ("" if sequential else ".pool")
    return layers


def keras_stage_model(model: keras.Model, cfg: DenseNetConfig) -> keras.Model:
    """The same layers, with every stage output exposed (shares the weights)."""
    outputs = {s: model.get_layer(n).output for s, n in keras_stage_layers(model, cfg).items()}
    return keras.Model(model.inputs[0], {**outputs, "logits": model.outputs[0]})


def keras_stages(
    model: keras.Model, cfg: DenseNetConfig, x: np.ndarray, train: bool = False
) -> dict[str, np.ndarray]:
    stages = keras_stage_model(model, cfg)(x, training=train)
    return {name: np.asarray(value) for name, value in stages.items()}


def first_divergence(
    expected: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    order: list[str],
    atol: Callable[[str], float],
) -> tuple[str | None, dict[str, float]]:
    """(first stage whose max |difference| exceeds atol(stage), or None; all differences)."""
    diffs = {}
    first = None
    for stage in order:
        assert expected[stage].shape == actual[stage].shape, (
            f"{stage}: shapes {expected[stage].shape} (PyTorch) vs {actual[stage].shape} (Keras)"
        )
        diffs[stage] = float(np.abs(expected[stage] - actual[stage]).max())
        if first is None and diffs[stage] > atol(stage):
            first = stage
    return first, diffs


def divergence_message(first: str, diffs: dict[str, float], atol: float) -> str:
    table = ", ".join(f"{stage} {diff:.1e}" for stage, diff in diffs.items())
    return f"the frameworks part at {first} (max |diff| > {atol:g}); per stage: {table}"


def torch_grads(model: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy in train mode (batch statistics), by PyTorch name.
    Runs in the model's dtype."""
    model.train()
    model.zero_grad()
    dtype = next(model.parameters()).dtype
    F.cross_entropy(model(nchw(x).to(dtype)), torch.from_numpy(y)).backward()
    return {name: p.grad.numpy().copy() for name, p in model.named_parameters()}


def keras_grads(model: keras.Model, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """The same, by Keras weight name (`features.conv0/kernel`), in Keras layout."""
    variables = model.trainable_weights
    with tf.GradientTape() as tape:
        logits = model(x.astype(variables[0].dtype), training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    grads = tape.gradient(loss, variables)
    names = {id(v): n for n, v in named_weights(model).items()}
    return {names[id(v)]: g.numpy() for v, g in zip(variables, grads, strict=True)}


def relative_error(expected: np.ndarray, actual: np.ndarray, floor: float) -> float:
    """||expected - actual|| / max(||expected||, floor): relative where the reference is
    large, absolute against `floor` where it is near zero (where relative error is noise)."""
    return float(np.linalg.norm(expected - actual) / max(np.linalg.norm(expected), floor))


def batch_norm_counts(model: nn.Module, x: np.ndarray) -> dict[str, int]:
    """n = N*H*W values per channel seen by each BN layer (for the unbiased-variance factor)."""
    counts: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(
            lambda _m, i, _y, name=name: counts.__setitem__(name, i[0].numel() // i[0].shape[1])
        )
        for name, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    try:
        with torch.no_grad():
            model.eval()(nchw(x))
    finally:
        for hook in hooks:
            hook.remove()
    return counts


def keras_value(model: keras.Model, name: str) -> np.ndarray:
    return named_weights(model)[name].numpy()


def describe(cfg: DenseNetConfig) -> str:
    return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items())
