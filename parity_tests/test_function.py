"""With ported weights, PyTorch and Keras compute the same function, gradients and step.

Models: DenseNet-BC-100 (k=12) at batch 2 and the seeded random architectures at batch 4,
with dropout set to 0 (the frameworks draw different masks), random BN parameters and
running statistics measured on data (`randomized_torch`). Activations are compared stage
by stage (stem, dense blocks, transitions, logits): a failure names the first stage where
the frameworks part.

Tolerances (float32 unless said otherwise), and why:
- logits: 1e-4 absolute. Stages: 1e-4 times the stage's largest activation (up to ~10):
  convolutions sum hundreds of products in a different order in each framework.
- BN running statistics after a train-mode step: 1e-5 absolute. PyTorch feeds the
  unbiased batch variance into running_var, Keras the biased one, so Keras' update is
  rescaled by n/(n-1) (n = N*H*W per channel) before comparing (tf_reference/layers.py).
- gradients: the relative error of a weight's gradient is ||g_ref - g|| / ||g_ref||, norms
  over the whole weight tensor. float64: 1e-8 per weight (the same math differs only in
  summation order; a wrong term would show at 1e-3 or more).
- gradients, float32: in a 100-layer network the gradients of some BN parameters are
  small differences of large terms, and PyTorch's own float32 gradient differs from its
  float64 one by up to ~2e-2 relative on them. So Keras' float32 gradient is held to be
  within 1e-3 of the float64 gradient or no worse than twice PyTorch's float32 error.
- one SGD step (Nesterov momentum 0.9, L2 weight decay 1e-4 in the gradient, PyTorch's
  convention), each framework's shipped step: `torch_train_step` with `torch.optim.SGD`
  against `tf_reference`'s `TrainStep` with `L2SGD`: float64 1e-9, float32 1e-3 absolute
  on every weight.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf
import torch

from lightning_densenet import PRESETS, DenseNetConfig
from parity_tests.convert.layout import to_torch_layout
from parity_tests.frameworks import (
    RANDOM_ARCHS,
    batch_norm_counts,
    divergence_message,
    first_divergence,
    images,
    keras_grads,
    keras_stages,
    keras_value,
    nchw,
    ported,
    randomized_torch,
    relative_error,
    stage_names,
    torch_grads,
    torch_stages,
    without_dropout,
)
from parity_tests.train_step import torch_train_step
from tf_reference.model import APIS
from tf_reference.names import keras_name, named_weights, torch_name
from tf_reference.optim import L2SGD
from tf_reference.steps import TrainStep

ARCHS = {
    "densenet_bc_100_k12": PRESETS["densenet_bc_100_k12"],
    **{name: without_dropout(cfg) for name, cfg in RANDOM_ARCHS.items()},
    # Its kernel is frozen in PyTorch (set from data) and a plain layer in Keras: the same
    # function, so it joins the forward checks but not the gradient and SGD-step ones.
    "whitening_stem": DenseNetConfig(growth_rate=5, block_config=(2, 3), stem="whitening"),
}


ARCH_PARAMS = [name for name in ARCHS if name != "whitening_stem"]
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-4  # the paper's SGD recipe
CLASSES = 10


def group(name: str) -> str:
    """The summary reports DenseNet-BC-100 apart from the random architectures."""
    return "BC-100" if name == "densenet_bc_100_k12" else "random archs"


def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
    n = 2 if name == "densenet_bc_100_k12" else 4
    return images(n, seed=3), np.arange(n, dtype=np.int64) % CLASSES


def assert_stages_agree(expected: dict, actual: dict, name: str, record, mode: str) -> None:
    cfg = ARCHS[name]
    scale = {s: max(1.0, float(np.abs(v).max())) for s, v in expected.items()}
    scale["logits"] = 1.0  # logits: absolute
    first, diffs = first_divergence(
        expected, actual, stage_names(cfg), atol=lambda s: 1e-4 * scale[s]
    )
    record(f"{group(name)}: {mode} logits, max |diff|", diffs["logits"], 1e-4)
    inner = [diffs[s] / scale[s] for s in stage_names(cfg)[:-1]]
    record(f"{group(name)}: {mode} stages, max |diff| / max |act|", max(inner), 1e-4)
    assert first is None, f"{name}: " + divergence_message(first, diffs, 1e-4)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("name", [*ARCH_PARAMS, "whitening_stem"])
def test_eval_forward_agrees_stage_by_stage(name: str, api: str, record) -> None:
    torch_model = randomized_torch(ARCHS[name], CLASSES)
    x, _ = batch(name)
    expected = torch_stages(torch_model, x, train=False)
    actual = keras_stages(ported(torch_model, api), ARCHS[name], x, train=False)
    assert_stages_agree(expected, actual, name, record, "eval")


TRAIN_CASES = [(name, "functional") for name in ARCHS] + [("densenet_bc_100_k12", "sequential")]


@pytest.mark.parametrize(("name", "api"), TRAIN_CASES)
def test_train_forward_and_running_statistics_agree(name: str, api: str, record) -> None:
    torch_model = randomized_torch(ARCHS[name], CLASSES)
    keras_model = ported(torch_model, api)
    x, _ = batch(name)
    counts = batch_norm_counts(torch_model, x)  # eval mode: leaves the statistics alone
    before = {k: v.clone() for k, v in torch_model.state_dict().items() if "running_var" in k}
    expected = torch_stages(torch_model, x, train=True)  # one update of the statistics
    actual = keras_stages(keras_model, ARCHS[name], x, train=True)  # and here
    assert_stages_agree(expected, actual, name, record, "train")

    worst_mean = worst_var = worst_uncorrected = 0.0
    for module, n in counts.items():
        mean = keras_value(keras_model, f"{module}/moving_mean")
        worst_mean = max(worst_mean, _gap(torch_model, f"{module}.running_mean", mean))
        # Keras: v' = 0.9 v + 0.1 var_biased; PyTorch: 0.9 v + 0.1 var_biased * n/(n-1).
        v0 = before[f"{module}.running_var"].numpy()
        var = keras_value(keras_model, f"{module}/moving_variance")
        corrected = 0.9 * v0 + (var - 0.9 * v0) * n / (n - 1)
        worst_var = max(worst_var, _gap(torch_model, f"{module}.running_var", corrected))
        worst_uncorrected = max(worst_uncorrected, _gap(torch_model, f"{module}.running_var", var))
    record(f"{group(name)}: BN running_mean after a train pass", worst_mean, 1e-5)
    record(f"{group(name)}: BN running_var (n/(n-1) applied)", worst_var, 1e-5)
    assert worst_mean <= 1e-5 and worst_var <= 1e-5, (worst_mean, worst_var)
    if counts:  # the correction is real: without it the variances differ more
        assert worst_uncorrected > 5 * worst_var


def _gap(torch_model: torch.nn.Module, key: str, keras_array: np.ndarray) -> float:
    return float(np.abs(torch_model.state_dict()[key].numpy() - keras_array).max())


@pytest.mark.parametrize("name", ARCH_PARAMS)
def test_gradients_agree_in_float64(name: str, record) -> None:
    torch_model = randomized_torch(ARCHS[name], CLASSES)
    keras_model = ported(torch_model, dtype="float64")
    x, y = batch(name)
    expected = torch_grads(copy.deepcopy(torch_model).double(), x.astype(np.float64), y)
    actual = keras_grads(keras_model, x.astype(np.float64), y)
    errors = {
        key: relative_error(g, to_torch_layout(actual[keras_name(key)]), floor=1e-30)
        for key, g in expected.items()
    }
    worst = max(errors, key=errors.get)
    record(f"{group(name)}: gradients float64, PyTorch vs Keras", errors[worst], 1e-8)
    assert errors[worst] <= 1e-8, f"{name}: gradient of {worst} differs by {errors[worst]:.1e}"


@pytest.mark.parametrize("name", ARCH_PARAMS)
def test_gradients_agree_in_float32(name: str, record) -> None:
    torch_model = randomized_torch(ARCHS[name], CLASSES)
    x, y = batch(name)
    exact = torch_grads(copy.deepcopy(torch_model).double(), x.astype(np.float64), y)
    torch32 = torch_grads(torch_model, x, y)
    keras32 = keras_grads(ported(torch_model), x, y)
    keras32 = {key: to_torch_layout(keras32[keras_name(key)]) for key in exact}
    torch_error = max(relative_error(exact[k], torch32[k], 1e-30) for k in exact)
    errors = {k: relative_error(exact[k], keras32[k], 1e-30) for k in exact}
    worst = max(errors, key=errors.get)
    between = max(relative_error(torch32[k], keras32[k], 1e-30) for k in exact)
    record(f"{group(name)}: gradients float32, PyTorch vs float64", torch_error, "(measured)")
    record(
        f"{group(name)}: gradients float32, Keras vs float64",
        errors[worst],
        "<= max(1e-3, 2 x PyTorch's)",
    )
    record(f"{group(name)}: gradients float32, PyTorch vs Keras", between, "(measured)")
    assert errors[worst] <= max(1e-3, 2 * torch_error), (
        f"{name}: Keras' float32 gradient of {worst} is off by {errors[worst]:.1e} "
        f"(PyTorch's float32 gradients: at most {torch_error:.1e})"
    )


# float64: the update formula on real gradients, rounding aside. float32: weights move by
# lr * (1 + momentum) * gradient = 0.19 * gradient, so they inherit the float32 gradient
# noise above (1e-4 measured on DenseNet-BC-100's stem conv); 1e-3 bounds it.
STEP_TOLERANCE = {"float64": 1e-9, "float32": 1e-3}


def l2sgd(dtype: str) -> L2SGD:
    """tf_reference's optimiser with the paper's recipe, its learning rate held in `dtype`:
    Keras keeps it in floatx, and a float32 0.1 would move float64 weights 1.5e-8 (relative)
    further than PyTorch's float64 0.1 does."""
    floatx = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        return L2SGD(LR, momentum=MOMENTUM, nesterov=True, weight_decay_l2=WEIGHT_DECAY)
    finally:
        keras.config.set_floatx(floatx)


