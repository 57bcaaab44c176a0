"""A `--ckpt_path` that is missing, unreadable, or does not fit the model: one sentence.

Read before LightningCLI loads the checkpoint's hyperparameters into the model config (a
missing or corrupt file would end there in a traceback), and compared with the model it
built before the Trainer loads the weights (a mismatch would end in a state_dict diff).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightning_densenet.errors import UserError


def read_checkpoint(ckpt: str) -> tuple[dict[str, Any], dict[str, torch.Size]]:
    """The checkpoint at `ckpt` (tensors memory-mapped) and its weights' shapes; a UserError
    when it cannot be read. `weights_only`: a file from elsewhere cannot run code."""
    if not Path(ckpt).is_file():
        raise UserError(f"--ckpt_path {ckpt} does not exist: pass a .ckpt written by fit.")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
        shapes = {key: value.shape for key, value in state["state_dict"].items()}
    except Exception as err:
        raise UserError(
            f"--ckpt_path {ckpt} is not a readable Lightning checkpoint ({type(err).__name__}):"
            " pass a .ckpt written by fit."
        ) from None
    return state, shapes


def check_fits(ckpt: str, saved: dict[str, torch.Size], model: torch.nn.Module) -> None:
    """A checkpoint that does not fit the model (e.g. trained on CIFAR-10, now given
    CIFAR-100) ends in one sentence naming the first weight that differs."""
    for key, value in model.state_dict().items():
        if key not in saved or saved[key] != value.shape:
            found = "missing" if key not in saved else f"of shape {tuple(saved[key])}"
            raise UserError(
                f"--ckpt_path {ckpt} does not fit this model and data ({key} is {found}, the "
                f"model needs {tuple(value.shape)}): use the data the checkpoint was trained on."
            )
