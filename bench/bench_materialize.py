"""Benchmark: materialization into SQLite and Redis against plain bulk writes, and peak memory.

Data: 1,000,000 source rows, 100,000 entities (10 rows each), 10 features (4 int64, 4 float64,
2 string), event and created timestamps; one Parquet file. Materialization writes the latest
row of each of the 100,000 entities.

Measured in the same run (medians over ``--reps`` runs, each into an empty store):

- ``quiver materialize``: ``FeatureStore.materialize(start, end)`` end to end (DuckDB's
  latest-per-key query, streamed, written in batches of 10,000 rows with newer-wins upserts).
- ``reference, end to end``: the same DuckDB query by hand (``QUALIFY row_number() ...``),
  then a plain ``executemany`` INSERT into one SQLite table in one transaction / a plain
  pipelined Redis ``SET`` of struct-packed rows.
- ``write path only``: the 100,000 latest rows already in memory (an Arrow table): Quiver's
  ``online_store.write`` in 10,000-row batches vs. the plain ``executemany`` / pipelined ``SET``.
- ``validation on`` against ``validation off``: the same materialization of a second view over
  the same source whose every feature declares rules (``min_value``/``max_value`` on the numbers,
  ``not_null`` and a ``regex`` on the strings, one view-level SQL check), with the ``reject``
  policy (``--validation-policy``; ``reject`` holds the checked rows, in memory up to 64 MB, then
  in a temporary Arrow file, until the last one passed). Every row passes. Target: at most 10%
  slower.

Target: within 1.5x of each reference.

Feature statistics (``monitoring.statistics``, on by default) cost: the same materialization into
SQLite with statistics on and off, alternated round by round (medians); target: on at most 1.10x
off. ``--statistics-only`` runs this case alone.

Peak memory: a child process materializes a
``--memory-rows`` source (default 10,000,000 rows, 1,000,000 entities) into SQLite; its peak
RSS (``VmHWM``) is compared with the source's size (in memory, uncompressed). ``default``
is no ``offline_engine`` settings: materialization then runs in DuckDB with a 256MB budget and
one thread; other ``--memory-limits`` set ``offline_engine.memory_limit`` (materialization's
budget, one DuckDB thread per 256MB of it). The memory source's rows come in entity order
(``cyclic``: each block of 1,000,000 rows holds every entity once) or, with
``--memory-order random``, with entity ids drawn at random (the latest rows then come out of the
source in random key order).

Run: ``python bench/bench_materialize.py [--quick] [--reps 3] [--stores sqlite,redis]
[--memory-rows N] [--memory-limits default,1GB] [--memory-order cyclic,random]
[--skip-memory] [--statistics-only]`` (``--stores ''`` runs the memory case alone).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data" / "materialize"
sys.path.insert(0, str(HERE.parent / "tests"))  # the redis-server helper the tests use

INTS = ["f_int_0", "f_int_1", "f_int_2", "f_int_3"]
FLOATS = ["f_float_0", "f_float_1", "f_float_2", "f_float_3"]
STRINGS = ["f_str_0", "f_str_1"]
FEATURES = INTS + FLOATS + STRINGS
DTYPES = {**dict.fromkeys(INTS, "int64"), **dict.fromkeys(FLOATS, "float64")}
DTYPES.update(dict.fromkeys(STRINGS, "string"))
END = datetime(2026, 1, 1, tzinfo=UTC)
START = END - timedelta(days=400)
BATCH = 10_000


def make_source(
    path: Path,
    rows: int,
    entities: int,
    seed: int = 3,
    order: str = "cyclic",
    start: datetime = START,
) -> Path:
    """A Parquet source (written in 1M-row groups so generating 10M rows stays small).

    ``order``: ``cyclic`` (ids 1..entities, repeated) or ``random`` (ids drawn at random).
    ``start``: the earliest event time (the latest is :data:`END`).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    span_us = int((END - start).total_seconds() * 1e6)
    start_us = int(start.timestamp() * 1e6)
    writer = None
    done = 0
    while done < rows:
        n = min(1_000_000, rows - done)
        if order == "random":
            ids = rng.integers(1, entities + 1, size=n)
        else:
            ids = (np.arange(done, done + n) % entities) + 1
        ts = start_us + rng.integers(0, span_us - 10**6, size=n)
        columns = {
            "customer_id": ids.astype(np.int64),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "created_timestamp": pa.array(ts + 1_000, pa.timestamp("us", tz="UTC")),
        }
        for name in INTS:
            columns[name] = rng.integers(0, 10**9, size=n)
        for name in FLOATS:
            columns[name] = rng.random(n)
        for name in STRINGS:
            columns[name] = pa.array(np.char.add("s", rng.integers(0, 10**6, size=n).astype(str)))
        table = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=1_000_000)
        done += n
    assert writer is not None
    writer.close()
    tmp.rename(path)
    return path


