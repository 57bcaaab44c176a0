"""TensorFlow training: every execution mode optimises the same objective, traced once.

Tolerances: eager, tf.function, the in-graph loop and Keras fit run the same kernels in the
same order, so they agree to float32 rounding (1e-6). XLA fuses and reorders reductions:
it agrees to 1e-4 relative after one step.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from lightning_densenet import PRESETS, UserError
from lightning_densenet.schedules import lr_factor
from tf_reference.__main__ import _MODES, main
from tf_reference.bench import benchmark_modes, markdown_table
from tf_reference.config import DataConfig, Experiment, load_experiment
from tf_reference.data import Splits, load_splits, train_batches
from tf_reference.optim import L2SGD, cross_entropy, make_optimizer
from tf_reference.train import (
    GRAPH_MODES,
    MODES,
    TrainStep,
    build_network,
    compile_loop,
    compile_step,
    train,
)

REPO = Path(__file__).resolve().parents[2]


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
        arch=PRESETS["densenet_tiny"],
        lr=0.05,
        schedule="constant",
        max_epochs=3,
        limit_val_batches=1,
        data=data_config,
    )


def batches(splits: Splits, n: int) -> list[tuple[tf.Tensor, tf.Tensor]]:
    ds = train_batches(splits.train, 32, splits.mean, splits.std, augment=False)
    return list(ds.take(n))


def fresh_step(exp: Experiment) -> TrainStep:
    keras.utils.set_random_seed(0)
    net = build_network("cnn", exp.arch, 10, (32, 32, 3), width=8, depth=3)
    return TrainStep(net, make_optimizer(exp, 100))


# --- Modes ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_lowers_the_loss_and_traces_once(
    mode: str, exp: Experiment, splits: Splits
) -> None:
    result = train(exp, mode, model="cnn", width=8, depth=3, root_dir=None, splits=splits, log=None)
    losses = [e["train_loss"] for e in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0] - 0.05, losses
    m = result.metrics
    assert m["steps"] == 12 and m["first_step_s"] > 0 and m["steps_per_s"] > 0
    assert 0 <= m["val_acc"] <= 1
    if mode in GRAPH_MODES:
        assert (m["traces"], m["retraces"]) == (1, 0)
    else:
        assert m["traces"] is None


def test_modes_follow_the_same_trajectory(exp: Experiment, splits: Splits) -> None:
    def losses(mode: str) -> np.ndarray:
        r = train(exp, mode, model="mlp", width=32, root_dir=None, splits=splits, log=None)
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
    exp = Experiment(name="t", lr=0.2, schedule="step", milestones=(0.5, 0.75))
    opt = make_optimizer(exp, total_steps=8)
    factor = lr_factor("step", 8, (0.5, 0.75))
    seen = []
    for step in range(10):
        opt.iterations.assign(step)
        seen.append(float(opt.learning_rate))
    expected = [0.2 * factor(min(s, 7)) for s in range(10)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert seen[3] == pytest.approx(0.2) and seen[4] == pytest.approx(0.02)
    adamw = make_optimizer(dataclasses.replace(exp, optimizer="adamw", weight_decay=0.05), 8)
    assert isinstance(adamw, keras.optimizers.AdamW) and adamw.weight_decay == 0.05


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_matches_keras(smoothing: float) -> None:
    logits = tf.constant(np.random.default_rng(1).normal(size=(6, 10)), tf.float32)
    labels = tf.constant([0, 3, 9, 2, 2, 5], tf.int64)
    ours = cross_entropy(labels, logits, smoothing)
    keras_ce = keras.losses.categorical_crossentropy(
        tf.one_hot(labels, 10), logits, from_logits=True, label_smoothing=smoothing
    )
    np.testing.assert_allclose(ours.numpy(), keras_ce.numpy(), rtol=1e-5)


# --- Runs, configs, CLI ---------------------------------------------------------------------


def test_run_directory_checkpoint_and_scalars(
    exp: Experiment, splits: Splits, tmp_path: Path
) -> None:
    short = dataclasses.replace(exp, max_epochs=1)
    result = train(
        short, "function", model="cnn", width=8, depth=3, root_dir=tmp_path, splits=splits, log=None
    )
    run = tmp_path / "tf" / "test-cnn" / "function" / "version_0"
    assert result.run_dir == run
    for name in ("config.yaml", "metrics.json", "model.weights.h5", "best.weights.h5"):
        assert (run / name).is_file(), name
    assert load_experiment(run / "config.yaml").to_dict() == short.to_dict()

    # The checkpoint restores the trained weights and the optimiser's step count.
    keras.utils.set_random_seed(1)
    net = build_network("cnn", exp.arch, 10, (32, 32, 3), width=8, depth=3)
    opt = make_optimizer(exp, 4)
    opt.build(net.trainable_variables)
    ckpt = tf.train.Checkpoint(model=net, optimizer=opt)
    ckpt.restore(tf.train.latest_checkpoint(run / "checkpoints")).assert_existing_objects_matched()
    assert int(opt.iterations) == 4
    for a, b in zip(net.weights, result.model.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    tags = set()
    for event_file in run.glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(event_file)):
            tags |= {v.tag for v in tf.compat.v1.Event.FromString(record.numpy()).summary.value}
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "steps_per_s"} <= tags

    again = train(
        short, "function", model="cnn", width=8, depth=3, root_dir=tmp_path, splits=splits, log=None
    )
    assert again.run_dir == run.parent / "version_1"  # never overwrites a run


def test_configs_are_read_as_lightning_reads_them() -> None:
    exp = load_experiment(REPO / "configs" / "cifar10_paper.yaml")
    assert exp.name == "cifar10_paper" and exp.arch == PRESETS["densenet_bc_100_k12"]
    assert (exp.optimizer, exp.lr, exp.momentum, exp.nesterov) == ("sgd", 0.1, 0.9, True)
    assert (exp.weight_decay, exp.schedule, exp.milestones) == (1e-4, "step", (0.5, 0.75))
    assert (exp.max_epochs, exp.data.batch_size, exp.data.val_size) == (300, 64, 5000)
    debug = load_experiment(REPO / "configs" / "debug.yaml", {"data.root": "x", "model.lr": 1})
    assert (debug.limit_train_batches, debug.data.root, debug.lr) == (8, "x", 1.0)
    preset = load_experiment("densenet_tiny")
    assert preset.arch == PRESETS["densenet_tiny"] and preset.name == "densenet_tiny"


FIT_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if "sweep" not in p.stem)


@pytest.mark.parametrize("path", FIT_CONFIGS, ids=lambda p: p.name)  # sweeps: fit configs + space
@pytest.mark.filterwarnings("ignore:model.(budget_minutes|tta|ema_decay) is ignored")
def test_every_config_of_the_repo_is_understood(path: Path) -> None:
    exp = load_experiment(path)  # a key the TensorFlow side does not know would raise
    assert exp.name == path.stem and exp.max_epochs >= 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model.lr": -1}, "model.lr=-1.0 is invalid"),
        ({"model.optimiser": "sgd"}, "Unknown key model.optimiser"),
        ({"model.schedule": "linear"}, "model.schedule='linear' is unknown"),
        ({"model.milestones": [0.8, 0.2]}, "model.milestones=.* increasing"),
        ({"data.batch_size": "big"}, "data.batch_size='big' is invalid: it must be a whole"),
        ({"data.dataset": "mnist"}, "data.dataset='mnist' is unknown"),
        ({"trainer.limit_train_batches": 0.5}, "trainer.limit_train_batches=0.5"),
        ({"model.arch": "densenet_2"}, "Unknown DenseNet preset 'densenet_2'"),
        ({"optimizer.lr": 0.1}, "Override 'optimizer.lr' is not a config key"),
    ],
)
def test_bad_config_values_are_user_errors(overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_experiment(REPO / "configs" / "debug.yaml", overrides)


def test_cli_trains_the_densenet_and_reports_errors_in_one_line(
    data_config: DataConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--config", "densenet_tiny", "--data.dataset", "imagefolder"]
    args += [f"--data.root={data_config.root}", "--data.cache_dir", data_config.cache_dir]
    args += ["--data.val_size", "32", "--data.max_train_images", "64", "--batch-size", "16"]
    code = main(["train", *args, "--mode", "loop", "--steps", "3", "--root-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "loop: first step" in out and "steps/s" in out and "traces: 1" in out
    assert (tmp_path / "tf" / "densenet_tiny" / "loop" / "version_0" / "metrics.json").is_file()

    assert main(["train", *args, "--model.lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: model.lr=-1.0 is invalid: use a positive learning rate such as 0.1.\n"


def test_the_cli_lists_the_training_modes() -> None:
    # __main__ keeps its own copy of the mode list, so that --help does not import TensorFlow.
    assert _MODES == MODES


def test_one_batch_training_memorises_the_batch(exp: Experiment, splits: Splits) -> None:
    overfit = dataclasses.replace(exp, max_epochs=5)
    result = train(
        overfit,
        "loop",
        model="mlp",
        width=64,
        root_dir=None,
        splits=splits,
        one_batch=True,
        log=None,
    )
    losses = [e["train_loss"] for e in result.history]
    assert losses[-1] < 0.2 * losses[0] and result.history[-1]["train_acc"] > 0.9, losses


def test_cli_bench_writes_its_table(
    data_config: DataConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "--config", "densenet_tiny", "--model", "mlp", "--width", "16"]
    args += ["--data.dataset=imagefolder", f"--data.root={data_config.root}"]
    args += [f"--data.cache_dir={data_config.cache_dir}", "--data.val_size=0"]
    args += ["--data.max_train_images=64", "--batch-size=16", "--one-batch"]
    args += ["--modes", "eager,function", "--steps", "2", "--repeats", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "| function |" in capsys.readouterr().out
    table = (tmp_path / "modes.md").read_text()
    assert table.startswith(f"`python -m tf_reference {' '.join(args)}`")
    assert "| eager |" in table and "| function |" in table
    assert main([*args[:-4], "--modes", "eager,turbo"]) == 2
    assert "--modes 'turbo' is unknown" in capsys.readouterr().err


def test_benchmark_rows_and_table(exp: Experiment, splits: Splits) -> None:
    rows = benchmark_modes(
        exp, ["eager", "loop"], model="mlp", width=16, steps=3, repeats=2, splits=splits, log=None
    )
    assert [r["mode"] for r in rows] == ["eager", "loop"]
    for r in rows:
        assert len(r["samples"]) == 2 and r["first_step_s"] > 0
        assert 0 < r["min"] <= r["steps_per_s"] <= r["max"]
    table = markdown_table(rows).splitlines()
    assert len(table) == 4 and table[2].startswith("| eager |") and "1.00x" in table[2]


def test_tf_reference_training_never_imports_torch() -> None:
    modules = "tf_reference.train, tf_reference.optim, tf_reference.bench, tf_reference.trace, "
    modules += "tf_reference.__main__, tf_reference.data"
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
