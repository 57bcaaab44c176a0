"""Port DenseNet weights between PyTorch and Keras: `python -m lightning_densenet convert SRC DST`.

    python -m lightning_densenet convert runs/x/version_0/checkpoints/last.ckpt model.keras
    python -m lightning_densenet convert model.keras model.pt
    python -m lightning_densenet convert w.weights.h5 model.ckpt --arch densenet_bc_100_k12 \\
        --num-classes 10

The direction follows the file types: `.ckpt` (Lightning), `.pt`/`.pth` (a state_dict) on
the PyTorch side; `.keras` (a whole model) and `.weights.h5` (weights only) on the Keras
side. The port is a name table (`tf_reference.names`) plus three layout rules, keyed by
the rank of the tensor:

    4-D conv kernel    PyTorch (out, in, kh, kw) <-> Keras (kh, kw, in, out)
    2-D dense kernel   PyTorch (out, in)         <-> Keras (in, out)
    1-D (bias, BN)     unchanged; BN num_batches_tracked is PyTorch-only (0 when coming back)

Every copy is shape-checked, so a mismatched architecture stops at the first missing or
mis-shaped weight, by name. PyTorch -> Keras -> PyTorch is bit-exact.

Where the architecture is not given (`--arch`) or stored (a Lightning checkpoint's
hyper-parameters), it is read off the weight shapes. Weights do not record the dropout
rate, so such a model gets drop_rate 0: the same function in eval mode.

TensorFlow loads only inside the functions that need it, so `import lightning_densenet`
stays TensorFlow-free. (Importing `tf_reference.names` here also loads Triton ahead of
TensorFlow, which a process holding both needs: see `tf_reference/__init__.py`.)
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import pickle
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_densenet.arch import PRESETS, DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError
from lightning_densenet.model import build_model
from tf_reference.names import TORCH_ONLY, is_norm, named_weights, torch_name

if TYPE_CHECKING:
    import keras

TORCH_SUFFIXES = (".ckpt", ".pt", ".pth")
KERAS_SUFFIXES = (".keras", ".weights.h5")
_FIX = "check --arch and --num-classes"


def _to_keras_layout(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:  # conv (out, in, kh, kw) -> (kh, kw, in, out)
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2:  # linear (out, in) -> (in, out)
        return array.T
    return array


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if array.ndim == 2:
        return array.T
    return array


def _torch_shape(keras_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(keras_shape) == 4:
        kh, kw, c_in, c_out = keras_shape
        return (c_out, c_in, kh, kw)
    return keras_shape[::-1]  # 2-D: transposed; 1-D: unchanged


def _plain_state_dict(source: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The network's own keys: drops a LightningModule's `model.` and torch.compile's
    `_orig_mod.` prefixes."""
    state = source.state_dict() if isinstance(source, nn.Module) else dict(source)
    state = {key.replace("_orig_mod.", ""): value for key, value in state.items()}
    if state and all(key.startswith("model.") for key in state):
        state = {key.removeprefix("model."): value for key, value in state.items()}
    return state


