"""CPU of an idle ``quiver scheduler``, against an idle Python process in the same run.

A repository with ``--views`` scheduled views (cron ``0 0 1 1 *``: after the first catch-up
run, nothing is due for a year) and a SQLite registry. ``quiver scheduler`` runs in a child
process; after ``--settle`` seconds (its start-up and the catch-up runs), its CPU time (user +
system, from ``/proc/PID/stat``, its own threads) is read over ``--seconds`` seconds of idling,
for the default poll interval and for a 1-second one. The reference is a Python process that
sleeps in a loop (the floor of an idle interpreter). Prints CPU seconds per minute, the share
of one core and peak memory (``VmHWM``).

    .venv/bin/python bench/bench_scheduler_idle.py --seconds 60
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import fmt_bytes, print_table


def make_repo(root: Path, views: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    from quiver import Entity, FeatureStore, FeatureView, Field, FileSource

    (root / "data").mkdir(parents=True)
    (root / "quiver.yaml").write_text(yaml.safe_dump({"project": "bench", "definitions": []}))
    now = datetime.now(UTC)
    ts = [now - timedelta(minutes=i) for i in range(100)]
    table = pa.table(
        {
            "id": list(range(100)),
            "ts": pa.array(ts, pa.timestamp("us", "UTC")),
            "x": list(range(100)),
        }
    )
    pq.write_table(table, root / "data" / "events.parquet")
    entity = Entity(name="thing", join_keys=["id"])
    source = FileSource(name="events", path="data/events.parquet", timestamp_field="ts")
    objects: list[object] = [entity, source]
    for i in range(views):
        objects.append(
            FeatureView(
                name=f"view_{i}",
                entities=[entity],
                schema=[Field(name="x", dtype="int64")],
                source=source,
                materialization_schedule="0 0 1 1 *",
            )
        )
    with FeatureStore(root) as store:
        store.apply(objects)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:13]) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def measure(
    command: list[str], env: dict[str, str], settle: float, seconds: float
) -> tuple[float, int]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        time.sleep(settle)
        if process.poll() is not None:
            raise SystemExit(f"{command} exited early ({process.returncode})")
        before = cpu_seconds(process.pid)
        time.sleep(seconds)
        used = cpu_seconds(process.pid) - before
        return used, peak_rss(process.pid)
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        make_repo(repo, args.views)
        quiver = [sys.executable, "-c", "from quiver.cli import main; main()"]
        cases = [
            (
                "idle python (reference)",
                [sys.executable, "-c", "import time\nwhile True: time.sleep(1)"],
                {},
            ),
            ("quiver scheduler (poll 15 s)", [*quiver, "scheduler", "--repo", str(repo)], {}),
            (
                "quiver scheduler (poll 1 s)",
                [*quiver, "scheduler", "--repo", str(repo)],
                {"QUIVER_SCHEDULER__POLL_SECONDS": "1"},
            ),
        ]
        rows = []
        for name, command, extra in cases:
            env = {**os.environ, **extra}
            used, peak = measure(command, env, args.settle, args.seconds)
            per_minute = used * 60.0 / args.seconds
            rows.append(
                [name, f"{per_minute:.3f} s", f"{100 * used / args.seconds:.3f} %", fmt_bytes(peak)]
            )
        print(f"{args.views} scheduled views, idle for {args.seconds:g} s after {args.settle:g} s")
        print_table(["process", "CPU per minute", "of one core", "peak memory"], rows)


if __name__ == "__main__":
    main()
