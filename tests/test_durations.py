"""The `slow` mark from measured durations (`tests/durations.py`), on a tiny suite of its own."""

from __future__ import annotations

import json

import pytest

from tests.durations import SLOW_AFTER_S
from tests.helpers import REPO

pytest_plugins = ["pytester"]

SUITE = """
import pytest

@pytest.fixture(scope="session")
def shared():
    return 1

def test_quick():
    pass

def test_long():
    pass

def test_quick_on_a_slow_fixture(shared):
    pass

def test_unrecorded():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(f"[pytest]\npythonpath = {REPO}\nmarkers =\n    slow: measured slow\n")
    pytester.makeconftest(
        "from tests.durations import (\n"
        "    pytest_addoption, pytest_collection_modifyitems, pytest_configure\n"
        ")\n"
    )
    pytester.makepyfile(test_suite=SUITE)
    (pytester.path / "tests").mkdir()
    return pytester


def test_tests_over_the_threshold_with_their_shared_fixtures_are_marked_slow(suite) -> None:
    recorded = {
        "tests": {
            "test_suite.py::test_quick": 0.95 * SLOW_AFTER_S,
            "test_suite.py::test_long": 1.05 * SLOW_AFTER_S,
            "test_suite.py::test_quick_on_a_slow_fixture": 0.05 * SLOW_AFTER_S,
        },
        # Set up once, but run alone it costs its user that: 0.05 + 0.975 is over the line.
        "fixtures": {"shared": 0.975 * SLOW_AFTER_S},
    }
    (suite.path / "tests/durations.json").write_text(json.dumps(recorded))
    result = suite.runpytest("-m", "not slow", "-v")
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines(["*test_quick PASSED*", "*test_unrecorded PASSED*"])
    suite.runpytest("-m", "slow").assert_outcomes(passed=2, deselected=2)


def test_record_durations_merges_this_runs_measurements_into_the_file(suite) -> None:
    path = suite.path / "tests/durations.json"
    path.write_text(json.dumps({"tests": {"test_gone.py::test_old": 9.0}, "fixtures": {}}))
    suite.runpytest("--record-durations", "-k", "not unrecorded").assert_outcomes(passed=3)
    written = json.loads(path.read_text())
    assert sorted(written["tests"]) == [
        "test_gone.py::test_old",  # not run: kept
        "test_suite.py::test_long",
        "test_suite.py::test_quick",
        "test_suite.py::test_quick_on_a_slow_fixture",
    ]
    assert written["tests"]["test_gone.py::test_old"] == 9.0
    assert list(written["fixtures"]) == ["shared"]
    assert all(s >= 0 for s in [*written["tests"].values(), *written["fixtures"].values()])
    # Without the option nothing is written.
    path.unlink()
    suite.runpytest().assert_outcomes(passed=4)
    assert not path.exists()


def test_record_durations_under_xdist_is_written_once_by_the_controller(suite) -> None:
    pytest.importorskip("xdist")
    result = suite.runpytest("--record-durations", "-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=4)
    written = json.loads((suite.path / "tests/durations.json").read_text())
    assert len(written["tests"]) == 4 and list(written["fixtures"]) == ["shared"]


def test_the_repositorys_durations_file_is_readable_and_names_existing_tests() -> None:
    from tests.durations import DURATIONS, read_durations

    recorded = read_durations(REPO / DURATIONS)
    assert recorded["tests"], f"{DURATIONS} is empty: record it (see tests/durations.py)"
    for nodeid in recorded["tests"]:
        assert (REPO / nodeid.split("::")[0]).is_file(), f"{DURATIONS} names {nodeid}"


def test_xdist_workers_get_the_longest_modules_first(suite, monkeypatch) -> None:
    suite.makepyfile(test_zzz="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    recorded = {"tests": {"test_zzz.py::test_a": 3.0, "test_suite.py::test_long": 2.0}}
    (suite.path / "tests/durations.json").write_text(json.dumps(recorded))
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # this suite may run on a worker
    in_order = _collected(suite)  # alone: the files in order
    assert in_order[0] == "test_suite.py::test_quick" and in_order[-1] == "test_zzz.py::test_b"
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")  # as a worker collects
    longest_first = ["test_zzz.py::test_a", "test_zzz.py::test_b", *in_order[:-2]]
    assert _collected(suite) == longest_first


def _collected(suite: pytest.Pytester) -> list[str]:
    result = suite.runpytest("--collect-only", "-q")
    return [line for line in result.outlines if "::" in line]
