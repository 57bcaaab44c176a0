"""The Keras DenseNet on its own: parameter counts, shapes, names, options, save/load.

Agreement with PyTorch, layer by layer and in function, is checked in `parity_tests/`.
"""

# isort: off
import tf_reference  # noqa: F401  (before Keras: loads Triton ahead of TensorFlow, see its __init__)
import keras

# isort: on
import numpy as np
import pytest

from lightning_densenet import DenseNetConfig, UserError
from tests.helpers import BC_100_K12_PARAMS, VARIANTS, expected_counts
from tf_reference import keras_name, torch_name
from tf_reference.layers import DenseLayer, Head, Stem, Transition
from tf_reference.model import APIS, build_model
from tf_reference.names import named_weights, weight_key

# Keras' own `convert_to_numpy` (used by `model.save`) trips NumPy 2's copy-keyword warning.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy")


def counts(model: keras.Model) -> tuple[int, int]:
    def size(weights: list) -> int:
        return sum(int(np.prod(w.shape)) for w in weights)

    return size(model.trainable_weights), size(model.non_trainable_weights)


def copy_weights(src: keras.Model, dst: keras.Model) -> None:
    source = named_weights(src)
    for name, variable in named_weights(dst).items():
        variable.assign(source[name])


def images(n: int = 2, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype("float32")


def randomize_bn_statistics(model: keras.Model, seed: int = 0) -> None:
    """Non-trivial moving statistics, so eval mode is not just a rescaling by 1/sqrt(1+eps)."""
    rng = np.random.default_rng(seed)
    for name, variable in named_weights(model).items():
        if name.endswith(("/moving_mean", "/beta")):
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
        elif name.endswith(("/moving_variance", "/gamma")):
            variable.assign(rng.uniform(0.5, 1.5, variable.shape).astype("float32"))


# Every preset, in both APIs, is checked layer by layer (shapes and parameter counts) against
# the PyTorch one in parity_tests/test_architecture.py, and the PyTorch presets against
# `expected_counts` in tests/lightning_densenet/test_model.py: building each here again (24
# builds, 24 s) would check nothing more. Here the formula is checked on every variant.


def test_densenet_bc_100_k12_has_the_papers_parameter_count() -> None:
    for api in APIS:
        trainable, non_trainable = counts(build_model("densenet_bc_100_k12", 10, api))
        assert trainable == BC_100_K12_PARAMS
        assert non_trainable == 2 * 11_994  # moving mean + variance of 11,994 BN channels


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_count_and_shape(variant: str) -> None:
    cfg = VARIANTS[variant]
    size = 64 if cfg.stem == "imagenet" else 32
    for api in APIS:
        model = build_model(cfg, num_classes=7, api=api, input_shape=(size, size, 3))
        assert counts(model) == expected_counts(cfg, 7)
        assert model(images(3, size)).shape == (3, 7)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_functional_and_sequential_compute_the_same_function(variant: str) -> None:
    cfg = VARIANTS[variant]
    size = 64 if cfg.stem == "imagenet" else 32
    functional = build_model(cfg, 5, "functional", input_shape=(size, size, 3))
    sequential = build_model(cfg, 5, "sequential", input_shape=(size, size, 3))
    assert list(named_weights(functional)) == list(named_weights(sequential))
    randomize_bn_statistics(functional)
    copy_weights(functional, sequential)
    x = images(4, size)
    # Same layers, same order of operations: the two graphs agree to the last bit in eval mode.
    np.testing.assert_array_equal(functional(x, training=False), sequential(x, training=False))
    if cfg.drop_rate == 0:
        np.testing.assert_allclose(
            functional(x, training=True), sequential(x, training=True), rtol=0, atol=1e-5
        )
        for name, variable in named_weights(functional).items():  # the same BN updates
            np.testing.assert_allclose(
                variable.numpy(),
                named_weights(sequential)[name].numpy(),
                rtol=0,
                atol=1e-6,
                err_msg=name,
            )


def test_sequential_is_made_of_the_custom_layers() -> None:
    model = build_model("densenet_tiny", 10, "sequential")
    kinds = [type(layer) for layer in model.layers]
    # densenet_tiny: blocks (2, 2) -> stem, 2 dense layers, transition, 2 dense layers, head.
    assert kinds == [Stem, DenseLayer, DenseLayer, Transition, DenseLayer, DenseLayer, Head]
    assert [layer.name for layer in model.layers[1:5]] == [
        "features.denseblock1.denselayer1",
        "features.denseblock1.denselayer2",
        "features.transition1",
        "features.denseblock2.denselayer1",
    ]
    # A dense layer returns its input with k = 4 new channels appended; the transition halves.
    assert [layer.output.shape[-1] for layer in model.layers] == [8, 12, 16, 8, 12, 16, 10]
    assert model.layers[3].output.shape[1:3] == (16, 16)


def test_batch_norm_off_gives_conv_biases_and_no_norm_layers() -> None:
    cfg = VARIANTS["no_bn"]
    for api in APIS:
        names = list(named_weights(build_model(cfg, 10, api)))
        assert not any("norm" in name for name in names)
        assert "features.conv0/bias" in names
        assert "features.denseblock2.denselayer3.conv2/bias" in names
        assert "features.transition1.conv/bias" in names
    with_bn = list(named_weights(build_model(VARIANTS["bc"], 10)))
    assert not any(name.endswith("conv1/bias") for name in with_bn)


def test_dropout_follows_every_conv_but_the_stem() -> None:
    model = build_model(VARIANTS["dropout"], 10, "functional")
    drops = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert drops[:3] == [
        "features.denseblock1.denselayer1.drop1",
        "features.denseblock1.denselayer1.drop2",
        "features.denseblock1.denselayer2.drop1",
    ]
    assert "features.transition1.drop" in drops
    assert len(drops) == 2 * 5 + 1  # two per bottleneck layer, one per transition
    assert all(
        layer.rate == 0.2 for layer in model.layers if isinstance(layer, keras.layers.Dropout)
    )
    x = images(2)
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    assert not np.allclose(model(x, training=True), model(x, training=False))


def test_imagenet_stem_layers_and_shapes() -> None:
    model = build_model("densenet121", 10, "functional", input_shape=(64, 64, 3))
    names = [layer.name for layer in model.layers[:7]]
    assert names == [
        "image",
        "features.conv0_pad",
        "features.conv0",
        "features.norm0",
        "features.relu0",
        "features.pool0_pad",
        "features.pool0",
    ]
    # 7x7/2 conv with padding 3 then 3x3/2 max pool with padding 1: 64 -> 32 -> 16, as in PyTorch.
    assert model.get_layer("features.conv0").output.shape == (None, 32, 32, 64)
    assert model.get_layer("features.pool0").output.shape == (None, 16, 16, 64)
    assert model.get_layer("features.denseblock4.denselayer16").output.shape == (None, 2, 2, 1024)


def test_pytorch_conventions_for_batch_norm_and_init() -> None:
    keras.utils.set_random_seed(0)
    model = build_model("densenet_40_k12", 10, "functional")
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(n.epsilon == 1e-5 and n.momentum == 0.9 for n in norms)
    weights = named_weights(model)
    # He normal with fan_out: std sqrt(2 / (3 * 3 * 12)) for a dense layer's 3x3 conv.
    kernel = weights["features.denseblock3.denselayer12.conv1/kernel"].numpy()
    assert kernel.shape == (3, 3, 436, 12)
    assert kernel.std() == pytest.approx(np.sqrt(2 / (3 * 3 * 12)), rel=0.02)
    classifier = weights["classifier/kernel"].numpy()  # (448, 10): U(+-1/sqrt(448))
    assert np.abs(classifier).max() <= 1 / np.sqrt(448)
    assert np.abs(classifier).max() > 0.9 / np.sqrt(448)
    np.testing.assert_array_equal(weights["classifier/bias"].numpy(), np.zeros(10))
    np.testing.assert_array_equal(weights["features.norm5/gamma"].numpy(), np.ones(448))


def test_weight_names_follow_the_torch_rule() -> None:
    names = list(named_weights(build_model("densenet_bc_100_k12", 10, "sequential")))
    assert names[:2] == ["features.conv0/kernel", "features.denseblock1.denselayer1.norm1/gamma"]
    assert names[-2:] == ["classifier/kernel", "classifier/bias"]
    torch_keys = [torch_name(name) for name in names]
    assert "features.denseblock3.denselayer16.norm2.running_var" in torch_keys
    assert "features.transition2.conv.weight" in torch_keys
    assert "features.norm5.running_mean" in torch_keys
    assert [keras_name(key) for key in torch_keys] == names  # the rule is reversible


@pytest.mark.parametrize(
    ("torch_key", "keras_weight"),
    [
        ("features.conv0.weight", "features.conv0/kernel"),
        ("features.conv0.bias", "features.conv0/bias"),
        ("features.norm0.weight", "features.norm0/gamma"),
        ("features.transition1.norm.bias", "features.transition1.norm/beta"),
        ("features.denseblock1.denselayer2.norm1.running_mean",
         "features.denseblock1.denselayer2.norm1/moving_mean"),
        ("features.norm5.running_var", "features.norm5/moving_variance"),
        ("classifier.weight", "classifier/kernel"),
    ],
)  # fmt: skip
def test_name_rule_examples(torch_key: str, keras_weight: str) -> None:
    assert keras_name(torch_key) == keras_weight
    assert torch_name(keras_weight) == torch_key
    assert torch_name(f"densenet/stem/{keras_weight}") == torch_key  # a full variable.path
    assert weight_key(f"a/b/{keras_weight}") == keras_weight


def test_name_rule_rejects_what_has_no_counterpart() -> None:
    with pytest.raises(ValueError, match="num_batches_tracked"):
        keras_name("features.norm5.num_batches_tracked")
    with pytest.raises(ValueError, match="seed_generator_state"):
        torch_name("features.drop1/seed_generator_state")


@pytest.mark.parametrize("api", APIS)
def test_keras_file_round_trip_predicts_the_same(api: str, tmp_path) -> None:
    cfg = DenseNetConfig(growth_rate=4, block_config=(2, 1), stem="imagenet", drop_rate=0.1)
    model = build_model(cfg, 3, api, input_shape=(40, 40, 3))
    randomize_bn_statistics(model)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded) is type(model)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = images(3, 40)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for name, variable in named_weights(model).items():
        np.testing.assert_array_equal(
            named_weights(loaded)[name].numpy(), variable.numpy(), err_msg=name
        )


def test_custom_layer_configs_round_trip() -> None:
    for layer in build_model(VARIANTS["dropout"], 10, "sequential").layers:
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
        assert [sub.name for sub in clone.chain] == [sub.name for sub in layer.chain]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api": "subclassed"}, "api='subclassed' is invalid"),
        ({"num_classes": 0}, "num_classes=0 is invalid"),
        ({"input_shape": (3, 32, 32)}, r"input_shape=\(3, 32, 32\) is invalid"),
        ({"arch": "densenet_bc_99"}, "Unknown DenseNet preset 'densenet_bc_99'"),
    ],
)
def test_bad_arguments_raise_user_error(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_model(**{"arch": "densenet_tiny", **kwargs})
