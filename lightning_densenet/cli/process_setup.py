"""What every LightningCLI run sets for the whole process, once, before the CLI starts."""

from __future__ import annotations

import os
import sys
import types
import warnings

import torch

from lightning_densenet.datasets import default_cache_dir


def set_up_process() -> None:
    """Warnings that do not apply here silenced, TF32 on, compiled kernels cached, and
    TensorBoard's event writer kept off TensorFlow."""
    # TensorBoard's writer imports all of TensorFlow, when it is installed, for the file API
    # of its event files (5 s at every start on a 2-core CPU, and a PyTorch run should not
    # load TensorFlow: tests/test_imports.py). A `tensorboard.compat.notf` module is
    # TensorBoard's own switch to its TensorFlow-free stub (the `no_tensorflow` build), which
    # writes the same event files to local paths, S3 and any fsspec URL.
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
    # The CSV logger shares the run folder that already holds config.yaml; it is a fresh
    # version folder, so nothing is about to be deleted.
    warnings.filterwarnings(
        "ignore", message=r"Experiment logs directory .* exists and is not empty"
    )
    # Throughput in images per second is what we report; FLOPs would need a model count.
    warnings.filterwarnings("ignore", message=r"When using the `ThroughputMonitor`")
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")  # TF32 matmuls/convs on Ampere and newer
    # Inductor's default cache, /tmp/torchinductor_$USER, is lost at every reboot: keep
    # compiled kernels beside the decoded datasets, so a second run compiles from the cache.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(default_cache_dir() / "inductor"))
