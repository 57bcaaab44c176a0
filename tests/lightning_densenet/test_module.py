"""The LightningModule on its own: loss, metrics, optimisers, schedules, compile."""

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_densenet import DenseNetConfig, UserError
from lightning_densenet.module import DenseNetClassifier, load_network
from lightning_densenet.schedules import image_size, lr_factor


def test_step_schedule_divides_by_ten_at_milestones() -> None:
    f = lr_factor("step", 100, (0.5, 0.75))
    assert [f(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_and_onecycle_shapes() -> None:
    cos = lr_factor("cosine", 100)
    assert cos(0) == 1 and cos(50) == pytest.approx(0.5) and cos(100) == pytest.approx(0)
    one = lr_factor("onecycle", 100, warmup=0.3)
    assert one(0) == pytest.approx(0.04) and one(30) == pytest.approx(1)
    assert one(15) == pytest.approx(0.52) and one(100) == pytest.approx(0, abs=1e-12)
    assert all(one(s) >= one(s + 1) for s in range(30, 100))
    assert lr_factor("constant", 10)(7) == 1


def test_image_size_grows_in_steps_of_eight_to_full_size() -> None:
    sizes = [image_size(f / 8, 16, 32, until=0.5) for f in range(9)]
    assert sizes == [16, 16, 24, 24, 32, 32, 32, 32, 32]
    assert [image_size(f, 24, 32, until=0.6) for f in (0, 0.59, 0.6, 1)] == [24, 24, 32, 32]
    assert image_size(0, 40, 32, until=0.5) == 32  # never larger than the data


def test_unknown_schedule_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"model\.schedule='linear' is unknown"):
        lr_factor("linear", 10)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0}, r"model\.lr=0 is invalid: use a positive number\."),
        ({"milestones": (0.75, 0.5)}, "must be increasing fractions"),
        ({"label_smoothing": 1.0}, r"label_smoothing=1\.0 is invalid: use a fraction in \[0, 1\)"),
        ({"ema_decay": 1.0}, r"model\.ema_decay=1\.0 is invalid: use a fraction in \[0, 1\)"),
        ({"budget_minutes": 0}, r"model\.budget_minutes=0 is invalid: use a positive number"),
        ({"progressive_size": 0}, r"progressive_size=0 is invalid: use a whole number of at least"),
        ({"progressive_until": 0}, r"progressive_until=0 is invalid: use a fraction in \(0, 1\]"),
        ({"arch": "resnet50"}, "Unknown DenseNet preset 'resnet50'"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        DenseNetClassifier(**kwargs)


def test_top5_only_with_many_classes() -> None:
    assert list(DenseNetClassifier("densenet_tiny", num_classes=10).val_metrics) == ["val/acc"]
    module = DenseNetClassifier("densenet_tiny", num_classes=100)
    assert list(module.val_metrics) == ["val/acc", "val/acc_top5"]
    assert not [k for k in module.state_dict() if "acc" in k]  # checkpoints hold no metrics


def _fit(tmp_path, hook=None, **kwargs) -> tuple[pl.Trainer, DenseNetClassifier]:
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    module = DenseNetClassifier("densenet_tiny", num_classes=10, **kwargs)
    if hook is not None:
        module.model.register_forward_pre_hook(hook)
    trainer = pl.Trainer(
        max_epochs=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, loader, loader)
    return trainer, module


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_lr_follows_the_schedule_per_step(tmp_path, optimizer: str) -> None:
    trainer, _ = _fit(tmp_path, optimizer=optimizer, lr=0.05, schedule="cosine")
    opt = trainer.optimizers[0]
    assert type(opt).__name__ == {"sgd": "SGD", "adamw": "AdamW"}[optimizer]
    total = trainer.estimated_stepping_batches  # 2 epochs x 4 batches
    assert total == 8 and trainer.global_step == 8
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.5 * (1 + math.cos(math.pi)))
    assert "val/loss" in trainer.callback_metrics and "train/acc" in trainer.callback_metrics


