"""DDP with a time budget: one clock for every process (2 real gloo processes, no mocks).

Each process reads its own clock, and clocks differ (the processes start at different
moments; machines differ). The fault is injected for real: a `sitecustomize.py` on the
processes' path makes rank 1's `time.perf_counter` run 25% fast. Without one shared clock
the two replicas would train a step at different learning rates or image sizes and stop at
different steps (the process still training then waits on the other forever, or gloo
reports a collective mismatch).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.fake_data import write_cifar
from tests.helpers import QUIET, cli_args, ddp_env

FAST_CLOCK = """
import os
import time

if os.environ.get("LOCAL_RANK") == "1":  # Lightning starts rank 1 with LOCAL_RANK=1
    _real, _start = time.perf_counter, time.perf_counter()
    time.perf_counter = lambda: _start + 1.25 * (_real() - _start)
"""

RECORDER = '''
import hashlib, json, os
from pathlib import Path
import pytorch_lightning as pl


class StepRecorder(pl.Callback):
    """Writes rank<N>.json: each step's lr and training image width, the last step, and a
    digest of the final weights."""

    def __init__(self):
        self.steps, self.lr, self.width = [], None, None

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


@pytest.mark.slow
def test_ddp_ranks_share_the_budget_clock(tmp_path) -> None:
    cifar = write_cifar(tmp_path / "cifar", "cifar10", n_train=400, n_test=8)
    (tmp_path / "sitecustomize.py").write_text(FAST_CLOCK)
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
    assert ranks[0]["stop"] == ranks[1]["stop"] == len(ranks[0]["steps"])
    widths = [width for _, width, _ in ranks[0]["steps"]]
    assert widths[0] == 16 and widths[-1] == 32 and 24 in widths  # the budget drove the sizes
    assert ranks[0]["weights"] == ranks[1]["weights"]  # the replicas never drifted apart
