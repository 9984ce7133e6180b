"""Running the ``quiver`` command as a user does: a real subprocess, a controlled environment."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 120


def quiver_command() -> list[str]:
    """The ``quiver`` script of this interpreter (else on PATH), else ``python -m quiver``."""
    script = Path(sys.executable).with_name("quiver")
    found = str(script) if script.exists() else shutil.which("quiver")
    return [found] if found else [sys.executable, "-m", "quiver"]


def cli_env(**changes: str | None) -> dict[str, str]:
    """The environment of a CLI run: no ``QUIVER_*`` settings, a fixed user, 250 columns, no
    colour; ``changes`` set more variables (a None value unsets one)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("QUIVER_")}
    env.update({"QUIVER_USER": "tester", "COLUMNS": "250", "NO_COLOR": "1"})
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def quiver(
    *args: str, cwd: Path, ok: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``quiver ARGS`` in ``cwd`` (in ``env``, default :func:`cli_env`); with ``ok``, fail
    the test unless it exits 0."""
    proc = subprocess.run(
        [*quiver_command(), *args],
        cwd=cwd,
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if ok and proc.returncode != 0:
        pytest.fail(f"quiver {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    """The command failed with one ``error: ...`` line on stderr that matches ``pattern``."""
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
