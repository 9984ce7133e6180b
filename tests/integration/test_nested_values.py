"""Map, struct and json features end to end: sources, the point-in-time join (against a brute-force
oracle), materialization into both online stores, push, hostile values, training's refusal.

The view ``driver_hourly_stats`` is Feast's template view (``feast init``) with its ``Map``,
``Json`` and ``Struct({"name": String, "age": String})`` columns, as Quiver dtypes.
"""

from __future__ import annotations

import json
import random
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver import (
    Entity,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    RequestSource,
    on_demand_feature_view,
)
from quiver.errors import InvalidError
from quiver.online.encoding import MAX_JSON_DEPTH, MAX_NESTED_BYTES
from quiver.types import arrow_type

TS = arrow_type("timestamp")
NOW = datetime.now(UTC).replace(microsecond=0)
TTL = timedelta(days=1)
META = "map<string, string>"
PROFILE = "struct<name: string, age: string>"
DEEP = "struct<a: struct<b: map<string, float64>, at: timestamp>, tags: list<string>>"
COUNTS = "map<string, map<string, int64>>"
NESTED = {
    "driver_metadata": META,
    "driver_config": "json",
    "driver_profile": PROFILE,
    "deep": DEEP,
    "counts": COUNTS,
}

driver = Entity(name="driver", join_keys=["driver_id"])
stats_source = FileSource(
    name="driver_hourly_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_field="created",
)
driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=TTL,
    schema=[
        Field(name="conv_rate", dtype="float32"),
        Field(name="acc_rate", dtype="float32"),
        Field(name="avg_daily_trips", dtype="int64"),
        Field(name="driver_metadata", dtype=META),
        Field(name="driver_config", dtype="json"),
        Field(name="driver_profile", dtype=PROFILE),
    ],
    source=stats_source,
    tags={"team": "driver_performance"},
)
nested_source = FileSource(
    name="driver_nested_source",
    path="data/driver_nested.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_field="created",
)
driver_nested = FeatureView(
    name="driver_nested",
    entities=[driver],
    ttl=TTL,
    schema=[Field(name="deep", dtype=DEEP), Field(name="counts", dtype=COUNTS)],
    source=nested_source,
)
input_request = RequestSource(
    name="vals_to_add",
    schema=[Field(name="val_to_add", dtype="int64"), Field(name="val_to_add_2", dtype="int64")],
)


@on_demand_feature_view(
    sources=[driver_hourly_stats, input_request],
    schema=[
        Field(name="conv_rate_plus_val1", dtype="float64"),
        Field(name="conv_rate_plus_val2", dtype="float64"),
    ],
)
def transformed_conv_rate(inputs):  # type: ignore[no-untyped-def]  # Feast's template function
    df = pd.DataFrame()
    df["conv_rate_plus_val1"] = inputs["conv_rate"] + inputs["val_to_add"]
    df["conv_rate_plus_val2"] = inputs["conv_rate"] + inputs["val_to_add_2"]
    return df


labels_source = FileSource(
    name="labels", path="data/labels.parquet", timestamp_field="event_timestamp"
)

KEYS = ["", "a", "é", "ключ", "键", "😀", "a b", "x" * 40]


