"""Set-up for every suite (tests/ and parity_tests/): the `slow` mark from measured durations
(`tests/durations.py`), one thread per process when pytest-xdist runs tests side by side, and
one fresh torch.compile cache for the whole run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

if "PYTEST_XDIST_WORKER" in os.environ:
    # Each worker runs its own tests on a core of its own: several OpenMP teams on the same
    # cores spin against each other (tens of times slower). Set before torch is imported,
    # so the tests' subprocesses (CLI runs, DDP) inherit it too.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.durations import (  # noqa: F401 (hooks: pytest finds them here)
    pytest_addoption,
    pytest_collection_modifyitems,
)
from tests.durations import pytest_configure as _configure_durations

_INDUCTOR_CACHE = "TORCHINDUCTOR_CACHE_DIR"


def pytest_configure(config: pytest.Config) -> None:
    _configure_durations(config)
    # Every process of the run (xdist workers, the CLI and DDP subprocesses) compiles into
    # one fresh Inductor cache, made here, in the controller, before the workers start:
    # a kernel compiles once per run, and inductor's check of the CPU's vector instructions
    # (~10 s of compiler runs) happens once instead of in every process; and a run depends
    # on no cache left by an earlier one (on a fresh CI machine every compile is cold).
    # A cache the user chose (the variable set) is used as it is.
    if hasattr(config, "workerinput") or _INDUCTOR_CACHE in os.environ:
        return
    os.environ[_INDUCTOR_CACHE] = tempfile.mkdtemp(prefix="pytest-inductor-")
    config.add_cleanup(lambda: shutil.rmtree(os.environ.pop(_INDUCTOR_CACHE), ignore_errors=True))
