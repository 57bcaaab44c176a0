"""The progress bar of `fit`: Lightning's, with the budget's minutes, PFLOP and image size.

    Epoch 12/99 ━━━━━━━━━━━━  88/171 0:00:41 • 0:00:39 2.14it/s min: 13.4/27 px: 24 v_num: 0 ...

`min` is the time budget's clock (compilation and validation included, resumed runs too) over
`model.budget_minutes`; `PFLOP` the training compute so far over `model.budget_pflop`; `px`
the width of the images the last step trained on (`train/image_size`, logged with
progressive resizing). Each appears when the run has it.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
from pytorch_lightning.trainer.states import TrainerFn


def budget_items(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The progress bar's extra items (none outside fit, or for another LightningModule)."""
    if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
        return {}
    hparams = getattr(pl_module, "hparams", {})
    items: dict[str, Any] = {}
    used_s = getattr(pl_module, "budget_used_s", None)  # DenseNetClassifier's budget clock
    if callable(used_s):
        minutes, budget = used_s() / 60, hparams.get("budget_minutes")
        items["min"] = f"{minutes:.1f}/{budget:g}" if budget else f"{minutes:.1f}"
    pflop, budget_pflop = trainer.callback_metrics.get("train/pflop"), hparams.get("budget_pflop")
    if pflop is not None:
        done = float(pflop)
        items["PFLOP"] = f"{done:.3g}/{budget_pflop:g}" if budget_pflop else f"{done:.3g}"
    if (size := trainer.callback_metrics.get("train/image_size")) is not None:
        items["px"] = str(int(size))  # a string: Rich would print an int as 32.000
    return items


class _BudgetItems:
    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return budget_items(trainer, pl_module) | super().get_metrics(trainer, pl_module)  # type: ignore[misc]


class BudgetTQDMProgressBar(_BudgetItems, TQDMProgressBar):
    pass


class BudgetRichProgressBar(_BudgetItems, RichProgressBar):
    pass


__all__ = ["BudgetRichProgressBar", "BudgetTQDMProgressBar", "budget_items"]
