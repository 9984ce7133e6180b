"""``import quiver`` must not load heavy optional modules (the check of bench/import_time.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "import_time.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH), "--check", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_quiver_loads_no_heavy_module() -> None:
    proc = _run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ok:")


def test_the_check_catches_a_heavy_module() -> None:
    # Import a heavy module (installed with the dev extras) after quiver: the check must fail.
    proc = _run("--preload", "redis")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "imported heavy modules: redis" in proc.stdout
