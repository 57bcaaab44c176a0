"""The README's two commands are the ones CI and users run."""

import re

from tests.helpers import REPO


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    quick_start = blocks[0]
    return [line for line in quick_start.splitlines() if line and not line.startswith("#")]


def test_readme_has_two_commands_and_ci_runs_the_second() -> None:
    commands = _readme_commands()
    assert len(commands) == 2, commands
    setup = "test -d .venv || python3 -m venv .venv && .venv/bin/pip install -q -e '.[tf,dev]'"
    assert all(c.startswith(setup) for c in commands)
    assert "python -m lightning_densenet fit --config configs/" in commands[0]
    # Every test, on every core (pytest-xdist; a module's tests share one worker and its fixtures).
    assert commands[1].rstrip().endswith(".venv/bin/pytest -n auto --dist loadscope")
    ci_lines = (REPO / ".ci/run").read_text().splitlines()
    assert commands[1] in ci_lines, "'.ci/run' must run the README's test command verbatim"


def test_readme_configs_exist() -> None:
    text = (REPO / "README.md").read_text()
    for config in set(re.findall(r"configs/[\w.]+\.yaml", text)):
        assert (REPO / config).is_file(), config
