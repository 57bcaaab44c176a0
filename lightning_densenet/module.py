"""The LightningModule: a DenseNet, its loss, metrics, optimiser and schedule.

The network stays a plain `nn.Module` (`self.model`); `compile=True` compiles it in place
with `nn.Module.compile`, so checkpoints hold `model.features...` keys with no
`_orig_mod.` prefix and load into an uncompiled model with `strict=True`.
"""

from __future__ import annotations

from typing import Any, Literal

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_densenet.arch import DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError
from lightning_densenet.model import DenseNet
from lightning_densenet.schedules import Schedule, lr_factor

Optimizer = Literal["sgd", "adamw"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune"]


class DenseNetClassifier(pl.LightningModule):
    """Image classification with a DenseNet. Defaults are the paper's CIFAR recipe.

    Args:
        arch: a preset name (`densenet_bc_100_k12`) or the architecture fields.
        num_classes: set from the data by the CLI.
        optimizer: `sgd` (the paper: Nesterov momentum 0.9) or `adamw`.
        lr: peak learning rate (0.1 for SGD at batch 64 in the paper).
        weight_decay: for SGD an L2 term on every weight (the paper's 1e-4);
            for AdamW the decoupled decay.
        schedule: `step` divides lr by 10 at each of `milestones` (fractions of training;
            the paper: 50% and 75%); `cosine` anneals to 0; `onecycle` warms up for
            `warmup` of training then anneals; `constant` keeps lr.
        label_smoothing: for the cross-entropy loss (0 in the paper).
        compile: `torch.compile` the network (not the LightningModule).
        compile_mode: torch.compile's mode; `reduce-overhead` uses CUDA graphs on GPU.
        memory_efficient: gradient checkpointing inside dense layers (same math, less memory).
        channels_last: NHWC memory format (same math; faster convs on GPUs with tensor cores).
    """

    def __init__(
        self,
        arch: str | DenseNetConfig = "densenet_bc_100_k12",
        num_classes: int = 10,
        optimizer: Optimizer = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 1e-4,
        schedule: Schedule = "step",
        milestones: tuple[float, ...] = (0.5, 0.75),
        warmup: float = 0.3,
        label_smoothing: float = 0.0,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        memory_efficient: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(arch, DenseNetConfig):
            arch = arch.to_dict()  # store plain data in hparams so checkpoints load anywhere
        self.save_hyperparameters()
        if lr <= 0:
            raise UserError(f"model.lr={lr} is invalid: use a positive learning rate.")
        if not 0 <= label_smoothing < 1:
            raise UserError(f"model.label_smoothing={label_smoothing} must lie in [0, 1).")
        if any(not 0 < m < 1 for m in milestones) or list(milestones) != sorted(milestones):
            raise UserError(
                f"model.milestones={list(milestones)} must be increasing fractions of training "
                "in (0, 1), e.g. [0.5, 0.75]."
            )
        self.model = DenseNet(resolve_arch(arch), num_classes, memory_efficient, channels_last)
        self.compiled = False
        self.example_input_array = torch.zeros(
            2, 3, 32, 32
        )  # layer shapes and FLOPs in the summary
        top_k = (1, 5) if num_classes >= 100 else (1,)
        for stage in ("train", "val", "test"):
            for k in top_k:
                metric = MulticlassAccuracy(num_classes, top_k=k, average="micro")
                setattr(self, f"{stage}_acc{'' if k == 1 else k}", metric)

    def configure_model(self) -> None:
        # Called by the Trainer once the module is on its device; compiling here rather than
        # in __init__ keeps a plain module for checkpoint loading and for `validate`/`test`
        # runs that do not ask for compilation.
        if self.hparams.compile and not self.compiled:
            self.model.compile(
                mode=None if self.hparams.compile_mode == "default" else self.hparams.compile_mode
            )
            self.compiled = True

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        smoothing = self.hparams.label_smoothing if stage == "train" else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        for k in (1, 5):
            metric = getattr(self, f"{stage}_acc{'' if k == 1 else k}", None)
            if metric is not None:
                metric(logits, y)
                name = f"{stage}/acc" if k == 1 else f"{stage}/acc_top5"
                self.log(name, metric, on_step=False, on_epoch=True, prog_bar=k == 1)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self(x).float().softmax(dim=1)
        confidence, label = probs.max(dim=1)
        return {"label": label, "confidence": confidence}

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params = self.model.parameters()
        optimizer: torch.optim.Optimizer
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                params,
                lr=hp.lr,
                momentum=hp.momentum,
                nesterov=hp.nesterov,
                weight_decay=hp.weight_decay,
            )
        else:
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        factor = lr_factor(hp.schedule, total, hp.milestones, hp.warmup)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }


def load_network(checkpoint: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """The plain `DenseNet` of a Lightning checkpoint, compiled or not, loaded with strict=True."""
    module = DenseNetClassifier.load_from_checkpoint(
        checkpoint, map_location=map_location, compile=False
    )
    return module.model.eval()
