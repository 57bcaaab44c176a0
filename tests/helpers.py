"""What several test files share: the repository's paths, the arguments of a small
`python -m lightning_densenet` run, its metrics, its one error line, the small DenseNets
both frameworks' unit tests build, and the parameter counts the paper's recipe gives a
DenseNet. (Tiny datasets written on the fly: `tests/fake_data.py`.)

Imported as `tests.helpers` (pytest puts the repository root on `sys.path`, see pyproject).
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

import pytest

from lightning_densenet import PRESETS, DenseNetConfig

REPO = Path(__file__).resolve().parents[1]
DEBUG_CONFIG = REPO / "configs/debug.yaml"
# The experiments `fit` reads (sweep_*.yaml are search spaces: test_sweep.py reads them).
FIT_CONFIGS = sorted(
    p for p in (REPO / "configs").glob("*.yaml") if not p.stem.startswith("sweep_")
)
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def cli_args(
    command: str,
    data_root: Path | str,
    runs: Path | str,
    *extra: str,
    config: Path | str = DEBUG_CONFIG,
    val_size: int = 40,
) -> list[str]:
    """Arguments of `python -m lightning_densenet COMMAND`: `config` (debug.yaml) on the
    CIFAR files at `data_root` (no download), `val_size` validation images, run folders
    under `runs`, then `extra` (later arguments win)."""
    return [
        command,
        *("--config", str(config), "--data.root", str(data_root), "--data.download", "false"),
        *("--data.val_size", str(val_size), "--trainer.default_root_dir", str(runs)),
        *extra,
    ]


def ddp_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a DDP `python -m lightning_densenet` run on this 2-core machine:
    one thread per process, `tmp_path` importable (for callbacks the test writes there), and
    `RECORD_DIR` (created) where such callbacks write what each process saw. No MASTER_PORT:
    Lightning then picks a free port, so runs in parallel (`pytest -n 2`) never share one."""
    (tmp_path / "rec").mkdir(exist_ok=True)
    fixed_port = ("MASTER_ADDR", "MASTER_PORT", "STANDALONE_PORT")
    return {
        **{k: v for k, v in os.environ.items() if k not in fixed_port},
        "OMP_NUM_THREADS": "1",  # two processes on a 2-core machine
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "RECORD_DIR": str(tmp_path / "rec"),
    }


def metrics(run: Path) -> list[dict[str, str]]:
    """The rows of a run folder's metrics.csv (Lightning's CSV logger)."""
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def digests(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) and its SHA-256: two calls compare contents."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def last(rows: list[dict[str, str]], key: str) -> float:
    """The last value logged under `key`."""
    return float([r[key] for r in rows if r.get(key)][-1])


def is_fraction_of(value: float, n: int) -> bool:
    """Whether `value` is k/n for a whole k, as an accuracy over exactly n images is."""
    return value * n == pytest.approx(round(value * n))


def error_line(stderr: str) -> str:
    """The `error: ...` line a CLI writes for a user's mistake; fails unless it is the only
    one and no traceback was printed."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


# Small DenseNets, each with one option of the paper changed, built by both unit test suites.
VARIANTS = {
    "bc": DenseNetConfig(growth_rate=6, block_config=(2, 3)),
    "plain": DenseNetConfig(growth_rate=6, block_config=(2, 3), bottleneck=False, compression=1.0),
    "no_bn": DenseNetConfig(growth_rate=6, block_config=(2, 3), batch_norm=False),
    "dropout": DenseNetConfig(growth_rate=6, block_config=(2, 3), drop_rate=0.2),
    "imagenet_stem": DenseNetConfig(growth_rate=6, block_config=(2, 2, 2), stem="imagenet"),
    "four_blocks": DenseNetConfig(growth_rate=4, block_config=(1, 2, 3, 1), compression=0.7),
    "bn_size_2": DenseNetConfig(growth_rate=5, block_config=(3,), bn_size=2, num_init_features=7),
    "whitening_stem": DenseNetConfig(
        growth_rate=6, block_config=(2, 3), bottleneck=False, stem="whitening"
    ),
}

# DenseNet-BC-100 (k=12) with 10 classes: Table 2 of Huang et al. rounds it to 0.8M.
BC_100_K12_PARAMS = 769_162

# Every preset, for a parametrized test; those that build slowly (7M+ parameters) are marked
# `slow` by their measured durations (tests/durations.json).
PRESET_PARAMS = sorted(PRESETS)


def expected_counts(cfg: DenseNetConfig, num_classes: int) -> tuple[int, int]:
    """(trainable, non-trainable) parameters of a DenseNet, counted from the paper's recipe."""
    trainable = non_trainable = 0

    def norm(c: int) -> None:  # gamma, beta | moving mean, variance
        nonlocal trainable, non_trainable
        if cfg.batch_norm:
            trainable += 2 * c
            non_trainable += 2 * c

    def conv(c_in: int, c_out: int, kernel: int) -> None:
        nonlocal trainable
        trainable += kernel * kernel * c_in * c_out + (0 if cfg.batch_norm else c_out)

    k, c0 = cfg.growth_rate, cfg.init_features
    if cfg.stem == "cifar":
        conv(3, c0, 3)
    elif cfg.stem == "whitening":  # 2x2 with a bias; PyTorch freezes the kernel, Keras not
        trainable += 2 * 2 * 3 * c0 + c0
    else:
        conv(3, c0, 7)
        norm(c0)
    for i, (n_layers, (c_in, c_out)) in enumerate(
        zip(cfg.block_config, cfg.channels(), strict=True), 1
    ):
        for j in range(n_layers):
            c = c_in + j * k
            norm(c)
            if cfg.bottleneck:
                conv(c, cfg.bn_size * k, 1)
                norm(cfg.bn_size * k)
                conv(cfg.bn_size * k, k, 3)
            else:
                conv(c, k, 3)
        if i < len(cfg.block_config):
            norm(c_out)
            conv(c_out, int(c_out * cfg.compression), 1)
    c_final = cfg.channels()[-1][1]
    norm(c_final)
    trainable += c_final * num_classes + num_classes
    return trainable, non_trainable
