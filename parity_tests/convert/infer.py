"""Which architecture a port builds: given (`--arch`), or read off the weights' names and shapes.

Weights do not record the dropout rate, so an inferred model gets drop_rate 0: the same
function in eval mode.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from lightning_densenet.arch import PRESETS, DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError
from parity_tests.convert.layout import plain_state_dict
from tf_reference.names import is_norm


def infer_arch(state: Mapping[str, Tensor]) -> DenseNetConfig:
    """The architecture that holds these PyTorch weights, read off their names and shapes."""
    state = plain_state_dict(state)
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
        stem={7: "imagenet", 2: "whitening"}.get(conv0.shape[-1], "cifar"),
        num_init_features=conv0.shape[0],
    )
    name = preset_name(cfg)
    return PRESETS[name] if name else cfg


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


def preset_name(cfg: DenseNetConfig) -> str | None:
    """The preset that builds the same network (a stem width given or implied counts alike)."""

    def explicit(c: DenseNetConfig) -> DenseNetConfig:
        return dataclasses.replace(c, num_init_features=c.init_features)

    return next((name for name, p in PRESETS.items() if explicit(p) == explicit(cfg)), None)


def arch_label(cfg: DenseNetConfig) -> str:
    return preset_name(cfg) or "custom DenseNet"


def resolve_arch_option(arch: str) -> DenseNetConfig:
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


__all__ = ["arch_label", "infer_arch", "preset_name", "resolve_arch_option"]
