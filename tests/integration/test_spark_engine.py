"""The Spark offline engine against DuckDB, value by value on the same inputs, and what is
particular to Spark (Iceberg planned by pyiceberg, errors, the aggregation hook).

Every test runs on the session fixture's local Spark (one JVM per test process).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from quiver import Entity, FeatureStore, FeatureView, Field, FileSource, IcebergSource
from quiver.config import load_config
from quiver.errors import InvalidError, NotFoundError
from quiver.offline.probe import probe_view
from quiver.offline.sources import append_to_source, iceberg_catalog

T0 = datetime(2024, 5, 1, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")


def h(x: float) -> datetime:
    return T0 + timedelta(hours=x)


customer = Entity(name="customer", join_keys=["customer_id"])
pair = Entity(name="pair", join_keys=["shop", "sku"], value_type="string")

orders_src = FileSource(
    name="orders_src",
    path="data/orders.parquet",
    timestamp_field="ts",
    created_timestamp_field="created",
    field_mapping={"cust": "customer_id", "amt": "amount"},
)
orders = FeatureView(
    name="orders",
    entities=["customer"],
    source="orders_src",
    ttl=timedelta(hours=10),
    schema=[
        Field(name="amount", dtype="float64"),
        Field(name="qty", dtype="int32"),
        Field(name="rate", dtype="float32"),
        Field(name="vip", dtype="bool"),
        Field(name="note", dtype="string"),
        Field(name="seen", dtype="timestamp"),
        Field(name="tags", dtype="list<int64>"),
        Field(name="attrs", dtype="map<string, int64>"),
        Field(name="addr", dtype="struct<city: string, zip: int32>"),
        Field(name="meta", dtype="json"),
        Field(name="doubled", dtype="float64", transformation="amount * 2 + coalesce(qty, 0)"),
        Field(
            name="label",
            dtype="string",
            transformation="upper(note) || '-' || CAST(qty AS VARCHAR)",
        ),
        Field(name="age_h", dtype="int64", transformation="date_diff('hour', seen, ts)"),
    ],
)
stock_src = FileSource(
    name="stock_src", path="data/stock.csv", format="csv", timestamp_field="event_timestamp"
)
stock = FeatureView(
    name="stock",
    entities=["pair"],
    source="stock_src",
    schema=[Field(name="level", dtype="int64"), Field(name="amount", dtype="float64")],
)


def _write_sources(data: Path) -> None:
    n = 60
    cust = [i % 5 if i % 17 else None for i in range(n)]
    pq.write_table(
        pa.table(
            {
                "cust": pa.array(cust, pa.int64()),
                # ties on the event time (i // 2), broken by created, some created missing
                "ts": pa.array([h((i // 2) % 20) for i in range(n)], pa.timestamp("ns")),
                "created": pa.array([None if i % 7 == 0 else h(i % 3) for i in range(n)], UTC_US),
                "amt": pa.array([None if i % 11 == 0 else i * 1.5 for i in range(n)]),
                "qty": pa.array([i % 4 for i in range(n)], pa.int64()),
                "rate": pa.array([i / 8 for i in range(n)], pa.float64()),
                "vip": pa.array([i % 3 == 0 for i in range(n)]),
                "note": pa.array([None if i % 9 == 0 else f"n{i}" for i in range(n)]),
                "seen": pa.array([h(i % 5 - 3) for i in range(n)], UTC_US),
                "tags": pa.array([[i, i + 1] if i % 4 else None for i in range(n)]),
                "attrs": pa.array(
                    [[("a", i), ("b", None)] if i % 5 else None for i in range(n)],
                    pa.map_(pa.string(), pa.int64()),
                ),
                "addr": pa.array(
                    [{"city": f"c{i}", "zip": i} if i % 6 else None for i in range(n)],
                    pa.struct([("city", pa.string()), ("zip", pa.int64())]),
                ),
                "meta": pa.array([{"k": i, "s": "x"} for i in range(n)]),
            }
        ),
        data / "orders.parquet",
    )
    pacsv.write_csv(
        pa.table(
            {
                "shop": ["007", "007", "12", "12", "007"],
                "sku": ["a", "a", "a", "b", "b"],
                "event_timestamp": [
                    "2024-05-01T01:00:00Z",
                    "2024-05-01T05:00:00+02:00",
                    "2024-05-01 02:00:00",
                    "2024-05-01T02:00:00Z",
                    "2024-05-02T00:00:00Z",
                ],
                "level": [1, 2, 3, 4, 5],
                "amount": [0.5, 1.5, 2.5, None, 4.5],
            }
        ),
        data / "stock.csv",
    )


@pytest.fixture
def stores(tmp_path: Path, spark_session: object) -> Iterator[tuple[FeatureStore, FeatureStore]]:
    """The same repo (registry, sources) with DuckDB and with Spark as the offline engine."""
    data = tmp_path / "data"
    data.mkdir()
    _write_sources(data)
    duck = FeatureStore(config=load_config(tmp_path))
    duck.apply([customer, pair, orders_src, orders, stock_src, stock])
    spark = FeatureStore(config=load_config(tmp_path, offline_engine={"type": "spark"}))
    yield duck, spark
    duck.close()
    spark.close()


def _entity_table() -> pa.Table:
    n = 40
    return pa.table(
        {
            "customer_id": pa.array([None if i == 3 else i % 6 for i in range(n)], pa.int64()),
            "shop": pa.array(["007" if i % 2 else "12" for i in range(n)]),
            "sku": pa.array(["a" if i % 3 else "b" for i in range(n)]),
            "event_timestamp": pa.array(
                [None if i == 5 else h((i * 7) % 30 - 2) for i in range(n)],
                pa.timestamp("ms", tz="Asia/Kolkata"),
            ),
            "extra": pa.array([f"row{i}" for i in range(n)]),
        }
    )


def test_training_sets_are_equal(stores: tuple[FeatureStore, FeatureStore]) -> None:
    duck, spark = stores
    entity = _entity_table()
    entity = pa.concat_tables([entity, entity.slice(0, 4)])  # duplicate rows stay duplicated
    for full in (False, True):
        refs = ["orders:*", "stock:level", "stock:amount"] if full else ["orders:*", "stock:level"]
        want = duck.get_historical_features(entity, refs, full_feature_names=full).to_arrow()
        got = spark.get_historical_features(entity, refs, full_feature_names=full).to_arrow()
        assert got.schema == want.schema
        assert got.num_rows == entity.num_rows
        for name in want.column_names:
            assert got.column(name).to_pylist() == want.column(name).to_pylist(), name
    # the values are not all null: the comparison means something
    assert sum(v is not None for v in want.column("orders__doubled").to_pylist()) > 5
    assert sum(v is not None for v in want.column("stock__level").to_pylist()) > 3


def test_latest_rows_are_equal(stores: tuple[FeatureStore, FeatureStore]) -> None:
    duck, spark = stores
    append_to_source(  # pushed rows, with a column left out
        duck.config,
        orders_src,
        pa.table(
            {
                "customer_id": pa.array([1, 9], pa.int64()),
                "amount": [100.0, 200.0],
                "qty": pa.array([1, 2], pa.int64()),
                "ts": pa.array([h(30), h(1)], UTC_US),
            }
        ),
    )
    for view, keys in (("orders", ["customer_id"]), ("stock", ["shop", "sku"])):
        for start, end in ((None, h(100)), (h(3), h(12)), (h(50), h(60))):
            want_sel = duck.resolve_features([f"{view}:*"])[0]
            want = duck.offline_engine.pull_latest(want_sel, start, end).read_all()
            got = spark.offline_engine.pull_latest(want_sel, start, end).read_all()
            order = [(k, "ascending") for k in keys]
            assert got.schema == want.schema
            assert got.sort_by(order).to_pylist() == want.sort_by(order).to_pylist()
        # the probe of `quiver validate` and of the freshness lag
        sel = duck.resolve_features([f"{view}:*"])[0]
        want_probe = probe_view(duck.offline_engine, sel, check_types=True)
        assert probe_view(spark.offline_engine, sel, check_types=True) == want_probe
        assert want_probe.rows > 0


def test_source_errors_match(stores: tuple[FeatureStore, FeatureStore], tmp_path: Path) -> None:
    duck, spark = stores
    entity = _entity_table()
    (tmp_path / "data" / "stock.csv").unlink()
    for store in (duck, spark):
        with pytest.raises(NotFoundError, match="stock_src"):
            store.get_historical_features(entity, ["stock:level"]).to_arrow()
    broken = orders_src.model_copy(update={"field_mapping": {"cust": "customer_id"}})
    sel = duck.resolve_features(["orders:amount"])[0]
    sel = type(sel)(sel.view, sel.features, broken, sel.entities)
    for store in (duck, spark):
        with pytest.raises(InvalidError, match=r"no column 'amount'.*feature 'amount'"):
            store.offline_engine.pull_latest(sel, None, h(100)).read_all()


def test_iceberg_source_is_planned_by_pyiceberg(tmp_path: Path, spark_session: object) -> None:
    (tmp_path / "data").mkdir()
    duck = FeatureStore(config=load_config(tmp_path))
    catalog = iceberg_catalog(duck.config)
    catalog.create_namespace("web")
    rows = pa.table(
        {
            "cust": pa.array([1, 1, 2], pa.int64()),
            "ts": pa.array([h(0), h(30), h(1)], UTC_US),
            "clicks": pa.array([5, 6, 7], pa.int64()),
        }
    )
    ice = catalog.create_table("web.clicks", schema=rows.schema)
    ice.append(rows)
    ice.append(rows.slice(2).set_column(1, "ts", pa.array([h(3)], UTC_US)))
    src = IcebergSource(
        name="clicks_src",
        table="web.clicks",
        timestamp_field="ts",
        field_mapping={"cust": "customer_id"},
    )
    view = FeatureView(
        name="clicks",
        entities=["customer"],
        schema=[Field(name="clicks", dtype="int64")],
        source=src,
        ttl=timedelta(days=1),
    )
    duck.apply([customer, src, view])
    spark = FeatureStore(config=load_config(tmp_path, offline_engine={"type": "spark"}))
    entity = pa.table(
        {
            "customer_id": pa.array([1, 1, 2, 2], pa.int64()),
            "event_timestamp": pa.array([h(2), h(31), h(2), h(40)], UTC_US),
        }
    )
    want = duck.get_historical_features(entity, ["clicks:clicks"]).to_arrow()
    got = spark.get_historical_features(entity, ["clicks:clicks"]).to_arrow()
    assert got.column("clicks").to_pylist() == [5, 6, 7, None] == want.column("clicks").to_pylist()
    sel = spark.resolve_features(["clicks:clicks"])[0]
    latest = spark.offline_engine.pull_latest(sel, None, h(100)).read_all().sort_by("customer_id")
    assert latest.column("clicks").to_pylist() == [6, 7]
    assert latest.column("event_timestamp").to_pylist() == [h(30), h(3)]
    # a window the snapshot's files do not reach: no rows, the declared schema
    assert spark.offline_engine.pull_latest(sel, h(500), h(600)).read_all().num_rows == 0
    duck.close()
    spark.close()


def test_all_null_transformation_inputs(tmp_path: Path, spark_session: object) -> None:
    """A column of Arrow's null type (all None, e.g. a pushed row without a value) is stored as
    INT32 in Parquet; a transformation reading it must see nulls, not integers."""
    (tmp_path / "data").mkdir()
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([1, 2], pa.int64()),
                "event_timestamp": pa.array([h(0), h(1)], UTC_US),
                "label": pa.array([None, None], pa.null()),
            }
        ),
        tmp_path / "data" / "src.parquet",
    )
    src = FileSource(name="src", path="data/src.parquet")
    view = FeatureView(
        name="v",
        entities=["customer"],
        source="src",
        schema=[Field(name="low", dtype="string", transformation="lower(label)")],
    )
    duck = FeatureStore(config=load_config(tmp_path))
    duck.apply([customer, src, view])
    spark = FeatureStore(config=load_config(tmp_path, offline_engine={"type": "spark"}))
    entity = pa.table(
        {"customer_id": pa.array([1, 2], pa.int64()), "event_timestamp": [h(5), h(5)]}
    )
    for pushed in (False, True):
        want = duck.get_historical_features(entity, ["v:low"]).to_arrow()
        got = spark.get_historical_features(entity, ["v:low"]).to_arrow()
        assert got.equals(want)
        sel = duck.resolve_features(["v:low"])[0]
        latest = spark.offline_engine.pull_latest(sel, None, h(100)).read_all()
        assert latest.sort_by("customer_id").equals(
            duck.offline_engine.pull_latest(sel, None, h(100)).read_all().sort_by("customer_id")
        )
        if not pushed:  # a pushed row whose input is null too, in a file of its own
            append_to_source(
                duck.config,
                src,
                pa.table(
                    {
                        "customer_id": pa.array([1], pa.int64()),
                        "event_timestamp": pa.array([h(2)], UTC_US),
                        "label": pa.array([None], pa.null()),
                    }
                ),
            )
    duck.close()
    spark.close()
