"""`ArrayDataset`, what every loader returns, and the names of the splits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True, eq=False)  # arrays have no single truth value to compare by
class ArrayDataset:
    """Images and labels held in memory."""

    images: np.ndarray  # (N, H, W, 3) uint8
    labels: np.ndarray  # (N,) int64, indices into `classes`
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)
