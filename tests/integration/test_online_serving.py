"""get_online_features and push through the FeatureStore, on SQLite, on a real redis-server and
on DynamoDB (moto's server)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
from quiver.errors import InvalidError, NotFoundError
from quiver.types import arrow_type

NOW = datetime.now(UTC).replace(microsecond=0)
TS = arrow_type("timestamp")

customer = Entity(name="customer", join_keys=["customer_id"])
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type="string")
stats_src = FileSource(
    name="stats_src",
    path="data/stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_field="created",
)
profile_src = FileSource(name="profile_src", path="data/profile.parquet")
pair_src = FileSource(name="pair_src", path="data/pair.parquet")
stats = FeatureView(
    name="stats",
    entities=[customer],
    features=[
        Field(name="orders", dtype="int64"),
        Field(name="spend", dtype="float64"),
        Field(name="tier", dtype="string"),
        Field(name="vip", dtype="bool"),
        Field(name="last_seen", dtype="timestamp"),
        Field(name="tags", dtype="list<string>"),
    ],
    source=stats_src,
    ttl=timedelta(days=30),
)
profile = FeatureView(
    name="profile",
    entities=[customer],
    features=[Field(name="age", dtype="int32"), Field(name="region", dtype="string")],
    source=profile_src,
)
pair = FeatureView(
    name="pair",
    entities=[customer, merchant],
    features=[Field(name="visits", dtype="int64"), Field(name="spend", dtype="float64")],
    source=pair_src,
    ttl=timedelta(days=1),
)
service = FeatureService(name="svc", features=["stats:orders", "stats:tier", "profile:*"])


def _write_sources(data: Path) -> None:
    data.mkdir(exist_ok=True)
    pq.write_table(
        pa.table(
            {
                "customer_id": [1, 1, 2, 3],
                "event_timestamp": pa.array(
                    [NOW - timedelta(days=5), NOW - timedelta(days=2), NOW - timedelta(days=3),
                     NOW - timedelta(days=40)],
                    type=TS,
                ),
                "created": pa.array([NOW] * 4, type=TS),
                "orders": [1, 2, 7, 9],
                "spend": [1.5, 2.5, None, 9.0],
                "tier": ["a", "b", "c", "d"],
                "vip": [False, True, None, False],
                "last_seen": pa.array([NOW - timedelta(days=1)] * 4, type=TS),
                "tags": [["x"], ["x", "y"], [], None],
            }
        ),
        data / "stats.parquet",
    )  # fmt: skip
    pq.write_table(
        pa.table(
            {
                "customer_id": [1, 2],
                "event_timestamp": pa.array([NOW - timedelta(days=400)] * 2, type=TS),
                "age": pa.array([31, 42], pa.int32()),
                "region": ["north", "south"],
            }
        ),
        data / "profile.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "customer_id": [1, 1, 2],
                "merchant_id": ["m1", "m2", "m1"],
                "event_timestamp": pa.array(
                    [NOW - timedelta(hours=1), NOW - timedelta(hours=2), NOW - timedelta(hours=36)],
                    type=TS,
                ),
                "visits": [3, 4, 5],
                "spend": [10.0, 20.0, 30.0],
            }
        ),
        data / "pair.parquet",
    )


def make_store(root: Path, online: dict[str, Any]) -> FeatureStore:
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "shop",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": online,
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    _write_sources(root / "data")
    store = FeatureStore(root)
    store.apply(
        [customer, merchant, stats_src, profile_src, pair_src, stats, profile, pair, service]
    )
    return store


@pytest.fixture(params=["sqlite", "redis", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    if request.param == "sqlite":
        online: dict[str, Any] = {"type": "sqlite", "path": "data/online.db"}
    elif request.param == "dynamodb":
        online = request.getfixturevalue("dynamodb_settings")
    else:
        url = request.getfixturevalue("redis_url")
        online = {"type": "redis", "url": url, "key_prefix": f"t{uuid.uuid4().hex[:6]}"}
    s = make_store(tmp_path / "repo", online)
    yield s
    s.close()


@pytest.fixture
def materialized(store: FeatureStore) -> FeatureStore:
    store.materialize(NOW - timedelta(days=1000), NOW)
    return store


@pytest.fixture(scope="module", params=["sqlite", "redis", "dynamodb"])
def reader(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FeatureStore]:
    """A materialized store shared by the tests that only read (a fresh Redis key prefix)."""
    if request.param == "sqlite":
        online: dict[str, Any] = {"type": "sqlite", "path": "data/online.db"}
    elif request.param == "dynamodb":
        moto = request.getfixturevalue("moto_server")
        online = {
            "type": "dynamodb",
            "endpoint_url": moto.endpoint,
            "region": moto.REGION,
            "access_key_id": "test",
            "secret_access_key": "test",
            "table_prefix": f"r{uuid.uuid4().hex[:6]}.",
        }
    else:
        server = request.getfixturevalue("redis_server")
        online = {"type": "redis", "url": server.url, "key_prefix": f"r{uuid.uuid4().hex[:6]}"}
    s = make_store(tmp_path_factory.mktemp("reader") / "repo", online)
    s.materialize(NOW - timedelta(days=1000), NOW)
    yield s
    s.close()


def test_values_statuses_and_shapes(reader: FeatureStore) -> None:
    res = reader.get_online_features(
        features=["stats:*", "profile:age"],
        entity_rows=[
            {"customer_id": 1},
            {"customer_id": 3},
            {"customer_id": 99},
            {"customer_id": 1},
        ],
    )
    assert res.join_keys == ["customer_id"]
    assert res.feature_names == ["orders", "spend", "tier", "vip", "last_seen", "tags", "age"]
    assert res.to_dict() == {
        "customer_id": [1, 3, 99, 1],
        "orders": [2, None, None, 2],
        "spend": [2.5, None, None, 2.5],
        "tier": ["b", None, None, "b"],
        "vip": [True, None, None, True],
        "last_seen": [NOW - timedelta(days=1), None, None, NOW - timedelta(days=1)],
        "tags": [["x", "y"], None, None, ["x", "y"]],
        "age": [31, None, None, 31],
    }
    # Customer 3's only row is 40 days old with a 30-day TTL: expired, not missing.
    assert res.statuses["orders"] == ["present", "expired", "not_found", "present"]
    assert res.statuses["age"] == ["present", "not_found", "not_found", "present"]
    assert res.event_timestamps["orders"] == [
        NOW - timedelta(days=2), NOW - timedelta(days=40), None, NOW - timedelta(days=2),
    ]  # fmt: skip
    table = res.to_arrow()
    assert table.schema.field("age").type == pa.int32()
    assert table.schema.field("tags").type == pa.list_(pa.string())
    assert table.schema.field("last_seen").type == TS
    frame = res.to_pandas()
    assert list(frame["customer_id"]) == [1, 3, 99, 1]
    assert isinstance(res.to_polars(), pl.DataFrame)


# The latest row per key of each view in the sources above (what materialization keeps), as
# (event time, values); TTLs: stats 30 days, pair 1 day, profile none.
ORACLE: dict[str, tuple[timedelta | None, dict[tuple, tuple[datetime, dict[str, Any]]]]] = {
    "stats": (
        timedelta(days=30),
        {
            (1,): (NOW - timedelta(days=2), {"orders": 2, "spend": 2.5, "tier": "b", "vip": True,
                   "last_seen": NOW - timedelta(days=1), "tags": ["x", "y"]}),
            (2,): (NOW - timedelta(days=3), {"orders": 7, "spend": None, "tier": "c", "vip": None,
                   "last_seen": NOW - timedelta(days=1), "tags": []}),
            (3,): (NOW - timedelta(days=40), {"orders": 9, "spend": 9.0, "tier": "d", "vip": False,
                   "last_seen": NOW - timedelta(days=1), "tags": None}),
        },
    ),
    "profile": (
        None,
        {
            (1,): (NOW - timedelta(days=400), {"age": 31, "region": "north"}),
            (2,): (NOW - timedelta(days=400), {"age": 42, "region": "south"}),
        },
    ),
    "pair": (
        timedelta(days=1),
        {
            (1, "m1"): (NOW - timedelta(hours=1), {"visits": 3, "spend": 10.0}),
            (1, "m2"): (NOW - timedelta(hours=2), {"visits": 4, "spend": 20.0}),
            (2, "m1"): (NOW - timedelta(hours=36), {"visits": 5, "spend": 30.0}),
        },
    ),
}  # fmt: skip
VIEW_KEYS = {
    "stats": ("customer_id",),
    "profile": ("customer_id",),
    "pair": ("customer_id", "merchant_id"),
}
FEATURE_REFS = [
    f"{view}:{name}" for view, (_, rows) in ORACLE.items() for name in next(iter(rows.values()))[1]
]


def _expected(view: str, name: str, row: dict[str, Any], now: datetime) -> tuple[Any, str, Any]:
    """The oracle's (value, status, event time) of one feature for one entity row."""
    ttl, stored = ORACLE[view]
    found = stored.get(tuple(row[k] for k in VIEW_KEYS[view]))
    if found is None:
        return None, "not_found", None
    event, values = found
    if ttl is not None and event <= now - ttl:
        return None, "expired", event
    return values[name], "present", event


