"""Benchmark: windowed aggregations, offline and online, against hand-written references.

**Offline** (``get_historical_features(...).to_arrow()``): ``--events`` events (default 10M) of
``--keys`` customers (default 100k) over a year, ``--rows`` entity rows (default 100k), 3 windows
(1d, 7d, 30d) x 3 functions (count, sum, mean), tile size 1 hour. References, hand-written
DuckDB on the same Parquet files:

* *same windows*: a range join on the key and ``floor(t, 1h) - w < ts <= t`` (Quiver's window
  rule), grouped by entity row with a ``FILTER`` per window; its values are checked equal to
  Quiver's;
* *exact windows*: the same join with ``t - w < ts <= t`` (the query one writes without tiles).

**Online** (``get_online_features`` for 1 entity): the 9 aggregates of a view materialized from
``--online-keys`` customers x ``--events-per-key`` events over 30 days (50, 100 and 500:
sparse keys are mostly idle, their reads come long after their newest tile), against a plain view of
9 float64 features (one row per key) read the same way, both from the same SQLite file (and
Redis with ``--stores sqlite,redis``). p50 and p99 over ``--calls`` alternating calls.

Each side runs in a fresh child process per case (``_common.py``): medians, ratios and peak
memory. Run: ``python bench/bench_aggregations.py [--quick] [--events N] [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import child_main, fmt_bytes, fmt_seconds, median, print_table, run_child, timings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # the redis-server helper the tests use

DATA = HERE / "_data" / "aggregations"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
WINDOWS = {"1d": 1, "7d": 7, "30d": 30}
FUNCTIONS = ("count", "sum", "mean")
NAMES = [f"count_{w}" if f == "count" else f"amount_{f}_{w}" for w in WINDOWS for f in FUNCTIONS]


def _repo_yaml(online: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(
        {
            "project": "bench",
            "registry": {"url": "sqlite:///data/registry.db"},
            "online_store": online,
        }
    )


def _definitions() -> list[Any]:
    from quiver import Aggregation, Entity, FeatureView, Field, FileSource

    customer = Entity(name="customer", join_keys=["customer_id"])
    events = FileSource(name="events", path="data/events.parquet")
    plain_src = FileSource(name="plain_src", path="data/plain.parquet")
    aggs = [
        Aggregation(column=None if f == "count" else "amount", function=f, window=w)
        for w in WINDOWS
        for f in FUNCTIONS
    ]
    agg_view = FeatureView(
        name="orders",
        entities=[customer],
        source=events,
        schema=[Field(name="amount", dtype="float64")],
        aggregations=aggs,
        aggregation_interval="1h",
    )
    plain = FeatureView(
        name="plain",
        entities=[customer],
        source=plain_src,
        schema=[Field(name=f"p{i}", dtype="float64") for i in range(9)],
    )
    return [customer, events, plain_src, agg_view, plain]


def make_events(path: Path, n: int, keys: int, days: int, seed: int, start: datetime = T0) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    t0 = int(start.timestamp()) * 1_000_000
    chunk = 1_000_000
    writer = None
    try:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            table = pa.table(
                {
                    "customer_id": rng.integers(0, keys, m),
                    "amount": rng.random(m) * 100,
                    "event_timestamp": pa.array(
                        t0 + rng.integers(0, days * DAY_US, m), pa.timestamp("us", tz="UTC")
                    ),
                }
            )
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Data and two repos (offline + online) under bench/_data/aggregations."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    tag = f"{args.events}_{args.keys}_{args.rows}"
    repo = DATA / f"offline_{tag}"
    if not (repo / "data" / "entity.parquet").exists():
        (repo / "data").mkdir(parents=True, exist_ok=True)
        make_events(repo / "data" / "events.parquet", args.events, args.keys, 365, seed=1)
        rng = np.random.default_rng(2)
        t0 = int(T0.timestamp()) * 1_000_000
        pq.write_table(
            pa.table(
                {
                    "customer_id": rng.integers(0, args.keys, args.rows),
                    "event_timestamp": pa.array(
                        t0 + rng.integers(30 * DAY_US, 365 * DAY_US, args.rows),
                        pa.timestamp("us", tz="UTC"),
                    ),
                }
            ),
            repo / "data" / "entity.parquet",
        )
        pq.write_table(
            pa.table({"customer_id": [0], "event_timestamp": pa.array([T0], pa.timestamp("us"))}),
            repo / "data" / "plain.parquet",
        )
        (repo / "quiver.yaml").write_text(_repo_yaml({"type": "sqlite", "path": "data/o.db"}))
        from quiver import FeatureStore

        with FeatureStore(repo) as store:
            store.apply(store.plan(_definitions()))
    return {"repo": str(repo), "rows": args.rows}


# -- offline -----------------------------------------------------------------------------------


def reference_sql(repo: str, exact: bool) -> str:
    """The same 9 aggregates written by hand: a range join on the raw (zoned) timestamps."""
    events = f"'{repo}/data/events.parquet'"
    entity = f"'{repo}/data/entity.parquet'"
    start = "event_timestamp" if exact else "time_bucket(INTERVAL 1 hour, event_timestamp)"
    los = ", ".join(f"{start} - INTERVAL {d} DAY AS lo{d}" for d in WINDOWS.values())
    aggs = []
    for d in WINDOWS.values():
        f = f"FILTER (WHERE ev.event_timestamp > e.lo{d})"
        aggs += [f"count(ev.event_timestamp) {f}", f"sum(ev.amount) {f}", f"avg(ev.amount) {f}"]
    return (
        f"WITH e AS (SELECT row_number() OVER () - 1 AS rid, customer_id, event_timestamp, "
        f"{los} FROM {entity}) "
        f"SELECT {', '.join(aggs)} FROM e LEFT JOIN {events} AS ev "
        f"ON ev.customer_id = e.customer_id AND ev.event_timestamp > e.lo30 "
        f"AND ev.event_timestamp <= e.event_timestamp GROUP BY e.rid ORDER BY e.rid"
    )


def _runners(args: dict[str, Any]) -> dict[str, Any]:
    import duckdb
    import pyarrow.parquet as pq

    from quiver import FeatureStore

    repo = args["repo"]
    store = FeatureStore(repo)
    entity = pq.read_table(f"{repo}/data/entity.parquet")
    refs = [f"orders:{n}" for n in NAMES]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return {
        "quiver": lambda: store.get_historical_features(entity, features=refs).to_arrow(),
        "same": lambda: con.sql(reference_sql(repo, exact=False)).to_arrow_table(),
        "exact": lambda: con.sql(reference_sql(repo, exact=True)).to_arrow_table(),
    }


def case_offline(args: dict[str, Any]) -> dict[str, Any]:
    runners = _runners(args)
    result = {name: runners[name]() for name in runners}  # warm-up, and the check
    q = result["quiver"]
    same = result["same"]
    equal = all(
        _close(q.column(n).to_pylist(), same.column(i).to_pylist()) for i, n in enumerate(NAMES)
    )
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args["repeat"]):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {"times": [], "by_side": times, "equal": equal}


def case_offline_memory(args: dict[str, Any]) -> list[float]:
    fn = _runners(args)[args["side"]]
    return timings(fn, repeat=1, warmup=0)


def _close(a: list[Any], b: list[Any]) -> bool:
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            if not (x in (None, 0) and y in (None, 0)):
                return False
        elif abs(float(x) - float(y)) > 1e-9 * max(1.0, abs(float(y))):
            return False
    return True


# -- online ------------------------------------------------------------------------------------


def case_online(args: dict[str, Any]) -> dict[str, Any]:
    from quiver import FeatureStore

    store = FeatureStore(args["repo"])
    keys = args["keys"]
    rng = random.Random(3)
    agg_refs = [f"orders:{n}" for n in NAMES]
    plain_refs = [f"plain:p{i}" for i in range(9)]
    agg, plain = [], []
    for _ in range(200):  # warm-up
        store.get_online_features(features=agg_refs, entity_rows=[{"customer_id": 1}])
        store.get_online_features(features=plain_refs, entity_rows=[{"customer_id": 1}])
    for _ in range(args["calls"]):
        row = [{"customer_id": rng.randrange(keys)}]
        start = time.perf_counter()
        store.get_online_features(features=agg_refs, entity_rows=row)
        agg.append(time.perf_counter() - start)
        start = time.perf_counter()
        store.get_online_features(features=plain_refs, entity_rows=row)
        plain.append(time.perf_counter() - start)
    return {"times": [], "agg": agg, "plain": plain}


def prepare_online(args: argparse.Namespace, online: dict[str, Any], name: str) -> str:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quiver import FeatureStore

    repo = DATA / f"online_{name}"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "data").mkdir(parents=True)
    keys, per_key = args.online_keys, args.per_key
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    make_events(repo / "data" / "events.parquet", keys * per_key, keys, 30, 4, end - timedelta(30))
    rng = np.random.default_rng(5)
    cols: dict[str, Any] = {"customer_id": np.arange(keys)}
    for i in range(9):
        cols[f"p{i}"] = rng.random(keys)
    cols["event_timestamp"] = pa.array(
        [end - timedelta(hours=1)] * keys, pa.timestamp("us", tz="UTC")
    )
    pq.write_table(pa.table(cols), repo / "data" / "plain.parquet")
    (repo / "quiver.yaml").write_text(_repo_yaml(online))
    with FeatureStore(repo) as store:
        store.apply(store.plan(_definitions()))
        store.materialize(end - timedelta(days=31), datetime.now(UTC))
    return str(repo)


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M events, 20k entity rows")
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--online-keys", type=int, default=1_000)
    parser.add_argument(
        "--events-per-key", default="50,100,500", help="online cases (comma-separated)"
    )
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--stores", default="sqlite")
    parser.add_argument("--skip", default="", help="offline or online")
    args = parser.parse_args()
    if args.quick:
        args.events, args.rows, args.repeat, args.calls = 1_000_000, 20_000, 3, 1_000
    if "offline" not in args.skip:
        info = prepare(args)
        res = run_child(__file__, "case_offline", {**info, "repeat": args.repeat})
        sides = res.extra["by_side"]
        peaks = {
            side: run_child(__file__, "case_offline_memory", {**info, "side": side}).peak_rss
            for side in sides
        }
        q = median(sides["quiver"])
        rows = [
            [
                name,
                fmt_seconds(median(t)),
                f"{median(t) / q:.2f}x" if name != "quiver" else "",
                fmt_bytes(peaks[name]),
            ]
            for name, t in sides.items()
        ]
        print(
            f"offline: {args.events:,} events, {args.keys:,} keys, {args.rows:,} entity rows, "
            f"9 aggregates; same values as the reference: {res.extra['equal']}"
        )
        print_table(["side", "median", "reference / quiver", "peak memory"], rows)
        for name in ("same", "exact"):
            print(f"quiver / {name}: {q / median(sides[name]):.2f}x")
    if "online" not in args.skip:
        densities = [int(n) for n in args.events_per_key.split(",")]
        for name, per_key in [(s, n) for s in args.stores.split(",") for n in densities]:
            args.per_key = per_key
            server = None
            if name == "redis":
                from _servers import start_redis

                server = start_redis()
                online: dict[str, Any] = {"type": "redis", "url": server.url}
            else:
                online = {"type": "sqlite", "path": "data/online.db"}
            try:
                repo = prepare_online(args, online, name)
                res = run_child(
                    __file__,
                    "case_online",
                    {"repo": repo, "keys": args.online_keys, "calls": args.calls},
                )
            finally:
                if server is not None:
                    server.stop()
            agg, plain = res.extra["agg"], res.extra["plain"]
            print(f"online ({name}): 1 entity, {per_key} events per key over 30 days")
            print_table(
                ["read", "p50", "p99"],
                [
                    [
                        "9 aggregates",
                        f"{statistics.median(agg) * 1e6:.0f} us",
                        f"{_pct(agg, 0.99) * 1e6:.0f} us",
                    ],
                    [
                        "9 stored features",
                        f"{statistics.median(plain) * 1e6:.0f} us",
                        f"{_pct(plain, 0.99) * 1e6:.0f} us",
                    ],
                ],
            )
            print(f"p50 ratio: {statistics.median(agg) / statistics.median(plain):.2f}x")


if __name__ == "__main__":
    if child_main(globals()):
        raise SystemExit
    main()
