"""The LightningDataModule: CIFAR-10/100 or an image folder, held in memory as uint8 tensors.

No per-image Python work. Each step indexes one whole batch of uint8 NCHW images. The
paper's augmentation (zero-pad 4, random 32x32 crop, random horizontal flip) and the
normalisation then run as a few tensor ops on the training device, in
`on_after_batch_transfer`.

Reproducibility: the validation split, the shuffling of each epoch and the augmentation
of each epoch are all derived from `seed` (and the epoch), so a run resumed at an epoch
boundary sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_densenet import datasets
from lightning_densenet.datasets import ArrayDataset, CifarName
from lightning_densenet.errors import UserError

DatasetName = Literal["cifar10", "cifar100", "imagefolder"]
NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


# --- Pure tensor ops -----------------------------------------------------------------------


def random_crop_flip(
    images: Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> Tensor:
    """Zero-pad, crop back to the original size at a random offset, flip half the images.

    Args:
        images: (N, C, H, W), any dtype (uint8 for the cheapest gather).
        padding: pixels of zeros on each side; offsets are uniform in [0, 2 * padding].
        generator: on `images.device`; draws the N offsets and N flips.

    Returns:
        (N, C, H, W), same dtype and device: one gather, no loop over images.
    """
    n, c, h, w = images.shape
    width = w + 2 * padding
    padded = F.pad(images, (padding, padding, padding, padding)).view(n, c, -1)
    device = images.device
    oy, ox = torch.randint(0, 2 * padding + 1, (2, n, 1, 1), generator=generator, device=device)
    flip = torch.randint(0, 2, (n, 1, 1), generator=generator, device=device, dtype=torch.bool)
    j = torch.arange(w, device=device)
    cols = ox + torch.where(flip, w - 1 - j, j)  # (N, 1, W)
    rows = (oy + torch.arange(h, device=device).view(1, h, 1)) * width  # (N, H, 1)
    index = (rows + cols).view(n, 1, h * w).expand(n, c, h * w)  # into the flattened padded image
    return torch.gather(padded, 2, index).view(n, c, h, w)


def normalize(
    images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> Tensor:
    """uint8 (N, C, H, W) -> float32 `(images / 255 - mean) / std`, per channel.

    `mean` and `std` are in [0, 1] units, as `channel_stats` returns them.
    """
    return _affine(images, *_scale_shift(mean, std, images.device))


def _scale_shift(
    mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, device: torch.device
) -> tuple[Tensor, Tensor]:
    mean = torch.as_tensor(mean, dtype=torch.float64).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float64).view(-1, 1, 1)
    scale, shift = 1 / (255 * std), -mean / std
    return scale.to(device, torch.float32), shift.to(device, torch.float32)


def _affine(images: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    # A multiply and an in-place add: broadcasting addcmul is several times slower on CPU.
    return images.float().mul_(scale).add_(shift)


def download_cifar(
    root: str | Path,
    name: CifarName,
    *,
    timeout: float = datasets.DOWNLOAD_TIMEOUT_S,
    url: str | None = None,
) -> None:
    """Download and unpack the official CIFAR archive into `root`, checking its md5.

    `url` replaces the official address (a mirror of the same file). Failure of any kind
    raises one `UserError` that says how to use local data instead.
    """
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import download_and_extract_archive

    official = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        with datasets.socket_timeout(timeout):  # torchvision's urlopen takes none
            download_and_extract_archive(
                url or official.url, str(root), filename=official.filename, md5=official.tgz_md5
            )
    except (OSError, RuntimeError) as err:  # URLError, timeouts, md5 mismatch ("corrupted")
        raise datasets.download_failed(name, url or official.url, root, err) from err


# --- Batches -------------------------------------------------------------------------------


class InMemoryImages(Dataset):
    """uint8 images and int64 labels, indexed a whole batch at a time.

    `dataset[index]` takes a 1-D index tensor (or a slice) and returns
    `(images[index], labels[index])`: one gather per batch, not one call per image.
    """

    def __init__(self, data: ArrayDataset, indices: np.ndarray | None = None) -> None:
        images, labels = data.images, data.labels
        if indices is not None:
            images, labels = images[indices], labels[indices]
        self.images = (
            torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
        )
        self.labels = torch.from_numpy(np.ascontiguousarray(labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]


def _as_is(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch  # the default would turn the (images, labels) tuple into a list


class BatchIndexSampler(Sampler[Tensor]):
    """Yields index tensors of `batch_size`; with `shuffle`, a new order every epoch.

    The order of epoch `e` depends only on (`seed`, `e`). Lightning calls `set_epoch`
    before each epoch; without it, each pass over the sampler counts as the next epoch.
    """

    def __init__(
        self, num_items: int, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int = 0
    ) -> None:
        super().__init__()
        self.num_items, self.batch_size = num_items, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_items // self.batch_size
        return -(-self.num_items // self.batch_size)

    def __iter__(self) -> Iterator[Tensor]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch, "shuffle"))
            order = torch.randperm(self.num_items, generator=generator)
        else:
            order = torch.arange(self.num_items)
        self.epoch += 1
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield order[start : start + self.batch_size]


def _epoch_seed(seed: int, epoch: int, stream: str) -> int:
    # Independent, well-mixed seeds per (seed, epoch, purpose); plain seed + epoch would
    # make epoch 1 of seed 0 replay epoch 0 of seed 1.
    entropy = [seed, epoch, int.from_bytes(stream.encode(), "little")]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


# --- The DataModule ------------------------------------------------------------------------


class ImageDataModule(pl.LightningDataModule):
    """CIFAR-10, CIFAR-100 or a folder/archive of `train/<class>/<image>` (and `test/`).

    Args:
        dataset: `cifar10` / `cifar100` (official python version, downloaded through
            torchvision when missing) or `imagefolder`.
        root: where CIFAR lives or is downloaded to (`root/cifar-10-batches-py`); for
            `imagefolder` a folder or .tar/.tar.gz archive holding `train/<class>/*`.
        download: fetch CIFAR when it is missing.
        batch_size: training batch; incomplete last batches are dropped, so every step has
            one shape (friendlier to torch.compile and CUDA graphs).
        eval_batch_size: validation/test/predict batch (default: `batch_size`); nothing dropped.
        val_size: images carved out of the training split (with `seed`) for validation.
        max_train_images: train on at most this many of the remaining images (null: all).
        augment: the paper's pad-4 random crop and horizontal flip, on training batches.
        seed: for the validation split, the shuffling and the augmentation.
        num_workers: DataLoader workers; 0 is fastest, as a batch is one in-memory gather.
        cache_dir: where decoded image folders are cached (default
            `$XDG_CACHE_HOME/lightning_densenet`).

    `num_classes` is known after `__init__`; `classes` too for image folders and for CIFAR
    already on disk (else after `setup`). `mean` and `std` are the per-channel statistics
    of the training images, set in `setup`. All loaders yield `(images, labels)`, including
    `predict_dataloader` (the test split), with images normalised as float32 NCHW.
    """

    def __init__(
        self,
        dataset: DatasetName = "cifar10",
        root: str = "data",
        download: bool = True,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        val_size: int = 5000,
        max_train_images: int | None = None,
        augment: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        _check_positive("data.batch_size", batch_size)
        _check_positive("data.eval_batch_size", eval_batch_size)
        _check_positive("data.max_train_images", max_train_images)
        if val_size < 0:
            raise UserError(f"data.val_size={val_size} must be 0 or more.")
        if num_workers < 0:
            raise UserError(f"data.num_workers={num_workers} must be 0 or more.")
        if seed < 0:
            raise UserError(f"data.seed={seed} must be 0 or more.")
        self.dataset, self.root, self.download = dataset, Path(root), download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.val_size, self.max_train_images = val_size, max_train_images
        self.augment, self.seed, self.num_workers, self.cache_dir = (
            augment,
            seed,
            num_workers,
            cache_dir,
        )

        self.classes: tuple[str, ...] = ()
        if dataset == "imagefolder":
            if not self.root.exists():
                raise UserError(
                    f"data.root={root} does not exist: point it at a folder or .tar/.tar.gz "
                    "archive holding train/<class>/<image> files."
                )
            self.classes = datasets.image_folder_classes(self.root, cache_dir)
            self.num_classes = len(self.classes)
        elif dataset in NUM_CLASSES:
            self.num_classes = NUM_CLASSES[dataset]
            if datasets.cifar_is_present(self.root, dataset):
                self.classes = datasets.cifar_classes(self.root, dataset)
        else:
            raise UserError(
                f"data.dataset={dataset!r} is unknown: use cifar10, cifar100 or imagefolder."
            )

        self.mean: tuple[float, float, float] | None = None
        self.std: tuple[float, float, float] | None = None
        self.train_set: InMemoryImages | None = None
        self.val_set: InMemoryImages | None = None
        self.test_set: InMemoryImages | None = None
        self._augment_rng: dict[torch.device, tuple[int, torch.Generator]] = {}
        self._norm: dict[torch.device, tuple[Tensor, Tensor]] = {}

    # Lightning hooks, in the order Lightning calls them.

    def prepare_data(self) -> None:
        """Download CIFAR if asked to and missing (Lightning runs this on one process)."""
        if self.dataset == "imagefolder" or datasets.cifar_is_present(self.root, self.dataset):
            return
        if not self.download:
            raise UserError(
                f"{self.dataset} is not in {self.root / datasets.cifar_folder(self.dataset)} and "
                "data.download is false: pass --data.download true, or point --data.root at the "
                f"folder holding {datasets.cifar_folder(self.dataset)}/."
            )
        download_cifar(self.root, self.dataset)

    def setup(self, stage: str | None = None) -> None:
        """Load the splits in memory. Every stage needs the training split's statistics."""
        if self.train_set is None:
            data = self._load("train")
            train_idx, val_idx = datasets.train_val_split(
                len(data), self.val_size, self.seed, self.max_train_images
            )
            self.classes = data.classes
            self.train_set = InMemoryImages(data, train_idx)
            self.val_set = InMemoryImages(data, val_idx)
            # Statistics of exactly the images trained on (validation stays unseen).
            self.mean, self.std = datasets.channel_stats(data.images[np.sort(train_idx)])
            self._norm.clear()
        if stage in ("test", "predict"):
            self._test_set()

    def train_dataloader(self) -> DataLoader:
        train = self._require(self.train_set)
        if len(train) < self.batch_size:
            raise UserError(
                f"data.batch_size={self.batch_size} exceeds the {len(train)} training images: "
                "use a smaller batch or more images."
            )
        return self._loader(train, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.val_set), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._test_set(), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches and normalise all of them, on the batch's device."""
        if not isinstance(batch, (tuple, list)):
            return batch  # the model summary's example input, already a float tensor
        images, labels = batch
        trainer = self.trainer  # None when used without a Trainer
        if self.augment and trainer is not None and trainer.training:
            images = random_crop_flip(
                images, 4, self._generator(images.device, trainer.current_epoch)
            )
        return self._normalize(images), labels

    def state_dict(self) -> dict[str, Any]:
        # Saved in checkpoints, so a model restored later normalises its inputs the same way.
        return {"mean": self.mean, "std": self.std}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("mean") is not None:
            self.mean, self.std = tuple(state_dict["mean"]), tuple(state_dict["std"])
            self._norm.clear()

    # Helpers.

    def _load(self, split: datasets.Split) -> ArrayDataset:
        if self.dataset == "imagefolder":
            return datasets.load_image_folder(self.root, split, self.cache_dir)
        return datasets.load_cifar(self.root, self.dataset, split)

    def _test_set(self) -> InMemoryImages:
        if self.test_set is None:
            if self.dataset == "imagefolder" and not datasets.has_split(
                self.root, "test", self.cache_dir
            ):
                raise UserError(
                    f"data.root={self.root} has no test/<class>/ folders to test or predict on: "
                    "add them, or evaluate the validation split with `validate`."
                )
            self.test_set = InMemoryImages(self._load("test"))
        return self.test_set

    def _require(self, split: InMemoryImages | None) -> InMemoryImages:
        if split is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return split

    def _loader(self, data: InMemoryImages, batch_size: int, *, shuffle: bool) -> DataLoader:
        sampler = BatchIndexSampler(
            len(data), batch_size, shuffle=shuffle, drop_last=shuffle, seed=self.seed
        )
        return DataLoader(
            data,
            batch_size=None,  # the sampler yields whole batches of indices
            sampler=sampler,
            collate_fn=_as_is,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _generator(self, device: torch.device, epoch: int) -> torch.Generator:
        # One generator per device, re-seeded at each epoch from (seed, epoch).
        seen_epoch, generator = self._augment_rng.get(device, (None, None))
        if generator is None or seen_epoch != epoch:
            generator = torch.Generator(device)
            generator.manual_seed(_epoch_seed(self.seed, epoch, "augment"))
            self._augment_rng[device] = (epoch, generator)
        return generator

    def _normalize(self, images: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            raise RuntimeError("call setup() before normalising batches")
        if images.device not in self._norm:  # per-device constants: no host copy per step
            self._norm[images.device] = _scale_shift(self.mean, self.std, images.device)
        return _affine(images, *self._norm[images.device])


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"{name}={value} must be a positive integer.")
