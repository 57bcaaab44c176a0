"""The PyTorch cases: the networks of the models, and a case's step ready to time.

Imported only by a worker process that times PyTorch (and by the FLOP count): it imports
torch, never TensorFlow.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from lightning_densenet.arch import resolve_arch
from lightning_densenet.errors import UserError
from lightning_densenet.model import build_model, count_parameters
from lightning_densenet.small_models import MLP, PlainCNN
from parity_tests.speed.cases import IMAGE, NUM_CLASSES, Case, ModelSpec, Settings
from parity_tests.speed.timing import Runner, max_rss_mb
from parity_tests.train_step import torch_train_step


def build_torch_model(spec: ModelSpec, memory_efficient: bool = False) -> nn.Module:
    """The PyTorch network of `spec` (an `nn.Module`, on the CPU, fp32)."""
    if spec.kind == "cnn":
        return PlainCNN(NUM_CLASSES, spec.width or 32, spec.depth or 6)
    if spec.kind == "mlp":
        return MLP(NUM_CLASSES, spec.width or 512, spec.depth or 2)
    if spec.kind == "torchvision":
        return torchvision_densenet(spec.preset or "", memory_efficient)
    return build_model(spec.preset or spec.name, NUM_CLASSES, memory_efficient=memory_efficient)


def torchvision_densenet(preset: str, memory_efficient: bool = False) -> nn.Module:
    """torchvision's `DenseNet` with a preset's sizes and our CIFAR stem (a 3x3 conv in
    place of its 7x7/2 conv, BN, ReLU and max pool): the same network as ours, so the
    speed of the two implementations compares like for like (the parity test checks
    the parameter count)."""
    # Here, not at the top: torchvision would add to every PyTorch worker's measured memory.
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


def torch_runner(spec: ModelSpec, case: Case, settings: Settings) -> Runner:
    """`case` on `spec`: build_model + SGD(nesterov) + `torch_train_step` on one synthetic
    batch, on the GPU if there is one."""
    torch.set_num_threads(settings.threads)
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # as the training CLI does
    elif case.gpu_only:
        raise UserError(
            f"torch.compile mode {case.compile_mode!r} needs a GPU; on CPU use torch-compile."
        )
    base_mb = max_rss_mb()
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

    def step() -> torch.Tensor:
        if cuda_graphs:  # a new iteration: the graphs' previous outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        return torch_train_step(net, optimizer, x, y, bf16=case.bf16)

    one_step = torch.compile(step) if case.mode == "compile-step" else step

    def run(n: int) -> torch.Tensor:
        for _ in range(n):
            loss = one_step()
        return loss

    def peak_mb() -> float:
        if device.type == "cuda":
            return torch.cuda.max_memory_allocated() / 2**20
        return max_rss_mb()

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


__all__ = ["build_torch_model", "torch_runner", "torchvision_densenet"]
