"""`convert(src, dst)`: a file of one framework to a file of the other, the direction read off
the suffixes, every port checked by running both networks on the same random batch."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from lightning_densenet.arch import DenseNetConfig
from lightning_densenet.errors import UserError
from lightning_densenet.model import build_model
from parity_tests.convert.files import (
    KERAS_SUFFIXES,
    TORCH_SUFFIXES,
    read_keras,
    read_torch,
    write_keras,
    write_torch,
)
from parity_tests.convert.infer import arch_label, infer_arch, resolve_arch_option
from parity_tests.convert.layout import keras_to_torch, load_strict, torch_to_keras

if TYPE_CHECKING:
    import keras


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    api: str | None = None,
) -> str:
    """Convert `src` to `dst` (direction from the suffixes); returns a one-line summary."""
    src, dst = Path(src), Path(dst)
    if src.name.endswith(TORCH_SUFFIXES) and dst.name.endswith(KERAS_SUFFIXES):
        return _torch_file_to_keras(src, dst, arch, num_classes, api or "functional")
    if src.name.endswith(KERAS_SUFFIXES) and dst.name.endswith(TORCH_SUFFIXES):
        return _keras_file_to_torch(src, dst, arch, num_classes, api)
    raise UserError(
        f"Cannot convert {src.name} to {dst.name}: convert a PyTorch file "
        f"({', '.join(TORCH_SUFFIXES)}) to a Keras one ({', '.join(KERAS_SUFFIXES)}) or back."
    )


def _torch_file_to_keras(
    src: Path, dst: Path, arch: str | None, num_classes: int | None, api: str
) -> str:
    state, cfg, num_classes = read_torch(src, arch, num_classes)
    torch_model = build_model(cfg, num_classes)
    load_strict(torch_model, state, src)
    from tf_reference.model import build_model as build_keras  # TensorFlow: only now

    keras_model = build_keras(cfg, num_classes, api, input_shape=(None, None, 3))
    torch_to_keras(state, keras_model)
    diff = _max_logit_difference(torch_model, keras_model, cfg)
    write_keras(keras_model, dst)
    return (
        f"Wrote {dst}: Keras {api} {arch_label(cfg)}, {num_classes} classes "
        f"(max |logit difference| to PyTorch on a random batch: {diff:.1e})."
    )


def _keras_file_to_torch(
    src: Path, dst: Path, arch: str | None, num_classes: int | None, api: str | None
) -> str:
    keras_model = read_keras(src, arch, num_classes, api)
    state = keras_to_torch(keras_model)
    cfg = resolve_arch_option(arch) if arch else infer_arch(state)
    num_classes = state["classifier.weight"].shape[0]
    torch_model = build_model(cfg, num_classes)
    load_strict(torch_model, state, src)
    diff = _max_logit_difference(torch_model, keras_model, cfg)
    write_torch(torch_model.state_dict(), cfg, num_classes, dst)
    return (
        f"Wrote {dst}: PyTorch {arch_label(cfg)}, {num_classes} classes "
        f"(max |logit difference| to Keras on a random batch: {diff:.1e})."
    )


def _max_logit_difference(
    torch_model: nn.Module, keras_model: keras.Model, cfg: DenseNetConfig
) -> float:
    """Both networks in eval mode on the same random batch: the port's sanity check."""
    height, width = keras_model.input_shape[1:3]
    default = 64 if cfg.stem == "imagenet" else 32
    x = torch.randn(
        2, 3, height or default, width or default, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = torch_model.eval()(x).numpy()
    actual = np.asarray(keras_model(x.permute(0, 2, 3, 1).numpy(), training=False))
    return float(np.abs(actual - expected).max())


__all__ = ["convert"]
