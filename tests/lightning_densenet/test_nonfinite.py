"""`StopOnNonFiniteLoss` reading the device's flags every N steps, as it does on a GPU.

On the CPU it checks every step as it runs (the `fit` NaN test in test_resume.py); here
`check_every_n_steps` forces the deferred checks on the CPU: the stop names the step that
broke, and no checkpoint of it, or of a later step, is written.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from lightning_densenet.callbacks import StopOnNonFiniteLoss
from lightning_densenet.errors import UserError


class Tiny(pl.LightningModule):
    """A linear model whose loss (or weights) turn non-finite in global step `bad_step`."""

    def __init__(self, bad_step: int, what: str = "loss") -> None:
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.bad_step, self.what = bad_step, what

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.net(batch).pow(2).mean()
        if self.global_step == self.bad_step and self.what == "loss":
            loss = loss * float("nan")
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        step = self.global_step
        super().optimizer_step(*args, **kwargs)
        if step == self.bad_step and self.what == "weights":
            with torch.no_grad():
                self.net.weight[0, 0] = float("inf")  # as an update past float32's range

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.randn(64, 4), batch_size=4)


def _fit(tmp_path, model: Tiny, stop: StopOnNonFiniteLoss, **checkpoint) -> str:
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, **checkpoint)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[stop, ckpt],
        default_root_dir=tmp_path,
    )
    with pytest.raises(UserError) as info:
        trainer.fit(model)
    return str(info.value)


def test_a_nan_loss_found_later_stops_before_any_checkpoint_of_it(tmp_path) -> None:
    # Step 4's loss is NaN; nothing reads the flags before the save after step 6.
    message = _fit(
        tmp_path,
        Tiny(bad_step=4),
        StopOnNonFiniteLoss(check_every_n_steps=1000),
        every_n_train_steps=3,
    )
    assert message.startswith("The training loss became nan at global step 4 (epoch 0, batch 4)")
    assert f"{tmp_path / 'last.ckpt'} keeps the last good state" in message
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3  # the save after step 6 never happened
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())


def test_weights_gone_infinite_stop_at_the_next_read(tmp_path) -> None:
    message = _fit(
        tmp_path,
        Tiny(bad_step=5, what="weights"),
        StopOnNonFiniteLoss(check_every_n_steps=4),
        every_n_train_steps=100,
    )
    # Found at the read after batch 8, named as the update of step 5 (batch 5).
    assert message.startswith(
        "The weights became NaN or infinite in the update of global step 5 (epoch 0, batch 5)"
    )
    assert "no checkpoint had been written" in message
    assert not (tmp_path / "last.ckpt").exists()


def test_check_every_n_steps_must_be_positive() -> None:
    with pytest.raises(UserError, match="check_every_n_steps=0 must be 1 or more"):
        StopOnNonFiniteLoss(check_every_n_steps=0)
