"""Every mistake a user can make ends in one `error:` sentence, exit code 2, and nothing of
theirs overwritten: the table of cases, each through the CLI's entry point (`main`, what
`python -m lightning_densenet` runs; test_cli.py runs it as a subprocess too)."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_densenet.__main__ import main
from tests.fake_data import write_cifar, write_cifar_archive, write_images, write_tar
from tests.helpers import QUIET, cli_args, digests, error_line


class Case:
    """`setup(tmp_path, cifar) -> argv`, or with `trained` `setup(tmp_path, cifar, ckpt)` with
    the session's trained checkpoint (read-only); the error line must contain `expect`."""

    def __init__(
        self, setup: Callable[..., list[str]], *expect: str, trained: bool = False
    ) -> None:
        self.setup, self.expect, self.trained = setup, expect, trained


def _fit(tmp: Path, root: Path, *extra: str) -> list[str]:
    return cli_args("fit", root, tmp / "runs", *extra)


def _folder(tmp: Path) -> Path:
    """train/a, train/b with 4 images of 32x32 each."""
    root = tmp / "images"
    write_images(root, "train", {"a": 4, "b": 4}, size=(32, 32))
    return root


def _imagefolder(tmp: Path, root: Path, *extra: str) -> list[str]:
    args = _fit(tmp, root, "--data.dataset", "imagefolder", "--data.val_size", "2")
    return [*args, "--data.batch_size", "2", "--data.cache_dir", str(tmp / "cache"), *extra]


def _trained(tmp: Path, trained: Path) -> Path:
    """The session's trained checkpoint (densenet_tiny, 10 classes), copied into `tmp`."""
    return Path(shutil.copy(trained, tmp / "trained.ckpt"))


def _test_with(tmp: Path, cifar, ckpt: Path, *extra: str) -> list[str]:
    return cli_args("test", cifar.root, tmp / "runs", "--ckpt_path", str(ckpt), *extra)


