"""`python -m tf_reference trace` writes the traced train step where TensorBoard finds it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tensorflow.core.protobuf import config_pb2

from lightning_densenet import UserError
from tf_reference.__main__ import main
from tf_reference.config import DataConfig, load_experiment
from tf_reference.trace import TRACE_NAME, write_trace


@pytest.fixture(scope="module")
def data(real_data: DataConfig) -> list[str]:
    """Config overrides for 64 real images in batches of 16."""
    return [
        f"--data.dataset={real_data.dataset}",
        f"--data.root={real_data.root}",
        f"--data.cache_dir={real_data.cache_dir}",
        "--data.val_size=0",
        "--data.max_train_images=64",
        "--data.batch_size=16",
    ]


def traced_ops(value: Any) -> set[str]:
    """The op types of the graphs in a trace summary (a serialised RunMetadata)."""
    metadata = config_pb2.RunMetadata.FromString(value.tensor.string_val[0])
    return {n.op for g in metadata.function_graphs for n in g.pre_optimization_graph.node}


def test_trace_writes_the_train_step_graph(
    data: list[str],
    summaries: Callable[[Path], list[Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["trace", "--config", "densenet_tiny", *data, "--logdir", str(tmp_path)]
    assert main(args) == 0
    run = tmp_path / "version_0"
    assert str(run) in capsys.readouterr().out
    (value,) = summaries(run)
    assert value.tag == TRACE_NAME
    assert value.metadata.plugin_data.plugin_name == "graph_run_metadata_graph"  # Graphs tab
    ops = traced_ops(value)
    # Forward (conv, concatenation, BN's 1/sqrt(var + eps)), backward and the optimiser update:
    # the whole step is one graph.
    assert {"Conv2D", "ConcatV2", "Rsqrt", "Conv2DBackpropFilter"} <= ops
    assert "AssignSubVariableOp" in ops
    assert main(args) == 0 and (tmp_path / "version_1").is_dir()  # never overwrites


def test_trace_with_the_profiler_writes_run_metadata_and_a_profile(
    data: list[str], summaries: Callable[[Path], list[Any]], tmp_path: Path
) -> None:
    exp = load_experiment("densenet_tiny", data)
    run = write_trace(exp, tmp_path, network="mlp", width=16, profiler=True)
    (value,) = summaries(run)
    assert value.metadata.plugin_data.plugin_name == "graph_run_metadata"  # graph + run stats
    assert {"MatMul", "AssignSubVariableOp"} <= traced_ops(value)
    assert list(run.glob("plugins/profile/*/*.xplane.pb"))  # the Profile tab's input


def test_only_traced_modes_can_be_traced() -> None:
    with pytest.raises(UserError, match="--mode 'eager' cannot be traced"):
        write_trace(load_experiment("densenet_tiny"), "unused", mode="eager")
