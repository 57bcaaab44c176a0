"""TensorFlow training: every execution mode optimises the same objective, traced once.

Tolerances: eager, tf.function, the in-graph loop and Keras fit run the same kernels in the
same order, so they agree to float32 rounding (1e-6). XLA fuses and reorders reductions:
it agrees to 1e-4 relative after one step.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from lightning_densenet import PRESETS, UserError
from tests.helpers import DEBUG_CONFIG, FIT_CONFIGS, REPO
from tf_reference.__main__ import main
from tf_reference.config import (
    MODES,
    DataConfig,
    Experiment,
    ModelOptions,
    TrainerOptions,
    load_experiment,
)
from tf_reference.data import Splits, load_splits, train_batches
from tf_reference.network import build_network
from tf_reference.optim import L2SGD, cross_entropy, make_optimizer
from tf_reference.steps import TrainStep, compile_loop, compile_step
from tf_reference.train import GRAPH_MODES, train


@pytest.fixture(scope="module")
def data_config(real_data: DataConfig) -> DataConfig:
    return dataclasses.replace(
        real_data,
        batch_size=32,
        val_size=64,
        max_train_images=128,  # 4 steps per epoch
        augment=False,
    )


@pytest.fixture(scope="module")
def splits(data_config: DataConfig) -> Splits:
    return load_splits(data_config)


@pytest.fixture(scope="module")
def exp(data_config: DataConfig) -> Experiment:
    return Experiment(
        name="test",
        model=ModelOptions(arch="densenet_tiny", lr=0.05, schedule="constant"),
        trainer=TrainerOptions(max_epochs=3, limit_val_batches=1),
        data=data_config,
    )


def with_epochs(exp: Experiment, epochs: int) -> Experiment:
    return dataclasses.replace(exp, trainer=dataclasses.replace(exp.trainer, max_epochs=epochs))


def batches(splits: Splits, n: int) -> list[tuple[tf.Tensor, tf.Tensor]]:
    ds = train_batches(splits.train, 32, splits.mean, splits.std, augment=False)
    return list(ds.take(n))


def fresh_step(exp: Experiment) -> TrainStep:
    keras.utils.set_random_seed(0)
    net = build_network("cnn", None, 10, (32, 32, 3), width=8, depth=3)
    return TrainStep(net, make_optimizer(exp.model, 100))


# --- Modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_lowers_the_loss_and_traces_once(
    mode: str, exp: Experiment, splits: Splits
) -> None:
    start = time.perf_counter()
    result = train(
        exp, mode, network="cnn", width=8, depth=3, root_dir=None, splits=splits, log=None
    )
    wall_s = time.perf_counter() - start
    losses = [e["train_loss"] for e in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.05, losses
    m = result.metrics
    # Timed: the run's first step apart (tracing, compiling), the 11 steady steps after it
    # epoch by epoch (3 + 4 + 4): the run's rate is theirs, steps over the epochs' seconds.
    rates = [e["steps_per_s"] for e in result.history]
    assert m["steps"] == 12  # 3 epochs of 128 // 32 = 4 steps
    assert m["steps_per_s"] == pytest.approx(11 / (3 / rates[0] + 4 / rates[1] + 4 / rates[2]))
    # The timed parts lie inside the run, whatever the machine's speed.
    assert m["first_step_s"] > 0 and m["first_step_s"] + 11 / m["steps_per_s"] < wall_s
    assert m["images_per_s"] == pytest.approx(32 * m["steps_per_s"])
    assert all("val_acc" in e for e in result.history)  # validated after every epoch
    if mode in GRAPH_MODES:
        assert (m["traces"], m["retraces"]) == (1, 0)
    else:
        assert m["traces"] is None


def test_modes_follow_the_same_trajectory(exp: Experiment, splits: Splits) -> None:
    def losses(mode: str) -> np.ndarray:
        r = train(exp, mode, network="mlp", width=32, root_dir=None, splits=splits, log=None)
        return np.array([e["train_loss"] for e in r.history])

    eager = losses("eager")
    np.testing.assert_allclose(losses("function"), eager, rtol=1e-6)
    np.testing.assert_allclose(losses("fit"), eager, rtol=1e-6)


def test_eager_function_and_xla_agree_on_one_step(exp: Experiment, splits: Splits) -> None:
    images, labels = batches(splits, 1)[0]
    results = {}
    for mode in ("eager", "function", "xla"):
        step = fresh_step(exp)
        loss, correct = compile_step(step, mode, 32, (32, 32, 3))(images, labels)
        results[mode] = (float(loss), int(correct), [w.numpy() for w in step.model.weights])
    eager_loss, eager_correct, eager_weights = results["eager"]
    assert results["function"][:2] == (pytest.approx(eager_loss, rel=1e-6), eager_correct)
    assert results["xla"][0] == pytest.approx(eager_loss, rel=1e-4)
    for mode, rtol in (("function", 1e-6), ("xla", 1e-4)):
        for got, want in zip(results[mode][2], eager_weights, strict=True):
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol)
    # The step did update: weights moved away from the seed's initial ones.
    initial = fresh_step(exp).model.weights[0].numpy()
    assert not np.allclose(eager_weights[0], initial)


def test_loop_mode_equals_step_mode_over_the_same_batches(exp: Experiment, splits: Splits) -> None:
    data = batches(splits, 4)
    step = fresh_step(exp)
    one_step = compile_step(step, "function", 32, (32, 32, 3))
    step_losses = [float(one_step(x, y)[0]) for x, y in data]

    looped = fresh_step(exp)
    run_steps = compile_loop(looped)
    it = iter(tf.data.Dataset.from_tensor_slices(tuple(map(tf.stack, zip(*data, strict=True)))))
    loss_sum, _ = run_steps(it, tf.constant(1))
    loss_sum_rest, _ = run_steps(it, tf.constant(3))  # other n, same trace
    assert looped.python_calls == 1
    assert float(loss_sum) == pytest.approx(step_losses[0], rel=1e-6)
    assert float(loss_sum_rest) == pytest.approx(sum(step_losses[1:]), rel=1e-6)
    for a, b in zip(looped.model.weights, step.model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)


def test_trace_counter_counts_traces(exp: Experiment, splits: Splits) -> None:
    x, y = batches(splits, 1)[0]
    step = fresh_step(exp)
    fixed = compile_step(step, "function", 32, (32, 32, 3))
    for _ in range(3):
        fixed(x, y)
    assert step.python_calls == 1  # no retrace after the first step
    # Without a fixed signature, a new batch size is a new trace: the counter sees it.
    loose = fresh_step(exp)
    traced = tf.function(loose)
    traced(x, y)
    traced(x[:16], y[:16])
    assert loose.python_calls == 2


# --- Objective: optimiser, schedule, loss ---------------------------------------------------


def test_l2sgd_is_torch_sgd_with_nesterov_and_weight_decay() -> None:
    # torch.optim.SGD's documented algorithm (dampening 0), in numpy. Not torch itself: in a
    # process that has loaded TensorFlow, torch.optim's lazy `import triton` segfaults.
    rng = np.random.default_rng(0)
    w0, grads = rng.normal(size=(5, 3)), rng.normal(size=(4, 5, 3))
    lrs = [0.1, 0.1, 0.01, 0.001]  # a step schedule: the lr changes between steps
    w, buf = w0.copy(), np.zeros_like(w0)
    for lr, g in zip(lrs, grads, strict=True):
        g = g + 1e-2 * w  # weight_decay
        buf = 0.9 * buf + g  # momentum (torch starts the buffer at g: the same thing)
        w = w - lr * (g + 0.9 * buf)  # nesterov

    v = keras.Variable(w0.astype(np.float32))
    l2sgd = L2SGD(0.1, momentum=0.9, nesterov=True, weight_decay_l2=1e-2)
    for lr, g in zip(lrs, grads, strict=True):
        l2sgd.learning_rate = lr
        l2sgd.apply([tf.constant(g, tf.float32)], [v])
    np.testing.assert_allclose(v.numpy(), w, rtol=1e-5, atol=1e-6)
    # Keras' own SGD keeps lr inside the velocity: after an lr drop it differs.
    keras_v = keras.Variable(w0.astype(np.float32))
    keras_sgd = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True)
    for lr, g in zip(lrs, grads, strict=True):
        keras_sgd.learning_rate = lr
        keras_sgd.apply([tf.constant(g + 1e-2 * keras_v.numpy(), tf.float32)], [keras_v])
    assert not np.allclose(keras_v.numpy(), w, rtol=1e-3)


def test_learning_rate_follows_lr_factor_per_step() -> None:
    model = ModelOptions(lr=0.2, schedule="step", milestones=(0.5, 0.75))
    opt = make_optimizer(model, total_steps=8)
    seen = []
    for step in range(10):
        opt.iterations.assign(step)
        seen.append(float(opt.learning_rate))
    # By hand: of 8 steps, 0-3 at the peak, /10 from step 4 (50%), /100 from step 6 (75%);
    # past the end (steps 8, 9) the last rate holds.
    expected = [0.2] * 4 + [0.02] * 2 + [0.002] * 4
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert seen[3] == pytest.approx(0.2) and seen[4] == pytest.approx(0.02)
    adamw = make_optimizer(dataclasses.replace(model, optimizer="adamw", weight_decay=0.05), 8)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 0.05


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_is_pytorchs_label_smoothing(smoothing: float) -> None:
    # torch.nn.functional.cross_entropy's documented smoothing, in numpy (float64):
    # (1 - eps) * NLL(label) + eps * mean over classes of -log p.
    logits = np.random.default_rng(1).normal(size=(6, 10))
    labels = np.array([0, 3, 9, 2, 2, 5])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -logp[np.arange(6), labels]
    want = (1 - smoothing) * nll - smoothing * logp.mean(axis=1)
    got = cross_entropy(tf.constant(labels), tf.constant(logits, tf.float32), smoothing)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


# --- Runs, configs, CLI ---------------------------------------------------------------------


def test_run_directory_checkpoint_and_scalars(
    exp: Experiment, splits: Splits, summaries: Callable[[Path], list[Any]], tmp_path: Path
) -> None:
    short = with_epochs(exp, 1)
    kwargs = {"network": "cnn", "width": 8, "depth": 3, "root_dir": tmp_path, "splits": splits}
    result = train(short, "function", **kwargs, log=None)
    run = tmp_path / "tf" / "test-cnn" / "function" / "version_0"
    assert result.run_dir == run
    for name in ("config.yaml", "metrics.json", "model.weights.h5", "best.weights.h5"):
        assert (run / name).is_file(), name
    assert load_experiment(run / "config.yaml").to_dict() == short.to_dict()

    # The checkpoint restores the trained weights and the optimiser's step count.
    keras.utils.set_random_seed(1)
    net = build_network("cnn", None, 10, (32, 32, 3), width=8, depth=3)
    opt = make_optimizer(exp.model, 4)
    opt.build(net.trainable_variables)
    ckpt = tf.train.Checkpoint(model=net, optimizer=opt)
    ckpt.restore(tf.train.latest_checkpoint(run / "checkpoints")).assert_existing_objects_matched()
    assert int(opt.iterations) == 4
    for a, b in zip(net.weights, result.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    tags = {v.tag for v in summaries(run)}
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "steps_per_s"} <= tags

    again = train(short, "function", **kwargs, log=None)
    assert again.run_dir == run.parent / "version_1"  # never overwrites a run


@pytest.mark.filterwarnings("ignore:trainer.precision=.* is ignored")
def test_configs_are_read_as_lightning_reads_them() -> None:
    exp = load_experiment(REPO / "configs" / "cifar10_paper.yaml")
    m = exp.model
    assert exp.name == "cifar10_paper" and m.arch == PRESETS["densenet_bc_100_k12"]
    assert (m.optimizer, m.lr, m.momentum, m.nesterov) == ("sgd", 0.1, 0.9, True)
    assert (m.weight_decay, m.schedule, m.milestones) == (1e-4, "step", (0.5, 0.75))
    assert (exp.trainer.max_epochs, exp.data.batch_size, exp.data.val_size) == (300, 64, 5000)
    debug = load_experiment(DEBUG_CONFIG, ["--data.root", "x", "--model.lr=1"])
    assert (debug.trainer.limit_train_batches, debug.data.root, debug.model.lr) == (8, "x", 1.0)
    preset = load_experiment("densenet_tiny")
    assert preset.model.arch == PRESETS["densenet_tiny"] and preset.name == "densenet_tiny"
    # Lightning's "no limit" spellings mean no limit here too.
    unlimited = ["--trainer.max_steps=-1", "--trainer.limit_train_batches=1.0"]
    trainer = load_experiment("densenet_tiny", unlimited).trainer
    assert (trainer.max_steps, trainer.limit_train_batches) == (None, None)


def test_the_compute_recipes_pytorch_only_options_are_named() -> None:
    with pytest.warns(UserWarning) as caught:
        exp = load_experiment(REPO / "configs" / "cifar10_short.yaml")
    messages = sorted(str(w.message).split(" ")[0] for w in caught)
    assert messages == [
        "data.crop_padding",
        "model.budget_pflop",
        "model.norm_weight_decay",
        "model.progressive_size",
        "model.tta",
        "trainer.precision=bf16-mixed",
    ]
    assert exp.model.arch.stem == "whitening"  # built in Keras too (parity_tests)


def test_pytorch_only_options_are_ignored_with_a_warning() -> None:
    with pytest.warns(UserWarning) as caught:
        exp = load_experiment(REPO / "configs" / "cifar10_cpu.yaml")
    messages = sorted(str(w.message) for w in caught)
    assert [m.split(" ")[0] for m in messages] == [
        "model.budget_minutes",
        "model.progressive_size",
        "model.tta",
        "trainer.precision=bf16-mixed",
    ]
    assert all("is ignored" in m for m in messages)
    assert exp.model.channels_last and exp.model.compile  # read, not used


@pytest.mark.parametrize("path", FIT_CONFIGS, ids=lambda p: p.name)  # sweeps: fit configs + space
@pytest.mark.filterwarnings(
    "ignore:model.(budget_minutes|budget_pflop|tta|ema_decay|progressive_size|norm_weight_decay)"
    " is ignored"
)
@pytest.mark.filterwarnings("ignore:data.crop_padding and data.flip are ignored")
@pytest.mark.filterwarnings("ignore:trainer.precision=.* is ignored")
def test_every_config_of_the_repo_is_understood(path: Path) -> None:
    exp = load_experiment(path)  # a key the TensorFlow side does not know would raise
    assert exp.name == path.stem


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--model.lr=-1", r"model\.lr=-1 is invalid: use a positive number"),
        ("--model.momentum=1", r"model\.momentum=1 is invalid: use a fraction in \[0, 1\)"),
        ("--model.optimiser=sgd", "unrecognized arguments: --model.optimiser"),
        ("--model.schedule=linear", "model.schedule=linear is invalid: use one of step, cosine"),
        ("--model.milestones=[0.8, 0.2]", r"model\.milestones=.* increasing"),
        ("--data.batch_size=big", "data.batch_size='big' is invalid: use a whole number"),
        ("--data.dataset=mnist", "data.dataset=mnist is invalid: use one of cifar10"),
        ("--trainer.limit_train_batches=0.5", r"trainer\.limit_train_batches=0\.5 is invalid"),
        ("--model.arch=densenet_2", "Unknown DenseNet preset 'densenet_2'"),
        ("--optimizer.lr=0.1", "unrecognized arguments: --optimizer.lr"),
    ],
)
def test_bad_config_values_are_user_errors(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_experiment(DEBUG_CONFIG, [override])


def test_bad_config_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "typo.yaml").write_text("model:\n  optimiser: sgd\n")
    with pytest.raises(UserError, match=r"Unknown config key model\.optimiser"):
        load_experiment(tmp_path / "typo.yaml")
    with pytest.raises(UserError, match="'densenet_7' is neither a YAML file nor a preset"):
        load_experiment("densenet_7")


def test_cli_trains_the_densenet_and_reports_errors_in_one_line(
    data_config: DataConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--config", "densenet_tiny", "--data.dataset", "imagefolder"]
    args += [f"--data.root={data_config.root}", "--data.cache_dir", data_config.cache_dir]
    args += ["--data.val_size", "32", "--data.max_train_images", "64", "--batch-size", "16"]
    code = main(["train", *args, "--mode", "loop", "--steps", "3", "--root-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "loop: first step" in out and "steps/s" in out and "traces: 1" in out
    run = tmp_path / "tf" / "densenet_tiny" / "loop" / "version_0"
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3
    assert json.loads((run / "metrics.json").read_text())["batch_size"] == 16

    assert main(["train", *args, "--model.lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: model.lr=-1 is invalid: use a positive number.\n"
    assert main(["train", *args, "--mode", "turbo"]) == 2
    assert "mode=turbo is invalid: use one of eager, function" in capsys.readouterr().err


def test_cli_prints_the_config_with_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--config", str(DEBUG_CONFIG), "--model.lr", "0.3"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--trainer.max_epochs", "4", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    assert done.value.code == 0
    assert (printed["model"]["lr"], printed["trainer"]["max_epochs"]) == (0.3, 4)
    assert printed["model"]["arch"] == "densenet_tiny" and printed["mode"] == "function"


def test_one_batch_training_memorises_the_batch(exp: Experiment, splits: Splits) -> None:
    overfit = with_epochs(exp, 5)
    result = train(
        overfit,
        "loop",
        network="mlp",
        width=64,
        root_dir=None,
        splits=splits,
        one_batch=True,
        log=None,
    )
    losses = [e["train_loss"] for e in result.history]
    assert losses[-1] < 0.2 * losses[0] and result.history[-1]["train_acc"] > 0.9, losses
