"""The weight port between PyTorch and Keras (`parity_tests.convert`): bit-exact round
trips, file formats, errors. (In one process Triton, pulled in by Lightning, must load
before TensorFlow: this package's conftest imports `tf_reference` first, which sees to it.)
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_densenet import PRESETS, DenseNetConfig, UserError, build_model
from lightning_densenet.module import DenseNetClassifier
from parity_tests.convert import infer_arch, keras_to_torch, torch_to_keras
from parity_tests.convert.cli import main
from parity_tests.frameworks import randomized_torch
from tests.helpers import error_line
from tf_reference.model import APIS
from tf_reference.model import build_model as build_keras
from tf_reference.names import named_weights

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy"),
    pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no"),
]

ARCHS = {
    "tiny": "densenet_tiny",
    "plain_no_bn_imagenet_dropout": DenseNetConfig(
        drop_rate=0.1,
        growth_rate=5,
        block_config=(2, 3, 1),
        bottleneck=False,
        compression=0.7,
        batch_norm=False,
        stem="imagenet",
    ),
    "bn_size_2": DenseNetConfig(growth_rate=3, block_config=(3, 2), bn_size=2, num_init_features=7),
    "whitening_stem": DenseNetConfig(growth_rate=4, block_config=(2, 2), stem="whitening"),
}


def logits_gap(torch_model: nn.Module, keras_model) -> float:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = torch_model.eval()(x).numpy()
    actual = np.asarray(keras_model(x.permute(0, 2, 3, 1).numpy(), training=False))
    return float(np.abs(actual - expected).max())


def assert_same_weights(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key, value in a.items():
        if not key.endswith("num_batches_tracked"):  # PyTorch-only; comes back as 0
            assert torch.equal(value, b[key]), key


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_torch_keras_torch_round_trip_is_bit_exact(arch: str, api: str) -> None:
    source = randomized_torch(ARCHS[arch], 7)
    keras_model = build_keras(ARCHS[arch], 7, api)
    torch_to_keras(source, keras_model)
    state = keras_to_torch(keras_model)
    back = build_model(ARCHS[arch], 7)
    back.load_state_dict(state, strict=True)
    assert_same_weights(source.state_dict(), back.state_dict())
    assert state["features.conv0.weight"].is_contiguous()
    assert logits_gap(source, keras_model) < 1e-5  # fp32, different conv kernels


def test_keras_torch_keras_round_trip_is_bit_exact() -> None:
    keras_model = build_keras("densenet_tiny", 4, "sequential")
    copy = build_keras("densenet_tiny", 4, "functional")
    torch_to_keras(keras_to_torch(keras_model), copy)
    copies = named_weights(copy)
    for name, variable in named_weights(keras_model).items():
        np.testing.assert_array_equal(variable.numpy(), copies[name].numpy(), err_msg=name)


def test_layouts_are_pytorch_oihw_and_keras_hwio() -> None:
    source = randomized_torch("densenet_tiny", 7)
    keras_model = build_keras("densenet_tiny", 7)
    torch_to_keras(source, keras_model)
    weights = named_weights(keras_model)
    conv = source.features.denseblock2.denselayer1.conv2.weight  # (out 4, in 16, 3, 3)
    kernel = weights["features.denseblock2.denselayer1.conv2/kernel"].numpy()
    assert kernel.shape == (3, 3, 16, 4)
    assert kernel[0, 2, 5, 1] == conv[1, 5, 0, 2].item()  # [h, w, in, out] == [out, in, h, w]
    dense = weights["classifier/kernel"].numpy()
    assert dense.shape == (16, 7) and dense[3, 6] == source.classifier.weight[6, 3].item()
    moving_var = weights["features.norm5/moving_variance"].numpy()
    np.testing.assert_array_equal(moving_var, source.features.norm5.running_var.numpy())


def test_keras_to_torch_gives_num_batches_tracked_for_strict_loading() -> None:
    state = keras_to_torch(build_keras("densenet_tiny", 3))
    assert state["features.norm5.num_batches_tracked"].item() == 0
    assert set(state) == set(build_model("densenet_tiny", 3).state_dict())


def test_state_dict_without_batch_counts_converts(tmp_path: Path) -> None:
    # Older PyTorch wrote no num_batches_tracked; they carry nothing the port needs.
    state = randomized_torch("densenet_tiny", 3).state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    assert main([str(tmp_path / "old.pt"), str(tmp_path / "m.keras")]) == 0


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_infer_arch_recovers_every_preset(name: str) -> None:
    with torch.device("meta"):  # shapes only: the biggest presets cost nothing to build
        state = build_model(name, 10).state_dict()
    assert infer_arch(state) == PRESETS[name]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_infer_arch_recovers_custom_architectures(arch: str) -> None:
    with torch.device("meta"):
        state = build_model(ARCHS[arch], 5).state_dict()
        inferred = build_model(infer_arch(state), 5).state_dict()
    assert {k: v.shape for k, v in inferred.items()} == {k: v.shape for k, v in state.items()}


def test_mis_shaped_weight_is_named() -> None:
    keras_model = build_keras(DenseNetConfig(growth_rate=4, block_config=(2, 2)), 7)
    with pytest.raises(
        UserError,
        match=r"'features\.conv0\.weight' has shape \(10, 3, 3, 3\) .* but \(8, 3, 3, 3\)",
    ):
        torch_to_keras(
            randomized_torch(DenseNetConfig(growth_rate=5, block_config=(2, 2)), 7), keras_model
        )
    with pytest.raises(
        UserError, match=r"'classifier\.weight' has shape \(7, 16\) .* but \(10, 16\)"
    ):
        torch_to_keras(randomized_torch("densenet_tiny", 7), build_keras("densenet_tiny", 10))


def test_missing_and_extra_weights_are_named() -> None:
    deeper = DenseNetConfig(growth_rate=4, block_config=(3, 2), num_init_features=8)
    with pytest.raises(
        UserError, match=r"lack 'features\.denseblock1\.denselayer3\.norm1\.weight'"
    ):
        torch_to_keras(randomized_torch("densenet_tiny", 7), build_keras(deeper, 7))
    with pytest.raises(
        UserError, match=r"hold 'features\.denseblock1\.denselayer3\.norm1\.weight'"
    ):
        state = randomized_torch("densenet_tiny", 7).state_dict()
        state["features.denseblock1.denselayer3.norm1.weight"] = torch.ones(16)
        torch_to_keras(state, build_keras("densenet_tiny", 7))


@pytest.fixture(scope="module")
def lightning_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint: one training step of the LightningModule, saved by the Trainer."""
    torch.manual_seed(0)
    module = DenseNetClassifier(arch="densenet_tiny", num_classes=3)
    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,)))
    trainer = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path_factory.mktemp("run"),
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_lightning_checkpoint_to_keras_and_back(
    lightning_ckpt: Path, tmp_path: Path, capsys
) -> None:
    import keras

    original = DenseNetClassifier.load_from_checkpoint(lightning_ckpt).model.eval()
    assert main([str(lightning_ckpt), str(tmp_path / "m.keras")]) == 0
    assert "Keras functional densenet_tiny, 3 classes" in capsys.readouterr().out
    keras_model = keras.models.load_model(tmp_path / "m.keras")
    assert logits_gap(original, keras_model) < 1e-5

    assert main([str(tmp_path / "m.keras"), str(tmp_path / "back.ckpt")]) == 0
    module = DenseNetClassifier.load_from_checkpoint(tmp_path / "back.ckpt")
    assert module.hparams.arch == "densenet_tiny" and module.hparams.num_classes == 3
    assert_same_weights(original.state_dict(), module.model.state_dict())
    # The Trainer restores it too, as it would a checkpoint it wrote.
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    x = torch.randn(4, 3, 32, 32)
    (predicted,) = trainer.predict(
        DenseNetClassifier(arch="densenet_tiny", num_classes=3),
        DataLoader(TensorDataset(x), batch_size=4),
        ckpt_path=tmp_path / "back.ckpt",
    )
    with torch.no_grad():
        assert torch.equal(predicted["label"], original(x).argmax(1))


