"""DenseNet for CIFAR-10/100 in PyTorch Lightning, with torch.compile.

`lightning_densenet.arch` (the architecture config and presets) imports neither torch
nor TensorFlow, so `tf_reference` can share it; the torch parts load on first use.
"""

from typing import TYPE_CHECKING, Any

from lightning_densenet.arch import PRESETS, DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError

if TYPE_CHECKING:
    from lightning_densenet.model import DenseNet, build_model

__all__ = ["PRESETS", "DenseNet", "DenseNetConfig", "UserError", "build_model", "resolve_arch"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("DenseNet", "build_model"):
        from lightning_densenet import model

        return getattr(model, name)
    raise AttributeError(f"module 'lightning_densenet' has no attribute {name!r}")
