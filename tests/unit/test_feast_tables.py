"""Table names of the ``/feast`` platform routes: ``name``, ``schema.name``, ``catalog.schema.name``
resolved against the configured catalogs with the ``feast_compat`` defaults."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver import FeatureStore
from quiver.definitions import Entity, FeatureView, Field, IcebergSource
from quiver.errors import ConfigError, ForbiddenError, InvalidError, NotFoundError
from quiver.server.compat import _tables as tables

ROWS = pa.table(
    {
        "customer_id": ["a", "b"],
        "created_at": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("us", "UTC")),
        "spent": [1.0, 2.0],
    }
)


def _iceberg(store: FeatureStore, catalog: str, identifier: str) -> None:
    from pyiceberg.exceptions import NamespaceAlreadyExistsError

    from quiver.offline.sources import iceberg_catalog

    cat = iceberg_catalog(store.config, catalog)
    with contextlib.suppress(NamespaceAlreadyExistsError):
        cat.create_namespace(identifier.split(".")[0])
    cat.create_table(identifier, schema=ROWS.schema).append(ROWS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    (tmp_path / "quiver.yaml").write_text(
        "project: tables\n"
        "iceberg:\n"
        "  catalogs:\n"
        "    default: {uri: 'sqlite:///data/default.db', warehouse: data/wh_default}\n"
        "    lake: {uri: 'sqlite:///data/lake.db', warehouse: data/wh_lake}\n"
    )
    with FeatureStore(repo_path=tmp_path) as fs:
        _iceberg(fs, "default", "gold.customers")
        _iceberg(fs, "default", "silver.customers")
        _iceberg(fs, "lake", "gold.orders")
        yield fs


def test_parse_fills_the_defaults(store: FeatureStore) -> None:
    assert tables.parse(store, "t", "x") == tables.TableName("iceberg", "gold", "t", bare=True)
    assert tables.parse(store, "s.t", "x") == tables.TableName("iceberg", "s", "t")
    assert tables.parse(store, "c.s.t", "x") == tables.TableName("c", "s", "t")
    assert tables.parse(store, "t", "x", catalog="c", schema="s").qualified == "c.s.t"
    # the name's own parts win over the separate fields
    assert tables.parse(store, "s.t", "x", schema="other").schema == "s"
    for bad in ("", "a.b.c.d", "a-b", "1a", "a..b", "t" * 64, "a b", "a/b"):
        with pytest.raises(InvalidError):
            tables.parse(store, bad, "x")
    with pytest.raises(InvalidError, match="the schema of output_table, 'bad-schema'"):
        tables.parse(store, "t", "output_table", schema="bad-schema")
    with pytest.raises(InvalidError, match=r"the catalog of x, '\.\./c'"):
        tables.parse(store, "t", "x", catalog="../c")


def test_catalog_names(store: FeatureStore) -> None:
    assert tables.catalog_for(store, "lake") == "lake"
    assert tables.catalog_for(store, "default") == "default"
    assert tables.catalog_for(store, "iceberg") == "default"  # the platform's name for it
    assert tables.catalog_for(store, "hive") is None


def test_input_tables(store: FeatureStore) -> None:
    ref = tables.input_ref
    assert ref(store, "customers", "t") == (
        "iceberg:default/gold.customers",
        "iceberg.gold.customers",
    )
    assert ref(store, "silver.customers", "t")[0] == "iceberg:default/silver.customers"
    assert ref(store, "iceberg.silver.customers", "t")[0] == "iceberg:default/silver.customers"
    assert ref(store, "lake.gold.orders", "t") == ("iceberg:lake/gold.orders", "lake.gold.orders")
    with pytest.raises(NotFoundError) as info:
        ref(store, "orders", "input_table")  # in lake, not in the default catalog
    assert "no Iceberg table 'gold.orders' in catalog 'default'" in info.value.message
    with pytest.raises(NotFoundError) as info:
        ref(store, "hive.gold.orders", "input_table")
    assert "'hive' is not configured" in info.value.message
    with pytest.raises(InvalidError):
        ref(store, "a.b.c.d", "input_table")

    # a registered data source's name comes first
    store.apply(store.plan([IcebergSource(name="customers", table="silver.customers")]))
    assert ref(store, "customers", "t") == ("customers", "customers")

    # Parquet under data_dir/<schema>/ (and data_dir/ for a bare name) when Iceberg has none
    data = store.config.data_path
    (data / "gold").mkdir()
    pq.write_table(ROWS, data / "gold" / "scores.parquet")
    pq.write_table(ROWS, data / "flat.parquet")
    assert ref(store, "scores", "t") == (
        str(data / "gold" / "scores.parquet"),
        "iceberg.gold.scores",
    )
    assert ref(store, "flat", "t")[0] == str(data / "flat.parquet")
    with pytest.raises(NotFoundError):
        ref(store, "gold.flat", "t")  # a schema given: only data_dir/gold/


def test_output_tables(store: FeatureStore) -> None:
    out = tables.output_ref
    assert out(store, "p", None, overwrite=False) == ("iceberg:default/gold.p", "iceberg.gold.p")
    assert out(store, "p", "bronze", overwrite=False) == (
        "iceberg:default/bronze.p",
        "iceberg.bronze.p",
    )
    assert out(store, "lake.ml.p", "ignored", overwrite=False)[0] == "iceberg:lake/ml.p"
    with pytest.raises(InvalidError) as info:
        out(store, "hive.ml.p", None, overwrite=False)
    assert "'hive' is not configured" in info.value.message
    for table, schema in (("p", "bad-schema"), ("t" * 64, None), ("a.b.c.d", None)):
        with pytest.raises(InvalidError):
            out(store, table, schema, overwrite=False)
    # never a data source's table
    store.apply(store.plan([IcebergSource(name="cust", table="gold.customers")]))
    with pytest.raises(ForbiddenError):
        out(store, "customers", "gold", overwrite=False)


def test_views_over_a_table(store: FeatureStore) -> None:
    source = IcebergSource(name="cust_src", table="gold.customers", timestamp_field="created_at")
    entity = Entity(name="customer", join_keys=["customer_id"], value_type="string")
    view = FeatureView(
        name="spend",
        entities=["customer"],
        features=[Field(name="spent", dtype="float64")],
        source="cust_src",
    )
    store.apply(store.plan([source, entity, view]))
    assert tables.views_over(store, "iceberg:default/gold.customers") == ["spend"]
    assert tables.views_over(store, "cust_src") == ["spend"]
    assert tables.views_over(store, "iceberg:default/silver.customers") == []
    assert tables.views_over(store, "iceberg:lake/gold.customers") == []


def test_feast_compat_settings(tmp_path: Path) -> None:
    from quiver.config import load_config

    (tmp_path / "quiver.yaml").write_text(
        "feast_compat: {default_catalog: lake, default_schema: silver}\n"
        "iceberg: {catalogs: {lake: {}}}\n"
    )
    config = load_config(tmp_path)
    assert (config.feast_compat.default_catalog, config.feast_compat.default_schema) == (
        "lake",
        "silver",
    )
    (tmp_path / "quiver.yaml").write_text("feast_compat: {default_schema: 'no-good'}\n")
    with pytest.raises(ConfigError):
        load_config(tmp_path)
    (tmp_path / "quiver.yaml").write_text("feast_compat: {serve_stail: true}\n")
    with pytest.raises(ConfigError):
        load_config(tmp_path)