def torch_to_keras(source: nn.Module | Mapping[str, Tensor], keras_model: keras.Model) -> None:
    """Copy PyTorch weights (a module or a state_dict) into a Keras DenseNet of the same arch."""
    state = _plain_state_dict(source)
    used = set()
    for name, variable in named_weights(keras_model).items():
        key = torch_name(name)
        if key not in state:
            raise UserError(
                f"The PyTorch weights lack {key!r}, which the Keras model has: "
                f"the architectures differ ({_FIX})."
            )
        tensor = state[key].detach().cpu()
        expected = _torch_shape(tuple(variable.shape))
        if tuple(tensor.shape) != expected:
            raise UserError(
                f"Weight {key!r} has shape {tuple(tensor.shape)} in the PyTorch model but "
                f"{expected} in the Keras model: the architectures differ ({_FIX})."
            )
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()  # NumPy has no bfloat16
        variable.assign(_to_keras_layout(tensor.numpy()).astype(variable.dtype))
        used.add(key)
    extra = [k for k in state if k not in used and k.rsplit(".", 1)[-1] not in TORCH_ONLY]
    if extra:
        raise UserError(
            f"The PyTorch weights hold {extra[0]!r}, which the Keras model lacks: "
            f"the architectures differ ({_FIX})."
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
        array = _to_torch_layout(variable.numpy())
        state[key] = torch.from_numpy(np.ascontiguousarray(array))
        if key.endswith(".running_var"):  # Keras counts no BN steps; PyTorch reads it only
            module = key.rsplit(".", 1)[0]  # with momentum=None, which the model does not use
            state[f"{module}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    return state


def infer_arch(state: Mapping[str, Tensor]) -> DenseNetConfig:
    """The architecture that holds these PyTorch weights, read off their names and shapes."""
    state = _plain_state_dict(state)
    layers: dict[int, int] = {}
    for key in state:
        if m := re.fullmatch(r"features\.denseblock(\d+)\.denselayer(\d+)\.conv1\.weight", key):
            block, layer = int(m[1]), int(m[2])
            layers[block] = max(layers.get(block, 0), layer)
    if "features.conv0.weight" not in state or not layers:
        raise UserError(
            "These weights are not a DenseNet with torchvision's names (no features.conv0 or "
            "dense layers): give --arch, or convert a checkpoint of lightning_densenet."
        )
    first = "features.denseblock1.denselayer1"
    bottleneck = f"{first}.conv2.weight" in state
    growth_rate = state[f"{first}.conv2.weight" if bottleneck else f"{first}.conv1.weight"].shape[0]
    conv0 = state["features.conv0.weight"]
    transitions = [
        state[f"features.transition{i}.conv.weight"].shape[:2] for i in range(1, len(layers))
    ]
    cfg = DenseNetConfig(
        growth_rate=growth_rate,
        block_config=tuple(layers[i] for i in sorted(layers)),
        bottleneck=bottleneck,
        bn_size=state[f"{first}.conv1.weight"].shape[0] // growth_rate if bottleneck else 4,
        compression=_compression([(int(c_in), int(c_out)) for c_out, c_in in transitions]),
        batch_norm=any(is_norm(key.rsplit(".", 1)[0]) for key in state),
        stem="imagenet" if conv0.shape[-1] == 7 else "cifar",
        num_init_features=conv0.shape[0],
    )
    return _preset_of(cfg) or cfg


def _compression(transitions: list[tuple[int, int]]) -> float:
    """The shortest theta with floor(theta * c_in) == c_out for every transition."""
    if not transitions:
        return 0.5  # one block: no transition, theta unused
    low = max(c_out / c_in for c_in, c_out in transitions)
    for digits in range(1, 8):
        for theta in (round(low, digits), round(low, digits) + 10.0**-digits):
            if 0 < theta <= 1 and all(int(c_in * theta) == c_out for c_in, c_out in transitions):
                return theta
    raise UserError(f"Transition widths {transitions} fit no single compression: give --arch.")


def _preset_name(cfg: DenseNetConfig) -> str | None:
    """The preset that builds the same network (a stem width given or implied counts alike)."""

    def explicit(c: DenseNetConfig) -> DenseNetConfig:
        return dataclasses.replace(c, num_init_features=c.init_features)

    return next((name for name, p in PRESETS.items() if explicit(p) == explicit(cfg)), None)


def _preset_of(cfg: DenseNetConfig) -> DenseNetConfig | None:
    name = _preset_name(cfg)
    return PRESETS[name] if name else None


def _arch_label(cfg: DenseNetConfig) -> str:
    return _preset_name(cfg) or "custom DenseNet"


def _resolve_arch_option(arch: str) -> DenseNetConfig:
    """--arch: a preset name, or a YAML config whose `model.arch` describes the network."""
    if arch.endswith((".yaml", ".yml")):
        import yaml

        path = Path(arch)
        if not path.is_file():
            raise UserError(f"--arch {arch}: no such config file; give a preset or a YAML path.")
        model = (yaml.safe_load(path.read_text()) or {}).get("model") or {}
        if "arch" not in model:
            raise UserError(f"--arch {arch}: the config has no model.arch; add one.")
        return resolve_arch(model["arch"])
    return resolve_arch(arch)


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
    state = _plain_state_dict(obj)
    if arch is not None:
        cfg = _resolve_arch_option(arch)
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
    cfg = _resolve_arch_option(arch)
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
        f"{path} does not hold the weights of a {_arch_label(cfg)} with {num_classes} classes "
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
    _load_strict(torch_model, state, src)
    from tf_reference.model import build_model as build_keras  # TensorFlow: only now

    keras_model = build_keras(cfg, num_classes, api, input_shape=(None, None, 3))
    torch_to_keras(state, keras_model)
    diff = _max_logit_difference(torch_model, keras_model, cfg)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.name.endswith(".weights.h5"):
        keras_model.save_weights(dst)
    else:
        keras_model.save(dst)
    return (
        f"Wrote {dst}: Keras {api} {_arch_label(cfg)}, {num_classes} classes "
        f"(max |logit difference| to PyTorch on a random batch: {diff:.1e})."
    )


def _keras_file_to_torch(
    src: Path, dst: Path, arch: str | None, num_classes: int | None, api: str | None
) -> str:
    keras_model = read_keras(src, arch, num_classes, api)
    state = keras_to_torch(keras_model)
    cfg = _resolve_arch_option(arch) if arch else infer_arch(state)
    num_classes = state["classifier.weight"].shape[0]
    torch_model = build_model(cfg, num_classes)
    _load_strict(torch_model, state, src)
    diff = _max_logit_difference(torch_model, keras_model, cfg)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == ".ckpt":
        torch.save(lightning_checkpoint(torch_model.state_dict(), cfg, num_classes), dst)
    else:
        torch.save(torch_model.state_dict(), dst)
    return (
        f"Wrote {dst}: PyTorch {_arch_label(cfg)}, {num_classes} classes "
        f"(max |logit difference| to Keras on a random batch: {diff:.1e})."
    )


def _load_strict(model: nn.Module, state: Mapping[str, Tensor], src: Path) -> None:
    """`load_state_dict(strict=True)`, with the first offending weight in a UserError."""
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key not in state and key.rsplit(".", 1)[-1] in TORCH_ONLY:
            state[key] = torch.zeros_like(value)  # older PyTorch saved no BN step count
        if key not in state:
            raise UserError(f"{src} lacks weight {key!r} of the model: {_FIX}.")
        if state[key].shape != value.shape:
            raise UserError(
                f"Weight {key!r} in {src} has shape {tuple(state[key].shape)}, the model "
                f"{tuple(value.shape)}: {_FIX}."
            )
    extra = [key for key in state if key not in expected]
    if extra:
        raise UserError(f"{src} holds weight {extra[0]!r}, which the model lacks: {_FIX}.")
    model.load_state_dict(state, strict=True)


def lightning_checkpoint(
    state: Mapping[str, Tensor], cfg: DenseNetConfig, num_classes: int
) -> dict[str, Any]:
    """A checkpoint that `DenseNetClassifier.load_from_checkpoint` and
    `Trainer.validate/test/predict(ckpt_path=...)` accept: the network's weights under
    `model.` and the hyper-parameters that rebuild it (the rest of the recipe: defaults)."""
    preset = _preset_name(cfg)
    return {
        "state_dict": {f"model.{key}": value for key, value in state.items()},
        "hyper_parameters": {"arch": preset or cfg.to_dict(), "num_classes": num_classes},
        "pytorch-lightning_version": importlib.metadata.version("pytorch-lightning"),
    }


def main(argv: list[str] | None = None) -> int:
    """`convert SRC DST [--arch NAME] [--num-classes N] [--api functional|sequential]`."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_densenet convert",
        description="Port DenseNet weights between PyTorch (.ckpt, .pt, .pth) and Keras "
        "(.keras, .weights.h5); the direction follows the file types.",
    )
    parser.add_argument("src", help="the file to read")
    parser.add_argument("dst", help="the file to write")
    parser.add_argument(
        "--arch",
        help="preset name or config YAML (its model.arch); needed for .weights.h5 sources, "
        "otherwise read from the checkpoint or the weight shapes",
    )
    parser.add_argument("--num-classes", type=int, help="classes (needed for .weights.h5)")
    parser.add_argument(
        "--api",
        choices=("functional", "sequential"),
        help="Keras model to build (default: functional; for .weights.h5 sources: try both)",
    )
    args = parser.parse_args(argv)
    try:
        summary = convert(
            args.src, args.dst, arch=args.arch, num_classes=args.num_classes, api=args.api
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary)
    return 0


__all__ = [
    "convert",
    "infer_arch",
    "keras_to_torch",
    "lightning_checkpoint",
    "main",
    "read_keras",
    "read_torch",
    "torch_to_keras",
]