def make_repo(
    root: Path, source: Path, online: dict[str, Any], policy: str = "reject", **extra: Any
) -> Path:
    import yaml

    from quiver import Entity, FeatureStore, FeatureView, Field, FileSource

    if root.exists():
        shutil.rmtree(root)
    (root / "data").mkdir(parents=True)
    config = {
        "project": "bench",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": online,
        **extra,
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    customer = Entity(name="customer", join_keys=["customer_id"])
    src = FileSource(
        name="src",
        path=str(source),
        timestamp_field="event_timestamp",
        created_timestamp_field="created_timestamp",
    )
    view = FeatureView(
        name="stats",
        entities=[customer],
        features=[Field(name=f, dtype=DTYPES[f]) for f in FEATURES],
        source=src,
    )
    with FeatureStore(root) as store:
        store.apply([customer, src, view, checked_view(src, policy)])
    return root


RULES = {
    "int64": {"min_value": 0, "max_value": 10**9},
    "float64": {"min_value": 0, "max_value": 1},
    "string": {"not_null": True, "regex": "s[0-9]+"},
}


def checked_view(src: Any, policy: str) -> Any:
    """``stats`` with rules on every feature (all rows pass them)."""
    from quiver import FeatureView, Field

    return FeatureView(
        name="stats_checked",
        entities=["customer"],
        features=[
            Field(name=f, dtype=DTYPES[f], validation_rules=RULES[DTYPES[f]]) for f in FEATURES
        ],
        source=src,
        validation={"policy": policy, "checks": ["f_int_0 >= 0 OR f_float_0 < 2"]},
    )


def reset_online(root: Path, kind: str, redis_client: Any) -> None:
    if kind == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(str(root / "data" / "online.db") + suffix).unlink(missing_ok=True)
    else:
        redis_client.flushall()


# -- references -----------------------------------------------------------------------------------


LATEST_SQL = (
    "SELECT customer_id, epoch_us(event_timestamp) AS ts, epoch_us(created_timestamp) AS cts, "
    + ", ".join(FEATURES)
    + " FROM read_parquet(?) WHERE event_timestamp >= ? AND event_timestamp < ? "
    "QUALIFY row_number() OVER (PARTITION BY customer_id "
    "ORDER BY event_timestamp DESC, created_timestamp DESC) = 1"
)


def latest_batches(source: Path) -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    reader = con.sql(LATEST_SQL, params=[str(source), START, END]).to_arrow_reader(65_536)
    yield from reader
    con.close()


def _rows(batch: Any) -> Any:
    return zip(*[batch.column(i).to_pylist() for i in range(batch.num_columns)], strict=True)


def sqlite_plain_write(path: Path, batches: Any) -> int:
    """Plain executemany INSERT of every row into one table, in one transaction."""
    types = {"int64": "INTEGER", "float64": "REAL", "string": "TEXT"}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")
    cols = ", ".join(f"{f} {types[DTYPES[f]]}" for f in FEATURES)
    conn.execute(
        f"CREATE TABLE ref (customer_id INTEGER PRIMARY KEY, ts INTEGER, cts INTEGER, {cols})"
    )
    marks = ",".join("?" * (3 + len(FEATURES)))
    n = 0
    conn.execute("BEGIN")
    for batch in batches:
        conn.executemany(f"INSERT INTO ref VALUES ({marks})", _rows(batch))
        n += batch.num_rows
    conn.execute("COMMIT")
    conn.close()
    return n


_PACK = struct.Struct(">qq" + "q" * len(INTS) + "d" * len(FLOATS))


def redis_plain_write(client: Any, batches: Any) -> int:
    """Plain pipelined SET of struct-packed rows (no newer-wins check, no expiry)."""
    n = 0
    for batch in batches:
        pipe = client.pipeline(transaction=False)
        for row in _rows(batch):
            strings = b"".join(
                struct.pack(">I", len(b)) + b for b in (s.encode() for s in row[3 + 8 :])
            )
            pipe.set(b"ref:%d" % row[0], _PACK.pack(*row[1:11]) + strings)
            if len(pipe) >= 1_000:
                pipe.execute()
        pipe.execute()
        n += batch.num_rows
    return n


# -- measurement ----------------------------------------------------------------------------------


def run_cases(
    kind: str, root: Path, source: Path, reps: int, server: Any, validation: list[tuple]
) -> list[tuple]:
    import pyarrow as pa

    from quiver import FeatureStore
    from quiver.online.encoding import ViewLayout

    client = None
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(server.url)
    ours, ref_e2e, ours_write, ref_write, checked = [], [], [], [], []
    latest = pa.Table.from_batches(list(latest_batches(source)))
    latest_named = latest.rename_columns(
        ["customer_id", "event_timestamp", "created_timestamp", *FEATURES]
    )
    latest_named = latest_named.set_column(
        1, "event_timestamp", latest_named.column(1).cast(pa.timestamp("us", tz="UTC"))
    ).set_column(2, "created_timestamp", latest_named.column(2).cast(pa.timestamp("us", tz="UTC")))
    for rep in range(reps + 1):  # the first round warms up and is not counted
        reset_online(root, kind, client)
        with FeatureStore(root) as store:
            started = time.perf_counter()
            (run,) = store.materialize(START, END, ["stats"])
            took = time.perf_counter() - started
            assert run.rows_written == latest.num_rows, run
        if rep:
            ours.append(took)

        reset_online(root, kind, client)
        with FeatureStore(root) as store:
            started = time.perf_counter()
            (run,) = store.materialize(START, END, ["stats_checked"])
            took_checked = time.perf_counter() - started
            assert run.rows_written == latest.num_rows and run.rows_invalid == 0, run
        if rep:
            checked.append(took_checked)

        reset_online(root, kind, client)
        started = time.perf_counter()
        if kind == "sqlite":
            ref_path = root / "data" / "reference.db"
            for suffix in ("", "-wal", "-shm"):
                Path(str(ref_path) + suffix).unlink(missing_ok=True)
            sqlite_plain_write(ref_path, latest_batches(source))
        else:
            redis_plain_write(client, latest_batches(source))
        if rep:
            ref_e2e.append(time.perf_counter() - started)

        reset_online(root, kind, client)
        with FeatureStore(root) as store:
            fv = store.get_feature_view("stats")
            layout = ViewLayout.from_view(store.project, fv, [store.get_entity("customer")])
            online = store.online_store
            started = time.perf_counter()
            for offset in range(0, latest_named.num_rows, BATCH):
                online.write(layout, latest_named.slice(offset, BATCH))
            if rep:
                ours_write.append(time.perf_counter() - started)

        reset_online(root, kind, client)
        started = time.perf_counter()
        batches = latest.to_batches(max_chunksize=65_536)
        if kind == "sqlite":
            ref_path = root / "data" / "reference.db"
            for suffix in ("", "-wal", "-shm"):
                Path(str(ref_path) + suffix).unlink(missing_ok=True)
            sqlite_plain_write(ref_path, batches)
        else:
            redis_plain_write(client, batches)
        if rep:
            ref_write.append(time.perf_counter() - started)
        print(
            f"  [{kind}] round {rep}: quiver {took:.2f}s, with validation {took_checked:.2f}s",
            flush=True,
        )
    med = statistics.median
    validation.append((kind, med(checked), med(ours)))
    return [
        (kind, "end to end", med(ours), med(ref_e2e)),
        (kind, "write path only", med(ours_write), med(ref_write)),
    ]


def statistics_case(source: Path, reps: int) -> tuple[float, float]:
    """Median seconds of materializing into SQLite with statistics on, and off (alternated)."""
    from quiver import FeatureStore

    online = {"type": "sqlite", "path": "data/online.db"}
    roots = {
        on: make_repo(
            DATA / f"repo_statistics_{'on' if on else 'off'}",
            source,
            online,
            monitoring={"statistics": on},
        )
        for on in (True, False)
    }
    took: dict[bool, list[float]] = {True: [], False: []}
    for rep in range(reps + 1):  # the first round warms up and is not counted
        order = (True, False) if rep % 2 else (False, True)
        for on in order:
            reset_online(roots[on], "sqlite", None)
            with FeatureStore(roots[on]) as store:
                started = time.perf_counter()
                store.materialize(START, END, ["stats"])
                seconds = time.perf_counter() - started
            if rep:
                took[on].append(seconds)
            print(f"  [statistics {'on' if on else 'off'}] round {rep}: {seconds:.2f}s", flush=True)
    return statistics.median(took[True]), statistics.median(took[False])


def _memory_source(rows: int, entities: int, order: str) -> Path:
    name = f"source_{rows}.parquet" if order == "cyclic" else f"source_{rows}_{order}.parquet"
    return make_source(DATA / name, rows, entities, order=order)


def memory_child(rows: int, entities: int, memory_limit: str | None, order: str) -> None:
    """Runs in a child process: materialize a large source into SQLite, print JSON."""
    from quiver import FeatureStore

    source = _memory_source(rows, entities, order)
    extra = {"offline_engine": {"memory_limit": memory_limit}} if memory_limit else {}
    root = make_repo(
        DATA / f"repo_memory_{memory_limit or 'default'}_{order}",
        source,
        {"type": "sqlite", "path": "data/online.db"},
        **extra,
    )
    store = FeatureStore(root)
    store.online_store.ping()
    baseline = _current_rss()
    started = time.perf_counter()
    (run,) = store.materialize(START, END, ["stats"])
    took = time.perf_counter() - started
    peak = _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {"baseline": baseline, "peak": peak, "seconds": took, "rows_written": run.rows_written}
        )
    )


