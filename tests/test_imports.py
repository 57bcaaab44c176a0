"""Imports run one way: `parity_tests` -> `tf_reference` -> `lightning_densenet`, with a
framework-free core (architecture, errors, schedules, numpy datasets) at the bottom.

Checked twice: what fresh processes actually load (a lazy import inside a package's
`__init__` counts), and what the source says (an import inside a function counts too)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

TORCH = {"torch", "torchvision", "torchmetrics", "pytorch_lightning", "lightning", "triton"}
TENSORFLOW = {"tensorflow", "keras", "tf_keras"}
CORE = (
    "lightning_densenet",
    "lightning_densenet.arch",
    "lightning_densenet.errors",
    "lightning_densenet.options",
    "lightning_densenet.schedules",
    "lightning_densenet.datasets",
)


def _frameworks_loaded(imports: str) -> set[str]:
    """The top-level names of TORCH | TENSORFLOW in sys.modules of a fresh process after
    `imports` (Python statements) ran; an import error fails the test with its traceback."""
    code = f"import json, sys\n{imports}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = {name.split(".")[0] for name in json.loads(result.stdout.splitlines()[-1])}
    return loaded & (TORCH | TENSORFLOW)


def _every_module(package: str) -> str:
    """Statements importing `package` and each of its modules but `__main__` (which runs)."""
    return (
        f"import pkgutil, importlib, {package}\n"
        f"for m in pkgutil.walk_packages({package}.__path__, '{package}.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        importlib.import_module(m.name)"
    )


# Each starts a fresh Python process that imports a framework or two: seconds apiece.
@pytest.mark.slow
def test_core_imports_neither_framework() -> None:
    assert _frameworks_loaded("\n".join(f"import {m}" for m in CORE)) == set()


@pytest.mark.slow
def test_lightning_densenet_never_imports_tensorflow() -> None:
    assert _frameworks_loaded(_every_module("lightning_densenet")) & TENSORFLOW == set()


@pytest.mark.slow
def test_tf_reference_never_imports_torch() -> None:
    # Every module, the command line's too, and a model built: nothing loads torch lazily.
    code = _every_module("tf_reference")
    code += "\nimport tf_reference.__main__\ntf_reference.build_model('densenet_tiny')"
    loaded = _frameworks_loaded(code)
    # Triton (no torch inside) is loaded on purpose: see tf_reference/__init__.py.
    assert "tensorflow" in loaded  # the walk reached the Keras modules
    assert loaded & (TORCH - {"triton"}) == set()


def _imported_packages(path: Path) -> set[str]:
    """Top-level packages that a source file imports anywhere (functions, TYPE_CHECKING)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


FORBIDDEN = {
    "lightning_densenet": {"tf_reference", "parity_tests", *TENSORFLOW},
    "tf_reference": {"parity_tests", *(TORCH - {"triton"})},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_source_file_imports_upwards(package: str) -> None:
    files = sorted((REPO / package).rglob("*.py"))
    assert len(files) > 5, files  # the walk found the package
    wrong = {
        str(path.relative_to(REPO)): sorted(_imported_packages(path) & FORBIDDEN[package])
        for path in files
    }
    assert {path: names for path, names in wrong.items() if names} == {}


def test_core_source_imports_no_framework() -> None:
    root = REPO / "lightning_densenet"
    names = ("arch", "errors", "options", "schedules", "datasets")
    files = [root / f"{name}.py" for name in names]
    files = [f for f in files if f.is_file()] + sorted((root / "datasets").rglob("*.py"))
    assert len(files) >= 4, files
    for path in files:
        assert not _imported_packages(path) & (TORCH | TENSORFLOW), path
