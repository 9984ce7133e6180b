"""Property tests: windowed aggregations against a brute-force Python oracle.

One view declares every function over several windows (tile size 10 minutes; windows of 10, 30
and 60 minutes). Random events (three keys, event times on and off the tile grid, equal event
times with and without created times, null values, late and out-of-order events) are checked:

- offline: ``get_historical_features`` at random entity times equals the oracle;
- online after materialization: ``materialize`` up to each read time in turn (incremental
  ranges that cut tiles), then a read "as of" that time equals the oracle;
- online after pushes: events pushed in random order and batches, then read "as of" a time at
  or after every pushed event, equal the oracle over the pushed events;

on SQLite and on a real redis-server; offline and materialization also on the Spark offline
engine (a local Spark, fewer examples: each one runs Spark jobs). The oracle is DESIGN.md's rule
with the tile-aligned window start of ``quiver.features.aggregations``: events with
``floor(t / I) * I - w < ts <= t``.

The example count defaults to 40 per test; set ``QUIVER_HYPOTHESIS_EXAMPLES`` for a long run.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _engines import OFFLINE_ENGINES, examples
from quiver import Aggregation, Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.online import serving

pytestmark = pytest.mark.slow
EXAMPLES = max(1, int(os.environ.get("QUIVER_HYPOTHESIS_EXAMPLES", "200")) // 5)
SPARK_EXAMPLES = examples("spark", EXAMPLES)
T0 = datetime(2024, 3, 10, tzinfo=UTC)
INTERVAL = timedelta(minutes=10)
TS = pa.timestamp("us", tz="UTC")

customer = Entity(name="customer", join_keys=["customer_id"])
source = FileSource(name="orders", path="data/orders.parquet", created_timestamp_field="created")
AGGREGATIONS = [
    Aggregation(function="count", time_window=timedelta(minutes=30)),
    Aggregation(column="x", function="count", window="10m"),
    Aggregation(column="x", function="sum", window="60m"),
    Aggregation(column="n", function="sum", window="30m"),
    Aggregation(column="x", function="mean", window="30m"),
    Aggregation(column="x", function="stddev", window="60m"),
    Aggregation(column="n", function="min", window="10m"),
    Aggregation(column="x", function="min", window="60m"),
    Aggregation(column="x", function="max", window="30m"),
    Aggregation(column="n", function="max", window="60m"),
    Aggregation(column="s", function="count_distinct", window="60m"),
    Aggregation(column="n", function="count_distinct", window="10m"),
    Aggregation(column="s", function="last", window="30m"),
    Aggregation(column="x", function="last", window="10m"),
]
view = FeatureView(
    name="orders_agg",
    entities=[customer],
    source=source,
    schema=[
        Field(name="x", dtype="float64"),
        Field(name="n", dtype="int64"),
        Field(name="s", dtype="string"),
    ],
    aggregations=AGGREGATIONS,
    aggregation_interval=INTERVAL,
)
NAMES = [a.name for a in AGGREGATIONS]
ADDITIVE = [a.name for a in AGGREGATIONS if a.function in ("count", "sum", "mean")]
"""A read of these alone is answered from the state's summary when it can (the others read
the tiles)."""
KEYS = [0, 1, 2]

# -- data --------------------------------------------------------------------------------------

# Event times in seconds after T0: multiples of a minute (often on the 10-minute grid), or not.
seconds = st.one_of(
    st.integers(0, 18).map(lambda k: k * 600),
    st.integers(0, 180).map(lambda m: m * 60),
    st.integers(0, 10_800),
)
events = st.lists(
    st.fixed_dictionaries(
        {
            "customer_id": st.sampled_from(KEYS),
            "ts": seconds,
            "created": st.one_of(st.none(), st.integers(0, 3)),
            "x": st.one_of(st.none(), st.integers(-200, 200).map(lambda v: v / 2)),
            "n": st.one_of(st.none(), st.integers(-5, 5)),
            "s": st.one_of(st.none(), st.sampled_from(["a", "b", "c"])),
        }
    ),
    max_size=40,
)


def when(sec: float) -> datetime:
    return T0 + timedelta(seconds=sec)


def oracle(rows: list[dict[str, Any]], key: int, t: datetime) -> dict[str, Any]:
    """Every aggregate for ``key`` at ``t``, computed from the events one by one."""
    t_us = round((t - T0).total_seconds() * 1e6)
    i_us = int(INTERVAL.total_seconds() * 1e6)
    out: dict[str, Any] = {}
    for agg in AGGREGATIONS:
        lo = (t_us // i_us) * i_us - agg.window_us
        inside = [r for r in rows if r["customer_id"] == key and lo < r["ts"] * 1_000_000 <= t_us]
        if agg.column is None:
            out[agg.name] = len(inside)
            continue
        values = [r[agg.column] for r in inside if r[agg.column] is not None]
        f = agg.function
        if f == "count":
            out[agg.name] = len(values)
        elif f == "count_distinct":
            out[agg.name] = len(set(values))
        elif not values:
            out[agg.name] = None
        elif f == "sum":
            out[agg.name] = sum(values)
        elif f == "mean":
            out[agg.name] = sum(values) / len(values)
        elif f == "stddev":
            if len(values) < 2:
                out[agg.name] = None
            else:
                mean = sum(values) / len(values)
                out[agg.name] = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        elif f == "min":
            out[agg.name] = min(values)
        elif f == "max":
            out[agg.name] = max(values)
        else:  # last: latest event, then greatest created time (none first), then value
            best = max(
                (r for r in inside if r[agg.column] is not None),
                key=lambda r: (
                    r["ts"],
                    -1 if r["created"] is None else r["created"],
                    r[agg.column],
                ),
            )
            out[agg.name] = best[agg.column]
    return out


def same(got: Any, want: Any) -> bool:
    if isinstance(want, float) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(want, float) and got is not None:
        return math.isclose(float(got), want, rel_tol=1e-9, abs_tol=1e-9)
    if got is not None and isinstance(got, float) and math.isnan(got):
        return want is None
    return bool(got == want)


def check(got: dict[str, Any], want: dict[str, Any], where: str, names: list[str] = NAMES) -> None:
    bad = {n: (got[n], want[n]) for n in names if not same(got[n], want[n])}
    assert not bad, f"{where}: (got, want) {bad}"


def write_source(root: Path, rows: list[dict[str, Any]]) -> None:
    table = pa.table(
        {
            "customer_id": pa.array([r["customer_id"] for r in rows], pa.int64()),
            "x": pa.array([r["x"] for r in rows], pa.float64()),
            "n": pa.array([r["n"] for r in rows], pa.int64()),
            "s": pa.array([r["s"] for r in rows], pa.string()),
            "event_timestamp": pa.array([when(r["ts"]) for r in rows], TS),
            "created": pa.array(
                [None if r["created"] is None else when(r["created"]) for r in rows], TS
            ),
        }
    )
    pq.write_table(table, root / "data" / "orders.parquet")


# -- stores ------------------------------------------------------------------------------------


def make_store(root: Path, online: dict[str, Any], offline: str = "duckdb") -> FeatureStore:
    """A repo with the view; ``offline`` names the engine (``spark`` uses the test session)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "project": "agg",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": online,
    }
    if offline == "spark":
        config["offline_engine"] = {"type": "spark", "master": "local[2]"}
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    write_source(root, [])
    store = FeatureStore(root)
    store.apply(store.plan([customer, source, view]))
    return store