@settings(max_examples=150, deadline=None)
@given(
    refs=st.lists(st.sampled_from(FEATURE_REFS), min_size=1, max_size=6, unique=True),
    keys=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["m1", "m2", "m9"])), max_size=12),
    columnar=st.booleans(),
)
def test_values_and_statuses_against_an_oracle(
    reader: FeatureStore, refs: list[str], keys: list[tuple[int, str]], columnar: bool
) -> None:
    """Any features of any views for any entity rows (none, one or many; missing, repeated),
    as a list of dicts or a dict of lists."""
    join_keys = (
        ["customer_id", "merchant_id"]
        if any(r.startswith("pair:") for r in refs)
        else ["customer_id"]
    )
    rows = [dict(zip(["customer_id", "merchant_id"], key, strict=True)) for key in keys]
    rows = [{k: row[k] for k in join_keys} for row in rows]
    entity_rows: Any = {k: [row[k] for row in rows] for k in join_keys} if columnar else rows
    res = reader.get_online_features(refs, entity_rows, full_feature_names=True)
    now = datetime.now(UTC)
    for ref in refs:
        view, name = ref.split(":")
        want = [_expected(view, name, row, now) for row in rows]
        out = f"{view}__{name}"
        assert res.values[out] == [w[0] for w in want], (ref, rows)
        assert res.statuses[out] == [w[1] for w in want], (ref, rows)
        assert res.event_timestamps[out] == [w[2] for w in want], (ref, rows)
    assert res.entity_columns == {k: [row[k] for row in rows] for k in join_keys}