def _maybe(rng: random.Random, value: Any, p: float = 0.2) -> Any:
    return None if rng.random() < p else value


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randint(-(10**12), 10**12)
    if kind == 2:
        return rng.choice(KEYS)
    if kind == 3:
        return rng.choice([True, False, 1.25, -0.0])
    if kind in (4, 5):
        return {rng.choice(KEYS): _json_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [_json_value(rng, depth + 1) for _ in range(rng.randrange(4))]


def nested_values(rng: random.Random) -> dict[str, Any]:
    """One row's nested values: nulls, empty maps and structs, unicode keys, nested structs."""
    at = NOW - timedelta(microseconds=rng.randrange(10**12))
    return {
        "driver_metadata": _maybe(
            rng, {k: _maybe(rng, rng.choice(KEYS)) for k in rng.sample(KEYS, rng.randrange(4))}
        ),
        "driver_config": _maybe(rng, json.dumps(_json_value(rng), ensure_ascii=rng.random() < 0.5)),
        "driver_profile": _maybe(
            rng, {"name": _maybe(rng, rng.choice(KEYS)), "age": _maybe(rng, str(rng.randrange(99)))}
        ),
        "deep": _maybe(
            rng,
            {
                "a": _maybe(
                    rng,
                    {
                        "b": _maybe(
                            rng, {k: _maybe(rng, rng.random()) for k in rng.sample(KEYS, 2)}
                        ),
                        "at": _maybe(rng, at),
                    },
                ),
                "tags": _maybe(
                    rng, [_maybe(rng, rng.choice(KEYS)) for _ in range(rng.randrange(3))]
                ),
            },
        ),
        "counts": _maybe(
            rng,
            {k: {"n": rng.randrange(10), "m": None} for k in rng.sample(KEYS, rng.randrange(3))},
        ),
    }


def source_rows(seed: int, keys: int = 30, per_key: int = 4) -> list[dict[str, Any]]:
    """Rows over the last 40 hours (some beyond the 1-day TTL), with ties on the event time."""
    rng = random.Random(seed)
    rows = []
    for key in range(1, keys + 1):
        times = [NOW - timedelta(minutes=rng.randrange(40 * 60)) for _ in range(per_key)]
        times[-1] = times[0]  # a tie: the created timestamp decides
        for i, ts in enumerate(times):
            rows.append(
                {
                    "driver_id": key,
                    "event_timestamp": ts,
                    "created": ts + timedelta(seconds=i),
                    "conv_rate": rng.random(),
                    "acc_rate": rng.random(),
                    "avg_daily_trips": rng.randrange(1000),
                    **nested_values(rng),
                }
            )
    return rows


SOURCE_TYPES = {
    "driver_id": pa.int64(),
    "event_timestamp": TS,
    "created": TS,
    "conv_rate": pa.float32(),
    "acc_rate": pa.float32(),
    "avg_daily_trips": pa.int64(),
    **{name: arrow_type(dtype) for name, dtype in NESTED.items()},
}


def source_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table({c: pa.array([r[c] for r in rows], type=t) for c, t in SOURCE_TYPES.items()})


def normal(name: str, value: Any, *, text: bool = True) -> Any:
    """A value as compared: json text parsed (online values are parsed already: ``text=False``),
    floats as float32 where the dtype is float32."""
    if value is None:
        return None
    if NESTED.get(name) == "json":
        return json.loads(value) if text else value
    if name in ("conv_rate", "acc_rate"):
        return pa.scalar(value, pa.float32()).as_py()
    return value


FEATURES = ["conv_rate", "acc_rate", "avg_daily_trips", *NESTED]


def pit_oracle(rows: list[dict[str, Any]], key: int, t: datetime) -> dict[str, Any] | None:
    """Brute force: the row of ``key`` with the greatest (event, created) time in (t - ttl, t]."""
    best = None
    for r in rows:
        if not (r["driver_id"] == key and t - TTL < r["event_timestamp"] <= t):
            continue
        if best is None or (r["event_timestamp"], r["created"]) > (
            best["event_timestamp"],
            best["created"],
        ):
            best = r
    return best


def write_repo(root: Path, online: dict[str, Any], rows: list[dict[str, Any]]) -> FeatureStore:
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = {
        "project": "drivers",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": online,
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    pq.write_table(source_table(rows), root / "data" / "driver_stats.parquet")
    pq.write_table(source_table(rows), root / "data" / "driver_nested.parquet")
    store = FeatureStore(root)
    store.apply([driver, stats_source, nested_source, driver_hourly_stats, driver_nested])
    return store


@pytest.fixture(params=["sqlite", "redis", "dynamodb"])
def online(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"type": "sqlite", "path": "data/online.db"}
    if request.param == "dynamodb":
        settings: dict[str, Any] = request.getfixturevalue("dynamodb_settings")
        return settings
    url = request.getfixturevalue("redis_url")
    return {"type": "redis", "url": url, "key_prefix": f"t{uuid.uuid4().hex[:6]}"}


ROWS = source_rows(seed=7)


@pytest.fixture
def store(online: dict[str, Any], tmp_path: Path) -> Iterator[FeatureStore]:
    s = write_repo(tmp_path / "repo", online, ROWS)
    yield s
    s.close()


REFS = [
    *(f"driver_hourly_stats:{f}" for f in FEATURES[:6]),
    "driver_nested:deep",
    "driver_nested:counts",
]


def online_rows(store: FeatureStore, keys: list[int]) -> list[dict[str, Any] | None]:
    res = store.get_online_features(REFS, [{"driver_id": k} for k in keys])
    values = res.to_dict()
    out: list[dict[str, Any] | None] = []
    for i in range(len(keys)):
        statuses = {res.statuses[f][i] for f in FEATURES}
        assert len(statuses) == 1
        status = statuses.pop()
        out.append(
            {f: normal(f, values[f][i], text=False) for f in FEATURES}
            if status == "present"
            else None
        )
    return out


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), entity_rows=st.integers(1, 150))
def test_point_in_time_join_matches_the_oracle(seed: int, entity_rows: int) -> None:
    """Few entity rows against 120 source rows take the plan that reduces the source to the
    entity keys first; many take the plain ASOF join: both must agree with the oracle."""
    rows = source_rows(seed)
    with tempfile.TemporaryDirectory() as tmp:
        store = write_repo(Path(tmp) / "repo", {"type": "sqlite", "path": "data/online.db"}, rows)
        rng = random.Random(seed)
        entity_keys = [rng.randrange(1, 33) for _ in range(entity_rows)]
        times = [NOW - timedelta(minutes=rng.randrange(42 * 60)) for _ in entity_keys]
        # Exactly at some event times too (the boundary is inclusive).
        for i in range(0, entity_rows, 7):
            r = rng.choice(rows)
            entity_keys[i], times[i] = r["driver_id"], r["event_timestamp"]
        entity = pa.table({"driver_id": entity_keys, "event_timestamp": pa.array(times, TS)})
        result = store.get_historical_features(entity, REFS).to_arrow()
        store.close()
    assert result.schema.field("driver_profile").type == arrow_type(PROFILE)
    assert result.schema.field("deep").type == arrow_type(DEEP)
    assert result.schema.field("driver_config").type == pa.string()
    got = result.to_pylist(maps_as_pydicts="strict")
    for row, key, t in zip(got, entity_keys, times, strict=True):
        best = pit_oracle(rows, key, t)
        expected = {f: None if best is None else normal(f, best[f]) for f in FEATURES}
        assert {f: normal(f, row[f]) for f in FEATURES} == expected, (key, t)


