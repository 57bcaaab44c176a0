"""Lookahead: the slow copy's step and its schedule (a fit with it: test_module.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_densenet.lookahead import lookahead_decay, lookahead_step, slow_copy


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