def test_null_feature_values_are_present(reader: FeatureStore) -> None:
    res = reader.get_online_features(
        features=["stats:spend", "stats:vip", "stats:tags"], entity_rows=[{"customer_id": 2}]
    )
    assert res.to_dict() == {"customer_id": [2], "spend": [None], "vip": [None], "tags": [[]]}
    assert res.statuses["spend"] == ["present"]


def test_feature_service_and_full_names(reader: FeatureStore) -> None:
    res = reader.get_online_features(
        feature_service="svc", entity_rows={"customer_id": [2, 1]}, full_feature_names=True
    )
    assert res.to_dict() == {
        "customer_id": [2, 1],
        "stats__orders": [7, 2],
        "stats__tier": ["c", "b"],
        "profile__age": [42, 31],
        "profile__region": ["south", "north"],
    }


def test_compound_keys_and_several_views(reader: FeatureStore) -> None:
    res = reader.get_online_features(
        features=["pair:visits", "profile:region"],
        entity_rows=[
            {"customer_id": 1, "merchant_id": "m1"},
            {"customer_id": 1, "merchant_id": "m2"},
            {"customer_id": 2, "merchant_id": "m1"},
            {"customer_id": 2, "merchant_id": "m9"},
        ],
    )
    assert res.join_keys == ["customer_id", "merchant_id"]
    assert res.values["visits"] == [3, 4, None, None]
    assert res.statuses["visits"] == ["present", "present", "expired", "not_found"]
    assert res.values["region"] == ["north", "north", "south", "south"]


def test_clashing_names_need_full_names(reader: FeatureStore) -> None:
    with pytest.raises(InvalidError, match="full_feature_names=True"):
        reader.get_online_features(
            features=["stats:spend", "pair:spend"],
            entity_rows=[{"customer_id": 1, "merchant_id": "m1"}],
        )


