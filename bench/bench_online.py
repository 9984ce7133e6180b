"""Benchmark: ``get_online_features`` latency against raw SQLite / raw Redis lookups.

Data: 100,000 entities; 10 features (4 int64, 4 float64, 2 string) either in one feature view,
or split over three views (4 + 3 + 3). Both layouts are materialized into the SQLite online
store and into a throwaway ``redis-server`` (started here, as the tests do).

For 1, 10 and 100 entities per call, Quiver and the reference are called alternately (same
random keys, same machine state), ``--calls`` times each after a warm-up; p50 and p99 of the
per-call latency are printed with the p50 ratio (target: at most 2x).

References, measured in the same run:

- SQLite: ``SELECT <10 columns> FROM t WHERE customer_id IN (?, ...)`` + ``fetchall()`` on a
  plain table with an ``INTEGER PRIMARY KEY`` (one query per view), same connection settings.
- Redis: one pipeline of ``GET`` per (view, key), values of the same byte size; no decoding.

Quiver's call does more than the reference: it validates the entity rows, encodes the keys,
decodes typed values, computes a status per value (present / not_found / expired) and builds
the response (``OnlineResponse``, its values per feature read once; ``.to_dict()`` is not
included). It also reads differently in one case: one entity from several views is one SQLite
statement joining the views' tables, where the reference runs one query per view.

Run: ``python bench/bench_online.py [--quick] [--calls 2000] [--stores sqlite,redis]``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import struct
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data" / "online"
sys.path.insert(0, str(HERE.parent / "tests"))  # the redis-server helper the tests use

ENTITIES = 100_000
INT_FEATURES = ["f_int_0", "f_int_1", "f_int_2", "f_int_3"]
FLOAT_FEATURES = ["f_float_0", "f_float_1", "f_float_2", "f_float_3"]
STR_FEATURES = ["f_str_0", "f_str_1"]
FEATURES = INT_FEATURES + FLOAT_FEATURES + STR_FEATURES
SPLIT = {
    "part_a": ["f_int_0", "f_int_1", "f_float_0", "f_str_0"],
    "part_b": ["f_int_2", "f_float_1", "f_float_2"],
    "part_c": ["f_int_3", "f_float_3", "f_str_1"],
}
DTYPES = {**dict.fromkeys(INT_FEATURES, "int64"), **dict.fromkeys(FLOAT_FEATURES, "float64")}
DTYPES.update(dict.fromkeys(STR_FEATURES, "string"))


def build_data(entities: int) -> Any:
    """One row per entity (the latest), event times in the last day."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(7)
    now_us = int(time.time() * 1e6)
    columns: dict[str, Any] = {
        "customer_id": np.arange(1, entities + 1, dtype=np.int64),
        "event_timestamp": pa.array(
            now_us - rng.integers(0, 86_400 * 10**6, size=entities), pa.timestamp("us", tz="UTC")
        ),
    }
    for name in INT_FEATURES:
        columns[name] = rng.integers(0, 10**6, size=entities)
    for name in FLOAT_FEATURES:
        columns[name] = rng.random(entities)
    for name in STR_FEATURES:
        columns[name] = pa.array([f"s{v}" for v in rng.integers(0, 10**6, size=entities)])
    return pa.table(columns)