def test_state_dict_files_and_weights_only_files(tmp_path: Path) -> None:
    source = randomized_torch(ARCHS["bn_size_2"], 5)
    torch.save(source.state_dict(), tmp_path / "m.pth")
    # No --arch: read off the weight shapes; no --num-classes: the classifier's rows.
    assert (
        main([str(tmp_path / "m.pth"), str(tmp_path / "m.weights.h5"), "--api", "sequential"]) == 0
    )
    # A weights-only file needs the architecture; without --api both layouts are tried.
    args = ["--arch", str(_config_yaml(tmp_path, ARCHS["bn_size_2"])), "--num-classes", "5"]
    assert main([str(tmp_path / "m.weights.h5"), str(tmp_path / "back.pt"), *args]) == 0
    back = torch.load(tmp_path / "back.pt", weights_only=True)
    assert_same_weights(source.state_dict(), back)


def _config_yaml(folder: Path, cfg: DenseNetConfig) -> Path:
    import yaml

    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"model": {"arch": cfg.to_dict(), "lr": 0.1}}))
    return path


def test_weights_only_file_of_another_architecture(tmp_path: Path, capsys) -> None:
    build_keras("densenet_tiny", 3).save_weights(tmp_path / "w.weights.h5")
    assert main([str(tmp_path / "w.weights.h5"), str(tmp_path / "x.pt")]) == 2
    assert "give the architecture with --arch NAME and --num-classes N" in capsys.readouterr().err
    args = ["--arch", "densenet_tiny", "--num-classes", "4", "--api", "functional"]
    assert main([str(tmp_path / "w.weights.h5"), str(tmp_path / "x.pt"), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "densenet_tiny with 4 classes in the Keras functional layout" in err
    assert "the first 'classifier'" in err
    assert not (tmp_path / "x.pt").exists()


def test_weights_file_of_other_architecture_is_one_sentence_and_writes_nothing(
    tmp_path: Path, capsys
) -> None:
    # Moved from tests/lightning_densenet/test_errors.py's table with the command.
    build_keras("densenet_tiny", 3).save_weights(tmp_path / "w.weights.h5")
    before = (tmp_path / "w.weights.h5").read_bytes()
    args = ["--arch", "densenet_bc_40_k12", "--num-classes", "3"]
    assert main([str(tmp_path / "w.weights.h5"), str(tmp_path / "x.pt"), *args]) == 2
    line = error_line(capsys.readouterr().err)
    assert "does not hold the weights of a" in line
    assert line.rstrip().endswith((".", ")")), line
    assert (tmp_path / "w.weights.h5").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.weights.h5"]


def test_wrong_arch_for_a_checkpoint_names_the_weight(
    lightning_ckpt: Path, tmp_path, capsys
) -> None:
    out = tmp_path / "m.keras"
    assert main([str(lightning_ckpt), str(out), "--arch", "densenet_bc_40_k12"]) == 2
    err = capsys.readouterr().err
    assert (
        "Weight 'features.conv0.weight'" in err and "(8, 3, 3, 3)" in err and "(24, 3, 3, 3)" in err
    )
    assert not out.exists()


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        ("m.ckpt", "m.pt", "Cannot convert m.ckpt to m.pt: convert a PyTorch file"),
        ("m.keras", "m.h5", "Cannot convert m.keras to m.h5"),
        ("missing.ckpt", "m.keras", "missing.ckpt does not exist"),
        ("garbage.pt", "m.keras", "garbage.pt is not a readable PyTorch state_dict"),
        ("garbage.keras", "m.pt", "garbage.keras is not a readable .keras model"),
    ],
)
def test_bad_files_end_in_one_line(src: str, dst: str, message: str, tmp_path, capsys) -> None:
    for name in ("garbage.pt", "garbage.keras"):
        (tmp_path / name).write_bytes(b"not a model at all")
    assert main([str(tmp_path / src), str(tmp_path / dst)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_cli_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "parity_tests.convert",
            str(tmp_path / "no.ckpt"),
            "x.keras",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: {tmp_path / 'no.ckpt'} does not exist: give the path of a checkpoint."
    )


def test_keras_file_with_code_is_refused(tmp_path: Path, capsys) -> None:
    """A .keras file whose layer carries Python bytecode (a Lambda) is loaded in safe mode:
    refused with one sentence, the bytecode never deserialised, nothing written."""
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    out = tmp_path / "out.pt"
    assert main([str(path), str(out)]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("error:") and "is not a readable .keras model" in line
    assert "arbitrary code execution" in line and not out.exists()