def test_materialized_values_read_back_from_the_online_store(store: FeatureStore) -> None:
    store.materialize(NOW - timedelta(days=3), NOW + timedelta(seconds=1))
    keys = list(range(1, 33))
    got = online_rows(store, keys)
    for key, row in zip(keys, got, strict=True):
        best = pit_oracle(ROWS, key, NOW)
        if best is None:
            assert row is None, key
        else:
            assert row == {f: normal(f, best[f]) for f in FEATURES}, key


def _push_row(key: int, rng: random.Random) -> dict[str, Any]:
    """A pushed row; a json feature takes any JSON value, and a str is JSON text."""
    values = nested_values(rng)
    config = values["driver_config"]
    if config is not None and rng.random() < 0.5 and not isinstance(json.loads(config), str):
        values["driver_config"] = json.loads(config)
    return {"driver_id": key, "conv_rate": 0.5, "acc_rate": 0.25, "avg_daily_trips": 3, **values}


def test_push_round_trips_online_and_offline(store: FeatureStore) -> None:
    rng = random.Random(11)
    pushed = [_push_row(100 + i, rng) for i in range(20)]
    pushed[0].update(driver_metadata={}, driver_profile={"name": "ñ"}, driver_config={"k": []})
    for view in ("driver_hourly_stats", "driver_nested"):
        names = FEATURES[:6] if view == "driver_hourly_stats" else ["deep", "counts"]
        rows = [{"driver_id": r["driver_id"], **{n: r[n] for n in names}} for r in pushed]
        assert store.push(view, rows, to="both") == 20
    expected = []
    for r in pushed:
        e = {f: normal(f, r[f], text=isinstance(r[f], str)) for f in FEATURES}
        if r["driver_profile"] is not None:  # a struct's missing field is null
            e["driver_profile"] = {"name": None, "age": None, **r["driver_profile"]}
        expected.append(e)
    assert online_rows(store, [r["driver_id"] for r in pushed]) == expected
    # after the push, which stamps its rows "now" (not the module's NOW: the test may run
    # minutes after the import, which made it fail after slower tests)
    when = datetime.now(UTC) + timedelta(minutes=1)
    entity = pa.table(
        {
            "driver_id": [r["driver_id"] for r in pushed],
            "event_timestamp": pa.array([when] * 20, TS),
        }
    )
    offline = (
        store.get_historical_features(entity, REFS).to_arrow().to_pylist(maps_as_pydicts="strict")
    )
    assert [{f: normal(f, row[f]) for f in FEATURES} for row in offline] == expected


