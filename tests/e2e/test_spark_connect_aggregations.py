"""Windowed aggregations over Spark Connect (``offline_engine: {remote: sc://...}``): a training
set and a materialization (tiles streamed back through Connect) by a client that knows only the
server's address equal DuckDB's on the same repo. The server fixture is
``test_spark_connect.connect_server`` (a real ``SparkConnectServer``, ``local[2]``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_spark_connect import (  # the module-scoped fixture, the two sides, the source
    connect_server,  # noqa: F401
    connect_side,
    customer,
    duckdb_side,
    orders_src,
)

from quiver import Aggregation, FeatureStore, FeatureView, Field
from quiver.config import load_config
from quiver.online import serving

pytestmark = pytest.mark.slow
T0 = datetime(2024, 5, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

orders_agg = FeatureView(
    name="orders_agg",
    entities=["customer"],
    source="orders_src",
    schema=[Field(name="amount", dtype="float64"), Field(name="note", dtype="string")],
    aggregations=[
        Aggregation(function="count", window="2h"),
        Aggregation(column="amount", function="sum", window="6h"),
        Aggregation(column="amount", function="mean", window="2h"),
        Aggregation(column="note", function="last", window="6h"),
        Aggregation(column="note", function="count_distinct", window="2h"),
    ],
    aggregation_interval=timedelta(hours=1),
)


def _repo(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    n = 60
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([i % 5 for i in range(n)], pa.int64()),
                "ts": pa.array([T0 + timedelta(minutes=17 * i) for i in range(n)], TS),
                "created": pa.array([T0 + timedelta(minutes=i % 3) for i in range(n)], TS),
                "amount": pa.array([None if i % 7 == 0 else i * 1.25 for i in range(n)]),
                "note": pa.array([f"n{i % 4}" for i in range(n)]),
            }
        ),
        root / "data" / "orders.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([i % 6 for i in range(30)], pa.int64()),
                "event_timestamp": pa.array(
                    [T0 + timedelta(minutes=37 * i) for i in range(30)], TS
                ),
            }
        ),
        root / "entity.parquet",
    )
    with FeatureStore(config=load_config(root)) as store:
        store.apply([customer, orders_src, orders_agg])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _online(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    us = int((T0 + timedelta(hours=15, minutes=30)).timestamp()) * 1_000_000
    monkeypatch.setattr(serving, "_now_us", lambda: us)
    with FeatureStore(config=load_config(root)) as store:
        rows = [{"customer_id": i} for i in range(6)]
        return store.get_online_features(["orders_agg:*"], rows).to_dict()


def test_aggregations_over_spark_connect_match_duckdb(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote: str = request.getfixturevalue("connect_server")
    duck_root, spark_root = tmp_path / "duck", tmp_path / "spark"
    _repo(duck_root)
    _repo(spark_root)
    expected = duckdb_side(duck_root, "orders_agg:*", "orders_agg")
    got = connect_side(spark_root, remote, "orders_agg:*", "orders_agg")
    assert got.schema.equals(expected.schema), (got.schema, expected.schema)
    for name in expected.column_names:
        pairs = zip(got.column(name).to_pylist(), expected.column(name).to_pylist(), strict=True)
        assert all(_same(g, w) for g, w in pairs), name
    assert max(expected.column("count_2h").to_pylist()) > 0
    online = _online(duck_root, monkeypatch)
    assert any(online["count_2h"])
    spark_online = _online(spark_root, monkeypatch)
    for name, values in online.items():
        pairs = zip(spark_online[name], values, strict=True)
        assert all(_same(g, w) for g, w in pairs), (name, spark_online[name], values)
