"""The package as its callers see it: framework-free."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_data_layer_imports_no_framework() -> None:
    code = (
        "import sys, lightning_densenet.datasets; "
        "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