def build_repo(root: Path, online: dict[str, Any], table: Any) -> Any:
    import pyarrow.parquet as pq
    import yaml

    from quiver import Entity, FeatureStore, FeatureView, Field, FileSource

    if root.exists():
        shutil.rmtree(root)
    (root / "data").mkdir(parents=True)
    pq.write_table(table, root / "data" / "source.parquet")
    config = {
        "project": "bench",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": online,
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    store = FeatureStore(root)
    customer = Entity(name="customer", join_keys=["customer_id"])
    source = FileSource(name="source", path="data/source.parquet")
    views = [
        FeatureView(
            name=name,
            entities=[customer],
            features=[Field(name=f, dtype=DTYPES[f]) for f in names],
            source=source,
        )
        for name, names in {"wide": FEATURES, **SPLIT}.items()
    ]
    store.apply([customer, source, *views])
    now = datetime.now(UTC) + timedelta(seconds=1)
    store.materialize(now - timedelta(days=2), now)
    return store


# -- references -----------------------------------------------------------------------------------


def sqlite_reference(path: Path, table: Any) -> Any:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")
    types = {"int64": "INTEGER", "float64": "REAL", "string": "TEXT"}
    ids = table.column("customer_id").to_pylist()
    for name, names in {"wide": FEATURES, **SPLIT}.items():
        cols = ", ".join(f"{f} {types[DTYPES[f]]}" for f in names)
        conn.execute(f"DROP TABLE IF EXISTS ref_{name}")
        conn.execute(f"CREATE TABLE ref_{name} (customer_id INTEGER PRIMARY KEY, {cols})")
        rows = zip(ids, *[table.column(f).to_pylist() for f in names], strict=True)
        marks = ",".join("?" * (len(names) + 1))
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO ref_{name} VALUES ({marks})", rows)
        conn.execute("COMMIT")
    statements: dict[tuple[str, int], str] = {}

    def lookup(views: list[tuple[str, list[str]]], keys: list[int]) -> list[list[Any]]:
        out = []
        for name, names in views:
            sql = statements.get((name, len(keys)))
            if sql is None:
                marks = ",".join("?" * len(keys))
                sql = statements[(name, len(keys))] = (
                    f"SELECT customer_id, {', '.join(names)} FROM ref_{name} "
                    f"WHERE customer_id IN ({marks})"
                )
            out.append(conn.execute(sql, keys).fetchall())
        return out

    return lookup


def redis_reference(url: str, table: Any) -> Any:
    import redis

    client = redis.Redis.from_url(url)
    ids = table.column("customer_id").to_pylist()
    for name, names in {"wide": FEATURES, **SPLIT}.items():
        columns = [table.column(f).to_pylist() for f in names]
        pipe = client.pipeline(transaction=False)
        for i, cid in enumerate(ids):
            parts = []
            for col, f in zip(columns, names, strict=True):
                v = col[i]
                dtype = DTYPES[f]
                if dtype == "string":
                    b = v.encode()
                    parts.append(struct.pack(">I", len(b)) + b)
                else:
                    parts.append(struct.pack(">q" if dtype == "int64" else ">d", v))
            pipe.set(f"ref:{name}:{cid}", b"\0" * 24 + b"".join(parts))
            if len(pipe) >= 5000:
                pipe.execute()
        pipe.execute()

    def lookup(views: list[tuple[str, list[str]]], keys: list[int]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for name, _ in views:
            for k in keys:
                pipe.get(f"ref:{name}:{k}")
        return pipe.execute()

    return lookup


# -- measurement ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(ours: Any, ref: Any, key_sets: list[list[int]], warmup: int) -> tuple[list, list]:
    for keys in key_sets[:warmup]:
        ours(keys)
        ref(keys)
    t_ours, t_ref = [], []
    clock = time.perf_counter_ns
    for i, keys in enumerate(key_sets[warmup:]):
        # Alternate which goes first so neither always runs on a warmer cache.
        if i % 2:
            a = clock()
            ref(keys)
            b = clock()
            ours(keys)
            c = clock()
            t_ref.append(b - a)
            t_ours.append(c - b)
        else:
            a = clock()
            ours(keys)
            b = clock()
            ref(keys)
            c = clock()
            t_ours.append(b - a)
            t_ref.append(c - b)
    return t_ours, t_ref


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k entities, 1,000 calls")
    parser.add_argument("--calls", type=int, default=None, help="measured calls per case")
    parser.add_argument("--stores", default="sqlite,redis")
    args = parser.parse_args()
    entities = 20_000 if args.quick else ENTITIES
    calls = args.calls or (1_000 if args.quick else 3_000)
    warmup = 200
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]

    print(
        f"data: {entities:,} entities, 10 features; {calls:,} calls per case after {warmup} warm-up"
    )
    table = build_data(entities)
    rng = random.Random(1)
    server = None
    results = []
    try:
        for kind in stores:
            if kind == "sqlite":
                online: dict[str, Any] = {"type": "sqlite", "path": "data/online.db"}
            else:
                from _servers import start_redis

                server = start_redis()
                online = {"type": "redis", "url": server.url, "key_prefix": "bench"}
            started = time.perf_counter()
            store = build_repo(DATA / f"repo_{kind}", online, table)
            print(f"[{kind}] materialized both layouts in {time.perf_counter() - started:.1f}s")
            if kind == "sqlite":
                ref = sqlite_reference(DATA / f"repo_{kind}" / "data" / "reference.db", table)
            else:
                ref = redis_reference(server.url, table)  # type: ignore[union-attr]
            cases = {
                "1 view x 10 features": (["wide:*"], [("wide", FEATURES)]),
                "3 views, 10 features": (
                    [f"{v}:*" for v in SPLIT],
                    list(SPLIT.items()),
                ),
            }
            for case, (refs, views) in cases.items():
                for batch in (1, 10, 100):
                    key_sets = [
                        rng.sample(range(1, entities + 1), batch) for _ in range(calls + warmup)
                    ]

                    def ours(keys: list[int], refs: list[str] = refs, store: Any = store) -> Any:
                        rows = [{"customer_id": k} for k in keys]
                        response = store.get_online_features(refs, rows)
                        response.values  # noqa: B018 - values per feature are built when read
                        return response

                    def reference(keys: list[int], views: list = views, ref: Any = ref) -> Any:
                        return ref(views, keys)

                    check = ours(key_sets[0])
                    assert set(check.statuses[check.feature_names[0]]) == {"present"}
                    t_ours, t_ref = measure(ours, reference, key_sets, warmup)
                    row = (
                        kind,
                        case,
                        batch,
                        percentile(t_ours, 0.5) / 1e3,
                        percentile(t_ours, 0.99) / 1e3,
                        percentile(t_ref, 0.5) / 1e3,
                        percentile(t_ref, 0.99) / 1e3,
                    )
                    results.append(row)
                    print(
                        f"[{kind}] {case:22s} {batch:>3} entities: quiver p50 {row[3]:8.1f} us "
                        f"p99 {row[4]:8.1f} us | reference p50 {row[5]:8.1f} us p99 "
                        f"{row[6]:8.1f} us | p50 ratio {row[3] / row[5]:.2f}x",
                        flush=True,
                    )
            store.close()
    finally:
        if server is not None:
            server.stop()

    print()
    print(
        "store   case                   batch  quiver p50/p99 (us)   reference p50/p99 (us)  ratio"
    )
    for kind, case, batch, op50, op99, rp50, rp99 in results:
        ratio = op50 / rp50
        verdict = "ok" if ratio <= 2.0 else "ABOVE TARGET"
        print(
            f"{kind:7s} {case:22s} {batch:>5}  {op50:8.1f} / {op99:8.1f}   {rp50:8.1f} / "
            f"{rp99:8.1f}      {ratio:4.2f}x {verdict}"
        )
    ratios = [r[3] / r[5] for r in results]
    print(f"median p50 ratio {statistics.median(ratios):.2f}x (target <= 2x at every batch size)")


if __name__ == "__main__":
    main()
