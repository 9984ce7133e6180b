"""Helpers shared by the benchmarks: timing, medians, peak memory, child processes, tables.

Peak memory is measured per measured case by running the case in a **child process**, which
reports its own ``VmHWM`` from ``/proc/self/status`` when the case is done (the kernel's
high-water mark of its resident set: Python, Arrow and DuckDB allocations alike, including the
data the case loads). Not ``ru_maxrss`` from ``os.wait4``: Linux carries the parent's peak into
a child across fork and exec, so a parent that already held benchmark data would inflate it
(``ru_maxrss`` is the fallback where ``/proc`` is missing).
Timings are taken inside the child with ``time.perf_counter`` after a warm-up run, so process
start-up and imports are not timed.

Usage in a benchmark::

    from _common import child_main, run_child, median, fmt_bytes

    def case_quiver(args: dict) -> list[float]:   # runs in the child
        ...
        return timings([lambda: job.to_arrow()], repeat=args["repeat"])

    if __name__ == "__main__":
        if child_main(globals()):                 # dispatches `--child` invocations
            raise SystemExit
        result = run_child(__file__, "case_quiver", {"repeat": 5})
        print(median(result.times), fmt_bytes(result.peak_rss))
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ChildResult",
    "child_main",
    "fmt_bytes",
    "fmt_seconds",
    "median",
    "print_table",
    "run_child",
    "timings",
]


def timings(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeat`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def median(values: list[float]) -> float:
    """The median (``nan`` for an empty list)."""
    return statistics.median(values) if values else float("nan")


@dataclass
class ChildResult:
    """What a case run in a child process reported, the child's peak RSS in bytes, and the CPU
    seconds (user + system, all threads) the whole child used."""

    times: list[float]
    extra: dict[str, Any]
    peak_rss: int
    cpu: float = 0.0


def run_child(
    script: str | Path, case: str, args: dict[str, Any], env: dict[str, str] | None = None
) -> ChildResult:
    """Run ``case(args)`` of ``script`` in a fresh interpreter; return its timings and peak RSS.

    The case function must return a list of seconds, or a dict with ``times`` and any extra
    JSON-compatible fields. ``env``: the child's environment (default: this process's).

    Raises:
        RuntimeError: the child failed (its stderr is included).
    """
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as out:
        out_path = out.name
    err_path = out_path + ".err"
    try:
        with open(err_path, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, str(script), "--child", case, json.dumps(args), out_path],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=env,
            )
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark case {case} failed:\n{Path(err_path).read_text()}")
        payload = json.loads(Path(out_path).read_text())
    finally:
        for p in (out_path, err_path):
            Path(p).unlink(missing_ok=True)
    if isinstance(payload, list):
        payload = {"times": payload}
    times = payload.pop("times")
    peak = payload.pop("_vm_hwm", 0) or usage.ru_maxrss * 1024
    cpu = usage.ru_utime + usage.ru_stime
    return ChildResult(times=times, extra=payload, peak_rss=peak, cpu=cpu)


def child_main(namespace: dict[str, Any]) -> bool:
    """If this process is a ``--child`` run, run the case and write its result; else False."""
    if len(sys.argv) < 5 or sys.argv[1] != "--child":
        return False
    case, args, out_path = sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
    result = namespace[case](args)
    if isinstance(result, list):
        result = {"times": result}
    result["_vm_hwm"] = _vm_hwm()
    Path(out_path).write_text(json.dumps(result))
    return True


def _vm_hwm() -> int:
    """This process's peak resident set in bytes (``VmHWM``; 0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def fmt_seconds(seconds: float) -> str:
    """``1.23 s`` / ``45.6 ms``."""
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def fmt_bytes(n: float) -> str:
    """``512 MiB`` / ``1.2 GiB``."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.2f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a plain aligned table (no dependencies)."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
