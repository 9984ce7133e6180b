"""Benchmark: the Spark offline engine (``local[2]``) against DuckDB, same run, same files.

Data: ``--rows`` feature rows (default 10,000,000) of ``--keys`` customers (default 1,000,000,
cyclic ids), 10 features (4 int64, 4 float64, 2 string), event and created timestamps, in one
Parquet file; an entity table of ``--entities`` rows (default 1,000,000: random customers at
random times). Cases, each engine in a fresh child process per case (``_common.py``):

- ``join``: ``get_historical_features(entity, 10 features).to_parquet(...)`` (the point-in-time
  join, streamed to a Parquet file); the two engines' files must be equal, row by row.
- ``materialize``: ``FeatureStore.materialize(start, end)`` of the view into an empty SQLite
  online store (the latest row of every key); the two online tables must be equal.
- ``aggregates``: ``get_historical_features`` of a view with windowed aggregations over the same
  source (count, sum, mean, max over 1d/7d/30d with 1-hour tiles) for the entity table; equal
  values (floats to 1e-9 relative).

Times are medians over ``--repeat`` runs after ``--warmup`` untimed ones. Memory: the driver's
peak RSS (``VmHWM`` of the child, i.e. the Python process: Quiver, Arrow, DuckDB, py4j) and,
for Spark, the peak RSS of its JVM (the ``java`` process the driver starts) and of its largest
Python worker. ``--memory-rows`` (default ``1000000``) reruns the Spark join with that many
feature rows (same entity table): the driver's peak at ``--rows`` must stay within 1.5x of it,
which shows nothing is collected to the driver.

Run: ``python bench/bench_spark.py [--rows 10000000] [--keys N] [--entities N] [--repeat 3]
[--warmup 1] [--cases join,materialize,aggregates] [--memory-rows 1000000] [--partitions 16]``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import child_main, fmt_bytes, fmt_seconds, median, print_table, run_child, timings

# The same feature table as bench_materialize.py's (columns, 1M-row groups), over a year.
from bench_materialize import DTYPES, END, FEATURES, make_source

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data" / "spark"

START = END - timedelta(days=365)

AGGREGATIONS = [
    ("count", None, "1d"),
    ("count", None, "30d"),
    ("sum", "f_float_0", "7d"),
    ("mean", "f_float_1", "30d"),
    ("max", "f_int_0", "7d"),
    ("sum", "f_int_1", "1d"),
]


# -- data -----------------------------------------------------------------------------------------


def make_entities(path: Path, rows: int, keys: int, seed: int = 5) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    span_us = int((END - START).total_seconds() * 1e6)
    start_us = int(START.timestamp() * 1e6)
    table = pa.table(
        {
            "customer_id": rng.integers(1, keys + 1, size=rows).astype(np.int64),
            "event_timestamp": pa.array(
                start_us + rng.integers(0, span_us, size=rows), pa.timestamp("us", tz="UTC")
            ),
        }
    )
    pq.write_table(table, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    return path


def make_repo(root: Path, source: Path, engine: str, partitions: int) -> Path:
    import yaml

    from quiver import Aggregation, Entity, FeatureStore, FeatureView, Field, FileSource

    if root.exists():
        shutil.rmtree(root)
    (root / "data").mkdir(parents=True)
    config: dict[str, Any] = {
        "project": "bench",
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": {"type": "sqlite", "path": "data/online.db"},
    }
    if engine == "spark":
        config["offline_engine"] = {
            "type": "spark",
            "master": "local[2]",
            "conf": {
                "spark.driver.memory": "2g",
                "spark.sql.shuffle.partitions": str(partitions),
                "spark.ui.enabled": "false",
            },
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
    aggs = FeatureView(
        name="stats_agg",
        entities=[customer],
        features=[Field(name=f, dtype=DTYPES[f]) for f in FEATURES],
        source=src,
        online=False,
        aggregations=[Aggregation(function=f, column=c, window=w) for f, c, w in AGGREGATIONS],
        aggregation_interval=timedelta(hours=1),
    )
    with FeatureStore(root) as store:
        store.apply(store.plan([customer, src, view, aggs]))
    return root


# -- memory of the Spark processes ----------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _status(pid: int) -> tuple[str, int]:
    """A process's name and peak RSS in bytes."""
    name, hwm = "", 0
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Name:"):
                    name = line.split()[1]
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return name, hwm


