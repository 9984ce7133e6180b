"""Quiver installed from the lock with no extra at all, in a new virtual environment.

The core alone must take a user from ``quiver init`` to online values; a feature of an extra
must say which extra to install instead of failing with an ImportError.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment with quiver and its core dependencies only (from uv's cache)."""
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is not installed (it is in the dev extra)"
    venv = tmp_path_factory.mktemp("core") / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [uv, "sync", "--frozen", "--offline", "--python", sys.executable, "--no-default-groups"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    yield venv
    shutil.rmtree(venv, ignore_errors=True)


def _quiver(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [str(venv / "bin" / "quiver"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_core_alone_runs_the_feature_store(core_venv: Path, tmp_path: Path) -> None:
    site = next((core_venv / "lib").glob("python3*/site-packages"))
    for extra_only in ("fastapi", "sklearn", "lightgbm", "redis", "pytest"):
        assert not (site / extra_only).exists(), f"{extra_only} is in a core-only install"

    steps = [
        ("--version",),
        ("init", "repo", "--demo", "--customers", "200"),
        ("apply", "--repo", "repo"),
        ("feature-views", "list", "--repo", "repo"),
        (
            "training-set",
            "--repo",
            "repo",
            "--entities",
            "churn_labels",
            "--service",
            "churn_prediction_v1",
            "--out",
            "training.parquet",
        ),
        ("materialize-incremental", "now", "--repo", "repo"),
        ("get-online", "--repo", "repo", "--service", "churn_prediction_v1", "-e", "customer_id=1"),
    ]
    for args in steps:
        result = _quiver(core_venv, *args, cwd=tmp_path)
        assert result.returncode == 0, f"quiver {' '.join(args)}:\n{result.stdout}{result.stderr}"
    assert (tmp_path / "training.parquet").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "extra"),
    [
        (("serve", "--repo", "repo", "--port", "1"), "server"),
        (("train", "repo/churn_model.yaml", "--repo", "repo"), "ml"),
    ],
    ids=["serve", "train"],
)
def test_a_missing_extra_is_named(
    core_venv: Path, tmp_path: Path, args: tuple[str, ...], extra: str
) -> None:
    assert (
        _quiver(core_venv, "init", "repo", "--demo", "--customers", "50", cwd=tmp_path).returncode
        == 0
    )
    assert _quiver(core_venv, "apply", "--repo", "repo", cwd=tmp_path).returncode == 0
    result = _quiver(core_venv, *args, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"quiver[{extra}]" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
