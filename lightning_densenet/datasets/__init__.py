"""Image datasets as in-memory numpy arrays, shared by the PyTorch and Keras pipelines.

Imports neither torch nor TensorFlow. Every loader returns an `ArrayDataset`: uint8 NHWC
images (the layout of torchvision's `CIFAR10.data` and of Keras) and int64 labels.

- `arrays`: `ArrayDataset`; the one train/validation/hold-out split both frameworks use, so
  they see the same images; per-channel normalisation statistics.
- `cifar`: the official CIFAR-10/100 "python version": the archive both frameworks download
  (URL, md5), what their downloads share, and a reader of its pickles that runs no code.
- `image_folder`: `train/<class>/*` (and optionally `test/<class>/*`) in a folder or a
  .tar/.tar.gz archive, listed and read in place, decoded once, then cached (`cache`: .npz
  files keyed by the source's fingerprint).
"""

from lightning_densenet.datasets.arrays import (
    HOLDOUT_SEED,
    SPLITS,
    ArrayDataset,
    Split,
    channel_stats,
    holdout_split,
    train_val_split,
)
from lightning_densenet.datasets.cache import default_cache_dir
from lightning_densenet.datasets.cifar import (
    DOWNLOAD_TIMEOUT_S,
    CifarArchive,
    CifarName,
    cifar_archive,
    cifar_classes,
    cifar_folder,
    cifar_is_present,
    download_failed,
    load_cifar,
    socket_timeout,
)
from lightning_densenet.datasets.image_folder import (
    IMAGE_EXTENSIONS,
    has_split,
    image_folder_classes,
    load_image_folder,
)

__all__ = [
    "DOWNLOAD_TIMEOUT_S",
    "HOLDOUT_SEED",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "ArrayDataset",
    "CifarArchive",
    "CifarName",
    "Split",
    "channel_stats",
    "cifar_archive",
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
