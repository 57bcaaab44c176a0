"""The naming rule that makes the Keras DenseNet and the PyTorch one the same table of weights.

Every Keras layer that owns weights is named by the PyTorch module path of its twin
(`features.denseblock1.denselayer1.conv1`), in both the functional and the Sequential
model, and a Keras weight is called `<layer name>/<variable name>`:

    PyTorch state_dict key                        Keras weight
    features.conv0.weight                         features.conv0/kernel
    features.conv0.bias                           features.conv0/bias        (BN off)
    features.denseblock1.denselayer1.norm1.weight features.denseblock1.denselayer1.norm1/gamma
    ... .norm1.bias / .running_mean / .running_var ... .norm1/beta / moving_mean / moving_variance
    ... .norm1.num_batches_tracked                (PyTorch only: Keras keeps no step count)
    classifier.weight / classifier.bias           classifier/kernel / classifier/bias

`weight` means a BatchNorm's gamma exactly when the module's last name starts with `norm`
(torchvision's canon: norm0, norm1, norm2, norm, norm5), and a kernel otherwise. The rule
is reversible, so the port is a lookup by name and never relies on layer order.

Keras prefixes `variable.path` with the names of enclosing models and layers (a Sequential
`DenseLayer` owns its convs: `sequential/features.denseblock1.denselayer1/<conv>/kernel`);
`weight_key` keeps the last two parts, which is the rule's name in either API.

This module imports neither Keras nor torch.
"""

from __future__ import annotations

from typing import Any

# Keras variable name -> PyTorch parameter/buffer name.
_TO_TORCH = {
    "kernel": "weight",
    "gamma": "weight",
    "bias": "bias",
    "beta": "bias",
    "moving_mean": "running_mean",
    "moving_variance": "running_var",
}
_TO_KERAS_NORM = {"weight": "gamma", "bias": "beta"}
_TO_KERAS_NORM.update(running_mean="moving_mean", running_var="moving_variance")
_TO_KERAS_OTHER = {"weight": "kernel", "bias": "bias"}

# PyTorch state_dict entries with no Keras counterpart.
TORCH_ONLY = ("num_batches_tracked",)


def is_norm(module_path: str) -> bool:
    """Whether a PyTorch module path names a BatchNorm (its last part starts with `norm`)."""
    return module_path.rsplit(".", 1)[-1].startswith("norm")


def weight_key(variable_path: str) -> str:
    """`<layer>/<variable>` from a Keras `variable.path` of any nesting depth."""
    parts = variable_path.split("/")
    if len(parts) < 2:
        raise ValueError(f"Keras variable path {variable_path!r} has no layer part.")
    return "/".join(parts[-2:])


def torch_name(keras_weight: str) -> str:
    """`features.conv0/kernel` (or a full `variable.path`) -> `features.conv0.weight`."""
    layer, var = weight_key(keras_weight).split("/")
    if var not in _TO_TORCH:
        raise ValueError(f"Keras variable {keras_weight!r} has no PyTorch counterpart.")
    return f"{layer}.{_TO_TORCH[var]}"


def keras_name(torch_key: str) -> str:
    """`features.conv0.weight` -> `features.conv0/kernel`. Raises for `num_batches_tracked`."""
    module, _, param = torch_key.rpartition(".")
    table = _TO_KERAS_NORM if is_norm(module) else _TO_KERAS_OTHER
    if not module or param not in table:
        raise ValueError(f"PyTorch entry {torch_key!r} has no Keras counterpart.")
    return f"{module}/{table[param]}"


def named_weights(model: Any) -> dict[str, Any]:
    """A Keras model's variables by rule name (`features.conv0/kernel`), in model order."""
    named: dict[str, Any] = {}
    for variable in model.weights:
        key = weight_key(variable.path)
        if key in named:
            raise ValueError(f"Two Keras weights are named {key!r}; layer names must be unique.")
        named[key] = variable
    return named


__all__ = ["TORCH_ONLY", "is_norm", "keras_name", "named_weights", "torch_name", "weight_key"]
