"""The files a port reads and writes: `.ckpt` (Lightning), `.pt`/`.pth` (a state_dict) on the
PyTorch side; `.keras` (a whole model) and `.weights.h5` (weights only) on the Keras side.

TensorFlow loads only inside the functions that read or build a Keras model.
"""

from __future__ import annotations

import importlib.metadata
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lightning_densenet.arch import DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError
from parity_tests.convert.infer import arch_label, infer_arch, preset_name, resolve_arch_option
from parity_tests.convert.layout import plain_state_dict

if TYPE_CHECKING:
    import keras

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")
KERAS_SUFFIXES = (".keras", ".weights.h5")


def read_torch(
    path: Path, arch: str | None = None, num_classes: int | None = None
) -> tuple[dict[str, Tensor], DenseNetConfig, int]:
    """(state_dict, architecture, classes) of a `.ckpt` or a `.pt`/`.pth` state_dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: give the path of a checkpoint.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        reason = str(err).splitlines()[0][:200]
        raise UserError(f"{path} is not a readable PyTorch state_dict ({reason}).") from None
    hparams: dict[str, Any] = {}
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), Mapping):
        hparams = obj.get("hyper_parameters") or {}
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise UserError(
            f"{path} holds no state_dict: save `model.state_dict()`, or give a Lightning .ckpt."
        )
    state = plain_state_dict(obj)
    if arch is not None:
        cfg = resolve_arch_option(arch)
    elif "arch" in hparams:
        cfg = resolve_arch(hparams["arch"])
    else:
        cfg = infer_arch(state)
    if num_classes is None:
        classifier = state.get("classifier.weight")
        num_classes = hparams.get("num_classes") or (
            classifier.shape[0] if classifier is not None else 10
        )
    return state, cfg, int(num_classes)


def read_keras(
    path: Path, arch: str | None = None, num_classes: int | None = None, api: str | None = None
) -> keras.Model:
    """A `.keras` model, or a `.weights.h5` file loaded into `tf_reference.build_model(arch)`."""
    if not path.is_file():
        raise UserError(f"{path} does not exist: give the path of a Keras file.")
    if path.name.endswith(".keras"):
        return _load_keras_model(path)
    if arch is None or num_classes is None:
        raise UserError(
            f"{path} holds weights only: give the architecture with --arch NAME "
            "and --num-classes N."
        )
    cfg = resolve_arch_option(arch)
    from tf_reference.model import APIS
    from tf_reference.model import build_model as build_keras

    # A .weights.h5 file follows the structure of the model that saved it; without --api
    # try the functional layout, then the Sequential one.
    candidates = [api] if api else list(APIS)
    error = ""
    for candidate in candidates:
        model = build_keras(cfg, num_classes, candidate, input_shape=(None, None, 3))
        try:
            with warnings.catch_warnings():  # Keras warns about each layer it skips, then raises
                warnings.simplefilter("ignore")
                model.load_weights(path)
            return model
        except ValueError as err:
            error = _load_weights_error(err)
    raise UserError(
        f"{path} does not hold the weights of a {arch_label(cfg)} with {num_classes} classes "
        f"in the Keras {' or '.join(candidates)} layout ({error}): "
        "check --arch, --num-classes and --api."
    )


def _load_keras_model(path: Path) -> keras.Model:
    import keras

    import tf_reference.layers  # noqa: F401  (registers the custom layers with Keras)

    try:
        # safe_mode (Keras' default, named here on purpose): a file from elsewhere whose
        # layers carry Python code (a Lambda's bytecode) is refused, never deserialised.
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises many types for corrupt or foreign files
        raise UserError(f"{path} is not a readable .keras model ({_first_line(err)}).") from None


def _load_weights_error(err: Exception) -> str:
    """Keras' many-line `load_weights` error, cut to its count and first layer."""
    found = re.search(r"A total of (\d+) objects.*?name=([^,>]+)", str(err), re.DOTALL)
    if found:
        return f"{found[1]} layer(s) failed to load, the first {found[2]!r}"
    return _first_line(err)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def write_keras(keras_model: keras.Model, dst: Path) -> None:
    """A whole model (`.keras`) or its weights only (`.weights.h5`)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.name.endswith(".weights.h5"):
        keras_model.save_weights(dst)
    else:
        keras_model.save(dst)


def write_torch(
    state: Mapping[str, Tensor], cfg: DenseNetConfig, num_classes: int, dst: Path
) -> None:
    """A Lightning checkpoint (`.ckpt`) or a plain state_dict (`.pt`, `.pth`)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == ".ckpt":
        torch.save(lightning_checkpoint(state, cfg, num_classes), dst)
    else:
        torch.save(state, dst)


def lightning_checkpoint(
    state: Mapping[str, Tensor], cfg: DenseNetConfig, num_classes: int
) -> dict[str, Any]:
    """A checkpoint that `DenseNetClassifier.load_from_checkpoint` and
    `Trainer.validate/test/predict(ckpt_path=...)` accept: the network's weights under
    `model.` and the hyper-parameters that rebuild it (the rest of the recipe: defaults)."""
    return {
        "state_dict": {f"model.{key}": value for key, value in state.items()},
        "hyper_parameters": {"arch": preset_name(cfg) or cfg.to_dict(), "num_classes": num_classes},
        "pytorch-lightning_version": importlib.metadata.version("pytorch-lightning"),
    }


__all__ = [
    "KERAS_SUFFIXES",
    "TORCH_SUFFIXES",
    "lightning_checkpoint",
    "read_keras",
    "read_torch",
    "write_keras",
    "write_torch",
]
