"""Source reading helpers, timestamp normalization and the engine registry."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver import ConfigError, Entity, FeatureView, Field, FileSource, InvalidError, NotFoundError
from quiver.config import load_config
from quiver.offline import ENGINES, create_offline_engine
from quiver.offline.sources import (
    TimeWindow,
    append_to_source,
    list_files,
    s3_filesystem,
    scan_source,
    source_select,
    to_utc_micros,
)
from quiver.offline.timestamps import normalize_timestamp
from quiver.selection import ViewSelection

UTC_US = pa.timestamp("us", tz="UTC")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def config(tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "data").mkdir()
    return load_config(tmp_path)


# --- timestamps -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        pa.array([datetime(2024, 1, 1, 5)], pa.timestamp("ns")),  # naive = UTC
        pa.array([datetime(2024, 1, 1, 5)], pa.timestamp("s")),
        pa.array([T0 + timedelta(hours=5)], pa.timestamp("ms", tz="UTC")).cast(
            pa.timestamp("ms", tz="Asia/Tokyo")
        ),
        pa.array(["2024-01-01 05:00:00"]),
        pa.array(["2024-01-01T07:00:00+02:00"]),
        pa.array(["2024-01-01T05:00:00Z"], pa.large_string()),
    ],
)
def test_normalize_timestamp_forms(values: pa.Array) -> None:
    out = normalize_timestamp(values, what="x")
    assert out.type == UTC_US
    assert out.to_pylist() == [T0 + timedelta(hours=5)]


def test_normalize_dates_nulls_and_truncation() -> None:
    assert normalize_timestamp(pa.array([date(2024, 1, 1), None]), what="x").to_pylist() == [
        T0,
        None,
    ]
    ns = pa.array([1_704_067_200_000_001_999], pa.timestamp("ns"))
    assert normalize_timestamp(ns, what="x").to_pylist() == [T0 + timedelta(microseconds=1)]


def test_normalize_rejects_other_types() -> None:
    with pytest.raises(InvalidError, match="col 'x' has type int64; expected timestamps"):
        normalize_timestamp(pa.array([1]), what="col 'x'")
    with pytest.raises(InvalidError, match="not a timestamp"):
        normalize_timestamp(pa.array(["soon"]), what="col 'x'")


def test_to_utc_micros() -> None:
    assert to_utc_micros(T0) == 1_704_067_200_000_000
    assert to_utc_micros(datetime(2024, 1, 1)) == 1_704_067_200_000_000
    assert to_utc_micros(
        datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    ) == to_utc_micros(T0)


# --- listing files ----------------------------------------------------------------------------


def test_list_files_file_directory_glob(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base = tmp_path / "data" / "ev"
    (base / "k=1").mkdir(parents=True)
    (base / "k=2").mkdir()
    for name in (
        "k=1/a.parquet",
        "k=2/b.parquet",
        "_SUCCESS",
        ".hidden.parquet",
        "k=1/.tmp.parquet",
    ):
        (base / name).write_bytes(b"")
    listing = list_files(config, "data/ev", "parquet", what="w")
    assert [Path(f).name for f in listing.files] == ["a.parquet", "b.parquet"]
    assert listing.hive and listing.local
    assert len(list_files(config, "data/ev/k=1/*.parquet", "parquet", what="w").files) == 1
    assert len(list_files(config, str(base / "**" / "*.parquet"), "parquet", what="w").files) == 2
    single = list_files(config, "data/ev/k=2/b.parquet", "parquet", what="w")
    assert single.files == [str(base / "k=2" / "b.parquet")] and not single.hive
    with pytest.raises(
        NotFoundError, match=r"data source 'x': path 'data/nope.parquet'.*does not exist"
    ):
        list_files(config, "data/nope.parquet", "parquet", what="data source 'x'")
    with pytest.raises(NotFoundError, match="matches no file"):
        list_files(config, "data/*.csv", "csv", what="w")


def test_s3_filesystem_from_config(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    cfg = load_config(
        tmp_path,
        s3={
            "endpoint_url": "http://127.0.0.1:9",
            "region": "eu-west-1",
            "access_key_id": "a",
            "secret_access_key": "b",
        },
    )
    fs = s3_filesystem(cfg)
    assert fs.region == "eu-west-1"


# --- the normalized select and scan_source ----------------------------------------------------


def write_events(config, name: str = "ev.parquet") -> FileSource:  # type: ignore[no-untyped-def]
    table = pa.table(
        {
            "uid": pa.array([1, 2, 3], pa.int64()),
            "ts": pa.array(
                [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)], pa.timestamp("ns")
            ),
            "score": pa.array([1, 2, 3], pa.int32()),
            "extra": ["a", "b", "c"],
        }
    )
    pq.write_table(table, config.data_path / name)
    return FileSource(
        name="ev", path=f"data/{name}", timestamp_field="ts", field_mapping={"uid": "user_id"}
    )


def test_values_are_bound_not_pasted(config) -> None:  # type: ignore[no-untyped-def]
    src = write_events(config)
    con = duckdb.connect()
    lo = to_utc_micros(T0 + timedelta(minutes=30))
    select = source_select(
        con,
        config,
        src,
        {"user_id": "int64", "score": "float64"},
        window=TimeWindow(lo=lo, hi=lo * 2),
    )
    assert str(lo) not in select.sql and "?" in select.sql
    assert lo in select.params
    out = con.sql(select.sql, params=select.params).to_arrow_table()
    assert out.column_names == ["user_id", "score", "__qv_ts", "__qv_created"]
    assert out.column("score").type == pa.float64()
    assert out.column("user_id").to_pylist() == [2, 3]


def test_scan_source_mapping_window_dtypes_and_pushed_rows(config) -> None:  # type: ignore[no-untyped-def]
    src = write_events(config)
    reader = scan_source(config, src)
    assert isinstance(reader, pa.RecordBatchReader)
    full = reader.read_all()
    assert full.column_names == ["user_id", "score", "extra", "ts"]
    assert full.schema.field("ts").type == UTC_US
    window = scan_source(
        config,
        src,
        ["user_id", "score"],
        start=T0 + timedelta(hours=1),
        end=T0 + timedelta(hours=2),
        dtypes={"score": "float64"},
    ).read_all()
    assert window.column_names == ["user_id", "score", "ts"]
    assert window.to_pylist() == [{"user_id": 2, "score": 2.0, "ts": T0 + timedelta(hours=1)}]

    append_to_source(
        config,
        src,
        pa.table(
            {
                "user_id": pa.array([9], pa.int64()),
                "score": pa.array([9], pa.int32()),
                "ts": pa.array([T0 + timedelta(hours=5)], UTC_US),
            }
        ),
    )
    after = scan_source(config, src, ["user_id", "extra"]).read_all()
    assert after.column("user_id").to_pylist() == [1, 2, 3, 9]
    assert after.column("extra").to_pylist() == ["a", "b", "c", None]


def test_scan_source_missing_column_is_named(config) -> None:  # type: ignore[no-untyped-def]
    src = write_events(config)
    with pytest.raises(InvalidError, match=r"has no column 'scor'.*did you mean 'score'"):
        scan_source(config, src, ["scor"])


def test_pushed_only_source_and_missing_source(config) -> None:  # type: ignore[no-untyped-def]
    src = FileSource(name="fresh", path="data/fresh/", timestamp_field="ts")
    with pytest.raises(NotFoundError, match="data source 'fresh'"):
        scan_source(config, src)
    append_to_source(config, src, pa.table({"k": [1], "ts": pa.array([T0], UTC_US)}))
    assert scan_source(config, src).read_all().to_pylist() == [{"k": 1, "ts": T0}]


# --- the engine -------------------------------------------------------------------------------


def test_engine_registry_and_settings(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    assert "duckdb" in ENGINES
    cfg = load_config(
        tmp_path, offline_engine={"type": "duckdb", "threads": 1, "memory_limit": "512MB"}
    )
    engine = create_offline_engine(cfg)
    try:
        cur = engine._cursor()  # type: ignore[attr-defined]
        assert cur.execute("SELECT current_setting('threads')").fetchone() == (1,)
    finally:
        engine.close()
    cfg.offline_engine.type = "nosuch"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"offline_engine.type 'nosuch' is not a known engine"):
        create_offline_engine(cfg)


def test_prefilter_chosen_for_large_sources(config) -> None:  # type: ignore[no-untyped-def]
    n = 50_000
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(range(n), pa.int64()),
                "ts": pa.array([T0] * n, UTC_US),
                "score": pa.array(range(n), pa.int64()),
            }
        ),
        config.data_path / "big.parquet",
    )
    src = FileSource(name="big", path="data/big.parquet", timestamp_field="ts")
    entity = Entity(name="user", join_keys=["user_id"])
    view = FeatureView(
        name="v", entities=["user"], features=[Field(name="score", dtype="int64")], source="big"
    )
    sel = ViewSelection(view=view, features=tuple(view.features), source=src, entities=(entity,))
    engine = create_offline_engine(config)
    try:
        for rows, prefilter in ((10, True), (n, False)):
            ents = pa.table(
                {
                    "user_id": pa.array(range(rows), pa.int64()),
                    "event_timestamp": pa.array([T0] * rows, UTC_US),
                }
            )
            job = engine.get_historical_features(
                ents, [sel], timestamp_column="event_timestamp", full_feature_names=False
            )
            plan = job._run.__self__  # type: ignore[union-attr]
            assert ("GROUP BY" in plan._prepared[1]) is prefilter
            assert job.to_arrow().column("score").to_pylist() == list(range(rows))
    finally:
        engine.close()


def test_iceberg_catalog_properties(tmp_path: Path) -> None:
    from quiver.offline._iceberg import _catalog_properties

    (tmp_path / "data").mkdir()
    sql = _catalog_properties(load_config(tmp_path), "default")
    assert sql["type"] == "sql"
    assert sql["uri"] == f"sqlite:///{tmp_path / 'data' / 'iceberg_catalog.db'}"
    assert sql["warehouse"] == (tmp_path / "data" / "warehouse").as_uri()
    rest = _catalog_properties(
        load_config(
            tmp_path,
            iceberg={
                "catalogs": {
                    "prod": {
                        "type": "rest",
                        "uri": "https://cat.example",
                        "properties": {"token": "t"},
                    }
                }
            },
            s3={"endpoint_url": "http://127.0.0.1:9000", "region": "eu-west-1"},
        ),
        "prod",
    )
    assert rest == {
        "type": "rest",
        "uri": "https://cat.example",
        "s3.endpoint": "http://127.0.0.1:9000",
        "s3.region": "eu-west-1",
        "token": "t",
    }
