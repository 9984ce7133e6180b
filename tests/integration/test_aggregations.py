"""Windowed aggregations by example: definitions, consistency check, serving over HTTP.

The properties (every function against an oracle, offline and online) are in
``test_aggregations_property.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from quiver import Aggregation, Entity, FeatureStore, FeatureView, Field, FileSource, InvalidError
from quiver.loader import load_definitions

NOW = datetime.now(UTC).replace(microsecond=0)
TS = pa.timestamp("us", tz="UTC")

customer = Entity(name="customer", join_keys=["customer_id"])
orders = FileSource(name="orders", path="data/orders.parquet")
orders_agg = FeatureView(
    name="orders_agg",
    entities=[customer],
    source=orders,
    schema=[Field(name="amount", dtype="float64")],
    aggregations=[
        Aggregation(function="count", time_window=timedelta(days=7)),
        Aggregation(column="amount", function="sum", time_window=timedelta(days=7)),
        Aggregation(column="amount", function="mean", window="30d"),
    ],
    aggregation_interval=timedelta(hours=1),
)
profile_src = FileSource(name="profile_src", path="data/profile.parquet")
profile = FeatureView(
    name="profile",
    entities=[customer],
    source=profile_src,
    schema=[Field(name="age", dtype="int64")],
)


# -- definitions -------------------------------------------------------------------------------


def test_names_dtypes_and_spec_round_trip() -> None:
    assert orders_agg.feature_names == ["count_7d", "amount_sum_7d", "amount_mean_30d"]
    assert [f.dtype for f in orders_agg.output_fields] == ["int64", "float64", "float64"]
    spec = orders_agg.to_spec()
    assert spec["aggregations"][1] == {
        "name": "amount_sum_7d",
        "column": "amount",
        "function": "sum",
        "window": "7d",
    }
    assert spec["aggregation_interval"] == "1h"
    assert FeatureView.from_spec(spec) == orders_agg
    assert "aggregations" not in profile.to_spec()  # plain views keep their spec


def test_yaml_definitions_equal_python(tmp_path: Path) -> None:
    text = {
        "entities": [{"name": "customer", "join_keys": ["customer_id"]}],
        "data_sources": [{"name": "orders", "type": "file", "path": "data/orders.parquet"}],
        "feature_views": [
            {
                "name": "orders_agg",
                "entities": ["customer"],
                "features": [{"name": "amount", "dtype": "float64"}],
                "source": "orders",
                "aggregations": [
                    {"function": "count", "window": "7d"},
                    {"column": "amount", "function": "sum", "window": "7d"},
                    {"column": "amount", "function": "mean", "window": "30d"},
                ],
                "aggregation_interval": "1h",
            }
        ],
    }
    path = tmp_path / "defs.yaml"
    path.write_text(yaml.safe_dump(text))
    loaded = load_definitions(path)
    assert loaded.feature_views["orders_agg"] == orders_agg.normalized()


def test_default_interval_is_gcd_of_windows_and_an_hour() -> None:
    def interval(*windows: str) -> timedelta | None:
        view = FeatureView(
            name="v",
            entities=["customer"],
            source="orders",
            schema=[Field(name="amount", dtype="float64")],
            aggregations=[Aggregation(function="count", window=w) for w in windows],
        )
        return view.aggregation_interval

    assert interval("7d", "30d") == timedelta(hours=1)
    assert interval("5m", "1h") == timedelta(minutes=5)
    assert interval("90m") == timedelta(minutes=30)


@pytest.mark.parametrize(
    ("aggregation", "message"),
    [
        ({"column": "amount", "function": "median", "window": "1h"}, "function"),
        ({"column": "price", "function": "sum", "window": "1h"}, "column 'price'"),
        ({"column": "sku", "function": "sum", "window": "1h"}, "sum does not take column 'sku'"),
        ({"column": "amount", "function": "sum", "window": "0h"}, "window must be positive"),
        ({"column": "amount", "function": "sum", "window": "-1h"}, "not a duration"),
        ({"column": "amount", "function": "sum", "window": "90m"}, "not a multiple"),
        ({"column": "amount", "function": "sum", "window": "1 week"}, "not a duration"),
        ({"function": "mean", "window": "1h"}, "needs a column"),
    ],
)
def test_bad_aggregations_are_refused_naming_them(
    aggregation: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidError, match=message):
        FeatureView(
            name="v",
            entities=["customer"],
            source="orders",
            schema=[Field(name="amount", dtype="float64"), Field(name="sku", dtype="string")],
            aggregations=[aggregation],
            aggregation_interval="1h",
        )


def test_ttl_and_duplicate_names_are_refused() -> None:
    with pytest.raises(InvalidError, match="ttl does not apply"):
        FeatureView(
            name="v",
            entities=["customer"],
            source="orders",
            schema=[Field(name="amount", dtype="float64")],
            aggregations=[Aggregation(function="count", window="1d")],
            ttl=timedelta(days=1),
        )
    with pytest.raises(InvalidError, match="names two aggregations"):
        FeatureView(
            name="v",
            entities=["customer"],
            source="orders",
            schema=[Field(name="amount", dtype="float64")],
            aggregations=[
                Aggregation(function="count", window="1d"),
                Aggregation(function="count", window="1d"),
            ],
        )


# -- a repo ------------------------------------------------------------------------------------


def _write(root: Path) -> None:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    hours = [1, 5, 30, 24 * 8, 24 * 20]
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([1, 1, 1, 1, 2], pa.int64()),
                "amount": [10.0, 20.0, None, 40.0, 7.5],
                "event_timestamp": pa.array([NOW - timedelta(hours=h) for h in hours], TS),
            }
        ),
        data / "orders.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([1, 2], pa.int64()),
                "age": [30, 40],
                "event_timestamp": pa.array([NOW - timedelta(days=1)] * 2, TS),
            }
        ),
        data / "profile.parquet",
    )


@pytest.fixture(params=["sqlite", "redis", "dynamodb", "sqlite+spark"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    """The repo on each online store, and on SQLite with the Spark offline engine."""
    root = tmp_path / "repo"
    _write(root)
    online: dict[str, Any] = {"type": "sqlite", "path": "data/online.db"}
    if request.param == "redis":
        online = {"type": "redis", "url": request.getfixturevalue("redis_url")}
    elif request.param == "dynamodb":
        online = request.getfixturevalue("dynamodb_settings")
    config: dict[str, Any] = {"project": "shop", "registry": {"url": "sqlite:///data/registry.db"}}
    if request.param.endswith("+spark"):
        request.getfixturevalue("spark_session")  # the engine takes the active session
        config["offline_engine"] = {"type": "spark", "master": "local[2]"}
    (root / "quiver.yaml").write_text(yaml.safe_dump({**config, "online_store": online}))
    s = FeatureStore(root)
    s.apply(s.plan([customer, orders, orders_agg, profile_src, profile]))
    s.materialize_incremental(NOW + timedelta(seconds=1))
    yield s
    s.close()


def test_online_read_mixes_plain_and_aggregated_views(store: FeatureStore) -> None:
    got = store.get_online_features(
        features=["profile:age", "orders_agg:*"],
        entity_rows=[{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 3}],
    )
    assert got.feature_names == ["age", "count_7d", "amount_sum_7d", "amount_mean_30d"]
    values = got.to_dict()
    assert values["count_7d"] == [3, 0, 0]
    assert values["amount_sum_7d"] == [30.0, None, None]
    assert values["amount_mean_30d"] == [pytest.approx(70 / 3), 7.5, None]
    assert got.statuses["count_7d"] == ["present", "present", "not_found"]
    assert got.statuses["age"] == ["present", "present", "not_found"]
    assert got.event_timestamps["count_7d"][0] == NOW - timedelta(hours=1)


def test_consistency_check_covers_aggregations(store: FeatureStore) -> None:
    report = store_validate(store)
    assert report.ok, report.to_dict()
    assert report.values_compared == 2 * 3
    # an event pushed online only, before the watermark: the offline store lacks it
    store.push("orders_agg", [{"customer_id": 2, "amount": 1.0, "event_timestamp": NOW}])
    report = store_validate(store)
    assert report.mismatch_count == 3 and report.by_feature["count_7d"] == 1
    # an event after the watermark is counted apart
    later = NOW + timedelta(hours=2)
    store.push("orders_agg", [{"customer_id": 1, "amount": 1.0, "event_timestamp": later}])
    assert store_validate(store).newer_online == 1


def store_validate(store: FeatureStore) -> Any:
    from quiver.consistency import validate_consistency

    return validate_consistency(store, "orders_agg")


def test_rest_feast_and_fast_path_serve_aggregations(store: FeatureStore) -> None:
    from fastapi.testclient import TestClient

    from quiver.server import create_app

    body = {"features": ["orders_agg:count_7d", "orders_agg:amount_sum_7d", "profile:age"]}
    with TestClient(create_app(store)) as client:
        native = client.post(
            "/api/v1/serving/online", json={**body, "entities": {"customer_id": [1]}}
        ).json()
        assert native["results"][0]["values"] == {"count_7d": 3, "amount_sum_7d": 30.0, "age": 30}
        assert native["results"][0]["statuses"]["count_7d"] == "present"
        many = client.post(
            "/api/v1/serving/online", json={**body, "entities": {"customer_id": [1, 3]}}
        ).json()
        assert [r["values"]["count_7d"] for r in many["results"]] == [3, 0]
        assert many["results"][1]["statuses"]["count_7d"] == "not_found"
        feast = client.post(
            "/get-online-features", json={**body, "entities": {"customer_id": [1, 3]}}
        ).json()
        names = feast["metadata"]["feature_names"]
        count = feast["results"][names.index("count_7d")]
        assert count["values"] == [3, 0]
        assert count["statuses"] == ["PRESENT", "NOT_FOUND"]


def test_training_set_gives_the_online_values(store: FeatureStore) -> None:
    entity = pa.table(
        {"customer_id": pa.array([1, 2, 3], pa.int64()), "event_timestamp": pa.array([NOW] * 3, TS)}
    )
    offline = (
        store.get_historical_features(entity, features=["orders_agg:*"]).to_arrow().to_pydict()
    )
    online = store.get_online_features(
        features=["orders_agg:*"], entity_rows=[{"customer_id": k} for k in (1, 2, 3)]
    ).to_dict()
    for name in orders_agg.feature_names:
        assert offline[name] == pytest.approx(online[name]), name


def test_compound_string_keys_offline_online_and_push(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "shop": ["a", "a", "b"],
                "sku": ["x", "x", "x"],
                "qty": pa.array([1, 2, 5], pa.int64()),
                "event_timestamp": pa.array([NOW - timedelta(hours=h) for h in (1, 2, 3)], TS),
            }
        ),
        root / "data" / "sales.parquet",
    )
    (root / "quiver.yaml").write_text(yaml.safe_dump({"project": "shop"}))
    item = Entity(name="item", join_keys=["shop", "sku"], value_type="string")
    sales = FeatureView(
        name="sales",
        entities=[item],
        source=FileSource(name="sales_src", path="data/sales.parquet"),
        schema=[Field(name="qty", dtype="int64")],
        aggregations=[
            Aggregation(column="qty", function="sum", window="1d"),
            Aggregation(column="qty", function="max", window="1d"),
        ],
    )
    with FeatureStore(root) as store:
        store.apply(store.plan([item, sales]))
        store.materialize_incremental(NOW + timedelta(seconds=1))
        rows = [{"shop": "a", "sku": "x"}, {"shop": "b", "sku": "x"}, {"shop": "c", "sku": "x"}]
        online = store.get_online_features(features=["sales:*"], entity_rows=rows).to_dict()
        assert online["qty_sum_1d"] == [3, 5, None]
        assert online["qty_max_1d"] == [2, 5, None]
        entity = pa.table(
            {
                "shop": ["a", "b", "c"],
                "sku": ["x", "x", "x"],
                "event_timestamp": pa.array([NOW] * 3, TS),
            }
        )
        offline = store.get_historical_features(entity, features=["sales:*"]).to_arrow()
        assert offline.column("qty_sum_1d").to_pylist() == [3, 5, None]
        store.push("sales", [{"shop": "c", "sku": "x", "qty": 4, "event_timestamp": NOW}])
        online = store.get_online_features(features=["sales:*"], entity_rows=rows).to_dict()
        assert online["qty_sum_1d"] == [3, 5, 4]


def test_rest_creates_a_view_with_aggregations(store: FeatureStore) -> None:
    from fastapi.testclient import TestClient

    from quiver.server import create_app

    body = {
        "name": "orders_7d",
        "entities": ["customer"],
        "features": [{"name": "amount", "dtype": "float64"}],
        "source": "orders",
        "aggregations": [{"column": "amount", "function": "max", "window": "7d"}],
        "aggregation_interval": "1d",
    }
    with TestClient(create_app(store)) as client:
        created = client.post("/api/v1/feature-views", json=body)
        assert created.status_code == 201, created.text
        spec = client.get("/api/v1/feature-views/orders_7d").json()["spec"]
        assert spec["aggregations"][0]["name"] == "amount_max_7d"
        bad = client.post(
            "/api/v1/feature-views",
            json={**body, "name": "bad", "aggregations": [{"function": "sum", "window": "7d"}]},
        )
        assert bad.status_code == 422 and "needs a column" in bad.text


def test_training_set_mixes_plain_and_aggregated_views(store: FeatureStore) -> None:
    entity = pa.table(
        {
            "customer_id": pa.array([1, 2, None], pa.int64()),
            "event_timestamp": pa.array([NOW, NOW - timedelta(days=2), NOW], TS),
            "label": [1, 0, 1],
        }
    )
    out = store.get_historical_features(
        entity, features=["orders_agg:count_7d", "profile:age"], full_feature_names=True
    ).to_arrow()
    assert out.column_names == [
        "customer_id",
        "event_timestamp",
        "label",
        "orders_agg__count_7d",
        "profile__age",
    ]
    assert out.column("orders_agg__count_7d").to_pylist() == [3, 0, None]
    assert out.column("profile__age").to_pylist() == [30, None, None]


def test_cli_validate_consistency_on_aggregations(store: FeatureStore) -> None:
    import json
    import subprocess
    import sys

    cli = [sys.executable, "-m", "quiver"]
    done = subprocess.run(
        [*cli, "validate-consistency", "orders_agg", "--json", "--repo", str(store.repo_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True


def test_materialization_is_idempotent_and_takes_late_events(store: FeatureStore) -> None:
    from quiver.features.tile_store import tile_layout

    layout = tile_layout(store.project, orders_agg, [customer])
    start, end = NOW - timedelta(days=40), NOW + timedelta(seconds=1)
    store.materialize(start, end, ["orders_agg"])
    first = store.online_store.read_tiles(layout, [[1, 2]])
    store.materialize(start, end, ["orders_agg"])
    again = store.online_store.read_tiles(layout, [[1, 2]])
    # the same tiles (only the write counter in bytes 9-16 moves)
    assert [b[:8] + b[16:] for b in first if b] == [b[:8] + b[16:] for b in again if b]
    # a late event (an old event time, added to the source afterwards) is taken by a re-run
    path = store.repo_path / "data" / "orders.parquet"
    table = pq.read_table(path)
    late = pa.table(
        {
            "customer_id": pa.array([2], pa.int64()),
            "amount": [2.5],
            "event_timestamp": pa.array([NOW - timedelta(days=3)], TS),
        }
    )
    pq.write_table(pa.concat_tables([table, late.cast(table.schema)]), path)
    store.materialize(start, end, ["orders_agg"])
    got = store.get_online_features(
        features=["orders_agg:count_7d", "orders_agg:amount_mean_30d"],
        entity_rows=[{"customer_id": 2}],
    ).to_dict()
    assert got["count_7d"] == [1]
    assert got["amount_mean_30d"] == [pytest.approx(5.0)]
