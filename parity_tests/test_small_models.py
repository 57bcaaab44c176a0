"""The plain CNN and the MLP are the same networks in PyTorch and Keras: the same layers with
weights, in order, with the same trainable and non-trainable parameter counts, and the same
output shape. (The speed benchmark compares the frameworks on them.)"""

from __future__ import annotations

import keras
import pytest
import torch
from torch import nn

from lightning_densenet.small_models import MLP, PlainCNN
from tf_reference import small_models


def torch_counts(model: nn.Module) -> list[tuple[int, int]]:
    """(trainable, non-trainable) parameters of each module that holds weights, in order;
    BN's running mean and variance are its non-trainable ones, as in Keras."""
    rows = []
    for m in model.modules():
        params = sum(p.numel() for p in m.parameters(recurse=False))
        if params:
            stats = [b for n, b in m.named_buffers(recurse=False) if n.startswith("running_")]
            rows.append((params, sum(b.numel() for b in stats)))
    return rows


def keras_counts(model: keras.Model) -> list[tuple[int, int]]:
    return [
        (
            sum(int(w.numpy().size) for w in layer.trainable_weights),
            sum(int(w.numpy().size) for w in layer.non_trainable_weights),
        )
        for layer in model.layers
        if layer.weights
    ]


@pytest.mark.parametrize(("width", "depth"), [(8, 3), (16, 4), (32, 6), (5, 7)])
def test_plain_cnn_matches_keras(width: int, depth: int) -> None:
    torch_model = PlainCNN(10, width, depth)
    keras_model = small_models.plain_cnn(10, width, depth)
    assert torch_counts(torch_model) == keras_counts(keras_model)
    assert torch_model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert keras_model(keras.ops.zeros((2, 32, 32, 3))).shape == (2, 10)


@pytest.mark.parametrize(("width", "depth"), [(32, 1), (128, 2), (64, 4)])
def test_mlp_matches_keras(width: int, depth: int) -> None:
    torch_model = MLP(100, width, depth)
    keras_model = small_models.mlp(100, width, depth)
    assert torch_counts(torch_model) == keras_counts(keras_model)
    assert torch_model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_bad_sizes_are_one_sentence() -> None:
    from lightning_densenet.errors import UserError

    with pytest.raises(UserError, match="--depth 2 is too small for the cnn"):
        PlainCNN(10, 8, 2)
    with pytest.raises(UserError, match="--width 0 is invalid for the mlp"):
        MLP(10, 0, 2)


def test_torchvision_twin_is_our_network() -> None:
    """`tv:` models of the speed study: torchvision's DenseNet with the CIFAR stem takes our
    state_dict strictly and computes the same logits, so their speeds compare like for like."""
    import torch

    from lightning_densenet.model import build_model
    from parity_tests.speed.torch_runner import torchvision_densenet

    torch.manual_seed(0)
    ours = build_model("densenet_bc_40_k12", 10).eval()
    theirs = torchvision_densenet("densenet_bc_40_k12").eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)
