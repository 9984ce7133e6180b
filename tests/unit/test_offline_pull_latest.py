"""``OfflineEngine.pull_latest``: the latest row per entity key in ``[start, end)``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver import Entity, FeatureView, Field, FileSource, InvalidError
from quiver.config import load_config
from quiver.offline import OfflineEngine, create_offline_engine
from quiver.offline.sources import append_to_source
from quiver.selection import ViewSelection

T0 = datetime(2024, 1, 1, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[OfflineEngine, ViewSelection, object]:
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
    engine = create_offline_engine(config)
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


def test_streams_in_batches(tmp_path: Path) -> None:
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
    engine = create_offline_engine(config)
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
