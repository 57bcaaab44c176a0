"""The port itself: weights copied by name (`tf_reference.names`) under three layout rules.

The rule is keyed by the rank of the tensor:

    4-D conv kernel    PyTorch (out, in, kh, kw) <-> Keras (kh, kw, in, out)
    2-D dense kernel   PyTorch (out, in)         <-> Keras (in, out)
    1-D (bias, BN)     unchanged; BN num_batches_tracked is PyTorch-only (0 when coming back)

Every copy is shape-checked, so a mismatched architecture stops at the first missing or
mis-shaped weight, by name. PyTorch -> Keras -> PyTorch is bit-exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from lightning_densenet.errors import UserError
from tf_reference.names import TORCH_ONLY, named_weights, torch_name

if TYPE_CHECKING:
    import keras

FIX = "check --arch and --num-classes"


def to_keras_layout(array: np.ndarray) -> np.ndarray:
    """A PyTorch weight in Keras' layout (the rules above)."""
    if array.ndim == 4:  # conv (out, in, kh, kw) -> (kh, kw, in, out)
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:  # linear (out, in) -> (in, out)
        return array.T
    return array


def to_torch_layout(array: np.ndarray) -> np.ndarray:
    """A Keras weight in PyTorch's layout: `to_keras_layout` undone."""
    if array.ndim == 4:  # conv (kh, kw, in, out) -> (out, in, kh, kw)
        return array.transpose(3, 2, 0, 1)
    if array.ndim == 2:  # linear (in, out) -> (out, in)
        return array.T
    return array


def _torch_shape(keras_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(keras_shape) == 4:
        kh, kw, c_in, c_out = keras_shape
        return (c_out, c_in, kh, kw)
    return keras_shape[::-1]  # 2-D: transposed; 1-D: unchanged


def plain_state_dict(source: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The network's own keys: drops a LightningModule's `model.` and torch.compile's
    `_orig_mod.` prefixes."""
    state = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    state = {key.replace("_orig_mod.", ""): value for key, value in state.items()}
    if state and all(key.startswith("model.") for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items()}
    return state


def torch_to_keras(source: nn.Module | Mapping[str, Tensor], keras_model: keras.Model) -> None:
    """Copy PyTorch weights (a module or a state_dict) into a Keras DenseNet of the same arch."""
    state = plain_state_dict(source)
    used = set()
    for name, variable in named_weights(keras_model).items():
        key = torch_name(name)
        if key not in state:
            raise UserError(
                f"The PyTorch weights lack {key!r}, which the Keras model has: "
                f"the architectures differ ({FIX})."
            )
        tensor = state[key].detach().cpu()
        expected = _torch_shape(tuple(variable.shape))
        if tuple(tensor.shape) != expected:
            raise UserError(
                f"Weight {key!r} has shape {tuple(tensor.shape)} in the PyTorch model but "
                f"{expected} in the Keras model: the architectures differ ({FIX})."
            )
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()  # NumPy has no bfloat16
        variable.assign(to_keras_layout(tensor.numpy()).astype(variable.dtype))
        used.add(key)
    extra = [k for k in state if k not in used and k.rsplit(".", 1)[-1] not in TORCH_ONLY]
    if extra:
        raise UserError(
            f"The PyTorch weights hold {extra[0]!r}, which the Keras model lacks: "
            f"the architectures differ ({FIX})."
        )


def keras_to_torch(keras_model: keras.Model) -> dict[str, Tensor]:
    """A Keras DenseNet's weights as a PyTorch state_dict for `build_model(same arch)`."""
    state: dict[str, Tensor] = {}
    for name, variable in named_weights(keras_model).items():
        try:
            key = torch_name(name)
        except ValueError:
            raise UserError(
                f"Keras weight {name!r} is not a DenseNet weight of tf_reference's naming: "
                "convert models built by tf_reference.build_model."
            ) from None
        array = to_torch_layout(variable.numpy())
        state[key] = torch.from_numpy(np.ascontiguousarray(array))
        if key.endswith(".running_var"):  # Keras counts no BN steps; PyTorch reads it only
            module = key.rsplit(".", 1)[0]  # with momentum=None, which the model does not use
            state[f"{module}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return state


def load_strict(model: nn.Module, state: Mapping[str, Tensor], src: Path) -> None:
    """`load_state_dict(strict=True)`, with the first offending weight in a UserError."""
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key not in state and key.rsplit(".", 1)[-1] in TORCH_ONLY:
            state[key] = torch.zeros_like(value)  # older PyTorch saved no BN step count
        if key not in state:
            raise UserError(f"{src} lacks weight {key!r} of the model: {FIX}.")
        if state[key].shape != value.shape:
            raise UserError(
                f"Weight {key!r} in {src} has shape {tuple(state[key].shape)}, the model "
                f"{tuple(value.shape)}: {FIX}."
            )
    extra = [key for key in state if key not in expected]
    if extra:
        raise UserError(f"{src} holds weight {extra[0]!r}, which the model lacks: {FIX}.")
    model.load_state_dict(state, strict=True)


__all__ = [
    "FIX",
    "keras_to_torch",
    "load_strict",
    "plain_state_dict",
    "to_keras_layout",
    "to_torch_layout",
    "torch_to_keras",
]