def _current_rss() -> int:
    return _status_bytes("VmRSS")


def _status_bytes(field: str) -> int:
    """A size from ``/proc/self/status`` (0 if unavailable).

    The peak is ``VmHWM``, the high-water mark of this process's own address space. Not
    ``ru_maxrss``: Linux carries the parent's peak into a child across fork/exec, so a child
    started by a parent that already held the benchmark data would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def memory_case(rows: int, memory_limit: str | None, order: str = "cyclic") -> dict[str, Any]:
    import pyarrow.parquet as pq

    entities = max(rows // 10, 1)
    source = _memory_source(rows, entities, order)
    meta = pq.read_metadata(source)
    in_memory = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    cmd = [sys.executable, __file__, "--memory-child", str(rows), str(entities), order]
    if memory_limit:
        cmd += ["--memory-limit", memory_limit]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ.copy())
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(
        rows=rows,
        entities=entities,
        file_bytes=source.stat().st_size,
        arrow_bytes=in_memory,
        memory_limit=memory_limit,
    )
    return result


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200k rows / 20k entities, 1 round")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--memory-rows", type=int, default=None)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--memory-limits",
        default="default,1GB",
        help="offline_engine.memory_limit values for the memory case ('default': unset)",
    )
    parser.add_argument(
        "--memory-order",
        default="cyclic",
        help="row order(s) of the memory case's source: cyclic, random (comma-separated)",
    )
    parser.add_argument(
        "--statistics-only", action="store_true", help="only statistics on against off"
    )
    parser.add_argument(
        "--validation-policy",
        default="reject",
        choices=["reject", "drop", "warn"],
        help="the policy of the validated view (reject: the checked rows wait in a temp file)",
    )
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--memory-limit", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        rows_text, entities_text, order = args.memory_child
        memory_child(int(rows_text), int(entities_text), args.memory_limit, order)
        return

    rows, entities = (200_000, 20_000) if args.quick else (1_000_000, 100_000)
    reps = args.reps or (1 if args.quick else 3)
    memory_rows = args.memory_rows or (2_000_000 if args.quick else 10_000_000)
    print(f"data: {rows:,} source rows, {entities:,} entities, 10 features; {reps} round(s)")
    source = make_source(DATA / f"source_{rows}.parquet", rows, entities)
    on, off = statistics_case(source, reps)
    verdict = "ok" if on / off <= 1.10 else "ABOVE TARGET"
    print(
        f"statistics on {on:.2f}s, off {off:.2f}s: {on / off:.3f}x (target <= 1.10x) {verdict}",
        flush=True,
    )
    if args.statistics_only:
        return
    results: list[tuple] = []
    validation: list[tuple] = []
    server = None
    try:
        for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
            if kind == "sqlite":
                online: dict[str, Any] = {"type": "sqlite", "path": "data/online.db"}
            else:
                from _servers import start_redis

                server = start_redis()
                online = {"type": "redis", "url": server.url, "key_prefix": "bench"}
            root = make_repo(DATA / f"repo_{kind}", source, online, args.validation_policy)
            results += run_cases(kind, root, source, reps, server, validation)
            if server is not None:
                server.stop()
                server = None
    finally:
        if server is not None:
            server.stop()

    print()
    print("store   case               quiver     reference   ratio (target <= 1.5x)")
    for kind, case, ours, ref in results:
        ratio = ours / ref
        verdict = "ok" if ratio <= 1.5 else "ABOVE TARGET"
        print(
            f"{kind:7s} {case:17s} {ours:7.2f}s   {ref:7.2f}s     {ratio:4.2f}x {verdict}   "
            f"({entities / ours:,.0f} rows/s)"
        )

    print()
    print(f"validation ({args.validation_policy} policy, every row passes; same run):")
    print("store   validation on   validation off   ratio (target <= 1.10x)")
    for kind, on, off in validation:
        ratio = on / off
        verdict = "ok" if ratio <= 1.10 else "ABOVE TARGET"
        print(f"{kind:7s} {on:11.2f}s   {off:12.2f}s     {ratio:4.2f}x {verdict}")

    if args.skip_memory:
        return
    print()
    print(f"peak memory, materializing {memory_rows:,} source rows into SQLite (child process):")
    cases = [
        (order.strip(), text.strip())
        for order in args.memory_order.split(",")
        for text in args.memory_limits.split(",")
    ]
    for order, text in cases:
        if order not in ("cyclic", "random"):
            parser.error(f"--memory-order {order!r}: use cyclic or random")
        limit = None if text in ("", "default") else text
        r = memory_case(memory_rows, limit, order)
        print(
            f"  {order:6s} memory_limit={limit or 'default':8s} peak RSS {mb(r['peak'])} "
            f"(baseline after imports {mb(r['baseline'])}); source: {mb(r['arrow_bytes'])} in "
            f"memory, {mb(r['file_bytes'])} on disk; peak / source in memory = "
            f"{r['peak'] / r['arrow_bytes']:.2f}; {r['rows_written']:,} keys in "
            f"{r['seconds']:.1f}s",
            flush=True,
        )


if __name__ == "__main__":
    main()