def test_entity_input_forms(reader: FeatureStore) -> None:
    expected = {"customer_id": [1, 2], "orders": [2, 7]}
    for rows in (
        [{"customer_id": 1}, {"customer_id": 2}],
        {"customer_id": [1, 2]},
        pd.DataFrame({"customer_id": [1, 2]}),
        pa.table({"customer_id": [1, 2]}),
        pl.DataFrame({"customer_id": [1, 2]}),
        [{"customer_id": pd.Series([1, 2]).iloc[0]}, {"customer_id": 2}],  # numpy int64
    ):
        assert reader.get_online_features(["stats:orders"], rows).to_dict() == expected
    empty = reader.get_online_features(["stats:orders"], [])
    assert empty.to_dict() == {"customer_id": [], "orders": []}


BAD_ENTITY_ROWS = [
    ([{"customer_id": 1}, {"customer": 2}], r"entity row 1 has no join key 'customer_id'"),
    ([{"customer_id": "1"}], r"entity row 0: join key 'customer_id' must be int64, got str"),
    ([{"customer_id": 1.0}], r"must be int64, got float"),
    ([{"customer_id": True}], r"must be int64, got bool"),
    ([{"customer_id": None}], r"must be int64, got NoneType"),
    ([{"customer_id": 2**64}], r"out of range"),
    ({"customer": [1]}, r"entity_rows has no join key 'customer_id'"),
    ([1, 2], r"entity row 0 is int, not a dict"),
    ("customer_id=1", r"entity_rows must be a list of dicts"),
    (None, r"entity_rows is missing"),
]


def test_bad_entity_rows(reader: FeatureStore) -> None:
    for rows, message in BAD_ENTITY_ROWS:
        with pytest.raises(InvalidError, match=message):
            reader.get_online_features(["stats:orders"], rows)


def test_compound_key_type_errors(reader: FeatureStore) -> None:
    with pytest.raises(InvalidError, match="join key 'merchant_id' must be string, got int"):
        reader.get_online_features(["pair:visits"], [{"customer_id": 1, "merchant_id": 1}])
    with pytest.raises(InvalidError, match=r"has no join key 'merchant_id'.*feature view 'pair'"):
        reader.get_online_features(["pair:visits"], [{"customer_id": 1}])


def test_bad_references(reader: FeatureStore) -> None:
    with pytest.raises(NotFoundError, match="did you mean 'stats'"):
        reader.get_online_features(["stat:orders"], [{"customer_id": 1}])
    with pytest.raises(NotFoundError, match="no feature 'order'"):
        reader.get_online_features(["stats:order"], [{"customer_id": 1}])
    with pytest.raises(InvalidError, match="not both or neither"):
        reader.get_online_features(["stats:orders"], [{"customer_id": 1}], feature_service="svc")


def test_before_materialization_everything_is_not_found(store: FeatureStore) -> None:
    res = store.get_online_features(
        ["stats:orders", "pair:visits"], [{"customer_id": 1, "merchant_id": "m1"}]
    )
    assert res.statuses == {"orders": ["not_found"], "visits": ["not_found"]}


def test_a_schema_change_never_serves_stale_columns(materialized: FeatureStore) -> None:
    assert materialized.get_online_features(["profile:age"], [{"customer_id": 1}]).values[
        "age"
    ] == [31]
    changed = profile.model_copy(
        update={
            "features": [Field(name="age", dtype="int64"), Field(name="region", dtype="string")]
        }
    )
    materialized.apply([changed], allow_breaking=True)
    res = materialized.get_online_features(["profile:age"], [{"customer_id": 1}])
    assert res.statuses["age"] == ["not_found"]  # the new schema has not been materialized
    materialized.materialize_incremental(NOW, ["profile"])
    res = materialized.get_online_features(["profile:age"], [{"customer_id": 1}])
    assert res.values["age"] == [31]
    assert res.to_arrow().schema.field("age").type == pa.int64()


# -- push ----------------------------------------------------------------------------------------


def _orders(store: FeatureStore, *ids: int) -> list[Any]:
    return store.get_online_features(["stats:orders"], [{"customer_id": i} for i in ids]).values[
        "orders"
    ]


