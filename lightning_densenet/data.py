"""The LightningDataModule: CIFAR-10/100 or an image folder, held in memory as uint8 tensors.

No per-image Python work. Each step indexes one whole batch of uint8 NCHW images. The
paper's augmentation (zero-pad 4, random 32x32 crop, random horizontal flip) and the
normalisation then run as a few tensor ops on the training device, in
`on_after_batch_transfer`.

Reproducibility: the validation split, the shuffling of each epoch and the augmentation
of each batch are all derived from `seed` (and the epoch and batch index, never from a
running generator), and the training loader's place in the epoch is saved in checkpoints,
so a run resumed anywhere, mid-epoch included, sees the batches and crops an uninterrupted
one would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_densenet import datasets
from lightning_densenet.augment import affine, random_crop_flip, scale_shift
from lightning_densenet.batches import (
    BatchIndexSampler,
    InMemoryImages,
    ResumableLoader,
    as_is,
    epoch_seed,
)
from lightning_densenet.datasets import ArrayDataset, CifarName
from lightning_densenet.errors import UserError
from lightning_densenet.options import DataBlock, DatasetName, Flip, check_block

NUM_CLASSES = {"cifar10": 10, "cifar100": 100}


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
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    official = datasets.cifar_archive(name)
    archive = Path(root) / official.filename
    if archive.is_file() and not check_integrity(str(archive), official.md5):
        # Left by an interrupted download or copy; it is the user's file: not replaced here.
        raise UserError(
            f"{archive} is corrupt (its md5 is not the official archive's): delete it to "
            "download it again, or put an intact copy in its place."
        )
    try:
        with datasets.socket_timeout(timeout):  # torchvision's urlopen takes none
            download_and_extract_archive(
                url or official.url, str(root), filename=official.filename, md5=official.md5
            )
    except (OSError, RuntimeError) as err:  # URLError, timeouts, md5 mismatch ("corrupted")
        raise datasets.download_failed(name, url or official.url, root, err) from err


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
        holdout_size: for data without a test split (an image folder with only `train/`),
            this many training images are set aside first, with a fixed seed that `seed`
            does not change, and become the test split: images that no tuning on the
            validation split ever sees, for `test` to report on. Ignored when the data has
            its own test split (CIFAR).
        augment: the paper's pad-4 random crop and horizontal flip, on training batches.
        crop_padding: pixels of zero padding for the random crop (the paper: 4); a short
            training budget learns more from milder shifts (airbench: 2). 0: flips only.
        flip: `random` mirrors a random half of each batch; `alternate` mirrors a random
            half of the images in the first epoch and, from then on, each image in every
            other epoch: over two epochs every image is seen both ways, where random flips
            show half of them one way only (airbench's derandomised flips).
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
        holdout_size: int = 0,
        augment: bool = True,
        crop_padding: int = 4,
        flip: Flip = "random",
        seed: int = 0,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # The ranges are those options.py declares for the data block (tf_reference's too).
        check_block("data", DataBlock, self.hparams)
        self.dataset, self.root, self.download = dataset, Path(root), download
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.val_size, self.max_train_images = val_size, max_train_images
        self.holdout_size = holdout_size
        self.augment, self.seed, self.num_workers, self.cache_dir = (
            augment,
            seed,
            num_workers,
            cache_dir,
        )
        self.crop_padding, self.flip = crop_padding, flip

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
        self._augment_rng: dict[torch.device, torch.Generator] = {}
        self._train_loader: ResumableLoader | None = None
        self._resume_position: dict[str, Any] | None = None  # from a checkpoint
        self._norm: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._flip_first = torch.zeros(0, dtype=torch.bool)

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
            flip_each_image = self.augment and self.flip == "alternate"
            data = self._load("train")
            pool = np.arange(len(data))
            if self.holdout_size and not self._has_own_test_split():
                holdout, pool = datasets.holdout_split(len(data), self.holdout_size)
                self.test_set = InMemoryImages(data, holdout)
            train_idx, val_idx = (
                pool[i]
                for i in datasets.train_val_split(
                    len(pool), self.val_size, self.seed, self.max_train_images
                )
            )
            self.classes = data.classes
            self.train_set = InMemoryImages(data, train_idx, with_index=flip_each_image)
            self.val_set = InMemoryImages(data, val_idx)
            # Statistics of exactly the images trained on (validation stays unseen).
            self.mean, self.std = datasets.channel_stats(data.images[np.sort(train_idx)])
            self._norm.clear()
            # Alternating flips: whether each training image is mirrored in even epochs.
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, 0, "flip"))
            self._flip_first = torch.randint(0, 2, (len(train_idx),), generator=generator) > 0
        if stage in ("test", "predict"):
            self._test_set()

    def train_dataloader(self) -> DataLoader:
        train = self._require(self.train_set)
        _, world = self._rank()
        if len(train) < self.batch_size * world:
            processes = f" for each of {world} processes" if world > 1 else ""
            raise UserError(
                f"data.batch_size={self.batch_size}{processes} exceeds the {len(train)} training "
                "images: use a smaller batch or more images."
            )
        self._train_loader = self._loader(train, self.batch_size, shuffle=True)
        if self._resume_position is not None:  # restored before the loader existed
            self._train_loader.load_state_dict(self._resume_position)
        return self._train_loader

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.val_set), self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._test_set(), self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        # Sharded as the test split: with DDP each process predicts its share, and
        # `callbacks.PredictionWriter` gathers the shares by index into one file.
        return self._loader(self._test_set(), self.eval_batch_size, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Augment training batches and normalise all of them, on the batch's device."""
        if not isinstance(batch, (tuple, list)):
            return batch  # the model summary's example input, already a float tensor
        images, labels, *index = batch  # training batches carry their indices for `flip`
        trainer = self.trainer  # None when used without a Trainer
        if self.augment and trainer is not None and trainer.training:
            flip = None
            if index:  # mirrored in even epochs or in odd ones, alternately
                loader = self._train_loader
                assert loader is not None and loader.epoch is not None
                flip = self._flip_first.to(images.device)[index[0]] ^ bool(loader.epoch % 2)
            generator = self._generator(images.device)
            images = random_crop_flip(images, self.crop_padding, generator, flip)
        return self._normalize(images), labels

    def whitening_sample(self, device: torch.device, n: int = 5000) -> Tensor:
        """The first `n` training images (a fixed, random choice), normalised, on `device`:
        what the whitening stem's filters are computed from."""
        train = self._require(self.train_set)
        return self._normalize(train.images[:n].to(device))

    def state_dict(self) -> dict[str, Any]:
        # Saved in checkpoints, so a model restored later normalises its inputs the same way,
        # and a resumed run continues its epoch. Lightning 2.6 restores a stateful training
        # loader only when it builds the loader after the restore, but the LR schedule's
        # `estimated_stepping_batches` builds it before: the position travels here too.
        loader = self._train_loader
        position = loader.state_dict() if loader is not None else None
        return {"mean": self.mean, "std": self.std, "train_position": position}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("mean") is not None:
            self.mean, self.std = tuple(state_dict["mean"]), tuple(state_dict["std"])
            self._norm.clear()
        self._resume_position = state_dict.get("train_position")
        if self._resume_position is not None and self._train_loader is not None:
            self._train_loader.load_state_dict(self._resume_position)

    # Helpers.

    def _load(self, split: datasets.Split) -> ArrayDataset:
        if self.dataset == "imagefolder":
            return datasets.load_image_folder(self.root, split, self.cache_dir)
        return datasets.load_cifar(self.root, self.dataset, split)

    def _test_set(self) -> InMemoryImages:
        if self.test_set is None:
            if not self._has_own_test_split():
                raise UserError(
                    f"data.root={self.root} has no test/<class>/ folders to test or predict on: "
                    "add them, set --data.holdout_size to hold out training images for testing, "
                    "or evaluate the validation split with `validate`."
                )
            test_set = InMemoryImages(self._load("test"))
            train = self._require(self.train_set)
            if test_set.images.shape[1:] != train.images.shape[1:]:
                raise UserError(
                    f"data.root={self.root}: the test images are {_size(test_set)} but the "
                    f"training images {_size(train)}; resize them all to one size first."
                )
            self.test_set = test_set
        return self.test_set

    def _has_own_test_split(self) -> bool:
        return self.dataset != "imagefolder" or datasets.has_split(
            self.root, "test", self.cache_dir
        )

    def _require(self, split: InMemoryImages | None) -> InMemoryImages:
        if split is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return split

    def _rank(self) -> tuple[int, int]:
        """(rank, world size): each DDP process loads its own share of every split."""
        trainer = self.trainer  # None when used without a Trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, data: InMemoryImages, batch_size: int, *, shuffle: bool) -> Any:
        rank, world = self._rank()
        sampler = BatchIndexSampler(
            len(data),
            batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            seed=self.seed,
            rank=rank,
            world_size=world,
        )
        return (ResumableLoader if shuffle else DataLoader)(
            data,
            batch_size=None,  # the sampler yields whole batches of indices
            sampler=sampler,
            collate_fn=as_is,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _generator(self, device: torch.device) -> torch.Generator:
        """One generator per device, re-seeded for each batch from (seed, epoch, batch, rank):
        a resumed run crops its next batch as the uninterrupted run would have."""
        loader = self._train_loader
        if loader is None or loader.epoch is None:
            raise RuntimeError("training batches must come from train_dataloader()")
        if device not in self._augment_rng:
            self._augment_rng[device] = torch.Generator(device)
        seed = epoch_seed(self.seed, loader.epoch, "augment", loader.batch_index, self._rank()[0])
        return self._augment_rng[device].manual_seed(seed)

    def _normalize(self, images: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            raise RuntimeError("call setup() before normalising batches")
        if images.device not in self._norm:  # per-device constants: no host copy per step
            self._norm[images.device] = scale_shift(self.mean, self.std, images.device)
        return affine(images, *self._norm[images.device])


def _size(data: InMemoryImages) -> str:
    return "x".join(str(n) for n in data.images.shape[-1:-3:-1])  # W x H of (N, C, H, W)
