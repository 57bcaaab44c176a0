"""Training compute: FLOPs per image, `train/pflop` in a fit, and the compute budget."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from lightning_densenet import build_model
from lightning_densenet.flops import training_flops_per_image
from lightning_densenet.module import DenseNetClassifier
from tests.helpers import VARIANTS, last, metrics


def _counted_on_the_real_network(model: torch.nn.Module, size: int, batch: int = 4) -> float:
    """FLOPs per image of a forward and backward pass of `model` itself, on real numbers."""
    x = torch.randn(batch, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    return counter.get_total_flops() / batch


@pytest.mark.parametrize("name", ["bc", "imagenet_stem", "whitening_stem"])
@pytest.mark.parametrize("size", [16, 32])
def test_flops_per_image_are_the_flop_counters_on_the_network(name: str, size: int) -> None:
    model = build_model(VARIANTS[name])
    counted = training_flops_per_image(model, size, size)
    assert counted > 0 and counted == _counted_on_the_real_network(model, size)


def test_a_frozen_layer_costs_no_weight_gradient() -> None:
    model = build_model(VARIANTS["whitening_stem"])
    trainable = build_model(VARIANTS["whitening_stem"])
    trainable.features.conv0.weight.requires_grad_(True)
    # The frozen stem skips its weight gradient: 2 x (31 x 31 px) x 24 x 12 multiply-adds.
    saved = training_flops_per_image(trainable, 32, 32) - training_flops_per_image(model, 32, 32)
    assert saved == 2 * 31 * 31 * 24 * 12


def _fit(tmp_path, steps_per_epoch: int = 4, epochs: int = 2, **kwargs) -> DenseNetClassifier:
    torch.manual_seed(0)
    n = 16 * steps_per_epoch
    loader = DataLoader(
        TensorDataset(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))), batch_size=16
    )
    module = DenseNetClassifier("densenet_tiny", num_classes=10, **kwargs)
    trainer = pl.Trainer(
        max_epochs=epochs, logger=CSVLogger(tmp_path, name="", version=0), log_every_n_steps=1,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, loader)
    return module


def test_train_pflop_is_images_times_flops_per_image_at_each_size(tmp_path) -> None:
    module = _fit(tmp_path, progressive_size=16, progressive_until=0.5)
    net = build_model("densenet_tiny")
    per_image = {s: _counted_on_the_real_network(net, s) for s in (16, 24, 32)}
    # 8 steps of 16 images: 2 at 16 px, 2 at 24 px, 4 at 32 px.
    expected = 16 * (2 * per_image[16] + 2 * per_image[24] + 4 * per_image[32])
    assert module.flops_done == pytest.approx(expected, rel=1e-12)
    rows = metrics(tmp_path / "version_0")
    pflop = [float(r["train/pflop"]) for r in rows if r.get("train/pflop")]
    assert len(pflop) == 8 and pflop[-1] == pytest.approx(expected / 1e15, rel=1e-9)
    assert pflop == sorted(pflop)
    assert last(rows, "train/gflops_per_s") > 0


def test_a_compute_budget_ends_training_with_the_schedule(tmp_path) -> None:
    per_step = 16 * _counted_on_the_real_network(build_model("densenet_tiny"), 32)
    budget = 5.5 * per_step / 1e15  # runs out during the 6th of 40 steps
    module = _fit(tmp_path, epochs=10, schedule="cosine", lr=0.1, budget_pflop=budget)
    assert module.trainer.global_step == 6  # the first step that reached the budget
    assert module.flops_done == pytest.approx(6 * per_step, rel=1e-12)
    assert module.training_fraction(module.trainer.global_step) == 1
    lr = module.trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0, abs=1e-12)  # the cosine's end, not step 6 of 40


def test_the_compute_count_survives_a_checkpoint(tmp_path) -> None:
    module = _fit(tmp_path, epochs=1)
    checkpoint: dict = {}
    module.on_save_checkpoint(checkpoint)
    resumed = DenseNetClassifier("densenet_tiny", num_classes=10)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.flops_done == module.flops_done > 0


def test_bad_compute_budget_is_a_user_error() -> None:
    from lightning_densenet import UserError

    with pytest.raises(UserError, match=r"model\.budget_pflop=0 is invalid: use a positive"):
        DenseNetClassifier(budget_pflop=0)
