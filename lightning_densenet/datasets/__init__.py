"""Image datasets as in-memory numpy arrays, shared by the PyTorch and Keras pipelines.

Imports neither torch nor TensorFlow. Every loader returns an `ArrayDataset`: uint8 NHWC
images (the layout of torchvision's `CIFAR10.data` and of Keras) and int64 labels.

- `cifar`: the official CIFAR-10/100 "python version" pickles (read by `pickles`'s
  unpickler, which runs no code); `download`: what both frameworks' downloads share.
- `image_folder`: `train/<class>/*` (and optionally `test/<class>/*`) in a folder or a
  .tar/.tar.gz archive, read in place (`listing`, `decode`), decoded once, then cached as
  .npz (`cache`, keyed by `fingerprint`).
- `splits`: the one train/validation/hold-out split both frameworks use, so they see the
  same images; `stats`: per-channel normalisation statistics.
"""

from lightning_densenet.datasets.arrays import SPLITS, ArrayDataset, Split
from lightning_densenet.datasets.cache import default_cache_dir
from lightning_densenet.datasets.cifar import (
    CifarName,
    cifar_classes,
    cifar_folder,
    cifar_is_present,
    load_cifar,
)
from lightning_densenet.datasets.download import (
    DOWNLOAD_TIMEOUT_S,
    download_failed,
    socket_timeout,
)
from lightning_densenet.datasets.image_folder import (
    has_split,
    image_folder_classes,
    load_image_folder,
)
from lightning_densenet.datasets.listing import IMAGE_EXTENSIONS
from lightning_densenet.datasets.splits import HOLDOUT_SEED, holdout_split, train_val_split
from lightning_densenet.datasets.stats import channel_stats

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "HOLDOUT_SEED",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ArrayDataset",
    "CifarName",
    "Split",
    "channel_stats",
    "cifar_classes",
    "cifar_folder",
    "cifar_is_present",
    "default_cache_dir",
    "download_failed",
    "has_split",
    "holdout_split",
    "image_folder_classes",
    "load_cifar",
    "load_image_folder",
    "socket_timeout",
    "train_val_split",
]
