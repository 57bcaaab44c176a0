"""The DataModule: splits, batches, per-batch augmentation, normalisation and its errors."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from lightning_densenet import UserError
from lightning_densenet.augment import normalize, random_crop_flip
from lightning_densenet.batches import BatchIndexSampler
from lightning_densenet.data import ImageDataModule, download_cifar
from lightning_densenet.datasets import channel_stats, train_val_split
from tests.fake_data import write_cifar


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


# --- The DataModule on official-format CIFAR -----------------------------------------------


@pytest.fixture
def cifar10(tmp_path):
    return write_cifar(tmp_path / "data", "cifar10", n_train=50, n_test=20)


def test_cifar_datamodule_splits_and_batches(cifar10) -> None:
    dm = ImageDataModule("cifar10", str(cifar10.root), download=False, batch_size=8, val_size=10)
    assert dm.num_classes == 10 and dm.classes == cifar10.classes  # known before setup
    dm.prepare_data()  # present: nothing to do
    dm.setup("fit")
    train_idx, val_idx = train_val_split(50, 10, seed=0)
    torch.testing.assert_close(dm.train_set.images, _nchw(cifar10.train_images[train_idx]))
    torch.testing.assert_close(dm.val_set.labels, torch.from_numpy(cifar10.train_labels[val_idx]))
    assert (dm.mean, dm.std) == channel_stats(cifar10.train_images[np.sort(train_idx)])

    train = list(dm.train_dataloader())
    assert len(train) == 5  # 40 images // 8, last incomplete batch dropped
    for images, labels in train:
        assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
        assert labels.shape == (8,) and labels.dtype == torch.int64
    seen = torch.cat([labels for _, labels in train])
    assert sorted(seen.tolist()) == sorted(cifar10.train_labels[train_idx].tolist())

    val = list(dm.val_dataloader())
    assert [len(labels) for _, labels in val] == [8, 2]  # nothing dropped, in order
    torch.testing.assert_close(torch.cat([x for x, _ in val]), dm.val_set.images)

    dm.setup("test")
    test = list(dm.test_dataloader())
    torch.testing.assert_close(torch.cat([x for x, _ in test]), _nchw(cifar10.test_images))
    predict = list(dm.predict_dataloader())  # the test split, with labels
    torch.testing.assert_close(
        torch.cat([y for _, y in predict]), torch.from_numpy(cifar10.test_labels)
    )


def test_max_train_images_and_eval_batch_size(cifar10) -> None:
    dm = ImageDataModule(
        "cifar10",
        str(cifar10.root),
        download=False,
        batch_size=4,
        eval_batch_size=3,
        val_size=10,
        max_train_images=12,
        seed=5,
    )
    dm.setup("fit")
    assert len(dm.train_set) == 12 and len(dm.val_set) == 10
    assert [len(y) for _, y in dm.val_dataloader()] == [3, 3, 3, 1]
    train_idx, _ = train_val_split(50, 10, seed=5, max_train=12)
    torch.testing.assert_close(dm.train_set.images, _nchw(cifar10.train_images[train_idx]))


def test_cifar100_has_100_classes(tmp_path) -> None:
    files = write_cifar(tmp_path, "cifar100", n_train=30, n_test=5)
    dm = ImageDataModule("cifar100", str(tmp_path), download=False, batch_size=4, val_size=5)
    dm.setup("fit")
    assert dm.num_classes == 100 and dm.classes == files.classes and len(dm.train_set) == 25


def test_batches_through_a_trainer_are_augmented_for_training_only(tmp_path, cifar10) -> None:
    dm = ImageDataModule("cifar10", str(cifar10.root), download=False, batch_size=8, val_size=10)
    seen: dict[str, list] = {"train": [], "val": []}

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3 * 32 * 32, 10)

        def training_step(self, batch, batch_idx):
            seen["train"].append(batch)
            return F.cross_entropy(self.linear(batch[0].flatten(1)), batch[1])

        def validation_step(self, batch, batch_idx):
            seen["val"].append(batch)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    trainer = pl.Trainer(
        fast_dev_run=2, accelerator="cpu", enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(Recorder(), datamodule=dm)
    assert len(seen["train"]) == len(seen["val"]) == 2

    # Validation batches are the stored images, normalised, untouched otherwise.
    for i, (images, labels) in enumerate(seen["val"]):
        raw = dm.val_set.images[i * 8 : (i + 1) * 8]
        torch.testing.assert_close(images, normalize(raw, dm.mean, dm.std), rtol=0, atol=0)
        torch.testing.assert_close(labels, dm.val_set.labels[i * 8 : (i + 1) * 8])

    # Training batches are the epoch-0 sampler's images, each a pad-4 crop (maybe flipped).
    order = iter(BatchIndexSampler(len(dm.train_set), 8, shuffle=True, drop_last=True, seed=0))
    moved = 0
    for images, labels in seen["train"]:
        raw, raw_labels = dm.train_set[next(order)]
        torch.testing.assert_close(labels, raw_labels)  # labels travel with their images
        assert images.dtype == torch.float32 and images.shape == (8, 3, 32, 32)
        for image, source in zip(images, raw, strict=True):
            oy, ox, _ = _find_crop(image, source, (dm.mean, dm.std))
            moved += (oy, ox) != (4, 4)
    assert moved > 0  # augmentation did happen


def _find_crop(image: torch.Tensor, source: torch.Tensor, stats: tuple, padding: int = 4) -> tuple:
    """(oy, ox, flipped) such that normalised `image` is that crop of the zero-padded uint8
    `source`, normalised with `stats` (normalising is per pixel: it commutes with cropping)."""
    _, h, w = source.shape
    padded = normalize(F.pad(source[None], (padding,) * 4), *stats)[0]
    for oy in range(2 * padding + 1):
        for ox in range(2 * padding + 1):
            crop = padded[:, oy : oy + h, ox : ox + w]
            for flipped, candidate in ((False, crop), (True, crop.flip(-1))):
                if torch.allclose(candidate, image, rtol=0, atol=1e-6):
                    return oy, ox, flipped
    raise AssertionError("the image is not a crop of its source")


# --- The shared CIFAR-10 JPEG archive ------------------------------------------------------


def test_imagefolder_datamodule_on_the_shared_archive(cifar10_jpeg_tar, image_cache) -> None:
    dm = ImageDataModule(
        "imagefolder",
        str(cifar10_jpeg_tar),
        batch_size=64,
        val_size=500,
        max_train_images=256,
        cache_dir=str(image_cache),
    )
    assert dm.num_classes == 10 and dm.classes[0] == "airplane"
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 256 and len(dm.val_set) == 500
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 3, 32, 32) and images.dtype == torch.uint8
    # The first batch of the seeded epoch-0 order, images with their labels.
    order = BatchIndexSampler(256, 64, shuffle=True, drop_last=True, seed=0)
    expected_images, expected_labels = dm.train_set[next(iter(order))]
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    assert len(dm.train_dataloader()) == 4 and len(dm.val_dataloader()) == 8
    # Statistics of 256 real images are near CIFAR-10's.
    np.testing.assert_allclose(dm.mean, (0.491, 0.482, 0.447), atol=0.03)
    with pytest.raises(UserError, match=r"has no test/<class>/ folders .* `validate`"):
        dm.test_dataloader()


# --- random_crop_flip and normalize --------------------------------------------------------


def test_random_crop_flip_is_a_crop_of_the_zero_padded_image_or_its_mirror() -> None:
    images = torch.randint(1, 256, (512, 3, 8, 8), dtype=torch.uint8)  # no zeros inside
    out = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = F.pad(images, (4, 4, 4, 4))
    found = set()
    for i in range(len(images)):
        hits = [
            (oy, ox, flip)
            for oy in range(9)
            for ox in range(9)
            for flip in (False, True)
            if torch.equal(out[i], _crop(padded[i], oy, ox, 8, flip))
        ]
        assert len(hits) == 1, f"image {i}: {hits}"
        found.add(hits[0])
    # Every offset and both flips occur (512 draws over 9 x 9 x 2 outcomes).
    assert {oy for oy, _, _ in found} == set(range(9))
    assert {ox for _, ox, _ in found} == set(range(9))
    assert {flip for _, _, flip in found} == {False, True}


def _crop(image: torch.Tensor, oy: int, ox: int, size: int, flip: bool) -> torch.Tensor:
    crop = image[:, oy : oy + size, ox : ox + size]
    return crop.flip(-1) if flip else crop


def test_random_crop_flip_zero_padding_is_identity_or_exact_flip() -> None:
    images = torch.randint(0, 256, (64, 3, 5, 7), dtype=torch.uint8)
    out = random_crop_flip(images, 0, torch.Generator().manual_seed(1))
    kept = [torch.equal(o, x) for o, x in zip(out, images, strict=True)]
    flipped = [torch.equal(o, x.flip(-1)) for o, x in zip(out, images, strict=True)]
    assert all(k or f for k, f in zip(kept, flipped, strict=True))
    assert any(kept) and any(flipped)
    # A flip reverses the columns and nothing else.
    i = flipped.index(True)
    assert torch.equal(out[i, :, :, 0], images[i, :, :, -1])


def test_random_crop_flip_is_seeded() -> None:
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(images, 4, torch.Generator().manual_seed(7))
    b = random_crop_flip(images, 4, torch.Generator().manual_seed(7))
    c = random_crop_flip(images, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    floats = random_crop_flip(images.float(), 4, torch.Generator().manual_seed(7))
    assert torch.equal(floats, a.float())  # any dtype, same crops


def test_normalize_numbers() -> None:
    images = torch.tensor([0, 255, 51, 102], dtype=torch.uint8).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    out = normalize(images, mean=(0.5, 0.2, 0.0), std=(0.25, 0.5, 1.0))
    assert out.dtype == torch.float32
    expected = torch.tensor(
        [
            [[-2.0, 2.0], [-1.2, -0.4]],  # (x - 0.5) / 0.25
            [[-0.4, 1.6], [0.0, 0.4]],  # (x - 0.2) / 0.5
            [[0.0, 1.0], [0.2, 0.4]],  # x
        ]
    )
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-6)


# --- Sampling ------------------------------------------------------------------------------


def test_sampler_reshuffles_each_epoch_reproducibly() -> None:
    sampler = BatchIndexSampler(10, 4, shuffle=True, drop_last=True, seed=0)
    assert len(sampler) == 2
    epoch0 = [b.tolist() for b in sampler]
    epoch1 = [b.tolist() for b in sampler]  # each pass counts as the next epoch
    assert all(len(b) == 4 for b in epoch0)
    assert len({i for b in epoch0 for i in b}) == 8  # no index twice
    assert epoch0 != epoch1
    sampler.set_epoch(0)
    assert [b.tolist() for b in sampler] == epoch0  # as Lightning calls it on resume
    other_seed = BatchIndexSampler(10, 4, shuffle=True, drop_last=True, seed=1)
    assert [b.tolist() for b in other_seed] != epoch0

    sequential = BatchIndexSampler(10, 4, shuffle=False, drop_last=False)
    assert len(sequential) == 3
    assert [b.tolist() for b in sequential] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


# --- Errors --------------------------------------------------------------------------------


def _cifar_host_resolves() -> bool:
    try:
        socket.getaddrinfo("www.cs.toronto.edu", 443)
    except OSError:
        return False
    return True


def test_download_without_network_is_one_user_error(tmp_path) -> None:
    if _cifar_host_resolves():
        pytest.skip("this machine can reach the CIFAR host: the test would download 170 MB")
    dm = ImageDataModule("cifar10", str(tmp_path / "empty"), download=True)
    with pytest.raises(UserError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("Downloading cifar10 from https://www.cs.toronto.edu/")
    assert "--data.root" in message and "--data.dataset imagefolder" in message


def test_download_failures_are_user_errors(tmp_path) -> None:
    with socket.socket() as closed:  # a port nobody listens on: connection refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(UserError, match=r"Downloading cifar100 from http://127\.0\.0\.1.* failed"):
        download_cifar(tmp_path, "cifar100", url=f"http://127.0.0.1:{port}/cifar.tar.gz")


def test_download_from_a_stalled_server_times_out(tmp_path) -> None:
    errors: list[BaseException] = []
    with socket.socket() as server:  # accepts connections (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/cifar.tar.gz"

        def download() -> None:
            try:
                download_cifar(tmp_path, "cifar10", timeout=0.2, url=url)
            except BaseException as err:
                errors.append(err)

        thread = threading.Thread(target=download, daemon=True)
        thread.start()
        thread.join(timeout=60)  # a missing timeout would wait forever
    assert not thread.is_alive(), "the download hung on a server that never answers"
    assert len(errors) == 1 and isinstance(errors[0], UserError)
    assert "timed out" in str(errors[0])
    assert socket.getdefaulttimeout() is None  # restored


def test_missing_cifar_without_download_says_how_to_fix_it(tmp_path) -> None:
    dm = ImageDataModule("cifar10", str(tmp_path), download=False)
    assert dm.num_classes == 10 and dm.classes == ()
    with pytest.raises(UserError, match=r"data\.download is false: pass --data\.download true"):
        dm.prepare_data()


def test_image_folder_without_test_split_cannot_test(tmp_path) -> None:
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(tmp_path / "train" / cls / f"{i}.png")
    dm = ImageDataModule(
        "imagefolder", str(tmp_path), batch_size=2, val_size=2, cache_dir=str(tmp_path / "c")
    )
    assert dm.num_classes == 2 and dm.classes == ("a", "b")
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))[0].shape == (2, 3, 4, 4)
    with pytest.raises(UserError, match=r"has no test/<class>/ folders to test or predict on"):
        dm.test_dataloader()
    with pytest.raises(UserError, match=r"has no test/<class>/ folders"):
        dm.setup("predict")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"dataset": "imagefolder", "root": "/no/such/dir"},
            r"data\.root=/no/such/dir does not exist",
        ),
        ({"dataset": "mnist"}, r"data\.dataset='mnist' is unknown"),
        ({"batch_size": 0}, r"data\.batch_size=0 is invalid: use a whole number of at least 1\."),
        ({"val_size": -5}, r"data\.val_size=-5 is invalid: use a whole number of 0 or more\."),
        ({"seed": -1}, r"data\.seed=-1 is invalid: use a whole number of 0 or more\."),
    ],
)
def test_bad_arguments_are_user_errors(kwargs, message) -> None:
    with pytest.raises(UserError, match=message):
        ImageDataModule(**kwargs)


def test_too_large_splits_are_user_errors(cifar10) -> None:
    dm = ImageDataModule("cifar10", str(cifar10.root), download=False, val_size=50)
    with pytest.raises(UserError, match=r"data\.val_size=50 must be .* below the 50 training"):
        dm.setup("fit")
    dm = ImageDataModule("cifar10", str(cifar10.root), download=False, val_size=10, batch_size=64)
    dm.setup("fit")
    with pytest.raises(UserError, match=r"data\.batch_size=64 exceeds the 40 training images"):
        dm.train_dataloader()


def test_state_dict_carries_the_normalisation(cifar10) -> None:
    dm = ImageDataModule("cifar10", str(cifar10.root), download=False, val_size=10)
    dm.setup("fit")
    other = ImageDataModule("cifar10", str(cifar10.root), download=False, val_size=10, seed=3)
    other.setup("fit")
    assert other.mean != dm.mean
    other.load_state_dict(dm.state_dict())
    batch = (dm.val_set.images[:4], dm.val_set.labels[:4])
    torch.testing.assert_close(
        other.on_after_batch_transfer(batch, 0)[0], dm.on_after_batch_transfer(batch, 0)[0]
    )


def test_holdout_split_stands_in_for_a_missing_test_split(tmp_path) -> None:
    """An image folder with only train/: `holdout_size` images become the test split, the
    same ones whatever `seed` is, never trained or validated on."""
    for cls in ("a", "b"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(10):  # pixel (i, class, 0) tells every image apart
            Image.new("RGB", (4, 4), (i, ord(cls), 0)).save(tmp_path / "train" / cls / f"{i}.png")

    def ids(images: torch.Tensor) -> set[tuple[int, int]]:
        return {(int(im[0, 0, 0]), int(im[1, 0, 0])) for im in images}

    held_out = []
    for seed in (0, 1):
        dm = ImageDataModule(
            "imagefolder", str(tmp_path), batch_size=2, val_size=4, holdout_size=5, seed=seed,
            cache_dir=str(tmp_path / "c"),
        )  # fmt: skip
        dm.setup("fit")
        test, train, val = (ids(s.images) for s in (dm._test_set(), dm.train_set, dm.val_set))
        assert len(test) == 5 and len(val) == 4 and len(train) == 11
        assert not test & train and not test & val and not train & val
        held_out.append(test)
    assert held_out[0] == held_out[1]
    assert len(dm.test_dataloader().dataset) == 5
    with pytest.raises(
        UserError, match=r"data\.holdout_size=-1 is invalid: use a whole number of 0 or more"
    ):
        ImageDataModule("imagefolder", str(tmp_path), holdout_size=-1)


def test_holdout_is_ignored_where_the_data_has_a_test_split(cifar10) -> None:
    dm = ImageDataModule("cifar10", str(cifar10.root), download=False, val_size=10, holdout_size=5)
    dm.setup("test")
    assert len(dm.train_set) == 40 and len(dm.test_dataloader().dataset) == 20  # the official


# --- Fast-training augmentation: alternating flips, milder crops ---------------------------


def _train_batches(tmp_path, dm: ImageDataModule, epochs: int) -> list[list]:
    """The normalised training batches a Trainer hands to `training_step`, per epoch."""
    seen: list[list] = [[] for _ in range(epochs)]

    class Recorder(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(3 * 32 * 32, 10)

        def training_step(self, batch, batch_idx):
            seen[self.current_epoch].append(batch)
            return F.cross_entropy(self.linear(batch[0].flatten(1)), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", enable_progress_bar=False, logger=False,
        enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Recorder(), datamodule=dm)
    return seen


@pytest.mark.parametrize("padding", [0, 2])
def test_alternating_flips_mirror_each_image_every_other_epoch(tmp_path, cifar10, padding) -> None:
    dm = ImageDataModule(
        "cifar10", str(cifar10.root), download=False, batch_size=8, val_size=10,
        flip="alternate", crop_padding=padding,
    )  # fmt: skip
    seen = _train_batches(tmp_path, dm, epochs=3)
    sampler = BatchIndexSampler(len(dm.train_set), 8, shuffle=True, drop_last=True, seed=0)
    flipped: list[dict[int, bool]] = []
    for epoch in seen:
        flips, shifts = {}, set()
        for (images, labels), index in zip(epoch, iter(sampler), strict=True):
            raw, raw_labels = dm.train_set.images[index], dm.train_set.labels[index]
            torch.testing.assert_close(labels, raw_labels)
            for i, image, source in zip(index.tolist(), images, raw, strict=True):
                oy, ox, flips[i] = _find_crop(image, source, (dm.mean, dm.std), padding)
                shifts.add((oy, ox))
        assert shifts <= {(y, x) for y in range(2 * padding + 1) for x in range(2 * padding + 1)}
        flipped.append(flips)
    # 40 images, 5 batches of 8 an epoch: every image is seen in every epoch.
    assert len(flipped[0]) == len(dm.train_set) == 40
    assert 10 < sum(flipped[0].values()) < 30  # the first epoch: a random half
    assert all(flipped[1][i] != flipped[0][i] for i in flipped[0])  # then the others
    assert flipped[2] == flipped[0]


def test_random_flips_do_not_alternate(tmp_path, cifar10) -> None:
    dm = ImageDataModule(
        "cifar10", str(cifar10.root), download=False, batch_size=8, val_size=10, crop_padding=0
    )
    seen = _train_batches(tmp_path, dm, epochs=2)
    sampler = BatchIndexSampler(len(dm.train_set), 8, shuffle=True, drop_last=True, seed=0)
    flips: list[dict[int, bool]] = [{}, {}]
    for epoch, batches in enumerate(seen):
        for (images, _), index in zip(batches, iter(sampler), strict=True):
            for i, image in zip(index.tolist(), images, strict=True):
                source = dm.train_set.images[i]
                flips[epoch][i] = _find_crop(image, source, (dm.mean, dm.std), 0)[2]
    assert any(flips[1][i] == flips[0][i] for i in flips[0])  # some kept their side


def test_whitening_sample_is_normalised_training_images(cifar10) -> None:
    dm = ImageDataModule("cifar10", str(cifar10.root), download=False, val_size=10)
    dm.setup("fit")
    sample = dm.whitening_sample(torch.device("cpu"), n=7)
    torch.testing.assert_close(sample, normalize(dm.train_set.images[:7], dm.mean, dm.std))
