"""`slow` by measured duration: a pytest plugin (its hooks are imported by the root conftest.py).

`tests/durations.json` holds what a quiet run measured: each test's own seconds (setup, call
and teardown, less the set-up of fixtures wider than a function) and each such shared
fixture's set-up seconds. A test is marked `slow` when its own seconds plus those of the
shared fixtures it uses exceed `SLOW_AFTER_S`: selected alone, that is what it costs.

Regenerate the file on an otherwise idle machine, from a full run as CI runs it:

    pytest -n auto --dist loadscope --record-durations

`--record-durations` merges this run's measurements into the file (tests not run keep their
entries; delete the file first to drop those of removed tests). Tests absent from the file
are not marked.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

SLOW_AFTER_S = 0.2  # the quick loop (`-m "not slow"`) keeps what runs in under 0.2 s
DURATIONS = "tests/durations.json"  # relative to the rootdir (the repository)
_SHARED = "shared_fixture_s"  # the user property that carries a shared fixture's set-up time


def read_durations(path: Path) -> dict[str, dict[str, float]]:
    """{"tests": {nodeid: seconds}, "fixtures": {name: seconds}}; empty when absent."""
    found = json.loads(path.read_text()) if path.is_file() else {}
    return {"tests": found.get("tests", {}), "fixtures": found.get("fixtures", {})}


def expected_seconds(item: pytest.Item, durations: dict[str, dict[str, float]]) -> float | None:
    """What `item` costs when run alone, by the file; None for a test it does not hold."""
    own = durations["tests"].get(item.nodeid)
    if own is None:
        return None
    fixtures = durations["fixtures"]
    return own + sum(fixtures.get(name, 0.0) for name in getattr(item, "fixturenames", ()))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-durations",
        action="store_true",
        help=f"merge this run's measured test and shared-fixture durations into {DURATIONS} "
        f"(tests over {SLOW_AFTER_S:g} s are then marked slow); run it on an idle machine",
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    durations = read_durations(config.rootpath / DURATIONS)
    module_seconds: dict[str, float] = defaultdict(float)
    for item in items:
        seconds = expected_seconds(item, durations)
        if seconds is not None and seconds > SLOW_AFTER_S:
            item.add_marker(pytest.mark.slow)
        module_seconds[_module(item)] += durations["tests"].get(item.nodeid, 0.0)
    if "PYTEST_XDIST_WORKER" in os.environ:
        # `--dist loadscope` hands out whole modules in this order, one to each free worker:
        # the longest first, so that no long module starts last while the other workers
        # idle (longest-processing-time-first). Every worker sorts the same collection the
        # same way, as pytest-xdist requires; tests keep their order within a module.
        items.sort(key=lambda item: -module_seconds[_module(item)])


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--record-durations"):
        config.pluginmanager.register(Recorder(config), "durations-recorder")


class Recorder:
    """Measures each test and each shared fixture's set-up; the controller writes the file."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.tests: dict[str, float] = defaultdict(float)
        self.fixtures: dict[str, float] = {}
        self.current: pytest.Item | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self.current = item
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: pytest.FixtureDef) -> Iterator[None]:
        # Ours only (pytest's own, tmp_path_factory & co., cost nothing to speak of).
        if fixturedef.scope == "function" or not fixturedef.baseid or self.current is None:
            return (yield)
        start = time.perf_counter()
        try:
            return (yield)
        finally:
            # On the test's own reports, so that it reaches the controller under pytest-xdist.
            seconds = time.perf_counter() - start
            self.current.user_properties.append((_SHARED, (fixturedef.argname, seconds)))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.tests[report.nodeid] += report.duration
        if report.when == "teardown":  # its user properties: every fixture set up for it
            for key, value in report.user_properties:
                if key == _SHARED:
                    name, seconds = value
                    self.fixtures[name] = seconds
                    self.tests[report.nodeid] -= seconds

    def pytest_sessionfinish(self) -> None:
        if hasattr(self.config, "workerinput"):
            return  # an xdist worker: the controller has its reports
        path = self.config.rootpath / DURATIONS
        durations = read_durations(path)
        for section, measured in (("tests", self.tests), ("fixtures", self.fixtures)):
            merged = durations[section] | {k: round(v, 3) for k, v in measured.items()}
            durations[section] = dict(sorted(merged.items()))
        path.write_text(json.dumps(durations, indent=1) + "\n")