def _stats_row(cid: int, orders: int, when: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "customer_id": cid,
        "orders": orders,
        "spend": 1.0,
        "tier": "p",
        "vip": True,
        "last_seen": when,
        "tags": ["p"],
        "event_timestamp": when,
        **extra,
    }


def test_push_every_input_form(store: FeatureStore) -> None:
    when = NOW - timedelta(hours=1)
    dicts = [_stats_row(10, 1, when), _stats_row(11, 2, when)]
    assert store.push("stats", dicts) == 2
    assert _orders(store, 10, 11) == [1, 2]
    frame = pd.DataFrame([_stats_row(12, 3, when)])
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"]).astype(
        "datetime64[ns, UTC]"
    )
    assert store.push("stats", frame) == 1
    assert store.push("stats", pa.Table.from_pylist([_stats_row(13, 4, when)])) == 1
    assert store.push("stats", pl.DataFrame([_stats_row(14, 5, when)])) == 1
    columns = {k: [v] for k, v in _stats_row(15, 6, when).items()}
    assert store.push("stats", columns) == 1
    assert _orders(store, 12, 13, 14, 15) == [3, 4, 5, 6]
    assert store.push("stats", []) == 0


def test_push_out_of_order_newer_wins(store: FeatureStore) -> None:
    t = [NOW - timedelta(minutes=m) for m in (30, 20, 10)]
    store.push("stats", [_stats_row(20, 2, t[1])])
    store.push("stats", [_stats_row(20, 1, t[0])])  # late and older: ignored
    assert _orders(store, 20) == [2]
    store.push("stats", [_stats_row(20, 3, t[2]), _stats_row(20, 0, t[0])])
    assert _orders(store, 20) == [3]
    # Same event time: the greater created timestamp wins (a push's default is the push time).
    store.push("stats", [_stats_row(20, 4, t[2], created=datetime.now(UTC) + timedelta(hours=1))])
    store.push("stats", [_stats_row(20, 5, t[2], created=NOW - timedelta(days=1))])
    assert _orders(store, 20) == [4]


def test_push_then_materialize_keeps_the_newer_value(store: FeatureStore) -> None:
    store.push("stats", [_stats_row(1, 100, NOW - timedelta(hours=1))])
    store.materialize(NOW - timedelta(days=1000), NOW)  # source rows for customer 1 are older
    assert _orders(store, 1, 2) == [100, 7]


def test_push_defaults_the_event_time_to_now(store: FeatureStore) -> None:
    row = _stats_row(30, 1, NOW)
    del row["event_timestamp"]
    store.push("stats", [row])
    res = store.get_online_features(["stats:orders"], [{"customer_id": 30}])
    assert res.statuses["orders"] == ["present"]
    assert abs(res.event_timestamps["orders"][0] - datetime.now(UTC)) < timedelta(minutes=1)


def _snapshot(store: FeatureStore) -> dict[str, list[Any]]:
    return store.get_online_features(
        ["stats:*"], [{"customer_id": i} for i in (1, 2, 40, 41)]
    ).to_dict()


def _drop(name: str, only: int | None = None) -> Any:
    def change(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in r.items() if k != name} if only in (None, i) else r
            for i, r in enumerate(rows)
        ]

    return change


def _set(name: str, value: Any, only: int | None = None) -> Any:
    def change(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**r, name: value} if only in (None, i) else r for i, r in enumerate(rows)]

    return change


BAD_PUSHES = [
    (_drop("customer_id"), "missing column.*customer_id"),
    (_drop("tier"), "missing column.*tier"),
    (_drop("tier", only=1), "row 1 lacks tier"),
    (_set("orders", "many"), "'orders' is string"),
    (_set("orders", 1.5, only=1), "'orders' is double"),
    (_set("vip", 1), "'vip' is int64"),
    (_set("customer_id", None, only=1), "join key 'customer_id' has nulls"),
    (_set("customer_id", "x", only=1), "mixes value types"),
    (_set("colour", "red"), "unknown column.*colour"),
    (_set("event_timestamp", "yesterday"), "cannot be read as timestamp"),
    (_set("event_timestamp", None), "'event_timestamp' has nulls"),
    (lambda rows: 42, "rows must be a pandas"),
]


