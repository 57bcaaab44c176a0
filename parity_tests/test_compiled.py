"""Compiled execution computes what eager execution computes, in each framework.

PyTorch: `torch.compile` (Inductor) against eager. Keras: `tf.function` and
`tf.function(jit_compile=True)` (XLA) against eager. Each on eval-mode logits and on a
train-mode pass: logits, gradients of the loss and the updated BN statistics.

The model is a DenseNet of two blocks of one layer each (float32, random BN parameters and
statistics): each kind of layer once (stem, bottlenecked dense layer, transition, head).
Compiling DenseNet-40 takes 25-50 s on two CPU cores, this one a few seconds, and the
compilers treat every layer of a kind the same way whatever the depth.

Tolerances: compilers fuse BN into convolutions and reorder sums, so results differ by
float32 rounding, never by more. Logits and BN statistics: 1e-5 absolute (values O(1)).
Gradients: 1e-3 relative per weight (||g_eager - g_compiled|| / ||g_eager||): the small
gradients of BN parameters carry float32 noise of up to ~1e-3 (see test_function.py),
so a compiler that merely reorders sums may reach it on another CPU; 4e-5 measured here.
tf.function runs the same kernels as eager, up to Grappler's graph rewrites (which may
fuse conv + bias + ReLU): held to the same bounds.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import tensorflow as tf
import torch
import torch.nn.functional as F

from lightning_densenet import DenseNetConfig
from parity_tests.frameworks import images, nchw, ported, randomized_torch, relative_error
from tf_reference.model import APIS
from tf_reference.names import named_weights

ARCH = DenseNetConfig(growth_rate=4, block_config=(1, 1), num_init_features=8)
LOGITS_TOL, GRAD_TOL, STATS_TOL = 1e-5, 1e-3, 1e-5


def batch() -> tuple[np.ndarray, np.ndarray]:
    return images(4, seed=5), np.array([0, 3, 7, 9])


def worst_relative(expected: dict, actual: dict) -> tuple[str, float]:
    errors = {k: relative_error(expected[k], actual[k], floor=1e-30) for k in expected}
    worst = max(errors, key=errors.get)
    return worst, errors[worst]


@pytest.fixture(scope="module")
def torch_models() -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """(eager, the compiled module's own weights, the compiled callable), same start."""
    eager = randomized_torch(ARCH, 10)
    inner = copy.deepcopy(eager)
    return eager, inner, torch.compile(inner)


def test_torch_compile_eval_logits(torch_models, record) -> None:
    eager, inner, compiled = torch_models
    x, _ = batch()
    with torch.no_grad():
        expected = eager.eval()(nchw(x))
        inner.eval()
        actual = compiled(nchw(x))
    gap = float((expected - actual).abs().max())
    record("torch.compile vs eager: eval logits, max |diff|", gap, LOGITS_TOL)
    assert gap <= LOGITS_TOL


def test_torch_compile_train_pass(torch_models, record) -> None:
    eager, inner, compiled = torch_models
    x, y = batch()
    results = []
    for model, call in ((eager, eager), (inner, compiled)):
        model.train()
        model.zero_grad()
        logits = call(nchw(x))
        F.cross_entropy(logits, torch.from_numpy(y)).backward()
        grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
        stats = {n: b.numpy().copy() for n, b in model.named_buffers() if "running" in n}
        results.append((logits.detach().numpy(), grads, stats))
    (logits_e, grads_e, stats_e), (logits_c, grads_c, stats_c) = results

    logits_gap = float(np.abs(logits_e - logits_c).max())
    worst, grad_error = worst_relative(grads_e, grads_c)
    stats_gap = max(float(np.abs(stats_e[k] - stats_c[k]).max()) for k in stats_e)
    record("torch.compile vs eager: train logits, max |diff|", logits_gap, LOGITS_TOL)
    record("torch.compile vs eager: gradients, worst relative", grad_error, GRAD_TOL)
    record("torch.compile vs eager: BN running stats, max |diff|", stats_gap, STATS_TOL)
    assert logits_gap <= LOGITS_TOL
    assert grad_error <= GRAD_TOL, f"gradient of {worst} differs by {grad_error:.1e}"
    assert stats_gap <= STATS_TOL


def _keras_train_pass(model, x: tf.Tensor, y: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return logits, tape.gradient(loss, model.trainable_weights)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["tf.function", "xla"])
@pytest.mark.parametrize("api", APIS)
def test_tf_function_matches_eager(api: str, jit_compile: bool, record) -> None:
    model = ported(randomized_torch(ARCH, 10), api)
    mode = "XLA" if jit_compile else "tf.function"
    x, y = (tf.constant(a) for a in batch())

    expected = model(x, training=False).numpy()
    actual = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)(x)
    gap = float(np.abs(expected - actual.numpy()).max())
    record(f"{mode} vs eager: eval logits, max |diff|", gap, LOGITS_TOL)
    assert gap <= LOGITS_TOL

    # A train pass updates the moving statistics: run both from the same values.
    stats = {n: v for n, v in named_weights(model).items() if "/moving_" in n}
    start = {n: v.numpy() for n, v in stats.items()}
    names = [n for n, v in named_weights(model).items() if v.trainable]
    runs = []
    for train_pass in (_keras_train_pass, tf.function(_keras_train_pass, jit_compile=jit_compile)):
        for n, v in stats.items():
            v.assign(start[n])
        logits, grads = train_pass(model, x, y)
        runs.append(
            (
                logits.numpy(),
                {n: g.numpy() for n, g in zip(names, grads, strict=True)},
                {n: v.numpy() for n, v in stats.items()},
            )
        )
    (logits_e, grads_e, stats_e), (logits_c, grads_c, stats_c) = runs
    logits_gap = float(np.abs(logits_e - logits_c).max())
    worst, grad_error = worst_relative(grads_e, grads_c)
    stats_gap = max(float(np.abs(stats_e[k] - stats_c[k]).max()) for k in stats_e)
    record(f"{mode} vs eager: train logits, max |diff|", logits_gap, LOGITS_TOL)
    record(f"{mode} vs eager: gradients, worst relative", grad_error, GRAD_TOL)
    record(f"{mode} vs eager: BN moving stats, max |diff|", stats_gap, STATS_TOL)
    assert logits_gap <= LOGITS_TOL
    assert grad_error <= GRAD_TOL, f"{api}, {mode}: gradient of {worst} off by {grad_error:.1e}"
    assert stats_gap <= STATS_TOL
