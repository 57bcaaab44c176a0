"""The PyTorch DenseNet: the paper's parameter counts, shapes, names and options."""

import pytest
import torch
import torchvision

from lightning_densenet import PRESETS, DenseNetConfig, UserError, build_model, resolve_arch
from lightning_densenet.arch import cifar_densenet
from lightning_densenet.model import count_parameters
from tests.helpers import BC_100_K12_PARAMS, PRESET_PARAMS, VARIANTS, expected_counts

# Table 2 of Huang et al. (arXiv 1608.06993), in millions, with 10 classes.
PAPER_PARAMS_M = {
    "densenet_40_k12": 1.0,
    "densenet_100_k12": 7.0,
    "densenet_100_k24": 27.2,
    "densenet_bc_100_k12": 0.8,
    "densenet_bc_250_k24": 15.3,
    "densenet_bc_190_k40": 25.6,
}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS_M))
def test_paper_presets_match_table_2(name: str) -> None:
    model = build_model(name, num_classes=10)
    assert round(count_parameters(model) / 1e6, 1) == PAPER_PARAMS_M[name]
    assert PRESETS[name].depth == int(name.split("_")[-2])  # L in the name is the real depth


# The CPU recipes' presets (README, "The model"): L in the name and the parameter count.
CPU_PRESET_PARAMS = {
    "densenet_c_13_k48": 625_922,
    "densenet_c_15_k64": 1_079_818,
    "densenet_c_21_k64": 2_783_162,
}


@pytest.mark.parametrize("name", sorted(CPU_PRESET_PARAMS))
def test_cpu_recipe_presets_depth_and_size(name: str) -> None:
    assert PRESETS[name].depth == int(name.split("_")[-2])
    assert count_parameters(build_model(name, num_classes=10)) == CPU_PRESET_PARAMS[name]


@pytest.mark.parametrize("name", PRESET_PARAMS)
def test_every_preset_has_the_recipe_parameter_counts(name: str) -> None:
    # (parameters, BN running statistics) against the recipe's formula, on the meta device
    # (shapes only: the biggest preset costs milliseconds).
    with torch.device("meta"):
        model = build_model(name, num_classes=10)
    statistics = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    params = count_parameters(model, trainable_only=False)  # frozen ones too, as the formula
    assert (params, statistics) == expected_counts(PRESETS[name], 10)


def test_densenet_bc_100_k12_exact_count() -> None:
    assert count_parameters(build_model("densenet_bc_100_k12", 10)) == BC_100_K12_PARAMS


def test_densenet121_is_torchvision_densenet121() -> None:
    ours, theirs = build_model("densenet121", 1000).eval(), torchvision.models.densenet121().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_state_dict_names_follow_torchvision() -> None:
    keys = build_model("densenet_bc_100_k12").state_dict().keys()
    assert "features.conv0.weight" in keys
    for name in ("norm1", "conv1", "norm2", "conv2"):
        assert f"features.denseblock3.denselayer16.{name}.weight" in keys
    assert "features.transition2.norm.running_var" in keys
    assert "features.transition2.conv.weight" in keys
    assert {"features.norm5.weight", "classifier.weight", "classifier.bias"} <= set(keys)
    assert "features.denseblock4.denselayer1.conv1.weight" not in keys


@pytest.mark.parametrize(
    ("arch", "size"),
    [("densenet_bc_100_k12", 32), ("densenet_40_k12", 32), ("densenet121", 64)],
)
def test_output_shape(arch: str, size: int) -> None:
    model = build_model(arch, num_classes=100).eval()
    assert model(torch.randn(2, 3, size, size)).shape == (2, 100)


def test_channel_bookkeeping() -> None:
    # BC-100: stem 2k=24; block1 24+16*12=216 -> 108; block2 108+192=300 -> 150; block3 342.
    cfg = PRESETS["densenet_bc_100_k12"]
    assert cfg.channels() == [(24, 216), (108, 300), (150, 342)]
    assert build_model(cfg).classifier.in_features == 342
    # Without compression (DenseNet-40): stem 16, +12*12 per block, no shrinking.
    assert PRESETS["densenet_40_k12"].channels() == [(16, 160), (160, 304), (304, 448)]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_parameter_receives_a_gradient(name: str) -> None:
    model = build_model(VARIANTS[name], num_classes=7)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    for pname, p in model.named_parameters():
        if pname == "features.conv0.weight" and name == "whitening_stem":
            assert not p.requires_grad and p.grad is None  # frozen: set from the data
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_whitening_stem_decorrelates_the_patches_it_was_computed_from() -> None:
    torch.manual_seed(0)
    model = build_model(VARIANTS["whitening_stem"])
    conv = model.features.conv0
    assert conv.kernel_size == (2, 2) and conv.out_channels == 24 and conv.padding == (0, 0)
    # Correlated channels and neighbouring pixels, as in photographs.
    base = torch.randn(64, 1, 17, 17).repeat(1, 3, 1, 1) + 0.3 * torch.randn(64, 3, 17, 17)
    images = torch.nn.functional.avg_pool2d(base, 2, 1)  # (64, 3, 16, 16)
    model.init_whitening(images, eps=0.0)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(images, conv.weight).double()  # no bias
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)  # the 12 directions, one sign
    second_moments = half.T @ half / len(half)
    torch.testing.assert_close(second_moments, torch.eye(12, dtype=torch.double), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, 12:], -out[:, :12])  # each direction with both signs
    assert model(images).shape == (64, 10)  # 16 -> 15 -> 7 px through the network