@pytest.fixture(params=["sqlite", "redis", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    if request.param == "sqlite":
        online: dict[str, Any] = {"type": "sqlite", "path": "data/online.db"}
    elif request.param == "dynamodb":
        settings = request.getfixturevalue("dynamodb_settings")
        online = {**settings, "expire_with_ttl": False}  # the events are in 2024
    else:
        url = request.getfixturevalue("redis_url")
        online = {
            "type": "redis",
            "url": url,
            "key_prefix": f"t{uuid.uuid4().hex[:6]}",
            "expire_with_ttl": False,  # the events are in 2024
        }
    s = make_store(tmp_path / "repo", online)
    yield s
    s.close()


@pytest.fixture(params=OFFLINE_ENGINES)
def sqlite_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    """A store on SQLite, with each offline engine."""
    if request.param == "spark":
        request.getfixturevalue("spark_session")  # the engine takes the active session
    s = make_store(tmp_path / "repo", {"type": "sqlite", "path": "data/online.db"}, request.param)
    yield s
    s.close()


def engine_settings(store: FeatureStore) -> Any:
    """Hypothesis settings by offline engine (a few examples on Spark: each runs Spark jobs)."""
    return settings(PROPERTY, max_examples=examples(store.config.offline_engine.type, EXAMPLES))


def reset_online(store: FeatureStore) -> None:
    from quiver.features.tile_store import tile_layout

    store.online_store.delete_view(tile_layout(store.project, view, [customer]))


def read_at(
    store: FeatureStore, t: datetime, monkeypatch: pytest.MonkeyPatch, names: list[str] = NAMES
) -> list[dict[str, Any]]:
    us = round((t - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)
    monkeypatch.setattr(serving, "_now_us", lambda: us)
    features = ["orders_agg:*"] if names is NAMES else [f"orders_agg:{n}" for n in names]
    got = store.get_online_features(
        features=features, entity_rows=[{"customer_id": k} for k in [*KEYS, 9]]
    ).to_dict()
    out = [{n: got[n][i] for n in names} for i in range(len(KEYS) + 1)]
    if names is not NAMES:  # one entity per call too (the serving hot path): the same values
        for i, k in enumerate([*KEYS, 9]):
            one = store.get_online_features(features=features, entity_rows=[{"customer_id": k}])
            assert {n: col[0] for n, col in one.to_dict().items() if n in names} == out[i]
    return out


def push_and_check(
    store: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    batches: int,
    after: int,
    order: Any,
    names: list[str] = NAMES,
) -> None:
    """Push ``rows`` shuffled by ``order`` in about ``batches`` batches; after each, the online
    values of ``names``, ``after`` seconds past the newest event pushed, equal the oracle's."""
    rows = [{**r, "created": r["created"] or 0} for r in rows]  # a pushed row has a created time
    shuffled = list(rows)
    order.shuffle(shuffled)  # late and out-of-order arrival
    pushed: list[dict[str, Any]] = []
    size = max(1, len(shuffled) // batches)
    for i in range(0, len(shuffled), size):
        batch = shuffled[i : i + size]
        store.push(
            "orders_agg",
            [
                {
                    "customer_id": r["customer_id"],
                    "x": r["x"],
                    "n": r["n"],
                    "s": r["s"],
                    "event_timestamp": when(r["ts"]),
                    "created_timestamp": when(r["created"]),
                }
                for r in batch
            ],
        )
        pushed += batch
        t = when(max(r["ts"] for r in pushed) + after)
        got = read_at(store, t, monkeypatch, names)
        for key, values in zip([*KEYS, 9], got, strict=True):
            check(values, oracle(pushed, key, t), f"pushed key {key} at {t}", names)


# -- the properties ----------------------------------------------------------------------------

PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_offline_equals_oracle(sqlite_store: FeatureStore) -> None:
    """On each offline engine (fewer examples on Spark)."""

    @engine_settings(sqlite_store)
    @given(
        rows=events,
        entity=st.lists(st.tuples(st.sampled_from([*KEYS, 9]), seconds), max_size=15),
    )
    def prop(rows: list[dict[str, Any]], entity: list[tuple[int, int]]) -> None:
        write_source(sqlite_store.repo_path, rows)
        table = pa.table(
            {
                "customer_id": pa.array([k for k, _ in entity], pa.int64()),
                "event_timestamp": pa.array([when(s) for _, s in entity], TS),
            }
        )
        out = sqlite_store.get_historical_features(table, features=["orders_agg:*"]).to_arrow()
        got = out.to_pylist()
        for (key, sec), row in zip(entity, got, strict=True):
            check(row, oracle(rows, key, when(sec)), f"offline key {key} at {sec}s")

    prop()


def materialize_and_check(
    store: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    reads: list[int],
) -> None:
    """Materialize up to each read time in turn; the online values then equal the oracle's."""
    write_source(store.repo_path, rows)
    reset_online(store)
    start = T0 - timedelta(days=1)
    for sec in sorted(set(reads)):
        t = when(sec)
        end = t + timedelta(microseconds=1)
        store.materialize(start, end, ["orders_agg"])
        start = end
        got = read_at(store, t, monkeypatch)
        for key, values in zip([*KEYS, 9], got, strict=True):
            check(values, oracle(rows, key, t), f"online key {key} at {sec}s")


@PROPERTY
@given(rows=events, reads=st.lists(seconds, min_size=1, max_size=4))
def test_online_after_materialization_equals_oracle(
    store: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    reads: list[int],
) -> None:
    materialize_and_check(store, monkeypatch, rows, reads)


@pytest.fixture
def spark_store(spark_session: Any, tmp_path: Path) -> Iterator[FeatureStore]:
    """A store on SQLite whose offline engine is Spark (the test session)."""
    s = make_store(tmp_path / "repo", {"type": "sqlite", "path": "data/online.db"}, "spark")
    yield s
    s.close()


@settings(PROPERTY, max_examples=SPARK_EXAMPLES)
@given(rows=events, reads=st.lists(seconds, min_size=1, max_size=4))
def test_spark_materialization_then_online_equals_oracle(
    spark_store: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    reads: list[int],
) -> None:
    """Tiles computed by the Spark engine, read online: the oracle's values."""
    materialize_and_check(spark_store, monkeypatch, rows, reads)


@PROPERTY
@given(
    rows=events,
    batches=st.integers(1, 4),
    after=st.integers(0, 1_800),
    order=st.randoms(use_true_random=False),
)
def test_online_after_pushes_equals_oracle(
    store: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    batches: int,
    after: int,
    order: Any,
) -> None:
    reset_online(store)
    push_and_check(store, monkeypatch, rows, batches, after, order)


@PROPERTY
@given(
    rows=events,
    batches=st.integers(1, 4),
    after=st.integers(0, 3_600),
    reads=st.lists(seconds, min_size=1, max_size=3),
    order=st.randoms(use_true_random=False),
)
def test_online_count_sum_mean_equal_oracle(
    store: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[dict[str, Any]],
    batches: int,
    after: int,
    reads: list[int],
    order: Any,
) -> None:
    """Reads of count, sum and mean alone (from the state's summary when it answers, else from
    its head, which SQLite adds in the same read), after materializations and after pushes, at
    and after the newest event."""
    write_source(store.repo_path, rows)
    reset_online(store)
    start = T0 - timedelta(days=1)
    for sec in sorted(set(reads)):
        t = when(sec)
        store.materialize(start, t + timedelta(microseconds=1), ["orders_agg"])
        start = t + timedelta(microseconds=1)
        materialized = [r for r in rows if r["ts"] <= sec]
        for at in (t, t + timedelta(seconds=after)):
            got = read_at(store, at, monkeypatch, ADDITIVE)
            for key, values in zip([*KEYS, 9], got, strict=True):
                want = oracle(materialized, key, at)
                check(values, want, f"online key {key} at {at}", ADDITIVE)
    reset_online(store)
    push_and_check(store, monkeypatch, rows, batches, after, order, ADDITIVE)
