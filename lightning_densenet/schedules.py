"""Schedules over training, framework-free: the learning rate and the image size.

`DenseNetClassifier` feeds `lr_factor` to `torch.optim.lr_scheduler.LambdaLR`; the
TensorFlow reference calls the same function, so both frameworks follow one schedule.
`image_size` is the progressive-resizing schedule of `DenseNetClassifier.progressive_size`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lightning_densenet.errors import UserError
from lightning_densenet.options import Schedule


def lr_factor(
    schedule: Schedule,
    total_steps: int,
    milestones: tuple[float, ...] = (0.5, 0.75),
    warmup: float = 0.3,
) -> Callable[[int], float]:
    """Multiplier of the peak lr at optimiser step `step` of `total_steps`.

    step: /10 at each milestone (fractions of training; the paper: 0.5, 0.75).
    cosine: half a cosine from 1 to 0. onecycle: linear warm-up from 0.04 over `warmup`
    of training (torch's OneCycleLR starts at lr/25 too), then half a cosine to 0.
    """
    if schedule == "step":
        bounds = [int(m * total_steps) for m in milestones]
        return lambda step: 0.1 ** sum(step >= b for b in bounds)
    if schedule == "cosine":
        return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if schedule == "onecycle":
        # Linear warm-up from lr/25 (torch's OneCycleLR default) then cosine to ~0.
        peak = max(1, int(warmup * total_steps))

        def onecycle(step: int) -> float:
            if step < peak:
                return 0.04 + 0.96 * step / peak
            t = min(1.0, (step - peak) / max(1, total_steps - peak))
            return 0.5 * (1 + math.cos(math.pi * t))

        return onecycle
    if schedule == "constant":
        return lambda step: 1.0
    raise UserError(
        f"model.schedule={schedule!r} is unknown: use step, cosine, onecycle or constant."
    )


def image_size(fraction: float, start: int, full: int, until: float, step: int = 8) -> int:
    """The image size to train at after `fraction` of training: progressive resizing.

    Training starts at `start` pixels and grows linearly to `full` at `until` of training
    (then stays there), in whole steps of `step` pixels, so a compiled network meets only a
    few sizes: 16 -> 32 by 0.5 trains at 16, 24 and 32 pixels, a quarter of training each
    for the first two.
    """
    if start >= full or fraction >= until:
        return full
    grown = (full - start) * fraction / until
    return min(full, start + step * int(grown // step))
