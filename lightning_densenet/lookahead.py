"""Lookahead weight averaging, as in fast CIFAR training (airbench): an average that works
with BatchNorm.

A second, slow copy of the network's state (weights *and* BatchNorm's running statistics)
follows the trained one: every `every` steps the slow copy moves towards the trained weights,
`slow += (1 - decay) * (fast - slow)`, and the trained network is then set to it. The pull
grows over training (`decay` rises from 0 to `base ** every` as the cube of the fraction
done), so early training runs free and late training averages over many steps; the last step
sets the network to the slow copy. Unlike an exponential moving average kept beside the
network, the network trains *from* the average, so BatchNorm's statistics always belong to
the weights in use and need no recomputation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def lookahead_decay(fraction: float, every: int, base: float = 0.95) -> float:
    """The slow copy's decay after `fraction` of training: `base ** every * fraction ** 3`
    (0 at the start: the slow copy jumps to the trained weights; `base ** every` at the end,
    i.e. a per-step decay of `base`)."""
    return base**every * min(max(fraction, 0.0), 1.0) ** 3


def slow_copy(network: nn.Module) -> dict[str, Tensor]:
    """A detached copy of `network`'s state (parameters and buffers), to start the slow copy."""
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


@torch.no_grad()
def lookahead_step(slow: dict[str, Tensor], network: nn.Module, decay: float) -> None:
    """Moves `slow` towards `network`'s state by `1 - decay`, then sets `network` to it.

    Floating-point entries only (BatchNorm's `num_batches_tracked` counts steps and stays the
    network's own); `decay=1` sets the network to the slow copy unchanged.
    """
    for key, fast in network.state_dict().items():
        if fast.is_floating_point():
            average = slow[key]
            average.lerp_(fast.to(average.dtype), 1.0 - decay)
            fast.copy_(average)
