"""The real Feast SDK, in its own environment, as the judge of Quiver's Feast compatibility.

The environment is ``tests/feast_env`` (its own ``pyproject.toml`` and ``uv.lock``, outside
Quiver's dependencies), built once with ``uv sync --frozen`` into
``~/.cache/quiver/feast-env-<hash of the lock>``: a fresh machine builds it on first use, later
runs reuse it. Feast code runs in a subprocess with that environment's python.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

ENV_PROJECT = Path(__file__).parent / "feast_env"
FEAST_TIMEOUT = 600.0
_MARKER = "quiver-feast-env-ok"


def _uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is not installed (it is in Quiver's dev extra)")
    return uv


def feast_env_dir() -> Path:
    """Where the environment of the current lock lives (it may not be built yet)."""
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "uv.lock"):
        digest.update((ENV_PROJECT / name).read_bytes())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quiver"
    return cache / f"feast-env-{digest.hexdigest()[:16]}"


def feast_python() -> Path:
    """The python of the Feast environment, built from the lock if it is not there yet."""
    target = feast_env_dir()
    python = target / "bin" / "python"
    if (target / _MARKER).exists() and python.exists():
        return python
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(building),
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_NO_PROGRESS": "1",
    }
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [_uv(), "sync", "--frozen", "--python", "python3", "--quiet", "--no-install-project"],
        cwd=ENV_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=FEAST_TIMEOUT,
    )
    if result.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise RuntimeError(f"building the Feast test environment failed:\n{result.stderr}")
    (building / _MARKER).write_text("ok\n")
    try:
        building.rename(target)
    except OSError:  # another process built it first
        shutil.rmtree(building, ignore_errors=True)
    return python


def run_feast(python: Path, code: str, cwd: Path, timeout: float = FEAST_TIMEOUT) -> Any:
    """Run ``code`` with the Feast environment's python in ``cwd``; the JSON it prints last.

    The code prints its answer with ``print(json.dumps(...))`` as its last line of output.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["FEAST_USAGE"] = "False"
    result = subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(f"Feast code failed ({result.returncode}):\n{result.stderr[-6000:]}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        raise AssertionError(f"Feast code printed nothing:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def feast_cli(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run Feast's CLI (``feast ARGS``) of the Feast environment in ``cwd``.

    Through its python, not the ``feast`` script, whose first line names the directory the
    environment was built in before it was moved into place.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["FEAST_USAGE"] = "False"
    result = subprocess.run(
        [str(python), "-c", "from feast.cli.cli import cli; cli()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=FEAST_TIMEOUT,
    )
    if result.returncode != 0:
        raise AssertionError(f"feast {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result