def test_tta_averages_plain_and_mirrored_logits() -> None:
    torch.manual_seed(0)
    module = DenseNetClassifier("densenet_tiny", num_classes=10, tta=True).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        plain, mirrored = module(x), module(torch.flip(x, dims=[3]))
        assert not torch.allclose(plain, mirrored)  # the tiny net is not flip-invariant
        torch.testing.assert_close(module._eval_logits(x), (plain + mirrored) / 2)
        module.hparams.tta = False
        torch.testing.assert_close(module._eval_logits(x), plain)


def test_tta_shift_averages_six_views_half_unshifted() -> None:
    torch.manual_seed(0)
    module = DenseNetClassifier("densenet_tiny", num_classes=10, tta=True, tta_shift=1).eval()
    x = torch.randn(3, 3, 8, 8)
    # Moved one pixel up-left / down-right, the border reflected: rows and columns re-indexed.
    up_left = torch.tensor([1, 2, 3, 4, 5, 6, 7, 6])
    down_right = torch.tensor([1, 0, 1, 2, 3, 4, 5, 6])

    def mirrored(v: torch.Tensor) -> torch.Tensor:
        return (module(v) + module(v.flip(3))) / 2

    with torch.no_grad():
        views = [x[:, :, idx][:, :, :, idx] for idx in (up_left, down_right)]
        expected = mirrored(x) / 2 + mirrored(views[0]) / 4 + mirrored(views[1]) / 4
        torch.testing.assert_close(module._eval_logits(x), expected)
        module.hparams.tta_shift = 0
        torch.testing.assert_close(module._eval_logits(x), mirrored(x))


def test_norm_weight_decay_applies_to_batch_norm_and_biases_only(tmp_path) -> None:
    trainer, module = _fit(tmp_path, weight_decay=5e-4, norm_weight_decay=0.0)
    decayed, free = trainer.optimizers[0].param_groups
    assert (decayed["weight_decay"], free["weight_decay"]) == (5e-4, 0.0)
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert {names[id(p)] for p in free["params"]} == {
        n for n, p in module.model.named_parameters() if ".norm" in n or n.endswith("bias")
    }
    assert len(decayed["params"]) + len(free["params"]) == len(names)


def test_ema_weights_are_validated_saved_and_tested(tmp_path) -> None:
    _, module = _fit(tmp_path, ema_decay=0.5, lr=0.2)
    (path,) = tmp_path.glob("checkpoints/*.ckpt")  # written at the end of the last epoch
    ckpt = torch.load(path, weights_only=True)
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    key = "model.features.conv0.weight"
    assert not torch.equal(ema[key], raw[key])
    # After fit the callback copies the average into the module: what `test` then uses.
    torch.testing.assert_close(module.state_dict()[key], ema[key])
    net = load_network(str(path))
    torch.testing.assert_close(net.state_dict()["features.conv0.weight"], ema[key])


def test_a_time_budget_ends_training_with_the_schedule(tmp_path) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    module = DenseNetClassifier(
        "densenet_tiny", num_classes=10, schedule="cosine", budget_minutes=0.5
    )
    trainer = pl.Trainer(
        max_epochs=10_000, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    # The budget's clock, injected: 6 seconds per optimiser step; the 30 s end with step 5.
    module.clock = lambda: 6.0 * module.global_step
    trainer.fit(module, loader)
    # Stopped by the budget long before 10,000 epochs, with the cosine at its end.
    assert trainer.global_step == 5
    assert module.training_fraction(trainer.global_step) == 1
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0, abs=1e-12)
    assert module.budget_used_s() == 30.0


def _widths_seen(tmp_path, **kwargs) -> list[tuple[bool, int]]:
    """(training?, image width) of every batch the network was given in `_fit`."""
    seen: list[tuple[bool, int]] = []
    _fit(tmp_path, hook=lambda net, args: seen.append((net.training, args[0].shape[-1])), **kwargs)
    return seen


def test_progressive_resizing_trains_small_then_full_and_evaluates_full(tmp_path) -> None:
    seen = _widths_seen(tmp_path, progressive_size=16, progressive_until=0.5)
    train = [w for training, w in seen if training]
    # 8 steps: 16 px for the first quarter of training, 24 for the second, then 32.
    assert train == [16, 16, 24, 24, 32, 32, 32, 32]
    assert {w for training, w in seen if not training} == {32}  # validation: full size
    assert {w for training, w in _widths_seen(tmp_path / "off")} == {32}


