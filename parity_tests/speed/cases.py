"""What `python -m parity_tests.speed` times, and the worker that times it.

A case is one way of running the training step (framework, graph mode, memory layout,
precision); a model is a DenseNet preset or a plain CNN / MLP of a given width. The worker
functions run inside a fresh interpreter that imports one framework only (Triton and
TensorFlow must not share a process unless Triton loads first), and return plain numbers:

    run_case      times one case on one model: first step apart, warm-up, repeats
    count_flops   FLOPs of one training step per image (torch.utils.flop_counter)
    measure_peak  the machine's matmul and conv GFLOP/s, fp32 and bf16, for comparison

This module imports no framework at import time: the driver uses its tables.
"""

from __future__ import annotations

import math
import re
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from lightning_densenet.arch import resolve_arch
from lightning_densenet.errors import UserError

NUM_CLASSES = 10
IMAGE = (32, 32, 3)  # CIFAR; H, W, C


@dataclass(frozen=True)
class Case:
    """One way to run the training step."""

    framework: str  # "torch" or "tf"
    mode: str  # torch: eager, compile, compile-step; tf: tf_reference.config.MODES
    compile_mode: str | None = None  # torch.compile(mode=...): reduce-overhead, max-autotune
    channels_last: bool = False  # torch: model and input in NHWC (TF is NHWC anyway)
    bf16: bool = False  # torch.autocast(bfloat16) / Keras policy "mixed_bfloat16"
    memory_efficient: bool = False  # torch DenseNets: checkpointed concat-BN-ReLU-conv1x1
    gpu_only: bool = False

    @property
    def compiled(self) -> bool:
        """Whether torch.compile runs (its compile time depends on Inductor's disk cache)."""
        return self.framework == "torch" and self.mode != "eager"


CASES: dict[str, Case] = {
    "torch-eager": Case("torch", "eager"),
    "torch-channels-last": Case("torch", "eager", channels_last=True),
    "torch-bf16": Case("torch", "eager", channels_last=True, bf16=True),
    "torch-compile": Case("torch", "compile"),
    # torch.compile of the whole step (forward, backward, optimiser; split at .backward())
    "torch-compile-step": Case("torch", "compile-step"),
    "torch-compile-bf16": Case("torch", "compile", channels_last=True, bf16=True),
    "torch-memory-efficient": Case("torch", "eager", memory_efficient=True),
    "torch-compile-memory-efficient": Case("torch", "compile", memory_efficient=True),
    "torch-compile-reduce-overhead": Case("torch", "compile", "reduce-overhead", gpu_only=True),
    "torch-compile-max-autotune": Case("torch", "compile", "max-autotune", gpu_only=True),
    "torch-compile-bf16-reduce-overhead": Case(
        "torch", "compile", "reduce-overhead", channels_last=True, bf16=True, gpu_only=True
    ),
    "tf-eager": Case("tf", "eager"),
    "tf-function": Case("tf", "function"),  # the step in tf.function(jit_compile=False)
    "tf-loop": Case("tf", "loop"),  # all steps of a call inside one tf.function
    "tf-xla": Case("tf", "xla"),  # the step in tf.function(jit_compile=True)
    "tf-bf16": Case("tf", "function", bf16=True),  # tf.function + Keras mixed_bfloat16
    # Keras' own loop: compile(jit_compile=False / True, run_eagerly=True) + fit
    "tf-fit": Case("tf", "fit"),
    "tf-fit-xla": Case("tf", "fit-xla"),
    "tf-fit-eager": Case("tf", "fit-eager"),
}
GPU_ONLY = tuple(name for name, c in CASES.items() if c.gpu_only)
CPU_CASES = tuple(name for name in CASES if name not in GPU_ONLY)


@dataclass(frozen=True)
class ModelSpec:
    """`densenet_bc_100_k12` (a preset), `cnn:w32` / `cnn:w32d6`, `mlp:w512` / `mlp:w512d2`,
    `tv:densenet_bc_100_k12` (torchvision's DenseNet of that preset, given the CIFAR stem;
    PyTorch only); `@B` after any of them (`densenet_100_k12@16`) trains that model on
    batches of B."""

    name: str  # as given, the model's key in the report
    kind: str  # densenet, torchvision, cnn or mlp
    preset: str | None = None  # DenseNet preset name
    width: int | None = None
    depth: int | None = None
    batch_size: int | None = None  # None: the report's --batch-size


_SMALL = re.compile(r"(cnn|mlp):w(\d+)(?:d(\d+))?")
_DEFAULT_DEPTH = {"cnn": 6, "mlp": 2}  # tf_reference.small_models' defaults