def spark_memory() -> dict[str, int]:
    """Peak RSS of the JVM this process started and of its largest Python worker."""
    jvm = worker = 0
    for pid in _descendants(os.getpid()):
        name, hwm = _status(pid)
        if name == "java":
            jvm = max(jvm, hwm)
        elif name.startswith("python"):
            worker = max(worker, hwm)
    return {"jvm_hwm": jvm, "worker_hwm": worker}


# -- cases (in child processes) -------------------------------------------------------------------


def case_join(args: dict[str, Any]) -> dict[str, Any]:
    import pyarrow.parquet as pq

    from quiver import FeatureStore

    store = FeatureStore(args["repo"])
    store.offline_engine  # noqa: B018  (Spark: the session starts here, untimed)
    entity = pq.read_table(args["entities"])
    features = [f"{args['view']}:{f}" for f in args["features"]]

    def run() -> None:
        store.get_historical_features(entity, features=features).to_parquet(args["out"])

    times = timings(run, repeat=args["repeat"], warmup=args["warmup"])
    memory = spark_memory()
    store.close()
    return {"times": times, **memory}


def case_materialize(args: dict[str, Any]) -> dict[str, Any]:
    from quiver import FeatureStore

    root = Path(args["repo"])
    keeper = FeatureStore(root)  # starts the engine (Spark: its session, reused below)
    keeper.offline_engine  # noqa: B018

    def run() -> None:  # each run into an empty online store
        for suffix in ("", "-wal", "-shm"):
            Path(str(root / "data" / "online.db") + suffix).unlink(missing_ok=True)
        with FeatureStore(root) as store:
            store.materialize(START, END, ["stats"])

    times = timings(run, repeat=args["repeat"], warmup=args["warmup"])
    memory = spark_memory()
    keeper.close()
    return {"times": times, **memory}


# -- checks ---------------------------------------------------------------------------------------


def same_files(a: str, b: str, tolerance: bool) -> str:
    """``equal`` or where the two Parquet files differ."""
    import pyarrow.parquet as pq

    ta, tb = pq.read_table(a), pq.read_table(b)
    if ta.schema != tb.schema or ta.num_rows != tb.num_rows:
        return f"DIFFERENT shape: {ta.schema} {ta.num_rows} vs {tb.schema} {tb.num_rows}"
    for name in ta.column_names:
        ca, cb = ta.column(name), tb.column(name)
        if ca.equals(cb):
            continue
        if not tolerance:
            return f"DIFFERENT column {name}"
        for x, y in zip(ca.to_pylist(), cb.to_pylist(), strict=True):
            if x == y or (
                isinstance(x, float)
                and isinstance(y, float)
                and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
            ):
                continue
            return f"DIFFERENT column {name}: {x} vs {y}"
    return "equal"


def same_online(a: Path, b: Path) -> str:
    """``equal`` or where the two SQLite online stores differ (every table, sorted)."""

    def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
        conn = sqlite3.connect(path)
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {n: sorted(conn.execute(f'SELECT * FROM "{n}"').fetchall()) for n in names}
        conn.close()
        return out

    da, db = dump(a), dump(b)
    if da.keys() != db.keys():
        return f"DIFFERENT tables: {sorted(da)} vs {sorted(db)}"
    for name in da:
        if da[name] != db[name]:
            return f"DIFFERENT table {name} ({len(da[name])} vs {len(db[name])} rows)"
    return "equal"


