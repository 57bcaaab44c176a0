"""The TensorFlow/Keras reference DenseNet, held to `lightning_densenet` by `parity_tests/`.

    import tf_reference
    model = tf_reference.build_model("densenet_bc_100_k12", num_classes=10, api="functional")

The architecture description (`lightning_densenet.arch`) is shared with the PyTorch side;
importing this package never imports torch, and Keras loads on first use of a model.
"""

import contextlib
import sys
from typing import TYPE_CHECKING, Any

# Triton (torch.compile's compiler, installed with CUDA builds of torch and imported by
# torchvision and Lightning) segfaults when its libtriton loads into a process that already
# holds TensorFlow; loaded first, both work. So in a process that may hold both (the weight
# port, parity tests, one pytest run) Triton goes first. Triton does not import torch.
if "tensorflow" not in sys.modules:
    with contextlib.suppress(ImportError):
        import triton  # noqa: F401

from tf_reference.names import keras_name, torch_name

if TYPE_CHECKING:
    from tf_reference.model import build_model

__all__ = ["build_model", "keras_name", "torch_name"]


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from tf_reference.model import build_model

        return build_model
    raise AttributeError(f"module 'tf_reference' has no attribute {name!r}")