# Compiling costs seconds per kernel on a CPU, so the compile tests use the smallest DenseNet
# (one dense block of one bottleneck layer): what they test is the module's compilation.
COMPILED_NET = DenseNetConfig(growth_rate=4, block_config=(1,), num_init_features=8)


@dataclass(frozen=True)
class CompiledFit:
    """A 2-epoch fit of the compiled COMPILED_NET with progressive resizing and flip TTA."""

    module: DenseNetClassifier
    train_widths: list[int]  # the image width of each training batch, in order
    graphs_after_fit: int  # graphs torch.compile built during the fit
    checkpoint: Path  # saved right after the fit


@pytest.fixture(scope="module")
def compiled_fit(tmp_path_factory: pytest.TempPathFactory) -> CompiledFit:
    """One compiled fit shared by the tests of compilation (compiling is seconds per graph).
    Training: 64 images in batches of 16 for 2 epochs, so 8 steps, at 24 px for the first
    half and then at 32 px; validation: 40 images, so a last batch of 8, each batch also
    mirrored. (Two sizes: each costs a compile; the schedule's own sizes are tested above.)"""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    tmp_path = tmp_path_factory.mktemp("compiled")
    torch.manual_seed(0)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    train = DataLoader(TensorDataset(x, y), batch_size=16)
    val = DataLoader(TensorDataset(x[:40], y[:40]), batch_size=16)  # 16, 16, 8
    module = DenseNetClassifier(
        COMPILED_NET, num_classes=10, compile=True, tta=True,
        progressive_size=24, progressive_until=0.5,
    )  # fmt: skip
    widths: list[int] = []
    module.model.register_forward_pre_hook(
        lambda net, args: widths.append(args[0].shape[-1]) if net.training else None
    )
    trainer = pl.Trainer(
        max_epochs=2, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, train, val)
    graphs = counters["stats"]["unique_graphs"]
    trainer.save_checkpoint(tmp_path / "compiled.ckpt")
    return CompiledFit(module, widths, graphs, tmp_path / "compiled.ckpt")


def test_compiled_progressive_resizing_compiles_one_static_graph_per_size(
    compiled_fit: CompiledFit,
) -> None:
    assert compiled_fit.module.compiled
    assert compiled_fit.train_widths == [24, 24, 24, 24, 32, 32, 32, 32]
    # Training at 24 and 32 px and evaluation at 32, each once; none of them dynamic.
    # Evaluation compiles once for all its batches: the last, shorter one is padded to the
    # compiled size, and flip TTA's mirrored batch has the same shape.
    assert compiled_fit.graphs_after_fit == 3


def test_compiled_eval_pads_a_short_batch_and_matches_the_uncompiled_network(
    compiled_fit: CompiledFit,
) -> None:
    from torch._dynamo.utils import counters

    module = compiled_fit.module
    uncompiled = DenseNetClassifier(COMPILED_NET, num_classes=10, tta=True).eval()
    uncompiled.load_state_dict(module.state_dict())
    module.eval()
    short = torch.randn(8, 3, 32, 32)  # padded to the compiled 16 inside, the padding dropped
    with torch.no_grad():
        torch.testing.assert_close(
            module._eval_logits(short), uncompiled._eval_logits(short), rtol=1e-4, atol=1e-5
        )
    assert counters["stats"]["unique_graphs"] == compiled_fit.graphs_after_fit  # no new graph


def test_compiled_checkpoint_loads_uncompiled_strict(compiled_fit: CompiledFit) -> None:
    keys = torch.load(compiled_fit.checkpoint, weights_only=False)["state_dict"].keys()
    assert not any("_orig_mod" in k for k in keys)
    net = load_network(str(compiled_fit.checkpoint))  # an uncompiled DenseNet, strict=True
    reference = DenseNetClassifier(COMPILED_NET, num_classes=10).model.eval()
    reference.load_state_dict(compiled_fit.module.model.state_dict(), strict=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x))