def test_hostile_pushes_are_refused_and_leave_the_stored_value(store: FeatureStore) -> None:
    good = _push_row(500, random.Random(5))
    good["driver_config"] = {"ok": True}
    row = {k: good[k] for k in ("driver_id", *FEATURES[:6])}
    store.push("driver_hourly_stats", [row])

    def stored() -> dict[str, Any]:
        res = store.get_online_features(["driver_hourly_stats:*"], [{"driver_id": 500}])
        return {**res.to_dict(), "statuses": res.statuses}

    before = stored()
    assert before["driver_config"] == [{"ok": True}]
    deep: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep = {"d": deep}
    very_deep = "[" * 100_000 + "]" * 100_000
    bad_values = [
        ("driver_config", deep, "deeper than"),
        ("driver_config", very_deep, "deeper than"),
        ("driver_config", "x" * (MAX_NESTED_BYTES + 10), "more than"),
        ("driver_config", "{not json", "not JSON"),
        ("driver_metadata", {"k": "v" * MAX_NESTED_BYTES}, "more than"),
        ("driver_metadata", {"k": 1}, "expected a string"),
        ("driver_profile", {"name": "x", "salary": "1"}, "unknown struct field"),
        ("driver_profile", ["x"], "values are objects"),
    ]
    for column, value, message in bad_values:
        for to in ("online", "both"):
            with pytest.raises(InvalidError, match=message) as info:
                store.push("driver_hourly_stats", [{**row, column: value}], to=to)
            assert column in info.value.message
    assert stored() == before


