"""Every mistake a user can make ends in one `error:` sentence, exit code 2, and nothing of
theirs overwritten: the table of cases, each through the CLI's entry point (`main`, what
`python -m lightning_densenet` runs; test_cli.py runs it as a subprocess too)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_densenet.cli import main

REPO = Path(__file__).resolve().parents[2]
DEBUG = str(REPO / "configs/debug.yaml")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


class Case:
    """`setup(tmp_path, cifar, make_cifar) -> argv`; the error line must contain `expect`."""

    def __init__(self, setup: Callable[..., list[str]], *expect: str) -> None:
        self.setup, self.expect = setup, expect


def _fit(tmp: Path, root: Path, *extra: str) -> list[str]:
    args = ["fit", "--config", DEBUG, "--data.root", str(root), "--data.download", "false"]
    return [*args, "--data.val_size", "40", "--trainer.default_root_dir", str(tmp / "runs"), *extra]


def _image(path: Path, size: int = 32, bits: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    if bits == 16:  # a 16-bit grey PNG, as scientific cameras write them
        Image.fromarray(rng.integers(0, 65535, (size, size), np.uint16)).save(path)
    else:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(path)


def _folder(tmp: Path, **sizes: int) -> Path:
    """train/a, train/b with 4 images each; `sizes` overrides single files' sizes."""
    root = tmp / "images"
    for cls in ("a", "b"):
        for i in range(4):
            name = f"train/{cls}/{i}.png"
            _image(root / name, sizes.get(f"{cls}{i}", 32))
    return root


def _imagefolder(tmp: Path, root: Path, *extra: str) -> list[str]:
    args = _fit(tmp, root, "--data.dataset", "imagefolder", "--data.val_size", "2")
    return [*args, "--data.batch_size", "2", "--data.cache_dir", str(tmp / "cache"), *extra]


def _trained(tmp: Path, cifar) -> Path:
    """A checkpoint of a short real run (densenet_tiny, 10 classes)."""
    args = _fit(tmp, cifar.root, "--trainer.limit_train_batches", "2", "--trainer.max_epochs", "1")
    assert main([*args, *QUIET, "--trainer.limit_val_batches", "1"]) == 0
    return tmp / "runs/debug/version_0/checkpoints/last.ckpt"


def _test_with(tmp: Path, cifar, ckpt: Path, *extra: str) -> list[str]:
    args = ["test", "--config", DEBUG, "--data.root", str(cifar.root), "--data.download", "false"]
    args += ["--data.val_size", "40", "--trainer.default_root_dir", str(tmp / "runs")]
    return [*args, "--ckpt_path", str(ckpt), *extra]


