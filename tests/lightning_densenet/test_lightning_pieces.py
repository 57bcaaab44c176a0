"""Lightning's pieces as this package uses them: each private attribute it still needs (the one
list, `lightning_densenet/private_api.py`) exists in the installed versions and no other is
used, and the epoch loss (a torchmetrics `MeanMetric`) is the mean over every image."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

import lightning_densenet
from lightning_densenet.module import DenseNetClassifier
from lightning_densenet.private_api import PRIVATE_API, PrivateUse

PACKAGE = Path(lightning_densenet.__file__).parent
REGISTERED = {use.path[-1] for use in PRIVATE_API}


def _holder(owner: str, tmp_path: Path) -> Any:
    """What holds `owner`'s attributes: an instance where they are set in `__init__`, a
    state where they are saved, else the class or module itself."""
    if owner == "a checkpoint's loops.fit_loop":
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, default_root_dir=tmp_path)
        return trainer.fit_loop.state_dict()  # as saved under checkpoint["loops"]["fit_loop"]
    if owner == "pytorch_lightning.loggers.csv_logs.ExperimentWriter":
        return ExperimentWriter(str(tmp_path / "writer"))
    if owner == "pytorch_lightning.loggers.CSVLogger":
        return CSVLogger(tmp_path)
    module, _, name = owner.rpartition(".")
    if not module:
        return importlib.import_module(owner)
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("use", PRIVATE_API, ids=lambda use: use.name)
def test_each_private_attribute_still_exists(use: PrivateUse, tmp_path: Path) -> None:
    holder = _holder(use.owner, tmp_path)
    for part in use.path:
        found = part in holder if isinstance(holder, dict) else hasattr(holder, part)
        if not found:
            pytest.fail(
                f"{use.name} is gone from the installed versions (pytorch-lightning "
                f"{pl.__version__}, torch {torch.__version__}); it is used for: {use.why}"
            )
        holder = holder[part] if isinstance(holder, dict) else getattr(holder, part)


def _sources() -> dict[str, str]:
    return {p.name: p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "private_api.py"}


def test_each_registered_attribute_is_still_used() -> None:
    text = "\n".join(_sources().values())
    unused = [use.name for use in PRIVATE_API if use.path[-1] not in text]
    assert not unused, f"no longer used, drop them from private_api.py: {unused}"


# A private name read off a Lightning or torch object, or out of a saved loop state.
_READ = re.compile(
    r"\b(?:torch|trainer|pl_module|strategy|super\(\))(?:\.\w+)*\.(_[a-z]\w*)"
    r"|\[\"(_[a-z]\w*)\"\]"
)


def test_no_other_private_attribute_is_read_off_lightning_or_torch() -> None:
    found = {
        (file, name)
        for file, text in _sources().items()
        for match in _READ.finditer(text)
        for name in match.groups()
        if name and name not in REGISTERED
    }
    assert not found, f"register these in lightning_densenet/private_api.py: {sorted(found)}"


def _library_bases(cls: type) -> list[type]:
    roots = ("pytorch_lightning", "lightning_fabric", "torchmetrics")
    return [b for b in cls.__mro__[1:] if b.__module__.split(".")[0] in roots]


def test_no_subclass_uses_an_unregistered_private_attribute_of_its_lightning_base() -> None:
    """A `self._name` in one of our subclasses that Lightning's base class also uses is
    either its private attribute, used on purpose (registered), or a name clash."""
    found = set()
    for info in pkgutil.walk_packages([str(PACKAGE)], "lightning_densenet."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == module.__name__):
                continue
            ours = [c for c in cls.__mro__ if c.__module__.startswith("lightning_densenet")]
            used = {n for c in ours for n in re.findall(r"self\.(_[a-z]\w*)", inspect.getsource(c))}
            for base in _library_bases(cls):
                source = inspect.getsource(base)
                found |= {
                    (cls.__name__, base.__name__, name)
                    for name in used - REGISTERED
                    if re.search(rf"self\.{name}\b|def {name}\b", source)
                }
    assert not found, f"private to Lightning, or a clash: {sorted(found)}"


def test_epoch_loss_is_the_mean_over_every_image() -> None:
    """Batches of 8 and 1 images: the mean of 9 losses, not of the 2 batch means."""
    module = DenseNetClassifier("densenet_tiny", num_classes=10).eval()
    generator = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(n, 3, 32, 32, generator=generator),
            torch.randint(0, 10, (n,), generator=generator),
        )
        for n in (8, 1)
    ]
    with torch.no_grad(), pytest.warns(UserWarning, match="self.trainer"):  # no Trainer here
        for batch in batches:
            module._step(batch, module.val_metrics)
        total = sum(F.cross_entropy(module(x), y, reduction="sum") for x, y in batches)
    mean = module.mean_losses["val/"].compute()
    assert mean.item() == pytest.approx(total.item() / 9, rel=1e-6)