@pytest.mark.parametrize("dtype", list(STEP_TOLERANCE))
@pytest.mark.parametrize("name", ARCH_PARAMS)
def test_one_sgd_step_leaves_the_same_weights(name: str, dtype: str, record) -> None:
    torch_model = randomized_torch(ARCHS[name], CLASSES)
    keras_model = ported(torch_model, dtype=dtype)
    torch_model = torch_model.to(getattr(torch, dtype)).train()
    x, y = batch(name)
    x = x.astype(dtype)
    optimizer = torch.optim.SGD(
        torch_model.parameters(),
        lr=LR,
        momentum=MOMENTUM,
        nesterov=True,
        weight_decay=WEIGHT_DECAY,
    )
    torch_train_step(torch_model, optimizer, nchw(x), torch.from_numpy(y))
    TrainStep(keras_model, l2sgd(dtype))(tf.constant(x), tf.constant(y))

    weights = {n: v for n, v in named_weights(keras_model).items() if v.trainable}
    state = torch_model.state_dict()
    gaps = {
        n: float(np.abs(state[torch_name(n)].numpy() - to_torch_layout(v.numpy())).max())
        for n, v in weights.items()
    }
    worst = max(gaps, key=gaps.get)
    tolerance = STEP_TOLERANCE[dtype]
    record(f"{group(name)}: one SGD step, {dtype}, max |weight diff|", gaps[worst], tolerance)
    assert gaps[worst] <= tolerance, f"{name}: after one step {worst} is off by {gaps[worst]:.1e}"