def parse_model(name: str) -> ModelSpec:
    """A model name as `--arch` takes it; an unknown one is a `UserError`."""
    model, at, batch = name.partition("@")
    if at and not (batch.isdigit() and int(batch) > 0):
        raise UserError(f"--arch {name!r}: after @ comes a batch size, as in {model}@16.")
    batch_size = int(batch) if at else None
    if match := _SMALL.fullmatch(model):
        kind, width, depth = match.groups()
        depth_n = int(depth) if depth else _DEFAULT_DEPTH[kind]
        minimum = 3 if kind == "cnn" else 1
        if int(width) < 1 or depth_n < minimum:
            raise UserError(f"--arch {name!r}: use a width of at least 1, depth {minimum}+.")
        return ModelSpec(name, kind, None, int(width), depth_n, batch_size)
    if model.startswith("tv:"):
        cfg = resolve_arch(model[3:])
        if (
            not cfg.bottleneck
            or cfg.compression != 0.5
            or cfg.stem != "cifar"
            or not cfg.batch_norm
        ):
            raise UserError(
                f"--arch {name!r}: torchvision's DenseNet is always DenseNet-BC with theta 0.5 "
                "and batch norm; name such a preset (densenet_bc_100_k12)."
            )
        return ModelSpec(name, "torchvision", model[3:], batch_size=batch_size)
    if model.startswith(("cnn", "mlp")):
        raise UserError(f"--arch {name!r} is not understood: write cnn:w32, mlp:w512d2, ...")
    resolve_arch(model)  # an unknown preset raises its own UserError
    return ModelSpec(name, "densenet", model, batch_size=batch_size)


@dataclass(frozen=True)
class Settings:
    """What every case of one report shares."""

    batch_size: int = 64
    steps: int = 20  # steps per timed repeat (the most, with repeat_s)
    repeats: int = 5
    warmup: int = 3  # untimed steps after the first
    threads: int = 1  # torch.set_num_threads / TF's intra- and inter-op pools / OMP_NUM_THREADS
    repeat_s: float = 0.0  # > 0: fewer steps per repeat, enough for about this many seconds

    def as_args(self) -> list[str]:
        """`--batch-size 64 --steps 20 ...`: the worker's command line."""
        return [
            str(part)
            for f in fields(self)
            for part in (f"--{f.name.replace('_', '-')}", getattr(self, f.name))
        ]


# --- One case ---------------------------------------------------------------------------------


def run_case(name: str, spec: ModelSpec, settings: Settings, compile_only: bool = False) -> dict:
    """Times case `name` on `spec` in this process and returns its raw numbers. The first
    step (tracing, compilation) is timed apart; `compile_only` stops after it."""
    case = CASES[name]
    make = _torch_runner if case.framework == "torch" else _tf_runner
    run, sync, peak_mb, info = make(spec, case, settings)

    start = time.perf_counter()
    final_loss = sync(run(1))
    first_step_s = time.perf_counter() - start
    row: dict[str, Any] = {"case": name, "arch": spec.name, "model_kind": spec.kind}
    row |= {"framework": case.framework, **asdict(settings), **info}
    row |= {"first_step_s": first_step_s, "compile_only": compile_only}
    if compile_only:
        return row | {"final_loss": final_loss, "peak_mb": peak_mb()}

    warm_s = []
    for _ in range(settings.warmup):
        start = time.perf_counter()
        sync(run(1))
        warm_s.append(time.perf_counter() - start)
    steps = settings.steps
    if settings.repeat_s > 0:  # about repeat_s per repeat: many steps of a small model only
        one_step = min(warm_s) if warm_s else first_step_s
        steps = max(1, min(steps, math.ceil(settings.repeat_s / one_step)))
    ms_per_step = []
    for _ in range(settings.repeats):
        start = time.perf_counter()
        final_loss = sync(run(steps))  # waits for the last step (GPU work is asynchronous)
        ms_per_step.append(1e3 * (time.perf_counter() - start) / steps)
    return row | {
        "steps_timed": steps,
        "ms_per_step": ms_per_step,
        "final_loss": final_loss,
        "peak_mb": peak_mb(),
    }


def _max_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes there, KiB here


def build_torch_model(spec: ModelSpec, memory_efficient: bool = False) -> Any:
    """The PyTorch network of `spec` (an `nn.Module`, on the CPU, fp32)."""
    from lightning_densenet.model import build_model
    from lightning_densenet.small_models import MLP, PlainCNN

    if spec.kind == "cnn":
        return PlainCNN(NUM_CLASSES, spec.width or 32, spec.depth or 6)
    if spec.kind == "mlp":
        return MLP(NUM_CLASSES, spec.width or 512, spec.depth or 2)
    if spec.kind == "torchvision":
        return torchvision_densenet(spec.preset or "", memory_efficient)
    return build_model(spec.preset or spec.name, NUM_CLASSES, memory_efficient=memory_efficient)