# -- main -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="feature rows")
    parser.add_argument("--keys", type=int, default=1_000_000, help="customers")
    parser.add_argument("--entities", type=int, default=1_000_000, help="entity rows")
    parser.add_argument("--memory-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--partitions", type=int, default=16, help="spark.sql.shuffle.partitions")
    parser.add_argument("--cases", default="join,materialize,aggregates")
    parser.add_argument("--quick", action="store_true", help="--rows 200000 --keys 20000 ...")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.keys, args.entities, args.memory_rows = 200_000, 20_000, 20_000, 20_000
        args.repeat, args.warmup = 1, 0
    cases = [c for c in args.cases.split(",") if c]
    keys = min(args.keys, args.rows)
    entities = make_entities(DATA / f"entities_{args.entities}_{keys}.parquet", args.entities, keys)
    sizes = [args.rows]
    if "join" in cases and args.memory_rows and args.memory_rows != args.rows:
        sizes.append(args.memory_rows)
    sources = {
        n: make_source(DATA / f"features_{n}_{min(keys, n)}.parquet", n, min(keys, n), start=START)
        for n in sizes
    }
    work = DATA / "work"
    common = {"repeat": args.repeat, "warmup": args.warmup, "entities": str(entities)}
    rows_out: list[list[str]] = []
    memory_rows: list[list[str]] = []

    def record(case: str, results: dict[str, Any], check: str) -> None:
        duck, spark = results["duckdb"], results["spark"]
        t_d, t_s = median(duck.times), median(spark.times)
        rows_out.append(
            [
                case,
                fmt_seconds(t_d),
                fmt_seconds(t_s),
                f"{t_s / t_d:.2f}x",
                fmt_bytes(duck.peak_rss),
                fmt_bytes(spark.peak_rss),
                _mem(spark.extra.get("jvm_hwm", 0)),
                _mem(spark.extra.get("worker_hwm", 0)),
                check,
            ]
        )

    n = args.rows
    label = f"{n:,} features x {args.entities:,} entity rows"
    for case in cases:
        results: dict[str, Any] = {}
        outs: dict[str, str] = {}
        for engine in ("duckdb", "spark"):
            repo = make_repo(work / engine, sources[n], engine, args.partitions)
            outs[engine] = str(work / f"{case}_{engine}.parquet")
            if case == "materialize":
                results[engine] = run_child(
                    __file__, "case_materialize", {**common, "repo": str(repo)}
                )
                continue
            view, features = (
                ("stats", FEATURES)
                if case == "join"
                else ("stats_agg", [a.name for a in _agg_names()])
            )
            results[engine] = run_child(
                __file__,
                "case_join",
                {
                    **common,
                    "repo": str(repo),
                    "out": outs[engine],
                    "view": view,
                    "features": features,
                },
            )
        if case == "materialize":
            check = same_online(
                work / "duckdb" / "data" / "online.db", work / "spark" / "data" / "online.db"
            )
            record(f"materialize {n:,} rows ({min(keys, n):,} keys)", results, check)
        else:
            check = same_files(outs["duckdb"], outs["spark"], tolerance=case == "aggregates")
            record(f"{case}: {label}", results, check)
        if case == "join":
            memory_rows.append([f"{n:,}", fmt_bytes(results["spark"].peak_rss)])
            if len(sizes) > 1:
                small = sizes[1]
                repo = make_repo(work / "spark_small", sources[small], "spark", args.partitions)
                res = run_child(
                    __file__,
                    "case_join",
                    {
                        **common,
                        "repeat": 1,
                        "warmup": 0,
                        "repo": str(repo),
                        "out": str(work / "join_small.parquet"),
                        "view": "stats",
                        "features": FEATURES,
                    },
                )
                memory_rows.append([f"{small:,}", fmt_bytes(res.peak_rss)])
                ratio = results["spark"].peak_rss / res.peak_rss
                memory_rows.append(["ratio", f"{ratio:.2f}x (target <= 1.5x)"])
    print(
        f"Spark local[2] against DuckDB; medians of {args.repeat} run(s) after {args.warmup} "
        f"warm-up(s); spark.sql.shuffle.partitions={args.partitions}"
    )
    print_table(
        [
            "case",
            "DuckDB",
            "Spark",
            "Spark/DuckDB",
            "driver peak (DuckDB)",
            "driver peak (Spark)",
            "Spark JVM peak",
            "Spark worker peak",
            "results",
        ],
        rows_out,
    )
    if memory_rows:
        print("\nSpark driver peak RSS by feature rows (join, same entity table):")
        print_table(["feature rows", "driver peak"], memory_rows)


def _mem(n: int) -> str:
    """A peak, or ``-`` where no such process ran (no Python worker without Python UDFs)."""
    return fmt_bytes(n) if n else "-"


def _agg_names() -> list[Any]:
    from quiver import Aggregation

    return [Aggregation(function=f, column=c, window=w) for f, c, w in AGGREGATIONS]


if __name__ == "__main__":
    if child_main(globals()):
        raise SystemExit
    main()