def test_sgd_formulas_agree_over_several_steps(record) -> None:
    """torch.optim.SGD(nesterov, weight_decay) against: Keras' SGD fed gradient + wd * w
    (the same while lr is constant: Keras' velocity is -lr times PyTorch's buffer); and the
    TF reference's training optimiser. Keras' own weight_decay is decoupled (not L2) and
    does differ."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 5)).astype(np.float32)
    grads = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(4)]

    w_torch = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    sgd = torch.optim.SGD([w_torch], lr=LR, momentum=MOMENTUM, nesterov=True, weight_decay=1e-2)
    for g in grads:
        w_torch.grad = torch.from_numpy(g)
        sgd.step()
    expected = w_torch.detach().numpy()

    def run(step) -> np.ndarray:
        w = tf.Variable(w0)
        for g in grads:
            step(w, tf.constant(g))
        return w.numpy()

    keras_sgd = keras.optimizers.SGD(LR, momentum=MOMENTUM, nesterov=True)
    keras_l2 = run(lambda w, g: keras_sgd.apply([g + 1e-2 * w], [w]))
    reference = L2SGD(LR, momentum=MOMENTUM, nesterov=True, weight_decay_l2=1e-2)
    tf_reference_sgd = run(lambda w, g: reference.apply([g], [w]))
    decoupled = keras.optimizers.SGD(LR, momentum=MOMENTUM, nesterov=True, weight_decay=1e-2)
    keras_decoupled = run(lambda w, g: decoupled.apply([g], [w]))

    worst = 0.0
    for actual in (keras_l2, tf_reference_sgd):
        worst = max(worst, float(np.abs(actual - expected).max()))
    record("SGD formulas over 4 steps, max |weight diff|", worst, 1e-6)
    assert worst <= 1e-6
    assert np.abs(keras_decoupled - expected).max() > 1e-4  # decoupled decay is not L2