def torchvision_densenet(preset: str, memory_efficient: bool = False) -> Any:
    """torchvision's `DenseNet` with a preset's sizes and our CIFAR stem (a 3x3 conv in
    place of its 7x7/2 conv, BN, ReLU and max pool): the same network as ours, so the
    speed of the two implementations compares like for like (the parity test checks
    the parameter count)."""
    from collections import OrderedDict

    from torch import nn
    from torchvision.models import DenseNet as TorchvisionDenseNet

    cfg = resolve_arch(preset)
    model = TorchvisionDenseNet(
        growth_rate=cfg.growth_rate,
        block_config=cfg.block_config,
        num_init_features=cfg.init_features,
        bn_size=cfg.bn_size,
        drop_rate=cfg.drop_rate,
        num_classes=NUM_CLASSES,
        memory_efficient=memory_efficient,
    )
    stem = nn.Conv2d(3, cfg.init_features, 3, padding=1, bias=False)
    model.features = nn.Sequential(
        OrderedDict([("conv0", stem), *list(model.features.named_children())[4:]])
    )
    return model


def _torch_runner(spec: ModelSpec, case: Case, settings: Settings) -> tuple:
    import torch
    import torch.nn.functional as F

    from lightning_densenet.model import count_parameters

    torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as the training CLI does
    elif case.gpu_only:
        raise UserError(
            f"torch.compile mode {case.compile_mode!r} needs a GPU; on CPU use torch-compile."
        )
    base_mb = _max_rss_mb()
    layout = torch.channels_last if case.channels_last else torch.contiguous_format
    model = build_torch_model(spec, case.memory_efficient).to(device, memory_format=layout)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4
    )
    net = torch.compile(model, mode=case.compile_mode) if case.mode == "compile" else model
    x = torch.randn(settings.batch_size, IMAGE[2], *IMAGE[:2], device=device)
    x = x.contiguous(memory_format=layout)
    y = torch.randint(0, NUM_CLASSES, (settings.batch_size,), device=device)
    cuda_graphs = case.compile_mode == "reduce-overhead"

    def step() -> Any:
        if cuda_graphs:  # a new iteration: the graphs' previous outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=case.bf16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    one_step = torch.compile(step) if case.mode == "compile-step" else step

    def run(n: int) -> Any:
        for _ in range(n):
            loss = one_step()
        return loss

    def peak_mb() -> float:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return _max_rss_mb()

    info = {
        "params": count_parameters(model),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "device_type": device.type,
        "dtype": "bf16" if case.bf16 else "fp32",
        "memory": "cuda max allocated" if device.type == "cuda" else "max RSS",
        "base_mb": 0.0 if device.type == "cuda" else base_mb,
        "torch": torch.__version__,
    }
    return run, lambda loss: float(loss.item()), peak_mb, info


def build_tf_model(spec: ModelSpec) -> Any:
    """The Keras network of `spec` (functional DenseNet, or a `small_models` network)."""
    from tf_reference.network import build_network

    if spec.kind == "torchvision":
        raise UserError(f"{spec.name} is torchvision's DenseNet: it has no Keras twin.")
    arch = resolve_arch(spec.preset) if spec.preset else None  # cnn and mlp have none
    return build_network(spec.kind, arch, NUM_CLASSES, IMAGE, width=spec.width, depth=spec.depth)


