"""What `python -m parity_tests.speed` times: the cases, the models and the shared settings.

A case is one way of running the training step (framework, graph mode, memory layout,
precision); a model is a DenseNet preset or a plain CNN / MLP of a given width. Plain
tables and parsing: this module imports no framework, so the driver can read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    # > 0: fewer steps per repeat, enough for about this many seconds. The option is
    # --repeat-seconds; the field keeps the name of the reports' `repeat_s` key.
    repeat_s: float = 0.0

    def as_args(self) -> list[str]:
        """`--batch-size 64 --steps 20 ...`: these settings in the options of
        `python -m parity_tests.speed` (the command line of its workers)."""
        options = {
            "--batch-size": self.batch_size,
            "--steps": self.steps,
            "--repeats": self.repeats,
            "--warmup": self.warmup,
            "--threads": self.threads,
            "--repeat-seconds": self.repeat_s,
        }
        return [str(part) for option, value in options.items() for part in (option, value)]


__all__ = [
    "CASES",
    "CPU_CASES",
    "GPU_ONLY",
    "IMAGE",
    "NUM_CLASSES",
    "Case",
    "ModelSpec",
    "Settings",
    "parse_model",
]
