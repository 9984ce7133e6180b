"""Windowed aggregations on the Spark offline engine equal DuckDB's, value by value.

One repo, the same files, both engines: per entity row (training sets) and per tile
(materialization), with compound keys (a string and an int32), every function, every column
type the functions take, nulls, equal event times broken by created times, entity rows without
a key or a time. Then a view materialized by Spark and read online gives what a DuckDB
materialization gives. The oracle properties are in ``test_aggregations_property.py``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from quiver import Aggregation, Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.config import load_config
from quiver.features.tiles import TileSpec
from quiver.offline.duckdb import DuckDBOfflineEngine
from quiver.online import serving
from quiver.selection import ViewSelection

pytestmark = pytest.mark.slow
T0 = datetime(2024, 5, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")

item = Entity(name="item", join_keys=["shop", "sku"], value_type="string")
store_e = Entity(name="store", join_keys=["region"], value_type="int32")
source = FileSource(name="sales_src", path="data/sales.parquet", created_timestamp_field="created")
view = FeatureView(
    name="sales",
    entities=[item, store_e],
    source=source,
    schema=[
        Field(name="amount", dtype="float64"),
        Field(name="qty", dtype="int32"),
        Field(name="ratio", dtype="float32"),
        Field(name="promo", dtype="bool"),
        Field(name="label", dtype="string"),
        Field(name="seen", dtype="timestamp"),
    ],
    aggregations=[
        Aggregation(function="count", window="2h"),
        Aggregation(column="amount", function="sum", window="1h"),
        Aggregation(column="amount", function="mean", window="6h"),
        Aggregation(column="amount", function="stddev", window="6h"),
        Aggregation(column="qty", function="sum", window="6h"),
        Aggregation(column="qty", function="min", window="2h"),
        Aggregation(column="qty", function="max", window="6h"),
        Aggregation(column="ratio", function="max", window="1h"),
        Aggregation(column="ratio", function="count_distinct", window="6h"),
        Aggregation(column="promo", function="last", window="2h"),
        Aggregation(column="promo", function="count_distinct", window="6h"),
        Aggregation(column="label", function="last", window="6h"),
        Aggregation(column="label", function="count_distinct", window="2h"),
        Aggregation(column="seen", function="min", window="6h"),
        Aggregation(column="seen", function="last", window="1h"),
        Aggregation(column="amount", function="count", window="1h"),
    ],
    aggregation_interval=timedelta(minutes=30),
)
KEYS = [(s, k, r) for s in ("a", "b", "c") for k in ("x", "y") for r in (1, 2)]


def _maybe(rnd: random.Random, value: Any) -> Any:
    return None if rnd.random() < 0.15 else value


def write_events(root: Path, n: int = 400, seed: int = 7) -> None:
    rnd = random.Random(seed)
    rows = []
    for _ in range(n):
        shop, sku, region = rnd.choice(KEYS)
        sec = rnd.choice([rnd.randrange(0, 12 * 3600, 1800), rnd.randrange(0, 12 * 3600)])
        rows.append(
            {
                "shop": shop,
                "sku": sku,
                "region": region,
                "amount": _maybe(rnd, rnd.randint(-400, 400) / 4),
                "qty": _maybe(rnd, rnd.randint(-20, 20)),
                "ratio": _maybe(rnd, rnd.choice([0.5, 0.25, 1.5, 3.0])),
                "promo": _maybe(rnd, rnd.random() < 0.5),
                "label": _maybe(rnd, rnd.choice(["p", "q", "r"])),
                "seen": _maybe(rnd, T0 + timedelta(seconds=rnd.randrange(0, 50_000))),
                "event_timestamp": T0 + timedelta(seconds=sec),
                "created": _maybe(rnd, T0 + timedelta(seconds=rnd.randint(0, 3))),
            }
        )
    rows.append({**rows[0], "shop": None})  # a null key: never aggregated
    schema = pa.schema(
        [
            ("shop", pa.string()),
            ("sku", pa.string()),
            ("region", pa.int32()),
            ("amount", pa.float64()),
            ("qty", pa.int32()),
            ("ratio", pa.float32()),
            ("promo", pa.bool_()),
            ("label", pa.string()),
            ("seen", TS),
            ("event_timestamp", TS),
            ("created", TS),
        ]
    )
    (root / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema), root / "data" / "sales.parquet")


def entity_table(n: int = 120, seed: int = 3) -> pa.Table:
    rnd = random.Random(seed)
    keys = [*KEYS, ("z", "x", 1)]
    rows = []
    for i in range(n):
        shop, sku, region = rnd.choice(keys)
        sec = rnd.choice([rnd.randrange(0, 14 * 3600, 1800), rnd.randrange(0, 14 * 3600)])
        rows.append(
            {
                "shop": None if i % 37 == 5 else shop,
                "sku": sku,
                "region": region,
                "event_timestamp": None if i % 41 == 7 else T0 + timedelta(seconds=sec),
                "label_col": i,
            }
        )
    schema = pa.schema(
        [
            ("shop", pa.string()),
            ("sku", pa.string()),
            ("region", pa.int32()),
            ("event_timestamp", TS),
            ("label_col", pa.int64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def assert_same_rows(got: list[dict[str, Any]], want: list[dict[str, Any]], what: str) -> None:
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        bad = {k: (g[k], w[k]) for k in w if not same(g[k], w[k])}
        assert not bad, f"{what} row {i}: (spark, duckdb) {bad}"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("spark_agg")
    write_events(root)
    (root / "quiver.yaml").write_text(yaml.safe_dump({"project": "shop"}))
    return root


@pytest.fixture(scope="module")
def engines(repo: Path, spark_session: Any) -> Iterator[tuple[Any, Any]]:
    from quiver.offline.spark import SparkOfflineEngine

    config = load_config(repo)
    duck = DuckDBOfflineEngine(config)
    spark = SparkOfflineEngine(config, session=spark_session)
    yield duck, spark
    spark.close()
    duck.close()


def selection(names: list[str] | None = None) -> ViewSelection:
    fields = [f for f in view.output_fields if names is None or f.name in names]
    return ViewSelection(view=view, features=tuple(fields), source=source, entities=(item, store_e))


def test_historical_aggregates_equal_duckdb(engines: tuple[Any, Any]) -> None:
    duck, spark = engines
    entity = entity_table()
    want = duck.get_historical_features(
        entity, [selection()], timestamp_column="event_timestamp", full_feature_names=False
    ).to_arrow()
    got = spark.get_historical_features(
        entity, [selection()], timestamp_column="event_timestamp", full_feature_names=False
    ).to_arrow()
    assert got.schema == want.schema
    assert got.column("label_col").to_pylist() == list(range(entity.num_rows))  # input order
    assert_same_rows(got.to_pylist(), want.to_pylist(), "historical")
    counts = want.column("count_2h").to_pylist()
    assert any(c and c > 1 for c in counts) and None in counts  # the data exercises both


def test_historical_subset_with_full_names_equal_duckdb(engines: tuple[Any, Any]) -> None:
    duck, spark = engines
    entity = entity_table(40, seed=11)
    sel = selection(["label_last_6h", "qty_min_2h"])
    kwargs: dict[str, Any] = {"timestamp_column": "event_timestamp", "full_feature_names": True}
    want = duck.get_historical_features(entity, [sel], **kwargs).to_arrow()
    got = spark.get_historical_features(entity, [sel], **kwargs).to_arrow()
    assert got.column_names[-2:] == ["sales__qty_min_2h", "sales__label_last_6h"]
    assert_same_rows(got.to_pylist(), want.to_pylist(), "historical subset")


def _tiles(reader: pa.RecordBatchReader) -> list[dict[str, Any]]:
    rows = reader.read_all().to_pylist()
    for r in rows:
        for k, v in r.items():
            if isinstance(v, list):
                r[k] = sorted(v)
    return sorted(rows, key=lambda r: (r["shop"], r["sku"], r["region"], r["__qv_tile"]))


@pytest.mark.parametrize(
    "lo, end",
    [(None, 13 * 3600), (2 * 3600, 7 * 3600 + 1), (5 * 3600, 5 * 3600)],
    ids=["all", "a-range", "empty"],
)
def test_tiles_equal_duckdb(engines: tuple[Any, Any], lo: int | None, end: int) -> None:
    duck, spark = engines
    base = int(T0.timestamp()) * 1_000_000
    lo_us = None if lo is None else base + lo * 1_000_000
    end_us = base + end * 1_000_000
    spec = TileSpec(view)
    want_reader = duck.pull_tiles(selection(), spec, lo_us, end_us)
    got_reader = spark.pull_tiles(selection(), spec, lo_us, end_us)
    assert got_reader.schema.names == want_reader.schema.names
    want, got = _tiles(want_reader), _tiles(got_reader)
    assert_same_rows(got, want, "tiles")
    assert (len(want) == 0) == (lo == end)


def test_tiles_keep_each_keys_tiles_together_in_order(engines: tuple[Any, Any]) -> None:
    """What materialization relies on: a key's tiles are consecutive, in tile order."""
    _, spark = engines
    rows = spark.pull_tiles(selection(), TileSpec(view), None, 2**62).read_all().to_pylist()
    seen: set[tuple[Any, ...]] = set()
    last: tuple[Any, ...] | None = None
    tile = -(2**63)
    for r in rows:
        key = (r["shop"], r["sku"], r["region"])
        if key != last:
            assert key not in seen, f"key {key} split"
            seen.add(key)
            last, tile = key, -(2**63)
        assert r["__qv_tile"] > tile
        tile = r["__qv_tile"]
    assert len(seen) == len(KEYS)


