"""DenseNet for CIFAR-10/100 in PyTorch Lightning, with torch.compile.

The framework-free core (`arch`: the architecture config and presets; `errors`;
`schedules`; `datasets`) imports neither torch nor TensorFlow and is read by `tf_reference`
too. This package imports neither framework, so `tf_reference`, which reaches the core
through it, stays torch-free; the weight port, which needs both, is `parity_tests.convert`.
"""

from typing import TYPE_CHECKING, Any

from lightning_densenet.arch import PRESETS, DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError

if TYPE_CHECKING:
    from lightning_densenet.model import DenseNet, build_model

__all__ = ["PRESETS", "DenseNet", "DenseNetConfig", "UserError", "build_model", "resolve_arch"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # A convenience, not a cycle workaround: `from lightning_densenet import build_model`
    # loads torch only when asked, so importing the core through this package stays torch-free.
    if name in ("DenseNet", "build_model"):
        from lightning_densenet import model

        return getattr(model, name)
    raise AttributeError(f"module 'lightning_densenet' has no attribute {name!r}")
