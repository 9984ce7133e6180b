"""``OfflineEngine.pull_latest``: the latest row per entity key in ``[start, end)``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _engines import OFFLINE_ENGINES, examples, make_offline_engine
from quiver import BackendError, Entity, FeatureView, Field, FileSource, InvalidError
from quiver.config import load_config
from quiver.offline import OfflineEngine, create_offline_engine
from quiver.offline import duckdb as duckdb_engine
from quiver.offline.sources import append_to_source
from quiver.selection import ViewSelection

T0 = datetime(2024, 1, 1, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture(params=OFFLINE_ENGINES)
def setup(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[OfflineEngine, ViewSelection, object]]:
    (tmp_path / "data").mkdir()
    config = load_config(tmp_path)
    table = pa.table(
        {
            "user": pa.array([1, 1, 1, 2, 2, 3, None], pa.int64()),
            "ts": pa.array([h(0), h(2), h(2), h(1), h(5), h(9), h(1)], UTC_US),
            "created": pa.array([h(0), h(3), h(4), None, h(5), h(9), h(1)], UTC_US),
            "score": pa.array([1.0, 2.0, 2.5, 3.0, 4.0, 5.0, 9.0]),
            "label": ["a", "b", "c", "d", "e", "f", "g"],
        }
    )
    pq.write_table(table, tmp_path / "data" / "scores.parquet")
    source = FileSource(
        name="scores_src",
        path="data/scores.parquet",
        timestamp_field="ts",
        created_timestamp_field="created",
        field_mapping={"user": "user_id", "label": "tag"},
    )
    entity = Entity(name="user", join_keys=["user_id"])
    view = FeatureView(
        name="scores",
        entities=["user"],
        features=[Field(name="score", dtype="float64"), Field(name="tag", dtype="string")],
        source="scores_src",
    )
    sel = ViewSelection(view=view, features=tuple(view.features), source=source, entities=(entity,))
    engine = make_offline_engine(request.param, config, request)
    yield engine, sel, config
    engine.close()


def test_latest_row_per_key_in_window(setup: tuple) -> None:
    engine, sel, _ = setup
    reader = engine.pull_latest(sel, None, h(100))
    assert isinstance(reader, pa.RecordBatchReader)
    out = reader.read_all().sort_by("user_id")
    assert out.schema == pa.schema(
        [
            ("user_id", pa.int64()),
            ("score", pa.float64()),
            ("tag", pa.string()),
            ("event_timestamp", UTC_US),
            ("created_timestamp", UTC_US),
        ]
    )
    # user 1: two rows at h(2), the greater created timestamp wins; null user ids are left out
    assert out.to_pylist() == [
        {
            "user_id": 1,
            "score": 2.5,
            "tag": "c",
            "event_timestamp": h(2),
            "created_timestamp": h(4),
        },
        {
            "user_id": 2,
            "score": 4.0,
            "tag": "e",
            "event_timestamp": h(5),
            "created_timestamp": h(5),
        },
        {
            "user_id": 3,
            "score": 5.0,
            "tag": "f",
            "event_timestamp": h(9),
            "created_timestamp": h(9),
        },
    ]


def test_window_is_start_inclusive_end_exclusive(setup: tuple) -> None:
    engine, sel, _ = setup
    out = engine.pull_latest(sel, h(1), h(5)).read_all().sort_by("user_id")
    assert out.column("user_id").to_pylist() == [1, 2]
    assert out.column("score").to_pylist() == [2.5, 3.0]
    assert out.column("created_timestamp").to_pylist() == [h(4), None]
    out = engine.pull_latest(sel, h(5), h(9)).read_all()
    assert out.column("user_id").to_pylist() == [2]
    empty = engine.pull_latest(sel, h(50), h(60)).read_all()
    assert empty.num_rows == 0
    assert empty.schema.names == ["user_id", "score", "tag", "event_timestamp", "created_timestamp"]
    assert engine.pull_latest(sel, h(9), h(9)).read_all().num_rows == 0


def test_naive_bounds_are_utc(setup: tuple) -> None:
    engine, sel, _ = setup
    out = engine.pull_latest(sel, None, h(5).replace(tzinfo=None)).read_all()
    assert sorted(out.column("user_id").to_pylist()) == [1, 2]


def test_pushed_rows_are_pulled(setup: tuple) -> None:
    engine, sel, config = setup
    append_to_source(
        config,
        sel.source,
        pa.table(
            {
                "user_id": pa.array([3, 4], pa.int64()),
                "score": [50.0, 60.0],
                "ts": pa.array([h(10), h(1)], pa.timestamp("ns")),
                "created": pa.array([h(10), h(1)], UTC_US),
            }
        ),
    )
    pushed = list((config.data_path / "_pushed" / "scores_src").glob("*.parquet"))
    assert len(pushed) == 1
    assert pq.read_schema(pushed[0]).field("ts").type == UTC_US
    out = engine.pull_latest(sel, None, h(100)).read_all().sort_by("user_id")
    assert out.column("user_id").to_pylist() == [1, 2, 3, 4]
    assert out.column("score").to_pylist() == [2.5, 4.0, 50.0, 60.0]
    assert out.column("tag").to_pylist() == ["c", "e", None, None]


@pytest.mark.parametrize("kind", OFFLINE_ENGINES)
def test_streams_in_batches(tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    (tmp_path / "data").mkdir()
    config = load_config(tmp_path)
    n = 200_000
    pq.write_table(
        pa.table(
            {
                "k": pa.array(range(n), pa.int64()),
                "event_timestamp": pa.array([h(1)] * n, UTC_US),
                "v": pa.array(range(n), pa.int64()),
            }
        ),
        tmp_path / "data" / "big.parquet",
    )
    entity = Entity(name="k")
    source = FileSource(name="big", path="data/big.parquet")
    view = FeatureView(
        name="big", entities=["k"], features=[Field(name="v", dtype="int64")], source="big"
    )
    sel = ViewSelection(view=view, features=tuple(view.features), source=source, entities=(entity,))
    engine = make_offline_engine(kind, config, request)
    try:
        batches = list(engine.pull_latest(sel, None, h(2)))
        assert len(batches) > 1
        assert sum(b.num_rows for b in batches) == n
    finally:
        engine.close()


def test_append_needs_the_timestamp_column(setup: tuple) -> None:
    _, sel, config = setup
    with pytest.raises(InvalidError, match="no timestamp column 'ts'"):
        append_to_source(config, sel.source, pa.table({"user_id": [1], "score": [1.0]}))
    assert not (config.data_path / "_pushed" / "scores_src").exists()


# -- property test: pull_latest against a brute-force oracle ---------------------------------------

# Small domains so that keys collide and timestamps tie often; None is a null key / created.
KEY_VALUES = st.sampled_from([0, 1, 2, 0, 1, 2, None])
REGIONS = st.sampled_from([0, 1, 0, 1, None])
HOURS = st.integers(0, 2)
CREATED = st.sampled_from([0, 1, 2, None])


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    """Random source rows with many ties, null created timestamps and null keys, and a range."""
    rows = draw(st.lists(st.tuples(KEY_VALUES, REGIONS, HOURS, CREATED), min_size=0, max_size=40))
    start = draw(st.one_of(st.none(), st.integers(0, 2)))
    end = draw(st.integers(0 if start is None else start + 1, 4))
    return {
        "rows": rows,
        "start": start,
        "end": end,
        "composite": draw(st.booleans()),
        "has_created": draw(st.sampled_from([True, True, False])),
        "key_type": draw(st.sampled_from(["int64", "string"])),
    }


def _key(case: dict[str, Any], user: int | None, region: int | None) -> tuple:
    key = (user, region) if case["composite"] else (user,)
    return tuple(v if v is None or case["key_type"] == "int64" else str(v) for v in key)


def oracle(case: dict[str, Any]) -> dict[tuple, tuple[int, int | None, set[int]]]:
    """Per key: the latest event hour, the winning created hour, and the rows that may win."""
    groups: dict[tuple, list[tuple[int, int | None, int]]] = {}
    for i, (user, region, hour, created) in enumerate(case["rows"]):
        key = _key(case, user, region)
        if None in key or hour >= case["end"]:
            continue
        if case["start"] is not None and hour < case["start"]:
            continue
        groups.setdefault(key, []).append((hour, created if case["has_created"] else None, i))
    out = {}
    for key, rows in groups.items():
        ts = max(r[0] for r in rows)
        at_ts = [r for r in rows if r[0] == ts]
        known = [r[1] for r in at_ts if r[1] is not None]
        created = max(known) if known else None
        out[key] = (ts, created, {r[2] for r in at_ts if r[1] == created})
    return out


@pytest.fixture(scope="module")
def prop_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OfflineEngine, Path]]:
    root = tmp_path_factory.mktemp("pull_latest_prop")
    (root / "data").mkdir()
    engine = create_offline_engine(load_config(root))
    yield engine, root / "data"
    engine.close()


def _selection(case: dict[str, Any], path: Path) -> ViewSelection:
    keys = ["user_id", "region"] if case["composite"] else ["user_id"]
    entity = Entity(name="user", join_keys=keys, value_type=case["key_type"])
    source = FileSource(
        name="src",
        path=str(path),
        timestamp_field="ts",
        created_timestamp_field="created" if case["has_created"] else None,
    )
    view = FeatureView(
        name="v",
        entities=["user"],
        features=[Field(name="row", dtype="int64"), Field(name="tag", dtype="string")],
        source="src",
    )
    return ViewSelection(
        view=view, features=tuple(view.features), source=source, entities=(entity,)
    )


@pytest.mark.parametrize("two_pass", [True, False], ids=["two-pass", "window"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_pull_latest_matches_oracle(
    prop_engine: tuple[OfflineEngine, Path], two_pass: bool, case: dict[str, Any]
) -> None:
    engine, data = prop_engine
    _check_latest(engine, data, case, two_pass)


@settings(
    max_examples=examples("spark", 200),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=cases())
def test_pull_latest_matches_oracle_spark(
    spark_engine: tuple[OfflineEngine, Path], case: dict[str, Any]
) -> None:
    engine, data = spark_engine
    _check_latest(engine, data, case, True)


@pytest.fixture(scope="module")
def spark_engine(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[OfflineEngine, Path]]:
    root = tmp_path_factory.mktemp("pull_latest_spark")
    (root / "data").mkdir()
    engine = make_offline_engine("spark", load_config(root), request)
    yield engine, root / "data"
    engine.close()


def _check_latest(engine: OfflineEngine, data: Path, case: dict[str, Any], two_pass: bool) -> None:
    rows = case["rows"]
    key_type = pa.int64() if case["key_type"] == "int64" else pa.string()
    keys = [_key({**case, "composite": True}, r[0], r[1]) for r in rows]
    path = data / f"src_{uuid.uuid4().hex}.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([k[0] for k in keys], key_type),
                "region": pa.array([k[1] for k in keys], key_type),
                "ts": pa.array([h(r[2]) for r in rows], UTC_US),
                "created": pa.array([None if r[3] is None else h(r[3]) for r in rows], UTC_US),
                "row": pa.array(range(len(rows)), pa.int64()),
                "tag": pa.array([f"r{i}" for i in range(len(rows))], pa.string()),
            }
        ),
        path,
    )
    sel = _selection(case, path)
    start = None if case["start"] is None else h(case["start"])
    with pytest.MonkeyPatch.context() as mp:
        # Tiny batches: equal keys spread over several batches must still give one row.
        mp.setattr(duckdb_engine, "PULL_BATCH_ROWS", 3)
        mp.setattr(duckdb_engine, "_scan_twice", lambda source: two_pass)
        out = engine.pull_latest(sel, start, h(case["end"])).read_all()
    path.unlink()

    key_names = ["user_id", "region"] if case["composite"] else ["user_id"]
    assert out.column_names == [*key_names, "row", "tag", "event_timestamp", "created_timestamp"]
    expected = oracle(case)
    got = out.to_pylist()
    keys = [tuple(r[k] for k in key_names) for r in got]
    assert sorted(keys) == sorted(expected)  # one row per key, no null keys
    for r, key in zip(got, keys, strict=True):
        ts, created, winners = expected[key]
        assert r["event_timestamp"] == h(ts)
        assert r["created_timestamp"] == (None if created is None else h(created))
        assert r["row"] in winners
        assert r["tag"] == f"r{r['row']}"  # one source row, not a mix


def test_local_parquet_comes_in_key_order(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    n = 5_000
    keys = [(i * 7919) % 1000 for i in range(n)]  # 5 rows per key, keys shuffled
    pq.write_table(
        pa.table(
            {
                "k": pa.array(keys, pa.int64()),
                "event_timestamp": pa.array([h(i % 13) for i in range(n)], UTC_US),
                "v": pa.array(range(n), pa.int64()),
            }
        ),
        tmp_path / "data" / "s.parquet",
    )
    entity = Entity(name="k")
    source = FileSource(name="s", path="data/s.parquet")
    view = FeatureView(
        name="s", entities=["k"], features=[Field(name="v", dtype="int64")], source="s"
    )
    sel = ViewSelection(view=view, features=tuple(view.features), source=source, entities=(entity,))
    engine = create_offline_engine(load_config(tmp_path))
    try:
        out = engine.pull_latest(sel, None, h(100)).read_all()
    finally:
        engine.close()
    assert out.column("k").to_pylist() == list(range(1000))


def test_materialization_database_has_its_own_budget(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    engine = create_offline_engine(load_config(tmp_path))
    assert isinstance(engine, duckdb_engine.DuckDBOfflineEngine)
    try:
        cur = engine._pull_cursor()
        limit, threads, prefetch = cur.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads'), "
            "current_setting('disable_parquet_prefetching')"
        ).fetchone()
        cur.close()
    finally:
        engine.close()
    assert duckdb_engine._parse_bytes(limit) == pytest.approx(256e6, rel=0.01)
    assert threads == 1
    assert prefetch is True


def test_out_of_memory_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "quiver.yaml").write_text(
        "project: p\noffline_engine:\n  memory_limit: 1MB\n  threads: 1\n"
    )
    n = 200_000
    pq.write_table(
        pa.table(
            {
                "k": pa.array(range(n), pa.int64()),
                "event_timestamp": pa.array([h(1)] * n, UTC_US),
                "v": pa.array([f"value {i}" for i in range(n)], pa.string()),
            }
        ),
        tmp_path / "data" / "big.parquet",
    )
    entity = Entity(name="k")
    source = FileSource(name="big", path="data/big.parquet")
    view = FeatureView(
        name="big", entities=["k"], features=[Field(name="v", dtype="string")], source="big"
    )
    sel = ViewSelection(view=view, features=tuple(view.features), source=source, entities=(entity,))
    engine = create_offline_engine(load_config(tmp_path))
    try:
        with pytest.raises(BackendError, match=r"raise offline_engine\.memory_limit"):
            engine.pull_latest(sel, None, h(2)).read_all()
    finally:
        engine.close()