# -- materialized by Spark, read online -----------------------------------------------------------


def _store(root: Path, engine: str) -> FeatureStore:
    write_events(root, n=300, seed=5)
    config: dict[str, Any] = {"project": "shop", "online_store": {"type": "sqlite"}}
    if engine == "spark":
        config["offline_engine"] = {"type": "spark", "master": "local[2]"}
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    store = FeatureStore(root)
    store.apply(store.plan([item, store_e, source, view]))
    return store


def test_materialized_by_spark_reads_online_as_duckdb(
    spark_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stores = {e: _store(tmp_path / e, e) for e in ("duckdb", "spark")}
    counted = 0
    try:
        assert type(stores["spark"].offline_engine).__name__ == "SparkOfflineEngine"
        rows = [{"shop": s, "sku": k, "region": r} for s, k, r in [*KEYS, ("z", "x", 1)]]
        for end_h, at_h in ((5, 5), (9, 9.5), (13, 16)):  # incremental ranges, reads after
            for s in stores.values():
                s.materialize_incremental(T0 + timedelta(hours=end_h))
            at = T0 + timedelta(hours=at_h)
            us = int(at.timestamp()) * 1_000_000
            monkeypatch.setattr(serving, "_now_us", lambda us=us: us)
            out = {
                e: s.get_online_features(features=["sales:*"], entity_rows=rows)
                for e, s in stores.items()
            }
            got, want = out["spark"].to_dict(), out["duckdb"].to_dict()
            assert out["spark"].statuses == out["duckdb"].statuses
            for name in view.feature_names:
                for i, (g, w) in enumerate(zip(got[name], want[name], strict=True)):
                    assert same(g, w), f"{name} key {rows[i]} at {at}: spark {g}, duckdb {w}"
            counted += sum(want["count_2h"])
        assert counted > 0
    finally:
        for s in stores.values():
            s.close()


def test_entity_rows_without_any_event_get_empty_windows(engines: tuple[Any, Any]) -> None:
    """Buckets with entity rows and no events at all (every event after the entity times)."""
    duck, spark = engines
    entity = pa.table(
        {
            "shop": ["a", "b", "z"],
            "sku": ["x", "y", "x"],
            "region": pa.array([1, 2, 1], pa.int32()),
            "event_timestamp": pa.array([T0 - timedelta(days=3)] * 3, TS),
        }
    )
    kwargs: dict[str, Any] = {"timestamp_column": "event_timestamp", "full_feature_names": False}
    want = duck.get_historical_features(entity, [selection()], **kwargs).to_arrow()
    got = spark.get_historical_features(entity, [selection()], **kwargs).to_arrow()
    assert got.column("count_2h").to_pylist() == [0, 0, 0]
    assert got.column("label_last_6h").to_pylist() == [None, None, None]
    assert_same_rows(got.to_pylist(), want.to_pylist(), "no events")
