"""Options that change how the network runs, not what it is, win over a checkpoint's.

LightningCLI replaces the model config with a checkpoint's hyperparameters
(Lightning-AI/pytorch-lightning#20310), which would drop `test --ckpt_path X --model.tta false`.
So the command line is read again for these options, and those it gives are put back.
"""

from __future__ import annotations

from typing import Any

RUNTIME_OPTIONS = (
    "tta",
    "tta_shift",
    "compile",
    "compile_mode",
    "channels_last",
    "memory_efficient",
)


def given_model_options(args: Any) -> set[str]:
    """`--model.tta false`, `--model.tta=false` -> {"tta"}."""
    if not isinstance(args, (list, tuple)):
        return set()
    return {
        arg.removeprefix("--model.").split("=")[0]
        for arg in args
        if isinstance(arg, str) and arg.startswith("--model.")
    }


def runtime_overrides(config: Any, subcommand: str | None, args: Any) -> dict[str, Any]:
    """The runtime options `args` (the command line) set, with their parsed values."""
    if not subcommand:
        return {}
    given = given_model_options(args)
    return {key: config[subcommand]["model"][key] for key in RUNTIME_OPTIONS if key in given}


def apply_overrides(config: Any, subcommand: str | None, overrides: dict[str, Any]) -> None:
    """Put `overrides` back into the model config, over what a checkpoint brought."""
    for key, value in overrides.items():
        config[subcommand]["model"][key] = value