def test_whitening_stem_is_set_from_the_training_images_and_stays_frozen(tmp_path) -> None:
    from lightning_densenet.data import ImageDataModule
    from tests.fake_data import write_cifar
    from tests.helpers import VARIANTS

    cifar = write_cifar(tmp_path / "data", "cifar10", n_train=80, n_test=4)
    dm = ImageDataModule("cifar10", str(cifar.root), download=False, batch_size=16, val_size=16)
    module = DenseNetClassifier(VARIANTS["whitening_stem"], num_classes=10, lr=0.1)
    initial = module.model.features.conv0.weight.clone()
    trainer = pl.Trainer(
        max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(module, datamodule=dm)
    reference = DenseNetClassifier(VARIANTS["whitening_stem"], num_classes=10).model
    reference.init_whitening(dm.whitening_sample(torch.device("cpu")))
    stem = module.model.features.conv0
    assert not torch.equal(stem.weight, initial)
    torch.testing.assert_close(stem.weight, reference.features.conv0.weight, rtol=0, atol=0)
    assert not torch.equal(stem.bias, reference.features.conv0.bias)  # the bias trains


def test_whitening_stem_needs_the_data_module(tmp_path) -> None:
    from tests.helpers import VARIANTS

    module = DenseNetClassifier(VARIANTS["whitening_stem"], num_classes=10)
    loader = DataLoader(TensorDataset(torch.randn(16, 3, 32, 32), torch.zeros(16).long()))
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_checkpointing=False, default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(UserError, match="initialised from the training images"):
        trainer.fit(module, loader)


def test_norm_scale_frozen_at_one_and_norm_lr_scale_sets_their_lr(tmp_path) -> None:
    trainer, module = _fit(tmp_path, lr=0.1, norm_scale=False, norm_lr_scale=8.0)
    scales = [m.weight for m in module.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert scales and all(not w.requires_grad and bool((w == 1).all()) for w in scales)
    weights, flat = trainer.optimizers[0].param_groups
    assert flat["initial_lr"] == pytest.approx(8 * weights["initial_lr"]) == pytest.approx(0.8)
    trained = {id(p) for g in (weights, flat) for p in g["params"]}
    assert trained.isdisjoint(id(w) for w in scales)  # frozen: in no group
    assert all(p.ndim <= 1 for p in flat["params"]) and all(p.ndim > 1 for p in weights["params"])


def test_lookahead_fit_ends_on_the_slow_copy_and_checkpoints_it(tmp_path) -> None:
    _, module = _fit(tmp_path / "lookahead", lr=0.2, lookahead_every=2, lookahead_decay=0.9)
    assert module._slow is not None
    for key, value in module.model.state_dict().items():
        if value.is_floating_point():  # weights and BatchNorm statistics, not step counts
            torch.testing.assert_close(value, module._slow[key])  # the last step copied it in
    (path,) = (tmp_path / "lookahead").glob("checkpoints/*.ckpt")
    saved = torch.load(path, weights_only=True)["lookahead"]
    torch.testing.assert_close(saved, module._slow)  # a resumed run continues the average
    # Without lookahead, the same seed and data train other weights.
    _, plain = _fit(tmp_path / "plain", lr=0.2)
    key = "features.conv0.weight"
    assert not torch.allclose(plain.model.state_dict()[key], module.model.state_dict()[key])


def test_lookahead_steps_once_per_optimiser_step_with_accumulation(tmp_path, monkeypatch) -> None:
    import lightning_densenet.module as module_py

    decays: list[float] = []
    real = module_py.lookahead_step

    def recorded(slow, network, decay):
        decays.append(decay)
        real(slow, network, decay)

    monkeypatch.setattr(module_py, "lookahead_step", recorded)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    module = DenseNetClassifier("densenet_tiny", num_classes=10, lookahead_every=1)
    trainer = pl.Trainer(max_epochs=1, accumulate_grad_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=16))  # 4 batches: 2 steps
    assert trainer.global_step == 2
    assert decays == [pytest.approx(0.95 * 0.5**3), 1.0]  # step 1 of 2, then the end