class _RunsCode:
    """Unpickling this would run a shell command that leaves a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- The cases -----------------------------------------------------------------------------


def arch_preset(tmp, cifar, make_cifar):
    return _fit(tmp, cifar.root, "--model.arch", "densenet_7")


def arch_growth_rate(tmp, cifar, make_cifar):
    return _fit(tmp, cifar.root, "--model.arch", "{growth_rate: 0, block_config: [1, 1]}")


def arch_compression(tmp, cifar, make_cifar):
    return _fit(tmp, cifar.root, "--model.arch", "{compression: 1.5}")


def unknown_key_in_config(tmp, cifar, make_cifar):
    config = tmp / "mine.yaml"
    config.write_text("model:\n  arch: densenet_tiny\n  learning_rate: 0.1\n")
    return [*_fit(tmp, cifar.root), "--config", str(config)]


def unknown_option(tmp, cifar, make_cifar):
    return [*_fit(tmp, cifar.root), "--model.nonsense", "1"]


def wrong_value_type(tmp, cifar, make_cifar):
    return [*_fit(tmp, cifar.root), "--trainer.max_epochs", "three"]


def val_size_too_large(tmp, cifar, make_cifar):
    return _fit(tmp, cifar.root, "--data.val_size", "5000")


def no_class_folders(tmp, cifar, make_cifar):
    return _fit(tmp, cifar.root, "--data.dataset", "imagefolder")


def images_of_two_sizes(tmp, cifar, make_cifar):
    return _imagefolder(tmp, _folder(tmp, b2=40))


def other_size_test_images(tmp, cifar, make_cifar):
    root = _folder(tmp)
    _image(root / "test/a/0.png", 64)
    return ["test", *_imagefolder(tmp, root)[1:]]


def image_16_bit(tmp, cifar, make_cifar):
    root = _folder(tmp)
    _image(root / "train/a/9.png", bits=16)
    return _imagefolder(tmp, root)


def image_undecodable(tmp, cifar, make_cifar):
    root = _folder(tmp)
    (root / "train/b/bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return _imagefolder(tmp, root)


def class_folder_without_images(tmp, cifar, make_cifar):
    root = _folder(tmp)
    (root / "train/c").mkdir()
    (root / "train/c/notes.txt").write_text("no images here")
    return _imagefolder(tmp, root)


def truncated_image_archive(tmp, cifar, make_cifar):
    root = _folder(tmp)
    archive = tmp / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "train", arcname="train")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    return _imagefolder(tmp, archive)


def truncated_cifar_file(tmp, cifar, make_cifar):
    batch = cifar.root / "cifar-10-batches-py/data_batch_2"
    batch.write_bytes(batch.read_bytes()[:1000])
    return _fit(tmp, cifar.root)


def truncated_cifar_archive(tmp, cifar, make_cifar):
    # The official .tar.gz cut short, nothing unpacked, no network: one sentence.
    root = tmp / "c10"
    root.mkdir()
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        tar.add(cifar.root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    (root / "cifar-10-python.tar.gz").write_bytes(data.getvalue()[:2000])
    return [*_fit(tmp, root), "--data.download", "true"]


def cifar_pickle_that_runs_code(tmp, cifar, make_cifar):
    batch = cifar.root / "cifar-10-batches-py/data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": _RunsCode(tmp / "ran"), b"labels": []}, protocol=2))
    return _fit(tmp, cifar.root)


def ckpt_missing(tmp, cifar, make_cifar):
    return _test_with(tmp, cifar, tmp / "missing.ckpt")


def ckpt_garbage(tmp, cifar, make_cifar):
    (tmp / "garbage.ckpt").write_bytes(b"not a checkpoint")
    return _test_with(tmp, cifar, tmp / "garbage.ckpt")


def ckpt_that_runs_code(tmp, cifar, make_cifar):
    torch.save({"state_dict": {}, "x": _RunsCode(tmp / "ran")}, tmp / "evil.ckpt")
    return _test_with(tmp, cifar, tmp / "evil.ckpt")


def ckpt_of_other_class_count(tmp, cifar, make_cifar):
    # LightningCLI rebuilds the model from the checkpoint's hyperparameters, so what can
    # still disagree is the data: 100 CIFAR-100 classes for a 10-class classifier.
    ckpt = _trained(tmp, cifar)
    c100 = make_cifar(tmp / "c100", "cifar100", n_train=60, n_test=20)
    args = _test_with(tmp, cifar, ckpt, "--data.dataset", "cifar100")
    return [*args, "--data.root", str(c100.root), "--data.val_size", "10"]


def ckpt_of_other_architecture(tmp, cifar, make_cifar):
    # A checkpoint from elsewhere, without hyperparameters: the model comes from the config.
    state = torch.load(_trained(tmp, cifar), weights_only=True)
    del state["hyper_parameters"]
    torch.save(state, tmp / "foreign.ckpt")
    return _test_with(tmp, cifar, tmp / "foreign.ckpt", "--model.arch", "densenet_bc_40_k12")


def resume_with_nothing_to_resume(tmp, cifar, make_cifar):
    return [*_fit(tmp, cifar.root), "--ckpt_path", "last"]


def convert_under_its_old_name(tmp, cifar, make_cifar):
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
        ckpt_of_other_class_count, "does not fit this model and data", "classifier.weight"
    ),
    "ckpt_of_other_architecture": Case(
        ckpt_of_other_architecture, "does not fit this model and data", "features.conv0.weight"
    ),
    "resume_with_nothing_to_resume": Case(resume_with_nothing_to_resume, "no run to resume"),
    "convert_under_its_old_name": Case(
        convert_under_its_old_name, "python -m parity_tests.convert"
    ),
}


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.mark.parametrize("name", list(CASES))
def test_user_error_is_one_sentence_and_overwrites_nothing(
    name: str, tmp_path: Path, make_cifar, capsys
) -> None:
    case = CASES[name]
    cifar = make_cifar(tmp_path / "cifar", "cifar10", n_train=200, n_test=40)
    args = case.setup(tmp_path, cifar, make_cifar)
    capsys.readouterr()
    before = _snapshot(tmp_path)
    try:
        code = main([*args, *(QUIET if args[0] != "convert" else [])])
    except SystemExit as exit_info:  # the argument parser exits by itself
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    line = lines[0]
    for text in case.expect:
        assert text in line, line
    # One sentence: no line breaks (checked above), and it ends as a sentence does.
    assert line.rstrip().endswith((".", ")")), line
    after = _snapshot(tmp_path)
    changed = [k for k, digest in before.items() if after.get(k) != digest]
    assert not changed, f"{name} changed or removed {changed}"
    assert not [k for k in after.keys() - before.keys() if k.endswith(".ckpt")]
    assert not (tmp_path / "ran").exists(), "unpickling ran code"


def test_pickle_reader_runs_nothing(tmp_path: Path, make_cifar) -> None:
    """The CIFAR reader accepts the arrays and lists it expects and nothing that runs code,
    whichever way the pickle hides it (a global call, a nested object, a gzip wrapper)."""
    from lightning_densenet import datasets
    from lightning_densenet.errors import UserError

    cifar = make_cifar(tmp_path / "cifar", "cifar10", n_train=50, n_test=10)
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
    make_cifar(tmp_path / "cifar", "cifar10", n_train=50, n_test=10)
    assert len(datasets.load_cifar(cifar.root, "cifar10", "train")) == 50