class _RunsCode:
    """Unpickling this would run a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- The cases -----------------------------------------------------------------------------


def arch_preset(tmp, cifar):
    return _fit(tmp, cifar.root, "--model.arch", "densenet_7")


def arch_growth_rate(tmp, cifar):
    return _fit(tmp, cifar.root, "--model.arch", "{growth_rate: 0, block_config: [1, 1]}")


def arch_compression(tmp, cifar):
    return _fit(tmp, cifar.root, "--model.arch", "{compression: 1.5}")


def unknown_key_in_config(tmp, cifar):
    config = tmp / "mine.yaml"
    config.write_text("model:\n  arch: densenet_tiny\n  learning_rate: 0.1\n")
    return [*_fit(tmp, cifar.root), "--config", str(config)]


def unknown_option(tmp, cifar):
    return [*_fit(tmp, cifar.root), "--model.nonsense", "1"]


def wrong_value_type(tmp, cifar):
    return [*_fit(tmp, cifar.root), "--trainer.max_epochs", "three"]


def trainer_option_lightning_refuses(tmp, cifar):
    return [*_fit(tmp, cifar.root), "--trainer.max_epochs", "-5"]


def model_value_out_of_range(tmp, cifar):
    return [*_fit(tmp, cifar.root), "--model.lr", "-0.1"]


def val_size_too_large(tmp, cifar):
    return _fit(tmp, cifar.root, "--data.val_size", "5000")


def no_class_folders(tmp, cifar):
    return _fit(tmp, cifar.root, "--data.dataset", "imagefolder")


def images_of_two_sizes(tmp, cifar):
    root = _folder(tmp)
    write_images(root, "train", {"b": 1}, size=(40, 40))  # train/b/000.png, 40x40 now
    return _imagefolder(tmp, root)


def other_size_test_images(tmp, cifar):
    root = _folder(tmp)
    write_images(root, "test", {"a": 1}, size=(64, 64))
    return ["test", *_imagefolder(tmp, root)[1:]]


def image_16_bit(tmp, cifar):
    root = _folder(tmp)
    grey = np.random.default_rng(0).integers(0, 65535, (32, 32), np.uint16)
    Image.fromarray(grey).save(root / "train/a/9.png")  # as scientific cameras write them
    return _imagefolder(tmp, root)


def image_undecodable(tmp, cifar):
    root = _folder(tmp)
    (root / "train/b/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return _imagefolder(tmp, root)


def class_folder_without_images(tmp, cifar):
    root = _folder(tmp)
    (root / "train/c").mkdir()
    (root / "train/c/notes.txt").write_text("no images here")
    return _imagefolder(tmp, root)


def truncated_image_archive(tmp, cifar):
    archive = write_tar(_folder(tmp), tmp / "images.tar.gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    return _imagefolder(tmp, archive)


def truncated_cifar_file(tmp, cifar):
    batch = cifar.root / "cifar-10-batches-py/data_batch_2"
    batch.write_bytes(batch.read_bytes()[:1000])
    return _fit(tmp, cifar.root)


def truncated_cifar_archive(tmp, cifar):
    # The official .tar.gz cut short, nothing unpacked, no network: one sentence.
    root = tmp / "c10"
    root.mkdir()
    archive = write_cifar_archive(cifar, root / "cifar-10-python.tar.gz")
    archive.write_bytes(archive.read_bytes()[:2000])
    return [*_fit(tmp, root), "--data.download", "true"]


def cifar_pickle_that_runs_code(tmp, cifar):
    batch = cifar.root / "cifar-10-batches-py/data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": _RunsCode(tmp / "ran"), b"labels": []}, protocol=2))
    return _fit(tmp, cifar.root)


def ckpt_missing(tmp, cifar):
    return _test_with(tmp, cifar, tmp / "missing.ckpt")


def ckpt_garbage(tmp, cifar):
    (tmp / "garbage.ckpt").write_bytes(b"not a checkpoint")
    return _test_with(tmp, cifar, tmp / "garbage.ckpt")


def ckpt_that_runs_code(tmp, cifar):
    torch.save({"state_dict": {}, "x": _RunsCode(tmp / "ran")}, tmp / "evil.ckpt")
    return _test_with(tmp, cifar, tmp / "evil.ckpt")


def ckpt_of_other_class_count(tmp, cifar, trained):
    # LightningCLI rebuilds the model from the checkpoint's hyperparameters, so what can
    # still disagree is the data: 100 CIFAR-100 classes for a 10-class classifier.
    ckpt = _trained(tmp, trained)
    c100 = write_cifar(tmp / "c100", "cifar100", n_train=60, n_test=20)
    args = _test_with(tmp, cifar, ckpt, "--data.dataset", "cifar100")
    return [*args, "--data.root", str(c100.root), "--data.val_size", "10"]


def ckpt_of_other_architecture(tmp, cifar, trained):
    # A checkpoint from elsewhere, without hyperparameters: the model comes from the config.
    state = torch.load(trained, weights_only=True)
    del state["hyper_parameters"]
    torch.save(state, tmp / "foreign.ckpt")
    return _test_with(tmp, cifar, tmp / "foreign.ckpt", "--model.arch", "densenet_bc_40_k12")


def resume_with_nothing_to_resume(tmp, cifar):
    return [*_fit(tmp, cifar.root), "--ckpt_path", "last"]


def convert_under_its_old_name(tmp, cifar):
    # The weight port moved above both frameworks; its errors are tested in
    # parity_tests/test_convert.py. The old spelling names the new command.
    args = ["convert", str(tmp / "w.weights.h5"), str(tmp / "x.pt")]
    return [*args, "--arch", "densenet_bc_40_k12", "--num-classes", "3"]


CASES = {
    "arch_preset": Case(arch_preset, "Unknown DenseNet preset 'densenet_7'"),
    "arch_growth_rate": Case(arch_growth_rate, "DenseNet growth_rate=0 is invalid"),
    "arch_compression": Case(arch_compression, "DenseNet compression=1.5 is invalid"),
    "unknown_key_in_config": Case(unknown_key_in_config, "model.learning_rate"),
    "unknown_option": Case(unknown_option, "--model.nonsense"),
    "wrong_value_type": Case(wrong_value_type, "trainer.max_epochs=three is invalid"),
    "trainer_option_lightning_refuses": Case(
        trainer_option_lightning_refuses, "`max_epochs` must be", "-5"
    ),
    "model_value_out_of_range": Case(model_value_out_of_range, "model.lr=-0.1 is invalid"),
    "val_size_too_large": Case(val_size_too_large, "val_size"),
    "no_class_folders": Case(no_class_folders, "train/<class>"),
    "images_of_two_sizes": Case(images_of_two_sizes, "Images differ in size", "40x40"),
    "test_images_of_another_size": Case(other_size_test_images, "64x64", "32x32"),
    "image_16_bit": Case(image_16_bit, "train/a/9.png has I", "8-bit"),
    "image_undecodable": Case(image_undecodable, "Cannot decode image train/b/bad.png"),
    "class_folder_without_images": Case(class_folder_without_images, "train/c holds no images"),
    "truncated_image_archive": Case(truncated_image_archive, "Cannot read archive"),
    "truncated_cifar_file": Case(truncated_cifar_file, "data_batch_2 is corrupt"),
    "truncated_cifar_archive": Case(truncated_cifar_archive, "cifar-10-python.tar.gz is corrupt"),
    "cifar_pickle_that_runs_code": Case(
        cifar_pickle_that_runs_code, "data_batch_1 is corrupt", "unexpected object"
    ),
    "ckpt_missing": Case(ckpt_missing, "does not exist"),
    "ckpt_garbage": Case(ckpt_garbage, "not a readable Lightning checkpoint"),
    "ckpt_that_runs_code": Case(ckpt_that_runs_code, "not a readable Lightning checkpoint"),
    "ckpt_of_other_class_count": Case(
        ckpt_of_other_class_count,
        "does not fit this model and data",
        "classifier.weight",
        trained=True,
    ),
    "ckpt_of_other_architecture": Case(
        ckpt_of_other_architecture,
        "does not fit this model and data",
        "features.conv0.weight",
        trained=True,
    ),
    "resume_with_nothing_to_resume": Case(resume_with_nothing_to_resume, "no run to resume"),
    "convert_under_its_old_name": Case(
        convert_under_its_old_name, "python -m parity_tests.convert"
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_sentence_and_overwrites_nothing(
    name: str, tmp_path: Path, capsys, request
) -> None:
    case = CASES[name]
    cifar = write_cifar(tmp_path / "cifar", "cifar10", n_train=200, n_test=40)
    if case.trained:  # the session's trained run, set up only for the cases that use it
        args = case.setup(tmp_path, cifar, request.getfixturevalue("trained_run").ckpt)
    else:
        args = case.setup(tmp_path, cifar)
    capsys.readouterr()
    before = digests(tmp_path)
    try:
        code = main([*args, *(QUIET if args[0] != "convert" else [])])
    except SystemExit as exit_info:  # the argument parser exits by itself
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    line = error_line(err)
    for text in case.expect:
        assert text in line, line
    # One sentence: no line breaks (checked above), and it ends as a sentence does.
    assert line.rstrip().endswith((".", ")")), line
    after = digests(tmp_path)
    changed = [k for k, digest in before.items() if after.get(k) != digest]
    assert not changed, f"{name} changed or removed {changed}"
    assert not [k for k in after.keys() - before.keys() if k.endswith(".ckpt")]
    assert not (tmp_path / "ran").exists(), "unpickling ran code"


def test_pickle_reader_runs_nothing(tmp_path: Path) -> None:
    """The CIFAR reader accepts the arrays and lists it expects and nothing that runs code,
    whichever way the pickle hides it (a global call, a nested object, a gzip wrapper)."""
    from lightning_densenet import datasets
    from lightning_densenet.errors import UserError

    cifar = write_cifar(tmp_path / "cifar", "cifar10", n_train=50, n_test=10)
    batch = cifar.root / "cifar-10-batches-py/data_batch_3"
    marker = tmp_path / "ran"
    payloads = [
        _RunsCode(marker),
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": [_RunsCode(marker)]},
        {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": eval},
    ]
    for payload in payloads:
        batch.write_bytes(pickle.dumps(payload, protocol=2))
        with pytest.raises(UserError, match=r"is corrupt .*unexpected object"):
            datasets.load_cifar(cifar.root, "cifar10", "train")
    batch.write_bytes(gzip.compress(pickle.dumps(_RunsCode(marker))))
    with pytest.raises(UserError, match="is corrupt"):
        datasets.load_cifar(cifar.root, "cifar10", "train")
    assert not marker.exists()
    # The official format still loads.
    write_cifar(tmp_path / "cifar", "cifar10", n_train=50, n_test=10)
    assert len(datasets.load_cifar(cifar.root, "cifar10", "train")) == 50
