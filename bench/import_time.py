"""Benchmark: ``import quiver`` in a fresh interpreter, and a check that it stays light.

Each run starts a new Python process, times ``import quiver`` inside it with
``time.perf_counter`` (interpreter start-up is not included), and lists which heavy optional
modules ended up in ``sys.modules``. As references measured in the same run, fresh
interpreters time ``import pydantic`` (quiver's definitions are pydantic models, so this is the
floor under ``import quiver``), and the bare interpreter start-up is timed from outside.

Exit status: 1 if any heavy module (fastapi, uvicorn, redis, pyspark, sklearn, xgboost,
lightgbm, pyiceberg) was imported by ``import quiver``; 0 otherwise. The time target (median
< 0.3 s) is reported, and enforced only with ``--strict``.

Run: ``python bench/import_time.py [--runs 7] [--strict]``; ``--check`` does one run and only
the heavy-module check (used by the unit tests).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

HEAVY_MODULES = (
    "fastapi",
    "uvicorn",
    "redis",
    "pyspark",
    "sklearn",
    "xgboost",
    "lightgbm",
    "pyiceberg",
)
"""Optional dependencies that ``import quiver`` must not load."""

INFO_MODULES = ("duckdb", "pyarrow", "pandas", "polars", "numpy", "sqlalchemy", "alembic")
"""Reported for information: core dependencies that are better loaded on first use."""

TARGET_SECONDS = 0.3

_CHILD = """
import sys, time
start = time.perf_counter()
import {module}
seconds = time.perf_counter() - start
for name in {preload!r}:
    __import__(name)
top = {{name.split(".")[0] for name in sys.modules}}
import json
print(json.dumps({{
    "seconds": seconds,
    "heavy": sorted(set({heavy!r}) & top),
    "info": sorted(set({info!r}) & top),
}}))
"""


def measure_once(module: str = "quiver", preload: tuple[str, ...] = ()) -> dict[str, Any]:
    """Import ``module`` in a fresh interpreter; return its timing and the modules it loaded.

    Args:
        module: The module to time (``quiver``, or a reference).
        preload: Modules imported afterwards (only to test that the check catches them).
    """
    code = _CHILD.format(module=module, preload=preload, heavy=HEAVY_MODULES, info=INFO_MODULES)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"the child interpreter failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def interpreter_startup() -> float:
    """Wall seconds of ``python -c pass``: the floor under every measured run."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=120)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="fresh interpreters to time")
    parser.add_argument("--check", action="store_true", help="one run, heavy-module check only")
    parser.add_argument("--strict", action="store_true", help="also fail above the time target")
    parser.add_argument(
        "--preload", action="append", default=[], help=argparse.SUPPRESS
    )  # self-test of the check: import this module after quiver
    args = parser.parse_args(argv)

    runs = 1 if args.check else max(1, args.runs)
    results = [measure_once("quiver", tuple(args.preload)) for _ in range(runs)]
    heavy = sorted({m for r in results for m in r["heavy"]})
    if heavy:
        print(f"FAIL: `import quiver` imported heavy modules: {', '.join(heavy)}")
        return 1
    if args.check:
        print("ok: `import quiver` imports none of " + ", ".join(HEAVY_MODULES))
        return 0

    startup = statistics.median(interpreter_startup() for _ in range(runs))
    seconds = statistics.median(r["seconds"] for r in results)
    reference = statistics.median(measure_once("pydantic")["seconds"] for _ in range(runs))
    wall = statistics.median(r["wall"] for r in results)
    print(f"runs: {runs} fresh interpreters ({sys.executable})")
    target = f"(target < {TARGET_SECONDS:.1f} s)"
    print(f"import quiver            median {seconds * 1000:8.1f} ms  {target}")
    print(
        f"reference: import pydantic median {reference * 1000:6.1f} ms  "
        f"(quiver / pydantic = {seconds / reference:.2f}x)"
    )
    print(f"interpreter start-up     median {startup * 1000:8.1f} ms  (python -c pass)")
    print(f"child wall time          median {wall * 1000:8.1f} ms")
    print(
        f"min / max import quiver  {min(r['seconds'] for r in results) * 1000:.1f} / "
        f"{max(r['seconds'] for r in results) * 1000:.1f} ms"
    )
    info = sorted({m for r in results for m in r["info"]})
    print(
        "also loaded (core deps): "
        + (", ".join(info) if info else "none of " + ", ".join(INFO_MODULES))
    )
    print("heavy modules loaded: none")
    if seconds >= TARGET_SECONDS:
        print(f"WARNING: median {seconds:.3f} s is above the {TARGET_SECONDS} s target")
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
