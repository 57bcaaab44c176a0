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
def test_core_imports_neither_framework() -> None:
    assert _frameworks_loaded("\n".join(f"import {m}" for m in CORE)) == set()


def test_lightning_densenet_never_imports_tensorflow(tmp_path: Path) -> None:
    # Every module, then a TensorBoard scalar logged as `fit` logs it: TensorBoard's writer
    # imports TensorFlow when it is installed, unless the CLI's process set-up switches it
    # to its TensorFlow-free writer (lightning_densenet/cli/process_setup.py).
    code = _every_module("lightning_densenet") + (
        "\nfrom pytorch_lightning.loggers import TensorBoardLogger"
        "\nfrom lightning_densenet.cli.process_setup import set_up_process"
        "\nset_up_process()"
        f"\nlogger = TensorBoardLogger({str(tmp_path)!r}, name='run')"
        "\nlogger.log_metrics({'val/acc': 0.5}, step=3)"
        "\nlogger.finalize('success')"
    )
    assert _frameworks_loaded(code) & TENSORFLOW == set()
    # ... and the event file it wrote is one TensorBoard reads.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = tmp_path.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    assert [(e.step, e.value) for e in accumulator.Scalars("val/acc")] == [(3, 0.5)]


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


# The packages whose import graph must have no cycle, read from their source.
GRAPHED = ("lightning_densenet", "tf_reference", "parity_tests")


def _module_names() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of GRAPHED (a package is its
    `__init__.py`)."""
    modules = {}
    for package in GRAPHED:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _ancestors(name: str) -> list[str]:
    """`a.b.c` -> [`a`, `a.b`]: the packages Python initialises before `a.b.c`."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _import_graph() -> dict[str, set[str]]:
    """Module -> the modules of GRAPHED it imports anywhere in its source (module level,
    inside functions, under TYPE_CHECKING): each a real order in which modules start.

    `import a.b.c` starts `a` and `a.b` before `a.b.c`, so those count too, except the
    importer's own ancestors: they have begun before it and Python finds a submodule of a
    half-initialised package fine. A name taken from a package (`from a import f`) is an
    import of `a` itself, so a package `__init__` re-exporting a submodule that reads a name
    back from that `__init__` is a cycle, as it would be between two plain modules."""
    modules = _module_names()

    def known(name: str) -> str | None:  # the module of GRAPHED a dotted name lies in
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # `from ..x import y`, relative to this module's package
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:  # a submodule if there is one, else the module's name
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        edges = set()
        for target in filter(None, map(known, targets)):
            edges.add(target)
            edges.update(a for a in _ancestors(target) if a not in _ancestors(name))
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan),
    as the list of its modules with the first repeated at the end."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:  # a shortest way back to the component's first module
        start, members = component[0], set(component)
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            nxt_nodes = sorted(graph[path[-1]] & members)
            if start in nxt_nodes:
                cycles.append([*path, start])
                break
            for nxt in nxt_nodes:
                if nxt not in seen:
                    seen.add(nxt)
                    paths.append([*path, nxt])
    return cycles


def test_cycle_finder_names_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": set()}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


def test_no_import_cycles() -> None:
    graph = _import_graph()
    assert "lightning_densenet" in graph and "tf_reference" in graph and "parity_tests" in graph
    assert "lightning_densenet.errors" in graph["lightning_densenet"]  # the walk saw imports
    cycles = [" -> ".join(cycle) for cycle in _cycles(graph)]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)
