"""Set-up for every suite (tests/ and parity_tests/): the `slow` mark from measured durations
(`tests/durations.py`), and one thread per process when pytest-xdist runs tests side by side.
"""

from __future__ import annotations

import os

if "PYTEST_XDIST_WORKER" in os.environ:
    # Each worker runs its own tests on a core of its own: several OpenMP teams on the same
    # cores spin against each other (tens of times slower). Set before torch is imported,
    # so the tests' subprocesses (CLI runs, DDP) inherit it too.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.durations import (  # noqa: F401 (hooks: pytest finds them here)
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
)
