"""Iceberg sources: real tables in pyiceberg's SQL catalog on SQLite (embedded)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from quiver import (
    ConfigError,
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    IcebergSource,
    InvalidError,
)
from quiver.config import load_config
from quiver.offline.sources import append_to_source, iceberg_catalog, scan_source

T0 = datetime(2024, 5, 1, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")
customer = Entity(name="customer", join_keys=["customer_id"])


def h(x: float) -> datetime:
    return T0 + timedelta(hours=x)


def make_store(tmp_path: Path, **settings: object) -> FeatureStore:
    (tmp_path / "data").mkdir(exist_ok=True)
    return FeatureStore(config=load_config(tmp_path, **settings))


def events(cust: list[int], hours: list[float], clicks: list[int]) -> pa.Table:
    return pa.table(
        {
            "cust": pa.array(cust, pa.int64()),
            "ts": pa.array([h(x) for x in hours], UTC_US),
            "clicks": pa.array(clicks, pa.int64()),
        }
    )


def test_partitioned_table_mapping_push_and_pull(tmp_path: Path) -> None:
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import IdentityTransform

    store = make_store(tmp_path)
    catalog = iceberg_catalog(store.config)
    catalog.create_namespace("web")
    table = events([1, 1, 2], [0, 30, 1], [5, 6, 7])
    ice = catalog.create_table("web.clicks", schema=table.schema)
    field_id = ice.schema().find_field("cust").field_id
    with ice.update_spec() as spec:  # (day(ts) would need the optional pyiceberg-core)
        spec.add_field("cust", IdentityTransform(), "cust_part")
    ice = catalog.load_table("web.clicks")
    assert ice.spec().fields and isinstance(ice.spec(), PartitionSpec)
    assert (
        isinstance(ice.spec().fields[0], PartitionField)
        and ice.spec().fields[0].source_id == field_id
    )
    ice.append(table)
    assert (tmp_path / "data" / "iceberg_catalog.db").exists()  # the embedded default catalog

    src = IcebergSource(
        name="clicks_src",
        table="web.clicks",
        timestamp_field="ts",
        field_mapping={"cust": "customer_id"},
    )
    view = FeatureView(
        name="clicks",
        entities=["customer"],
        features=[Field(name="clicks", dtype="int64")],
        source=src,
        ttl=timedelta(days=1),
    )
    store.apply([customer, src, view])
    ents = pa.table(
        {
            "customer_id": pa.array([1, 1, 2, 2], pa.int64()),
            "event_timestamp": pa.array([h(2), h(31), h(2), h(40)], UTC_US),
        }
    )
    out = store.get_historical_features(ents, ["clicks:clicks"]).to_arrow()
    assert out.column("clicks").to_pylist() == [5, 6, 7, None]

    # push to the offline store: appended to the Iceberg table, seen by the next reads
    append_to_source(
        store.config,
        store.get_data_source("clicks_src"),
        pa.table(
            {
                "customer_id": pa.array([2], pa.int64()),
                "clicks": pa.array([9], pa.int64()),
                "ts": pa.array([h(39)], pa.timestamp("ns")),
            }
        ),
    )
    assert len(catalog.load_table("web.clicks").scan().to_arrow()) == 4
    out = store.get_historical_features(ents, ["clicks:clicks"]).to_arrow()
    assert out.column("clicks").to_pylist() == [5, 6, 7, 9]

    sel = store.resolve_features(["clicks:clicks"])[0]
    latest = store.offline_engine.pull_latest(sel, h(1), h(100)).read_all().sort_by("customer_id")
    assert latest.to_pylist() == [
        {"customer_id": 1, "clicks": 6, "event_timestamp": h(30), "created_timestamp": None},
        {"customer_id": 2, "clicks": 9, "event_timestamp": h(39), "created_timestamp": None},
    ]

    scanned = scan_source(store.config, src, start=h(1), end=h(35)).read_all().sort_by("ts")
    assert scanned.column_names == ["customer_id", "clicks", "ts"]
    assert scanned.column("clicks").to_pylist() == [7, 6]


def test_append_rejects_unknown_columns(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    catalog = iceberg_catalog(store.config)
    catalog.create_namespace("web")
    catalog.create_table("web.e", schema=events([1], [0], [1]).schema)
    src = IcebergSource(name="e", table="web.e", timestamp_field="ts")
    with pytest.raises(InvalidError, match="no column for 'bogus'"):
        append_to_source(
            store.config, src, pa.table({"ts": pa.array([h(1)], UTC_US), "bogus": [1]})
        )
    assert len(catalog.load_table("web.e").scan().to_arrow()) == 0


def test_named_catalogs(tmp_path: Path) -> None:
    store = make_store(
        tmp_path,
        iceberg={
            "catalogs": {
                "lake": {"type": "sql", "uri": "sqlite:///lake/catalog.db", "warehouse": "lake/wh"}
            }
        },
    )
    catalog = iceberg_catalog(store.config, "lake")
    catalog.create_namespace("ns")
    catalog.create_table("ns.t", schema=events([1], [0], [3]).schema).append(events([1], [0], [3]))
    assert (tmp_path / "lake" / "catalog.db").exists()
    src = IcebergSource(
        name="t",
        table="ns.t",
        catalog="lake",
        timestamp_field="ts",
        field_mapping={"cust": "customer_id"},
    )
    view = FeatureView(
        name="t", entities=["customer"], features=[Field(name="clicks", dtype="int64")], source=src
    )
    store.apply([customer, src, view])
    ents = pa.table({"customer_id": [1], "event_timestamp": pa.array([h(1)], UTC_US)})
    assert store.get_historical_features(ents, ["t:clicks"]).to_arrow().column(
        "clicks"
    ).to_pylist() == [3]

    other = IcebergSource(name="u", table="ns.t", catalog="lak", timestamp_field="ts")
    with pytest.raises(ConfigError, match=r"catalog 'lak' is not configured.*did you mean 'lake'"):
        scan_source(store.config, other)