def test_bad_push_changes_nothing(materialized: FeatureStore) -> None:
    before = _snapshot(materialized)
    rows = [_stats_row(1, 50, NOW), _stats_row(40, 51, NOW)]
    for change, message in BAD_PUSHES:
        with pytest.raises(InvalidError, match=message):
            materialized.push("stats", change(rows))
        assert _snapshot(materialized) == before, message


def test_push_to_unknown_view_or_target(materialized: FeatureStore) -> None:
    with pytest.raises(
        NotFoundError, match=r"feature view 'stat' does not exist.*did you mean 'stats'"
    ):
        materialized.push("stat", [_stats_row(1, 1, NOW)])
    with pytest.raises(InvalidError, match="to='everywhere' must be"):
        materialized.push("stats", [_stats_row(1, 1, NOW)], to="everywhere")  # type: ignore[arg-type]


def test_push_accepts_iso_strings_and_casts_numbers(store: FeatureStore) -> None:
    row = _stats_row(50, 1, NOW)
    row["event_timestamp"] = (NOW - timedelta(minutes=5)).isoformat()
    row["spend"] = 3  # an int for a float feature is fine
    store.push("stats", [row])
    res = store.get_online_features(["stats:spend"], [{"customer_id": 50}])
    assert res.values["spend"] == [3.0]
    assert res.event_timestamps["spend"] == [NOW - timedelta(minutes=5)]


def test_push_to_offline_and_both(store: FeatureStore) -> None:
    when = NOW - timedelta(hours=3)
    store.push("stats", [_stats_row(60, 6, when)], to="offline")
    assert _orders(store, 60) == [None]  # not online yet
    store.push("stats", [_stats_row(61, 7, when)], to="both")
    assert _orders(store, 61) == [7]
    entity = pa.table({"customer_id": [60, 61], "event_timestamp": pa.array([NOW, NOW], type=TS)})
    training = store.get_historical_features(entity, ["stats:orders"]).to_arrow()
    assert training.column("orders").to_pylist() == [6, 7]
    # Materialization brings the offline-only push online, as training saw it.
    store.materialize(NOW - timedelta(days=1), NOW)
    assert _orders(store, 60, 61) == [6, 7]


def test_registry_changes_in_another_process_reach_the_cache(materialized: FeatureStore) -> None:
    from quiver.online import serving

    assert _orders(materialized, 1) == [2]
    other = FeatureStore(materialized.repo_path)
    other.apply([stats.model_copy(update={"ttl": timedelta(days=1)})])
    other.close()
    serving._cache(materialized).checked = 0.0  # as if REVISION_CHECK_SECONDS had passed
    res = materialized.get_online_features(["stats:orders"], [{"customer_id": 1}])
    assert res.statuses["orders"] == ["expired"]


def test_check_registry_sees_another_process_at_once(materialized: FeatureStore) -> None:
    from quiver.online import serving

    assert _orders(materialized, 1) == [2]
    other = FeatureStore(materialized.repo_path)
    other.apply([stats.model_copy(update={"ttl": timedelta(days=1)})])
    other.close()
    serving.check_registry(materialized)  # no need to wait for REVISION_CHECK_SECONDS
    res = materialized.get_online_features(["stats:orders"], [{"customer_id": 1}])
    assert res.statuses["orders"] == ["expired"]


def test_the_server_checks_the_registry_in_the_background(
    materialized: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests never check the registry themselves while the server's watcher runs."""
    import time

    from fastapi.testclient import TestClient

    from quiver.online import serving
    from quiver.server import create_app

    monkeypatch.setattr(serving, "REVISION_CHECK_SECONDS", 0.2)
    monkeypatch.setattr(serving._Cache, "fresh", lambda cache: cache)  # requests: no checks
    body = {"features": ["stats:orders"], "entities": {"customer_id": [1]}}
    with TestClient(create_app(materialized)) as client:

        def status() -> str:
            answer = client.post("/api/v1/serving/online", json=body)
            assert answer.status_code == 200, answer.text
            return str(answer.json()["results"][0]["statuses"]["orders"])

        assert status() == "present"
        other = FeatureStore(materialized.repo_path)
        other.apply([stats.model_copy(update={"ttl": timedelta(days=1)})])
        other.close()
        deadline = time.monotonic() + 10
        while status() != "expired":
            assert time.monotonic() < deadline, "the watcher never saw the other process's change"
            time.sleep(0.05)
