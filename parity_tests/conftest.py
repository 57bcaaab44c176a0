"""Parity tests: PyTorch and Keras DenseNets side by side.

Each check records its worst measured difference with `record(check, value, tolerance)`;
the session ends with a table of them (`pytest parity_tests -q` prints it), the figures
quoted for the frameworks' agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

# isort: off
import tf_reference  # noqa: F401  (first: loads Triton ahead of TensorFlow, see its __init__)
import keras

# isort: on
import pytest
import torch

_WORST: dict[str, tuple[float, str]] = {}


@pytest.fixture
def record() -> Callable[[str, float, str], None]:
    """`record(check, value, tolerance)`: keeps the worst value of each check for the summary;
    `tolerance` is a number, or words where the bound is not one number ("" if none)."""

    def record(check: str, value: float, tolerance: float | str) -> None:
        if not isinstance(tolerance, str):
            tolerance = f"<= {tolerance:.0e}"
        worst, _ = _WORST.get(check, (0.0, tolerance))
        _WORST[check] = (max(worst, value), tolerance)

    return record


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread() -> Iterator[None]:
    # These tests compare numbers, not speed. On a machine whose cores are shared, PyTorch's
    # OpenMP threads wait on each other when another process holds a core (30x slower here
    # with 2 threads than with 1), so PyTorch runs on one thread here, and only here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
    keras.utils.set_random_seed(0)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _WORST:
        return
    terminalreporter.section("parity: worst measured difference per check")
    for check, (worst, tolerance) in _WORST.items():
        terminalreporter.write_line(f"{check:<56} {worst:9.2e}  {tolerance}")
