"""The CPU recipes end to end on tiny official-format CIFAR-10/100: fit, then test.

Only the model and the data are shrunk; every other setting of the recipe (bf16 autocast,
channels_last, compilation, the budget, progressive resizing, TTA, batch handling) runs as
configured. The network is the smallest DenseNet (one dense block of one layer): compiling
costs seconds per kernel on a CPU.
"""

from __future__ import annotations

import pytest
import torch

from lightning_densenet.__main__ import main
from lightning_densenet.module import load_network
from tests.fake_data import write_cifar
from tests.helpers import QUIET, REPO, cli_args, is_fraction_of, last, metrics

SMALLEST = "{growth_rate: 4, block_config: [1], num_init_features: 8}"
SMALLEST_WHITENING = "{growth_rate: 4, block_config: [1], stem: whitening}"


@pytest.mark.parametrize(
    ("name", "dataset", "arch"),
    [
        ("cifar10_cpu", "cifar10", SMALLEST),
        ("cifar10_short", "cifar10", SMALLEST_WHITENING),  # its stem is set from the data
        ("cifar100_cpu", "cifar100", SMALLEST),
    ],
)
def test_cpu_recipe_fits_and_tests(tmp_path, name: str, dataset: str, arch: str) -> None:
    cifar = write_cifar(tmp_path / "data", dataset, n_train=120, n_test=30)
    root = tmp_path / "runs"
    data = ["--data.root", str(cifar.root), "--data.download", "false"]
    small = ["--model.arch", arch, "--data.batch_size", "16"]
    small += ["--data.eval_batch_size", "32", "--trainer.max_steps", "3"]
    args = cli_args("fit", cifar.root, root, *QUIET, *small, config=REPO / f"configs/{name}.yaml")
    assert main(args) == 0
    run = root / name / "version_0"
    # The recipe compiles; its checkpoint holds the plain network's keys, which load into an
    # uncompiled one with strict=True.
    checkpoint = torch.load(run / "checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["hyper_parameters"]["compile"] is True
    assert not any("_orig_mod" in k for k in checkpoint["state_dict"])
    load_network(str(run / "checkpoints/last.ckpt"))
    test = ["test", "--config", str(run / "config.yaml"), *data, *QUIET]
    test += [
        "--ckpt_path",
        str(run / "checkpoints/last.ckpt"),
        "--trainer.default_root_dir",
        str(root),
    ]
    assert main(test) == 0
    fitted, tested = metrics(run), metrics(root / f"{name}-test" / "version_0")
    accuracy = last(tested, "test/acc")
    assert is_fraction_of(accuracy, 30)  # a count of the 30 images
    if dataset == "cifar100":  # top-5 next to top-1, in training and in test
        assert last(fitted, "val/acc_top5") >= last(fitted, "val/acc")
        assert last(tested, "test/acc_top5") >= accuracy
