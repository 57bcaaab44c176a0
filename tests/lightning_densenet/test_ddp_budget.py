"""DDP with a time budget: one clock for every process (2 real gloo processes).

Each process reads its own clock, and clocks differ (the processes start at different
moments; machines differ). The fault is injected through the module's `clock`: each rank's
runs with its optimiser steps, 0.45 s a step, and rank 1's 25% fast. Without one shared clock
the two replicas would train a step at different learning rates or image sizes and stop at
different steps (the process still training then waits on the other forever, or gloo
reports a collective mismatch).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.fake_data import write_cifar
from tests.helpers import QUIET, cli_args, ddp_env

RECORDER = '''
import hashlib, json, os
from pathlib import Path
import pytorch_lightning as pl


class StepRecorder(pl.Callback):
    """Runs the budget's clock with the steps, and writes rank<N>.json: each step's lr and
    training image width, the last step, and a digest of the final weights."""

    def __init__(self):
        self.steps, self.lr, self.width = [], None, None

    def setup(self, trainer, pl_module, stage):
        # The budget's clock, injected: 0.45 s per optimiser step, rank 1's 25% fast.
        rate = 0.45 * (1.25 if trainer.global_rank == 1 else 1.0)
        pl_module.clock = lambda: rate * pl_module.global_step

    def on_fit_start(self, trainer, pl_module):
        def hook(net, args):
            if net.training:
                self.width = args[0].shape[-1]
        pl_module.model.register_forward_pre_hook(hook)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.lr = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append([trainer.global_step, self.width, self.lr])

    def on_fit_end(self, trainer, pl_module):
        state = pl_module.model.state_dict()
        digest = hashlib.sha1(b"".join(v.numpy().tobytes() for v in state.values()))
        record = {"steps": self.steps, "stop": trainer.global_step, "weights": digest.hexdigest()}
        Path(os.environ["RECORD_DIR"], f"rank{trainer.global_rank}.json").write_text(
            json.dumps(record)
        )
'''


def test_ddp_ranks_share_the_budget_clock(tmp_path) -> None:
    cifar = write_cifar(tmp_path / "cifar", "cifar10", n_train=400, n_test=8)
    (tmp_path / "recorder.py").write_text(RECORDER)
    env = ddp_env(tmp_path)
    args = cli_args(
        "fit",
        cifar.root,
        tmp_path / "runs",
        *("--model.budget_minutes", "0.2", "--model.progressive_size", "16"),
        *("--model.schedule", "onecycle", "--trainer.max_epochs", "10000"),
        *("--data.max_train_images", "null", "--data.batch_size", "16"),
        *("--trainer.limit_train_batches", "null", "--trainer.limit_val_batches", "null"),
        *("--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"),
        *QUIET,
        "--trainer.callbacks+=recorder.StepRecorder",
    )
    result = subprocess.run(
        [sys.executable, "-m", "lightning_densenet", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rec/rank{r}.json").read_text()) for r in (0, 1)]
    # Every step: the same learning rate and image size on both ranks; the same last step.
    assert ranks[0]["steps"] == ranks[1]["steps"]
    # Rank 0's clock ends the 0.2 minutes (12 s) in step 27, at 0.45 s a step; rank 1's own
    # would have ended them in step 22.
    assert ranks[0]["stop"] == ranks[1]["stop"] == len(ranks[0]["steps"]) == 27
    widths = [width for _, width, _ in ranks[0]["steps"]]
    assert widths[0] == 16 and widths[-1] == 32 and 24 in widths  # the budget drove the sizes
    assert ranks[0]["weights"] == ranks[1]["weights"]  # the replicas never drifted apart