def test_whitening_stem_keeps_its_strongest_directions_when_narrower() -> None:
    torch.manual_seed(0)
    images = torch.randn(8, 3, 8, 8) * torch.tensor([3.0, 1.0, 0.2]).view(1, 3, 1, 1)
    wide = build_model(VARIANTS["whitening_stem"])
    narrow = build_model(DenseNetConfig(growth_rate=6, block_config=(2,), stem="whitening",
                                        num_init_features=8))  # fmt: skip
    wide.init_whitening(images)
    narrow.init_whitening(images)
    w, n = wide.features.conv0.weight, narrow.features.conv0.weight
    torch.testing.assert_close(n[:4].abs(), w[:4].abs())  # the 4 largest, sign aside
    torch.testing.assert_close(n[4:], -n[:4])


@pytest.mark.parametrize("width", [7, 26])
def test_whitening_stem_width_must_be_even_and_at_most_24(width: int) -> None:
    with pytest.raises(UserError, match="whitening stem takes an even width of at most 24"):
        DenseNetConfig(stem="whitening", num_init_features=width)


def test_batch_norm_off_removes_norms_and_adds_biases() -> None:
    model = build_model(VARIANTS["no_bn"])
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    with_bn = build_model(VARIANTS["bc"])
    assert all(m.bias is None for m in with_bn.modules() if isinstance(m, torch.nn.Conv2d))


def test_dropout_after_every_conv_but_the_stem() -> None:
    model = build_model(VARIANTS["dropout"])
    drops = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout)]
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(drops) == len(convs) - 1  # every conv but features.conv0
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    torch.testing.assert_close(model(x), model(x))  # eval: deterministic
    model.train()
    assert not torch.allclose(model(x), model(x))  # train: dropout is active


def test_non_bottleneck_layer_has_one_3x3_conv() -> None:
    layer = build_model(VARIANTS["plain"]).features.denseblock1.denselayer1
    assert layer.conv1.kernel_size == (3, 3) and not hasattr(layer, "conv2")


def test_he_init_fan_out() -> None:
    conv = build_model("densenet_bc_100_k12").features.denseblock3.denselayer1.conv2
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)


@pytest.mark.parametrize("option", ["channels_last", "memory_efficient"])
@pytest.mark.parametrize("name", ["bc", "plain", "dropout"])
def test_speed_options_keep_the_math(option: str, name: str) -> None:
    torch.manual_seed(0)
    base = build_model(VARIANTS[name], 10)
    fast = build_model(VARIANTS[name], 10, **{option: True})
    fast.load_state_dict(base.state_dict(), strict=True)
    # Dropout masks are drawn in memory order, so NHWC draws other masks than NCHW from the
    # same seed: that pair is compared in eval mode. checkpointing replays the RNG state.
    train = not (name == "dropout" and option == "channels_last")
    x = torch.randn(4, 3, 32, 32)
    outputs, grads = [], []
    for model in (base, fast):
        model.train(train)
        torch.manual_seed(1)  # same dropout masks
        out = model(x)
        out.square().mean().backward()
        outputs.append(out)
        grads.append({n: p.grad for n, p in model.named_parameters()})
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-4, atol=1e-5, msg=n)


def test_channels_last_weights() -> None:
    model = build_model("densenet_tiny", channels_last=True)
    assert model.features.conv0.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    ("arch", "message"),
    [
        ("densenet_999", "Unknown DenseNet preset 'densenet_999'"),
        ({"growth_rate": 0}, "growth_rate=0 is invalid"),
        ({"compression": 1.5}, "compression=1.5 is invalid"),
        ({"block_config": []}, "block_config=() is invalid"),
        ({"stem": "tiny"}, "stem='tiny' is invalid"),
        ({"growth": 12}, "Unknown DenseNet field(s) growth"),
    ],
)
def test_bad_architectures_name_the_problem(arch: object, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_arch(arch)


# Section 3 of the paper, written out: L = 3n + 4 for three blocks of n layers, each layer one
# 3x3 conv (n = (L - 4) / 3), or two with the bottleneck of DenseNet-BC (n = (L - 4) / 6);
# theta = 0.5 and a 2k-wide stem with BC, theta = 1 and a 16-wide stem without.
PAPER_LAYERS_PER_BLOCK = [
    # (L, k, BC, n)
    (40, 12, False, 12),
    (100, 12, False, 32),
    (100, 24, False, 32),
    (100, 12, True, 16),
    (250, 24, True, 41),
    (190, 40, True, 31),
]


@pytest.mark.parametrize(("depth", "k", "bc", "n"), PAPER_LAYERS_PER_BLOCK)
def test_cifar_depth_rule(depth: int, k: int, bc: bool, n: int) -> None:
    config = cifar_densenet(depth, k, bc=bc)
    assert config.block_config == (n, n, n) and config.growth_rate == k
    assert (config.bottleneck, config.compression) == ((True, 0.5) if bc else (False, 1.0))
    assert config.init_features == (2 * k if bc else 16)
    assert config.depth == depth


def test_cifar_depth_rule_refuses_other_depths() -> None:
    with pytest.raises(UserError, match="depth = 6n \\+ 4"):
        cifar_densenet(101, 12, bc=True)
    with pytest.raises(UserError, match="depth = 3n \\+ 4"):
        cifar_densenet(41, 12, bc=False)
