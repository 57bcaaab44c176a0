"""The LightningModule: a DenseNet, its loss, metrics, optimiser and schedule.

The network stays a plain `nn.Module` (`self.model`); `compile=True` compiles it in place
with `nn.Module.compile`, so checkpoints hold `model.features...` keys with no
`_orig_mod.` prefix and load into an uncompiled model with `strict=True`.

Options for fast, small-budget training (each off by default, so the paper's recipe is
unchanged): `budget_minutes` and `budget_pflop` (a schedule on the fraction of a time or
compute budget used, that always finishes), `ema_decay` (evaluate and save an exponential
moving average of the weights, through Lightning's `EMAWeightAveraging`), `lookahead_every`
(train from a slow average of the weights and BatchNorm statistics: `lookahead.py`), `tta`
and `tta_shift` (average the logits of mirrored and shifted views), `progressive_size`
(train on smaller images first), and for BatchNorm and biases `norm_weight_decay` (their
decay), `norm_scale` (BatchNorm's scale frozen at 1) and `norm_lr_scale` (their own lr).

Training compute is counted as it goes: `train/pflop` (every image trained on times the
network's forward and backward FLOPs at the size it was trained at, all processes together)
and, per epoch, `train/gflops_per_s` (that compute over the budget's clock: compilation and
validation included, the rate that turns PFLOP into minutes).
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lightning_densenet.arch import DenseNetConfig, resolve_arch
from lightning_densenet.errors import UserError
from lightning_densenet.flops import training_flops_per_image
from lightning_densenet.lookahead import lookahead_decay, lookahead_step, slow_copy
from lightning_densenet.model import DenseNet, freeze_norm_scales
from lightning_densenet.options import (
    CompileMode,
    ModelBlock,
    Optimizer,
    Schedule,
    check_block,
    check_milestones,
)
from lightning_densenet.schedules import image_size, lr_factor


class DenseNetClassifier(pl.LightningModule):
    """Image classification with a DenseNet. Defaults are the paper's CIFAR recipe.

    Args:
        arch: a preset name (`densenet_bc_100_k12`) or the architecture fields.
        num_classes: set from the data by the CLI.
        optimizer: `sgd` (the paper: Nesterov momentum 0.9) or `adamw`.
        lr: peak learning rate (0.1 for SGD at batch 64 in the paper).
        weight_decay: for SGD an L2 term on every weight (the paper's 1e-4);
            for AdamW the decoupled decay.
        norm_weight_decay: the decay of BatchNorm's scales and shifts and of every bias
            (None: `weight_decay`, as in the paper). 0 is usual in fast CIFAR training: these
            parameters do not set a layer's scale, so decaying them only pulls them to 0.
        norm_scale: train BatchNorm's scales (the paper). False freezes them at 1, as airbench
            does: a ReLU and a convolution follow each BatchNorm, so the scale only repeats
            what the next convolution's weights can learn.
        norm_lr_scale: the learning rate of BatchNorm's shifts (and scales) and of every bias,
            as a multiple of `lr` (1: the same; airbench trains its shifts 64 times faster).
        schedule: `step` divides lr by 10 at each of `milestones` (fractions of training;
            the paper: 50% and 75%); `cosine` anneals to 0; `onecycle` warms up for
            `warmup` of training then anneals; `constant` keeps lr.
        label_smoothing: for the cross-entropy loss (0 in the paper).
        compile: `torch.compile` the network (not the LightningModule).
        compile_mode: torch.compile's mode; `reduce-overhead` uses CUDA graphs on GPU.
        memory_efficient: gradient checkpointing inside dense layers (same math, less memory).
        channels_last: NHWC memory format (same math; faster convs on GPUs with tensor cores
            and on CPUs with oneDNN).
        budget_minutes: train for this long (the clock starts with training and includes
            compilation and validation; it survives a resume). The schedule then runs on the
            fraction of the budget used, or of the steps when those run out first, so the
            learning rate reaches its end exactly when training stops: a recipe that always
            finishes, on a fast machine or a slow one. `trainer.max_epochs` stays an upper
            bound.
        budget_pflop: train on this much compute, in PFLOP (10^15 floating-point
            operations: every image trained on times the network's forward and backward
            FLOPs at its size, all processes together). The schedule runs on the fraction
            of it used, as with `budget_minutes` but the same on every machine: a recipe
            that gives the same network on a fast machine or a slow one, in more or less time.
        ema_decay: > 0 keeps an exponential moving average of the weights (and BN statistics)
            with this decay per step; validation runs on it and checkpoints save it as the
            model's `state_dict`, so `test` and `predict` use it (the raw weights are kept in
            the checkpoint too, under `current_model_state`).
        lookahead_every: > 0 keeps a slow copy of the weights and BatchNorm statistics that
            every this many steps moves towards the trained ones, which are then set to it
            (`lookahead.py`; airbench: 5); the last step sets the network to the slow copy.
            0: off.
        lookahead_decay: the slow copy's per-step decay at the end of training; it grows from
            0 as the cube of the fraction of training done.
        tta: evaluate on the mean logits of each image and its horizontal mirror
            (validation, test and predict; training is unchanged).
        tta_shift: with `tta`, also the views shifted diagonally by this many pixels, up-left
            and down-right (reflected at the border), each with its mirror: 6 views,
            weighted 1/2 for the unshifted pair and 1/4 for each shifted pair. 0: off.
        progressive_size: progressive resizing: training starts on images downscaled to
            this many pixels wide (bilinear, antialiased, after augmentation) and grows to
            the data's own size by `progressive_until` of training, in steps of 8 pixels;
            the rest of training, and every evaluation, is at full size. An early epoch at
            24 of 32 pixels costs about (24/32)^2 of one at full size. With `compile`, each
            size compiles its own static graph (`dynamic=False`), once.
        progressive_until: the fraction of training (of the steps, or of `budget_minutes`)
            by which the image size has grown to full.
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
        norm_weight_decay: float | None = None,
        norm_scale: bool = True,
        norm_lr_scale: float = 1.0,
        schedule: Schedule = "step",
        milestones: tuple[float, ...] = (0.5, 0.75),
        warmup: float = 0.3,
        label_smoothing: float = 0.0,
        compile: bool = False,
        compile_mode: CompileMode = "default",
        memory_efficient: bool = False,
        channels_last: bool = False,
        budget_minutes: float | None = None,
        budget_pflop: float | None = None,
        ema_decay: float = 0.0,
        lookahead_every: int = 0,
        lookahead_decay: float = 0.95,
        tta: bool = False,
        tta_shift: int = 0,
        progressive_size: int | None = None,
        progressive_until: float = 0.5,
    ) -> None:
        super().__init__()
        if isinstance(arch, DenseNetConfig):
            arch = arch.to_dict()  # store plain data in hparams so checkpoints load anywhere
        self.save_hyperparameters()
        # The ranges are those options.py declares for the model block (tf_reference's too).
        check_block("model", ModelBlock, self.hparams)
        check_milestones(milestones)
        self.model = DenseNet(resolve_arch(arch), num_classes, memory_efficient, channels_last)
        if not norm_scale:
            freeze_norm_scales(self.model)
        self._slow: dict[str, Tensor] | None = None  # lookahead's slow copy (lookahead.py)
        self._lookahead_step = -1  # the optimiser step it last ran at
        self.compiled = False
        # Layer shapes and FLOPs in the summary (dropped when compiling: see `setup`).
        self.example_input_array: Tensor | None = torch.zeros(2, 3, 32, 32)
        self._eval_batch = 0  # the batch size the compiled eval graph was built for
        self._budget_used_s = 0.0  # training time of earlier runs resumed from
        self._budget_clock: float | None = None
        self.clock = time.perf_counter  # the budget's clock (a test may run it fast)
        self._total = 1  # optimiser steps of the whole training, once the trainer knows them
        # The fraction of the time or compute budget used, decided once per step for every
        # process (see `_budget_progress`): the lr, image size and stop all read it.
        self._budget_fraction = 0.0
        self.flops_done = 0.0  # training FLOPs so far, all processes, resumed runs included
        self._flops_per_image: dict[tuple[int, int], float] = {}  # by (height, width)
        # Per process and batch, read by Lightning's ThroughputMonitor (`.../flops_per_sec`).
        self.flops_per_batch = 0.0
        # Logged as `train/acc`, `val/acc`, `test/acc` (and `.../acc_top5` with 100 classes).
        self.train_metrics = _accuracy(num_classes, "train/")
        self.val_metrics = _accuracy(num_classes, "val/")
        self.test_metrics = _accuracy(num_classes, "test/")
        # Each split's epoch loss, the mean over every image of every process (see `_step`).
        splits = ("train/", "val/", "test/")  # by the metrics' prefix
        self.mean_losses = nn.ModuleDict({s: MeanMetric(nan_strategy="disable") for s in splits})

    def setup(self, stage: str) -> None:
        # Compiling here rather than in __init__ keeps a plain module for checkpoint loading;
        # here rather than in configure_model, because EMAWeightAveraging copies the module
        # in its own setup (which runs first) and must copy the plain one.
        if self.hparams.compile and not self.compiled:
            self.model.compile(
                mode=None if self.hparams.compile_mode == "default" else self.hparams.compile_mode,
                # A static graph per image size; torch's default would turn to one graph
                # with dynamic shapes at the second size, slower on every step after it.
                dynamic=False if self.hparams.progressive_size else None,
            )
            self.compiled = True
            # The summary's forward pass would compile one more graph for its batch of 2.
            self.example_input_array = None

    def configure_callbacks(self) -> list[Callback]:
        if not self.hparams.ema_decay:
            return []
        return [EMAWeightAveraging(decay=self.hparams.ema_decay)]

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _eval_logits(self, x: Tensor) -> Tensor:
        """Logits in evaluation, with flip TTA if asked; never a new graph for a short batch.

        A compiled network would compile a second (dynamic-shape) graph for the last, smaller
        evaluation batch. In eval mode each image's output is independent of the others
        (BatchNorm uses its running statistics), so the short batch is padded with zeros
        to the compiled size and the padding's outputs are dropped.
        """
        n = x.shape[0]
        if self.compiled:
            if n > self._eval_batch:
                self._eval_batch = n
            elif n < self._eval_batch:
                x = F.pad(x, (0, 0, 0, 0, 0, 0, 0, self._eval_batch - n))
        if not self.hparams.tta:
            return self(x)[:n]
        logits = self._mirrored_logits(x)
        if shift := self.hparams.tta_shift:
            up_left, down_right = _shifted(x, shift)
            shifted = self._mirrored_logits(up_left) + self._mirrored_logits(down_right)
            logits = (logits + shifted / 2) / 2
        return logits[:n]

    def _mirrored_logits(self, x: Tensor) -> Tensor:
        return (self(x) + self(x.flip(3))) / 2  # the mirror image (NCHW: W is dim 3)

    def _step(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection) -> Tensor:
        x, y = batch
        training = metrics is self.train_metrics
        logits = self(x) if training else self._eval_logits(x)
        smoothing = self.hparams.label_smoothing if training else 0.0
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing)
        if training:  # the step's loss: the mean over the processes' equal batches
            self.log(
                "train/loss_step", loss, on_step=True, on_epoch=False, prog_bar=True, sync_dist=True
            )
        # The epoch's, over every image of every process: torchmetrics sums the states, exact
        # with unequal shares (41 validation images on 2). One value per image, as
        # nan_strategy="disable" (no host sync) drops a weight (Lightning-AI/torchmetrics#3434).
        mean_loss = self.mean_losses[metrics.prefix]
        mean_loss.update(loss.detach().expand(len(y)))
        name = "train/loss_epoch" if training else f"{metrics.prefix}loss"
        self.log(name, mean_loss, on_step=False, on_epoch=True, prog_bar=True)
        metrics.update(logits, y)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        hp = self.hparams
        if hp.progressive_size:  # the width to train at now, out of the data's full width
            fraction, full = self.training_fraction(self.global_step), x.shape[-1]
            size = image_size(fraction, hp.progressive_size, full, hp.progressive_until)
            self.log("train/image_size", float(size), on_step=True, on_epoch=False)
            if size != full:
                height = round(x.shape[-2] * size / full)
                x = F.interpolate(x, (height, size), mode="bilinear", antialias=True)
        self._count_flops(x)
        return self._step((x, y), self.train_metrics)

    def _count_flops(self, x: Tensor) -> None:
        """Adds this step's training FLOPs (every process's batch: they are equal) to the
        count and logs it as `train/pflop`."""
        size = (x.shape[-2], x.shape[-1])
        if size not in self._flops_per_image:  # counted once per size, on a meta-device twin
            self._flops_per_image[size] = training_flops_per_image(self.model, *size)
        self.flops_per_batch = self._flops_per_image[size] * x.shape[0]
        self.flops_done += self.flops_per_batch * self.trainer.world_size
        self.log("train/pflop", self.flops_done / 1e15, on_step=True, on_epoch=False)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, self.test_metrics)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self._eval_logits(x).float().softmax(dim=1)
        confidence, label = probs.max(dim=1)
        return {"label": label, "confidence": confidence}

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        params: Any = [p for p in self.model.parameters() if p.requires_grad]
        if hp.norm_weight_decay is not None or hp.norm_lr_scale != 1:
            # BatchNorm's and every bias: the 1-d tensors.
            flat: dict[str, Any] = {"params": [p for p in params if p.ndim <= 1]}
            flat["lr"] = hp.lr * hp.norm_lr_scale
            if hp.norm_weight_decay is not None:
                flat["weight_decay"] = hp.norm_weight_decay
            params = [{"params": [p for p in params if p.ndim > 1]}, flat]
        optimizer: torch.optim.Optimizer
        # One fused kernel for the whole update instead of a few ops per tensor.
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                params,
                lr=hp.lr,
                momentum=hp.momentum,
                nesterov=hp.nesterov,
                weight_decay=hp.weight_decay,
                fused=True,
            )
        else:
            optimizer = torch.optim.AdamW(
                params, lr=hp.lr, weight_decay=hp.weight_decay, fused=True
            )
        self._total = total = max(1, int(self.trainer.estimated_stepping_batches))
        by_steps = lr_factor(hp.schedule, total, hp.milestones, hp.warmup)

        def factor(step: int) -> float:  # the schedule at the fraction of training done
            return by_steps(round(self.training_fraction(step) * total))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }

    # The budgets: time and compute.

    def budget_used_s(self) -> float:
        """Seconds of training so far, earlier runs of a resumed training included."""
        if self._budget_clock is None:
            return self._budget_used_s
        return self._budget_used_s + self.clock() - self._budget_clock

    def training_fraction(self, step: int) -> float:
        """How much of the training is done at optimiser step `step`, in [0, 1]: of the steps,
        or of `budget_minutes` / `budget_pflop` when one runs out first (as decided at the
        end of the last step, the same on every process)."""
        done = step / self._total  # set with the schedule, in configure_optimizers
        return min(1.0, max(done, self._budget_fraction))

    def _budget_progress(self) -> float:
        """The fraction of the time or compute budget used, the same on every process.

        The compute count is the same everywhere by construction; the clocks are not (each
        process started its own, and machines differ), so rank 0's reading is broadcast:
        were each process to read its own, they could train a step at different learning
        rates or image sizes, or stop at different steps and wait on each other forever.
        """
        hp, done = self.hparams, 0.0
        if hp.budget_pflop:
            done = self.flops_done / (hp.budget_pflop * 1e15)
        if hp.budget_minutes:
            elapsed = self.budget_used_s() / (60 * hp.budget_minutes)
            if self.trainer.world_size > 1:
                elapsed = self.trainer.strategy.broadcast(elapsed, src=0)
            done = max(done, elapsed)
        return done

    def on_train_start(self) -> None:
        self._budget_clock = self.clock()
        if self._slow is not None:  # a resumed lookahead, loaded before the model moved
            self._slow = {k: v.to(self.device) for k, v in self._slow.items()}
        self._budget_fraction = self._budget_progress()  # resumed runs start part-way
        if self.model.config.stem == "whitening" and self.trainer.ckpt_path is None:
            self.model.init_whitening(self._whitening_images())

    def _whitening_images(self) -> Tensor:
        sample = getattr(self.trainer.datamodule, "whitening_sample", None)
        if sample is None:
            raise UserError(
                "The whitening stem (model.arch.stem: whitening) is initialised from the "
                "training images of lightning_densenet's ImageDataModule: train with it, or "
                "call model.init_whitening(images) before fit."
            )
        # Every process computes the same filters from the same images; rank 0's are sent
        # anyway, so that a difference in floating-point summation cannot split the replicas.
        return self.trainer.strategy.broadcast(sample(self.device), src=0)

    def on_train_epoch_end(self) -> None:
        # The budget's clock (validation and resumes included): curves.py plots against it.
        seconds = self.budget_used_s()
        self.log("train/minutes", seconds / 60, sync_dist=True, reduce_fx="max")
        rate = self.flops_done / 1e9 / max(seconds, 1e-9)
        self.log("train/gflops_per_s", rate, sync_dist=True, reduce_fx="min")

    def on_train_end(self) -> None:
        self._budget_used_s, self._budget_clock = self.budget_used_s(), None

    def lr_scheduler_step(self, scheduler: Any, metric: Any = None) -> None:
        # After each optimiser step, before the schedule sets the next step's lr: the one
        # place the budget's fraction is decided, for the lr, the image size and the stop.
        if self.hparams.budget_minutes or self.hparams.budget_pflop:
            self._budget_fraction = self._budget_progress()
        scheduler.step()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        fraction = self.training_fraction(self.global_step)
        if every := self.hparams.lookahead_every:
            self._lookahead(fraction, every)
        # With a budget, the end of the steps (max_steps, or max_epochs) stops the same way.
        budget = self.hparams.budget_minutes or self.hparams.budget_pflop
        if budget and fraction >= 1:
            self.trainer.should_stop = True  # Lightning validates once more, then stops

    def _lookahead(self, fraction: float, every: int) -> None:
        """Every `every` optimiser steps, and at the last, the slow copy's step (lookahead.py).

        Once per optimiser step: with gradient accumulation this hook runs after each
        micro-batch, while `global_step` moves once per step (and is 0 until the first)."""
        step = self.global_step
        if step in (0, self._lookahead_step):
            return
        self._lookahead_step = step
        if self._slow is None:  # a new run (a resumed one has it from its checkpoint)
            self._slow = slow_copy(self.model)
        if fraction >= 1:  # the end: the network becomes the slow copy
            lookahead_step(self._slow, self.model, decay=1.0)
        elif step % every == 0:
            decay = lookahead_decay(fraction, every, self.hparams.lookahead_decay)
            lookahead_step(self._slow, self.model, decay)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["budget_used_s"] = self.budget_used_s()
        checkpoint["flops_done"] = self.flops_done
        if self._slow is not None:
            checkpoint["lookahead"] = self._slow

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._budget_used_s = float(checkpoint.get("budget_used_s", 0.0))
        self.flops_done = float(checkpoint.get("flops_done", 0.0))
        if "lookahead" in checkpoint:
            self._slow = dict(checkpoint["lookahead"])  # to the model's device: on_train_start


def _shifted(x: Tensor, shift: int) -> tuple[Tensor, Tensor]:
    """`x` (N, C, H, W) moved `shift` pixels up-left and down-right, reflected at the border."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (shift,) * 4, mode="reflect")
    s = 2 * shift
    return padded[..., s : s + h, s : s + w], padded[..., :h, :w]


def _accuracy(num_classes: int, prefix: str) -> MetricCollection:
    """Top-1 accuracy as `acc`, and top-5 as `acc_top5` with 100 classes or more."""
    metrics = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    if num_classes >= 100:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    # Compute groups would share one state between metrics whose first batches agree, and
    # top-1 and top-5 agree on a batch where every top-5 hit is a top-1 hit.
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)


def load_network(checkpoint: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """The plain `DenseNet` of a Lightning checkpoint, compiled or not, loaded with strict=True."""
    module = DenseNetClassifier.load_from_checkpoint(
        checkpoint, map_location=map_location, compile=False
    )
    return module.model.eval()