def _tf_runner(spec: ModelSpec, case: Case, settings: Settings) -> tuple:
    import keras
    import tensorflow as tf

    from tf_reference.optim import L2SGD, cross_entropy
    from tf_reference.steps import TrainStep, compile_loop, compile_step
    from tf_reference.train import configure_threads

    configure_threads(settings.threads)
    base_mb = _max_rss_mb()
    keras.utils.set_random_seed(0)
    if case.bf16:  # layers compute in bf16, variables stay fp32
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_tf_model(spec)
    optimizer = L2SGD(0.1, momentum=0.9, nesterov=True, weight_decay_l2=1e-4)
    train_step = TrainStep(model, optimizer)
    batch = settings.batch_size
    x = tf.random.normal((batch, *IMAGE), seed=0)
    y = tf.random.uniform((batch,), 0, NUM_CLASSES, tf.int64, seed=0)

    if case.mode == "loop":  # tf_reference.train's loop mode: n steps per call, one trace
        run_steps = compile_loop(train_step)
        batches = iter(tf.data.Dataset.from_tensors((x, y)).repeat())

        def run(n: int) -> Any:
            loss_sum, _ = run_steps(batches, tf.constant(n, tf.int32))
            return loss_sum / n

    elif case.mode.startswith("fit"):  # tf_reference.train's fit modes; one fit call per run
        model.compile(
            optimizer=optimizer,
            loss=cross_entropy,
            jit_compile=case.mode == "fit-xla",
            run_eagerly=case.mode == "fit-eager",
        )
        repeated = tf.data.Dataset.from_tensors((x, y)).repeat()

        def run(n: int) -> Any:
            history = model.fit(repeated, epochs=1, steps_per_epoch=n, shuffle=False, verbose=0)
            return history.history["loss"][-1]

    else:
        one_step = compile_step(train_step, case.mode, batch, IMAGE)

        def run(n: int) -> Any:
            for _ in range(n):
                loss, _ = one_step(x, y)
            return loss

    gpus = tf.config.list_physical_devices("GPU")
    info = {
        "params": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
        "device": "gpu" if gpus else "cpu",
        "device_type": "cuda" if gpus else "cpu",
        "dtype": "bf16" if case.bf16 else "fp32",
        "memory": "max RSS",
        "base_mb": base_mb,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    return run, lambda loss: float(loss), _max_rss_mb, info


# --- FLOPs and the machine's peak -------------------------------------------------------------


def count_flops(spec: ModelSpec, batch: int = 2) -> dict[str, Any]:
    """FLOPs per image of one training step (forward and backward; the optimiser's
    elementwise update is not counted) and of the forward pass alone, as
    `torch.utils.flop_counter` counts them: matmuls and convolutions, 2 per multiply-add.
    Both are linear in the batch, so a small one gives the per-image figure."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_densenet.model import count_parameters

    torch.manual_seed(0)
    model = build_torch_model(spec)
    x = torch.randn(batch, IMAGE[2], *IMAGE[:2])
    y = torch.randint(0, NUM_CLASSES, (batch,))
    with FlopCounterMode(display=False) as forward:
        logits = model(x)
    with FlopCounterMode(display=False) as backward:
        F.cross_entropy(logits, y).backward()
    fwd, bwd = forward.get_total_flops(), backward.get_total_flops()
    return {
        "params": count_parameters(model),
        "forward_flops_per_image": fwd / batch,
        "flops_per_image": (fwd + bwd) / batch,
    }


def measure_peak(threads: int, repeats: int = 5) -> dict[str, dict[str, Any]]:
    """GFLOP/s of a large matmul and of a 3x3 convolution (NHWC), fp32 and bf16, on the CPU
    and, if there is one, the GPU: the best of `repeats` timed runs after two warm-ups. On
    the GPU, fp32 matmuls use TF32 as the timed cases do (`set_float32_matmul_precision`)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if "cuda" in devices:
        torch.set_float32_matmul_precision("high")
    out: dict[str, dict[str, Any]] = {}
    for device in devices:
        on_gpu = device == "cuda"
        n = 8192 if on_gpu else 2048  # matmul n x n x n
        batch, channels, size = (256, 256, 32) if on_gpu else (64, 128, 16)
        numbers: dict[str, Any] = {}
        for dtype_name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last)
            w = torch.randn(channels, channels, 3, 3, device=device, dtype=dtype)
            w = w.contiguous(memory_format=torch.channels_last)
            conv_flops = 2 * batch * size * size * channels * channels * 9
            mm_s = _best_s(repeats, torch.mm, a, b)
            conv_s = _best_s(repeats, F.conv2d, x, w, padding=1)
            numbers[f"matmul_{dtype_name}"] = 2 * n**3 / mm_s / 1e9
            numbers[f"conv_{dtype_name}"] = conv_flops / conv_s / 1e9
        numbers["matmul_size"], numbers["conv_shape"] = n, f"{batch}x{channels}x{size}x{size}"
        out[device] = numbers
    return out


def _best_s(repeats: int, op: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times = []
    for i in range(repeats + 2):
        sync()
        start = time.perf_counter()
        op(*args, **kwargs)
        sync()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return min(times)


__all__ = [
    "CASES",
    "CPU_CASES",
    "GPU_ONLY",
    "IMAGE",
    "NUM_CLASSES",
    "Case",
    "ModelSpec",
    "Settings",
    "build_tf_model",
    "build_torch_model",
    "count_flops",
    "measure_peak",
    "parse_model",
    "run_case",
]