def test_a_csv_source_reads_json_text_and_nested_values_from_json_text(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = write_repo(root, {"type": "sqlite", "path": "data/online.db"}, ROWS)
    (root / "data" / "p.csv").write_text(
        "driver_id,ts,profile,config,meta\n"
        '1,2024-01-01T00:00:00Z,"{""name"": ""ñ"", ""age"": null}","{""a"": [1, {}]}",'
        '"{""ключ"": ""v""}"\n'
        "2,2024-01-01T00:00:00Z,,,\n"
    )
    src = FileSource(name="csv_src", path="data/p.csv", timestamp_field="ts")
    view = FeatureView(
        name="from_csv",
        entities=[driver],
        schema=[
            Field(name="profile", dtype=PROFILE),
            Field(name="config", dtype="json"),
            Field(name="meta", dtype=META),
        ],
        source=src,
    )
    store.apply([src, view])
    entity = pa.table(
        {
            "driver_id": [1, 2],
            "event_timestamp": pa.array([datetime(2024, 2, 1, tzinfo=UTC)] * 2, TS),
        }
    )
    got = store.get_historical_features(entity, ["from_csv:*"]).to_arrow()
    assert got.to_pylist(maps_as_pydicts="strict") == [
        {
            "driver_id": 1,
            "event_timestamp": datetime(2024, 2, 1, tzinfo=UTC),
            "profile": {"name": "ñ", "age": None},
            "config": '{"a": [1, {}]}',
            "meta": {"ключ": "v"},
        },
        {
            "driver_id": 2,
            "event_timestamp": datetime(2024, 2, 1, tzinfo=UTC),
            "profile": None,
            "config": None,
            "meta": None,
        },
    ]
    store.materialize(datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    res = store.get_online_features(["from_csv:*"], [{"driver_id": 1}]).to_dict()
    assert res["config"] == [{"a": [1, {}]}]
    assert res["profile"] == [{"name": "ñ", "age": None}]
    store.close()


def test_a_json_feature_reads_any_arrow_value_of_its_source_as_json(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = write_repo(root, {"type": "sqlite", "path": "data/online.db"}, ROWS)
    pq.write_table(
        pa.table(
            {
                "driver_id": [1, 2],
                "ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 2, TS),
                "doc": pa.array(
                    [{"a": 1, "b": ["x"]}, None],
                    pa.struct([("a", pa.int64()), ("b", pa.list_(pa.string()))]),
                ),
            }
        ),
        root / "data" / "docs.parquet",
    )
    src = FileSource(name="docs_src", path="data/docs.parquet", timestamp_field="ts")
    view = FeatureView(
        name="docs", entities=[driver], schema=[Field(name="doc", dtype="json")], source=src
    )
    store.apply([src, view])
    entity = pa.table(
        {
            "driver_id": [1, 2],
            "event_timestamp": pa.array([datetime(2024, 2, 1, tzinfo=UTC)] * 2, TS),
        }
    )
    got = store.get_historical_features(entity, ["docs:doc"]).to_arrow().column("doc").to_pylist()
    assert got[1] is None and json.loads(got[0]) == {"a": 1, "b": ["x"]}
    store.materialize(datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))
    online = store.get_online_features(["docs:doc"], [{"driver_id": 1}, {"driver_id": 2}])
    assert online.to_dict()["doc"] == [{"a": 1, "b": ["x"]}, None]
    store.close()


def test_training_refuses_nested_features_naming_them(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    store = write_repo(root, {"type": "sqlite", "path": "data/online.db"}, ROWS)
    pq.write_table(
        pa.table(
            {
                "driver_id": list(range(1, 31)),
                "event_timestamp": pa.array([NOW] * 30, TS),
                "label": [i % 2 for i in range(30)],
            }
        ),
        root / "data" / "labels.parquet",
    )
    store.apply([labels_source])
    for feature, kind in (
        ("driver_profile", "a struct"),
        ("driver_metadata", "a map"),
        ("driver_config", "a JSON document"),
    ):
        with pytest.raises(InvalidError, match=f"feature '{feature}' is {kind}"):
            store.train(
                {
                    "name": "m",
                    "framework": "sklearn",
                    "model_type": "classification",
                    "training_data": {"entity_df_source": "labels", "label_column": "label"},
                    "features": [
                        "driver_hourly_stats:conv_rate",
                        f"driver_hourly_stats:{feature}",
                    ],
                }
            )
    store.close()


def test_feast_template_on_demand_view_reads_a_view_with_nested_features(
    store: FeatureStore,
) -> None:
    """Feast's template ``transformed_conv_rate`` takes every feature of the view as input,
    its Map, Json and Struct columns included."""
    store.apply([transformed_conv_rate])
    store.materialize(NOW - timedelta(days=3), NOW + timedelta(seconds=1))
    keys = list(range(1, 11))
    refs = ["transformed_conv_rate:conv_rate_plus_val1", "driver_hourly_stats:driver_config"]
    res = store.get_online_features(
        refs, [{"driver_id": k, "val_to_add": 1, "val_to_add_2": 2} for k in keys]
    ).to_dict()
    entity = pa.table(
        {
            "driver_id": keys,
            "event_timestamp": pa.array([NOW] * len(keys), TS),
            "val_to_add": [1] * len(keys),
            "val_to_add_2": [2] * len(keys),
        }
    )
    offline = store.get_historical_features(entity, refs).to_arrow().to_pylist()
    for i, key in enumerate(keys):
        best = pit_oracle(ROWS, key, NOW)
        if best is None:
            assert res["conv_rate_plus_val1"][i] is None
            continue
        expected = normal("conv_rate", best["conv_rate"]) + 1
        assert res["conv_rate_plus_val1"][i] == pytest.approx(expected)
        assert offline[i]["conv_rate_plus_val1"] == pytest.approx(expected)
        assert res["driver_config"][i] == normal("driver_config", best["driver_config"])


def test_a_pandas_push_reads_dicts_by_the_dtype_not_by_inference(store: FeatureStore) -> None:
    frame = pd.DataFrame(
        {
            "driver_id": [700, 701],
            "conv_rate": [0.5, 0.25],
            "acc_rate": [0.5, 0.25],
            "avg_daily_trips": [1, 2],
            # Arrow would infer one struct<a, b> here, giving each map the other's key as null
            "driver_metadata": [{"a": "1"}, {"b": "2"}],
            "driver_config": [{"x": [1]}, None],
            "driver_profile": [{"name": "n"}, None],
        }
    )
    assert store.push("driver_hourly_stats", frame) == 2
    res = store.get_online_features(
        ["driver_hourly_stats:*"], [{"driver_id": 700}, {"driver_id": 701}]
    ).to_dict()
    assert res["driver_metadata"] == [{"a": "1"}, {"b": "2"}]
    assert res["driver_config"] == [{"x": [1]}, None]
    assert res["driver_profile"] == [{"name": "n", "age": None}, None]


def test_the_consistency_check_compares_nested_values(store: FeatureStore) -> None:
    from quiver.consistency import validate_consistency

    store.materialize(NOW - timedelta(days=3), NOW + timedelta(seconds=1))
    for view in ("driver_hourly_stats", "driver_nested"):
        report = validate_consistency(store, view, sample=None)
        assert report.values_compared > 0
        assert report.mismatch_count == 0, report.mismatches[:3]
