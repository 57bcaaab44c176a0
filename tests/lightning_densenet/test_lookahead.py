"""Lookahead: the slow copy's step, its schedule, and a fit that ends on the slow weights."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_densenet.lookahead import lookahead_decay, lookahead_step, slow_copy
from lightning_densenet.module import DenseNetClassifier


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_step_moves_the_slow_copy_and_sets_the_network_to_it() -> None:
    net = _net()
    slow = {k: torch.zeros_like(v) for k, v in net.state_dict().items()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    lookahead_step(slow, net, decay=0.75)
    for key, fast in net.state_dict().items():
        if key.endswith("num_batches_tracked"):  # a step count, never averaged
            assert slow[key] == 0 and fast == before[key]
            continue
        torch.testing.assert_close(slow[key], 0.25 * before[key])  # 0.75 * 0 + 0.25 * fast
        torch.testing.assert_close(fast, slow[key])


def test_decay_one_sets_the_network_to_the_slow_copy_unchanged() -> None:
    net = _net()
    slow = slow_copy(net)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    lookahead_step(slow, net, decay=1.0)
    torch.testing.assert_close(net[0].weight, slow["0.weight"])
    assert slow["0.weight"].data_ptr() != net[0].weight.data_ptr()  # a copy, not an alias


def test_decay_grows_as_the_cube_of_training_done() -> None:
    assert lookahead_decay(0.0, 5) == 0.0
    assert lookahead_decay(0.5, 5) == pytest.approx(0.95**5 / 8)
    assert lookahead_decay(1.0, 5, base=0.9) == pytest.approx(0.9**5)
    assert lookahead_decay(1.5, 5) == lookahead_decay(1.0, 5)


def _fit(tmp_path, **kwargs) -> tuple[pl.Trainer, DenseNetClassifier]:
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    module = DenseNetClassifier("densenet_tiny", num_classes=10, lr=0.2, **kwargs)
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, loader, loader)
    return trainer, module


def test_a_fit_ends_on_the_slow_copy_and_checkpoints_it(tmp_path) -> None:
    _, module = _fit(tmp_path / "lookahead", lookahead_every=2, lookahead_decay=0.9)
    assert module._slow is not None
    for key, value in module.model.state_dict().items():
        if value.is_floating_point():  # weights and BatchNorm statistics, not step counts
            torch.testing.assert_close(value, module._slow[key])  # the last step copied it in
    (path,) = (tmp_path / "lookahead").glob("checkpoints/*.ckpt")
    saved = torch.load(path, weights_only=True)["lookahead"]
    torch.testing.assert_close(saved, module._slow)  # a resumed run continues the average
    # Without lookahead, the same seed and data train other weights.
    _, plain = _fit(tmp_path / "plain")
    key = "features.conv0.weight"
    assert not torch.allclose(plain.model.state_dict()[key], module.model.state_dict()[key])
