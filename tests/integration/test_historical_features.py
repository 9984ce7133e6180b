"""Point-in-time correct training data: one explicit test per rule, on Parquet, CSV and Iceberg.

Each test builds a small repo in a temp dir with real files (or a real Iceberg table in an
embedded SQLite catalog) and checks ``FeatureStore.get_historical_features`` against values
worked out by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from quiver import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    Field,
    FileSource,
    IcebergSource,
    InvalidError,
    NotFoundError,
)
from quiver.config import load_config
from quiver.offline.sources import iceberg_catalog

T0 = datetime(2024, 5, 1, tzinfo=UTC)
FORMATS = ["parquet", "csv", "iceberg"]
UTC_US = pa.timestamp("us", tz="UTC")


def h(hours: float) -> datetime:
    """``T0`` plus some hours."""
    return T0 + timedelta(hours=hours)


class Repo:
    """A throwaway feature repo whose sources are written in one format."""

    def __init__(self, root: Path, fmt: str, engine: str = "duckdb") -> None:
        self.root = root
        self.fmt = fmt
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.store = FeatureStore(config=load_config(root, offline_engine={"type": engine}))

    def source(
        self,
        name: str,
        table: pa.Table,
        *,
        timestamp_field: str = "event_timestamp",
        created_timestamp_field: str | None = None,
        field_mapping: dict[str, str] | None = None,
    ) -> FileSource | IcebergSource:
        """Write ``table`` in the repo's format and return the source definition."""
        common: dict[str, Any] = {
            "name": name,
            "timestamp_field": timestamp_field,
            "created_timestamp_field": created_timestamp_field,
            "field_mapping": field_mapping or {},
        }
        if self.fmt == "parquet":
            path = self.root / "data" / f"{name}.parquet"
            pq.write_table(table, path)
            return FileSource(path=f"data/{name}.parquet", **common)
        if self.fmt == "csv":
            path = self.root / "data" / f"{name}.csv"
            pacsv.write_csv(table, path)
            return FileSource(path=f"data/{name}.csv", **common)
        catalog = iceberg_catalog(self.store.config)
        catalog.create_namespace_if_not_exists("features")
        ice = catalog.create_table(f"features.{name}", schema=_iceberg_ready(table).schema)
        ice.append(_iceberg_ready(table))
        return IcebergSource(table=f"features.{name}", **common)

    def apply(self, *objects: Any) -> None:
        self.store.apply(list(objects))

    def hist(self, entity_df: Any, features: list[str] | None = None, **kw: Any) -> pa.Table:
        return self.store.get_historical_features(entity_df, features, **kw).to_arrow()


def _iceberg_ready(table: pa.Table) -> pa.Table:
    """Iceberg stores microsecond timestamps: convert ns/ms columns."""
    cols = []
    for f in table.schema:
        col = table.column(f.name)
        if pa.types.is_timestamp(f.type) and f.type.unit != "us":
            col = col.cast(pa.timestamp("us", tz=f.type.tz), safe=False)
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


@pytest.fixture(params=[*FORMATS, "parquet-spark"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repo:
    """A repo per source format on DuckDB, and Parquet on Spark (the session fixture's)."""
    fmt, _, engine = str(request.param).partition("-")
    if engine == "spark":
        request.getfixturevalue("spark_session")
    return Repo(tmp_path, fmt, engine or "duckdb")


@pytest.fixture
def pq_repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path, "parquet")


customer = Entity(name="customer", join_keys=["customer_id"])


def stats_view(source: Any, ttl: timedelta | None = None, name: str = "stats") -> FeatureView:
    return FeatureView(
        name=name,
        entities=["customer"],
        features=[Field(name="orders", dtype="int64"), Field(name="spend", dtype="float64")],
        source=source,
        ttl=ttl,
    )


def stats_rows(rows: list[tuple[int, datetime, int | None, float | None]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.int64()),
            "event_timestamp": pa.array([r[1] for r in rows], UTC_US),
            "orders": pa.array([r[2] for r in rows], pa.int64()),
            "spend": pa.array([r[3] for r in rows], pa.float64()),
        }
    )


def entities(rows: list[tuple[int, datetime]], **extra: list[Any]) -> pa.Table:
    data: dict[str, Any] = {
        "customer_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([r[1] for r in rows], UTC_US),
    }
    data.update(extra)
    return pa.table(data)


def simple_repo(repo: Repo, ttl: timedelta | None = None) -> Repo:
    src = repo.source(
        "stats_source",
        stats_rows(
            [
                (1, h(0), 10, 1.0),
                (1, h(2), 20, 2.0),
                (1, h(4), 30, None),
                (2, h(1), 5, 0.5),
            ]
        ),
    )
    repo.apply(customer, src, stats_view(src, ttl))
    return repo


# --- the semantics -------------------------------------------------------------------------


def test_as_of_match_takes_latest_row_at_or_before_t(repo: Repo) -> None:
    simple_repo(repo)
    out = repo.hist(
        entities([(1, h(-1)), (1, h(0)), (1, h(1)), (1, h(2)), (1, h(3.5)), (1, h(10)), (2, h(5))]),
        ["stats:orders", "stats:spend"],
    )
    assert out.column("orders").to_pylist() == [None, 10, 10, 20, 20, 30, 5]
    # a null feature value in the matched row stays null (no fallback to an older row)
    assert out.column("spend").to_pylist() == [None, 1.0, 1.0, 2.0, 2.0, None, 0.5]


def test_ttl_window_excludes_rows_at_or_older_than_t_minus_ttl(repo: Repo) -> None:
    simple_repo(repo, ttl=timedelta(hours=1))
    out = repo.hist(
        entities([(1, h(0.5)), (1, h(1)), (1, h(2.999)), (1, h(3)), (2, h(1.999)), (2, h(2))]),
        ["stats:orders"],
    )
    # event_ts > t - ttl: a row exactly ttl old has expired
    assert out.column("orders").to_pylist() == [10, None, 20, None, 5, None]


def test_ties_on_event_time_broken_by_created_timestamp(repo: Repo) -> None:
    table = stats_rows([(1, h(1), 1, 1.0), (1, h(1), 3, 3.0), (1, h(1), 2, 2.0), (2, h(1), 7, 7.0)])
    table = table.append_column("created", pa.array([h(5), h(9), h(7), None], UTC_US))
    src = repo.source("stats_source", table, created_timestamp_field="created")
    repo.apply(customer, src, stats_view(src))
    out = repo.hist(entities([(1, h(2)), (2, h(2)), (1, h(1))]), ["stats:orders", "stats:spend"])
    assert out.column("orders").to_pylist() == [3, 7, 3]
    assert out.column("spend").to_pylist() == [3.0, 7.0, 3.0]


def test_created_order_used_only_where_event_times_tie(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB checks a source joined whole for ties before ordering by (event, created): the
    same answers with and without them, the struct order only where a key repeats a time
    (CSV, parsed again, and an Iceberg scan, read once: always ordered, unchecked)."""
    if repo.store.config.offline_engine.type != "duckdb":
        pytest.skip("the tie check is the DuckDB engine's plan")
    import quiver.offline.duckdb as duck

    found: list[bool] = []
    check = duck._has_ties

    def has_ties(*args: Any) -> bool:
        found.append(check(*args))
        return found[-1]

    monkeypatch.setattr(duck, "_has_ties", has_ties)
    # the same time for two keys, and for one key a null time twice: no ties
    rows = [(1, h(1), 1, 1.0), (2, h(1), 2, 2.0), (1, h(3), 3, 3.0), (2, None, 8, 8.0)]
    rows.append((2, None, 9, 9.0))
    table = stats_rows(rows)  # type: ignore[arg-type]
    table = table.append_column("created", pa.array([h(9), h(1), None, h(2), h(3)], UTC_US))
    src = repo.source("stats_source", table, created_timestamp_field="created")
    repo.apply(customer, src, stats_view(src))
    out = repo.hist(entities([(1, h(1)), (1, h(4)), (2, h(5)), (2, h(0))]), ["stats:orders"])
    assert out.column("orders").to_pylist() == [1, 3, 2, None]
    checked = repo.fmt == "parquet"
    assert found == ([False] if checked else [])
    # one key repeats a time: the greatest created wins
    found.clear()
    tied = stats_rows([(1, h(1), 1, 1.0), (1, h(1), 2, 2.0), (2, h(1), 5, 5.0)])
    tied = tied.append_column("created", pa.array([h(3), h(2), h(9)], UTC_US))
    src = repo.source("tied_source", tied, created_timestamp_field="created")
    repo.apply(src, stats_view(src, name="tied"))
    out = repo.hist(entities([(1, h(2)), (2, h(2))]), ["tied:orders"])
    assert out.column("orders").to_pylist() == [1, 5]
    assert found == ([True] if checked else [])


def test_nulls_where_nothing_matches(repo: Repo) -> None:
    simple_repo(repo)
    out = repo.hist(entities([(99, h(3)), (1, h(-5)), (2, h(0))]), ["stats:orders", "stats:spend"])
    assert out.column("orders").to_pylist() == [None, None, None]
    assert out.column("spend").to_pylist() == [None, None, None]
    assert out.schema.field("orders").type == pa.int64()


def test_every_entity_row_kept_in_input_order_with_duplicates(repo: Repo) -> None:
    simple_repo(repo)
    rows = [(2, h(3)), (1, h(3)), (1, h(0)), (2, h(3)), (1, h(3)), (77, h(1)), (1, h(0))]
    labels = list(range(len(rows)))[::-1]
    out = repo.hist(entities(rows, label=labels), ["stats:orders"])
    assert out.num_rows == len(rows)
    assert out.column("customer_id").to_pylist() == [r[0] for r in rows]
    assert out.column("label").to_pylist() == labels
    assert out.column("orders").to_pylist() == [5, 20, 10, 5, 20, None, 10]


def test_several_views_different_entities_and_compound_keys(repo: Repo) -> None:
    store_entity = Entity(name="store", join_keys=["store_id"], value_type="string")
    pair = Entity(name="pair", join_keys=["customer_id", "product_id"])
    stats = repo.source("stats_source", stats_rows([(1, h(0), 10, 1.0), (2, h(0), 20, 2.0)]))
    shops = repo.source(
        "store_source",
        pa.table(
            {
                "store_id": ["a", "b", "a"],
                "event_timestamp": pa.array([h(0), h(0), h(2)], UTC_US),
                "footfall": pa.array([100, 200, 150], pa.int64()),
            }
        ),
    )
    pairs = repo.source(
        "pair_source",
        pa.table(
            {
                "customer_id": pa.array([1, 1, 2], pa.int64()),
                "product_id": pa.array([7, 8, 7], pa.int64()),
                "event_timestamp": pa.array([h(0), h(0), h(0)], UTC_US),
                "affinity": pa.array([0.1, 0.8, 0.5]),
            }
        ),
    )
    repo.apply(
        customer,
        store_entity,
        pair,
        stats,
        shops,
        pairs,
        stats_view(stats),
        FeatureView(
            name="store_stats",
            entities=["store"],
            features=[Field(name="footfall", dtype="int64")],
            source=shops,
        ),
        FeatureView(
            name="pair_stats",
            entities=["pair"],
            features=[Field(name="affinity", dtype="float64")],
            source=pairs,
            ttl=timedelta(days=1),
        ),
    )
    ent = pa.table(
        {
            "customer_id": pa.array([1, 1, 2, 2], pa.int64()),
            "product_id": pa.array([7, 8, 8, 7], pa.int64()),
            "store_id": ["a", "b", "a", "c"],
            "event_timestamp": pa.array([h(3), h(1), h(1), h(1)], UTC_US),
        }
    )
    out = repo.hist(ent, ["stats:orders", "store_stats:footfall", "pair_stats:affinity"])
    assert out.column_names == [
        "customer_id",
        "product_id",
        "store_id",
        "event_timestamp",
        "orders",
        "footfall",
        "affinity",
    ]
    assert out.column("orders").to_pylist() == [10, 10, 20, 20]
    assert out.column("footfall").to_pylist() == [150, 200, 100, None]
    assert out.column("affinity").to_pylist() == [0.1, 0.8, None, 0.5]


def test_naive_timestamps_are_utc_and_aware_ones_are_converted(repo: Repo) -> None:
    simple_repo(repo)
    paris = pd.DataFrame(
        {
            "customer_id": [1, 1],
            # 03:30 in Paris (UTC+2 in May) is 01:30 UTC -> the h(0) row; 04:30 -> h(2) row
            "event_timestamp": pd.to_datetime(["2024-05-01 03:30", "2024-05-01 04:30"]).tz_localize(
                "Europe/Paris"
            ),
        }
    )
    naive = pd.DataFrame(
        {
            "customer_id": [1, 1],
            "event_timestamp": pd.to_datetime(["2024-05-01 01:30", "2024-05-01 02:30"]),
        }
    )
    out_paris = repo.hist(paris, ["stats:orders"])
    out_naive = repo.hist(naive, ["stats:orders"])
    assert out_paris.column("orders").to_pylist() == [10, 20]
    assert out_naive.column("orders").to_pylist() == [10, 20]
    # the output timestamp column is UTC, microseconds
    assert out_paris.schema.field("event_timestamp").type == UTC_US
    assert out_paris.column("event_timestamp").to_pylist() == [h(1.5), h(2.5)]


def test_entity_columns_first_and_extra_columns_untouched(repo: Repo) -> None:
    simple_repo(repo)
    ent = pa.table(
        {
            "label": pa.array([True, False], pa.bool_()),
            "event_timestamp": pa.array([h(3), h(3)], UTC_US),
            "weight": pa.array([1.5, None], pa.float32()),
            "customer_id": pa.array([1, 2], pa.int64()),
            "tags": pa.array([["a"], []], pa.list_(pa.string())),
            "amount": pa.array([1, 2], pa.decimal128(10, 2)),
        }
    )
    out = repo.hist(ent, ["stats:spend", "stats:orders"])
    assert out.column_names == [*ent.column_names, "spend", "orders"]
    for name in ent.column_names:
        assert out.schema.field(name).type == ent.schema.field(name).type
        assert out.column(name).to_pylist() == ent.column(name).to_pylist()


# --- references, services, names ------------------------------------------------------------


def test_star_reference_service_and_full_feature_names(repo: Repo) -> None:
    simple_repo(repo)
    other = repo.source("other_source", stats_rows([(1, h(0), 99, 9.9)]))
    repo.apply(
        other,
        stats_view(other, name="other"),
        FeatureService(name="svc", features=["stats:*", "other:orders"]),
    )
    ent = entities([(1, h(3))])
    star = repo.hist(ent, ["stats:*"])
    assert star.column_names == ["customer_id", "event_timestamp", "orders", "spend"]
    full = repo.store.get_historical_features(
        ent, feature_service="svc", full_feature_names=True
    ).to_arrow()
    assert full.column_names == [
        "customer_id",
        "event_timestamp",
        "stats__orders",
        "stats__spend",
        "other__orders",
    ]
    assert full.column("other__orders").to_pylist() == [99]
    with pytest.raises(InvalidError, match="full_feature_names=True"):
        repo.store.get_historical_features(ent, feature_service="svc")


# --- entity_df forms and outputs --------------------------------------------------------------


def test_entity_df_forms(pq_repo: Repo, tmp_path: Path) -> None:
    repo = simple_repo(pq_repo)
    ent = entities([(1, h(3)), (2, h(3)), (1, h(0.5))], label=[1, 0, 1])
    expected = [20, 5, 10]
    pq.write_table(ent, tmp_path / "ents.parquet")
    pacsv.write_csv(ent, tmp_path / "ents.csv")
    labels = FileSource(name="labels", path=str(tmp_path / "ents.parquet"))
    repo.apply(labels)
    forms: list[Any] = [
        ent,
        ent.to_pandas(),
        pl.from_arrow(ent),
        str(tmp_path / "ents.parquet"),
        tmp_path / "ents.csv",
        "labels",
    ]
    for form in forms:
        out = repo.hist(form, ["stats:orders"])
        assert out.column("orders").to_pylist() == expected, type(form)
        assert out.column("label").to_pylist() == [1, 0, 1]


def test_output_forms(pq_repo: Repo, tmp_path: Path) -> None:
    repo = simple_repo(pq_repo)
    job = repo.store.get_historical_features(
        entities([(1, h(5)), (2, h(3))]), ["stats:orders", "stats:spend"]
    )
    table = job.to_arrow()
    assert job.to_pandas()["orders"].tolist() == [30, 5]
    assert job.to_polars()["orders"].to_list() == [30, 5]
    summary = job.to_parquet(tmp_path / "out" / "train.parquet")
    assert pq.read_table(tmp_path / "out" / "train.parquet").equals(table)
    assert summary.rows == 2
    assert summary.null_counts == {"orders": 0, "spend": 1}
    assert summary.null_rate("spend") == 0.5


def test_empty_entity_df_gives_empty_result_with_schema(repo: Repo) -> None:
    simple_repo(repo)
    ent = entities([], label=pa.array([], pa.string()))
    job = repo.store.get_historical_features(ent, ["stats:orders", "stats:spend"])
    out = job.to_arrow()
    assert out.num_rows == 0
    assert out.schema == pa.schema(
        [
            ("customer_id", pa.int64()),
            ("event_timestamp", UTC_US),
            ("label", pa.string()),
            ("orders", pa.int64()),
            ("spend", pa.float64()),
        ]
    )
    assert len(job.to_pandas()) == 0


# --- timestamps in every form -----------------------------------------------------------------


def _ts_forms() -> dict[str, Callable[[list[datetime]], pa.Array]]:
    def naive(unit: str) -> Callable[[list[datetime]], pa.Array]:
        return lambda ds: pa.array([d.replace(tzinfo=None) for d in ds], pa.timestamp(unit))

    def aware(unit: str, tz: str) -> Callable[[list[datetime]], pa.Array]:
        return lambda ds: pa.array(ds, pa.timestamp(unit, tz="UTC")).cast(pa.timestamp(unit, tz=tz))

    return {
        "pandas_ns_naive": naive("ns"),
        "pandas_ns_aware": aware("ns", "America/New_York"),
        "arrow_us_utc": aware("us", "UTC"),
        "arrow_us_naive": naive("us"),
        "arrow_ms_aware": aware("ms", "Asia/Tokyo"),
        "arrow_s_naive": naive("s"),
        "date": lambda ds: pa.array([d.date() for d in ds], pa.date32()),
        "iso_string_offset": lambda ds: pa.array(
            [d.astimezone(UTC).astimezone(_tz(5)).isoformat() for d in ds]
        ),
        "plain_string": lambda ds: pa.array([d.strftime("%Y-%m-%d %H:%M:%S") for d in ds]),
    }


def _tz(hours: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours))


TS_FORMS = list(_ts_forms())


@pytest.mark.parametrize("source_form", TS_FORMS)
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_timestamp_forms_in_sources(tmp_path: Path, fmt: str, source_form: str) -> None:
    repo = Repo(tmp_path, fmt)
    days = [datetime(2024, 5, d, tzinfo=UTC) for d in (1, 3, 5)]
    table = pa.table(
        {
            "customer_id": pa.array([1, 1, 1], pa.int64()),
            "event_timestamp": _ts_forms()[source_form](days),
            "orders": pa.array([1, 3, 5], pa.int64()),
        }
    )
    if fmt == "parquet" and source_form == "pandas_ns_aware":
        table = pa.Table.from_pandas(table.to_pandas())  # written by pandas itself
    src = repo.source("s", table)
    repo.apply(
        customer,
        src,
        FeatureView(
            name="v",
            entities=["customer"],
            features=[Field(name="orders", dtype="int64")],
            source=src,
        ),
    )
    ent_days = [datetime(2024, 5, d, 12, tzinfo=UTC) for d in (1, 2, 3, 4, 6)] + [
        datetime(2024, 4, 30, tzinfo=UTC),
        datetime(2024, 5, 3, tzinfo=UTC),
    ]
    for entity_form in (
        "pandas_ns_naive",
        "arrow_ms_aware",
        "date",
        "plain_string",
        "iso_string_offset",
    ):
        ents = pa.table(
            {
                "customer_id": pa.array([1] * len(ent_days), pa.int64()),
                "event_timestamp": _ts_forms()[entity_form](ent_days),
            }
        )
        if entity_form == "pandas_ns_naive":
            ents = ents.to_pandas()
        out = repo.hist(ents, ["v:orders"])
        # (a date is midnight UTC, so the date form gives the same answers)
        expected = [1, 1, 3, 3, 5, None, 3]
        assert out.column("orders").to_pylist() == expected, (source_form, entity_form)


def test_csv_string_timestamps_with_mixed_offsets(tmp_path: Path) -> None:
    repo = Repo(tmp_path, "csv")
    (tmp_path / "data" / "s.csv").write_text(
        "customer_id,event_timestamp,orders\n"
        "1,2024-05-01T00:00:00Z,1\n"
        "1,2024-05-01T03:00:00+02:00,2\n"  # 01:00 UTC
        "1,2024-05-01 02:00:00,3\n"  # naive = UTC
        "1,2024-05-01T03:00:00.250000,4\n"
    )
    src = FileSource(name="s", path="data/s.csv")
    repo.apply(
        customer,
        src,
        FeatureView(
            name="v",
            entities=["customer"],
            features=[Field(name="orders", dtype="int64")],
            source=src,
        ),
    )
    out = repo.hist(
        entities(
            [
                (1, h(0.5)),
                (1, h(1.5)),
                (1, h(2.5)),
                (1, T0 + timedelta(hours=3, milliseconds=100)),
                (1, h(4)),
            ]
        ),
        ["v:orders"],
    )
    assert out.column("orders").to_pylist() == [1, 2, 3, 3, 4]


# --- sources: mapping, layouts, pushed rows ---------------------------------------------------


def test_field_mapping_renames_source_columns(repo: Repo) -> None:
    raw = pa.table(
        {
            "cust": pa.array([1, 1], pa.int64()),
            "ts": pa.array([h(0), h(1)], UTC_US),
            "n_orders": pa.array([3, 4], pa.int64()),
            "spend": pa.array([1.0, 2.0]),
        }
    )
    src = repo.source(
        "mapped",
        raw,
        timestamp_field="ts",
        field_mapping={"cust": "customer_id", "n_orders": "orders"},
    )
    repo.apply(customer, src, stats_view(src))
    out = repo.hist(entities([(1, h(0.5)), (1, h(2))]), ["stats:orders", "stats:spend"])
    assert out.column("orders").to_pylist() == [3, 4]
    assert out.column("spend").to_pylist() == [1.0, 2.0]


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_directory_glob_and_hive_partitions(tmp_path: Path, fmt: str) -> None:
    repo = Repo(tmp_path, fmt)
    base = tmp_path / "data" / "events"
    for day, rows in ((1, [(1, h(0), 1, 1.0)]), (2, [(1, h(24), 2, 2.0), (2, h(24), 7, 7.0)])):
        part = base / f"day={day}"
        part.mkdir(parents=True)
        table = stats_rows(rows)
        if fmt == "parquet":
            pq.write_table(table, part / "part-0.parquet")
        else:
            pacsv.write_csv(table, part / "part-0.csv")
    (base / "_SUCCESS").write_text("")
    ext = fmt
    ent = entities([(1, h(1)), (1, h(30)), (2, h(30))])
    for i, path in enumerate(["data/events", f"data/events/*/*.{ext}", f"data/events/**/*.{ext}"]):
        src = FileSource(name=f"events{i}", path=path, format=fmt)
        view = FeatureView(
            name=f"v{i}",
            entities=["customer"],
            features=[Field(name="orders", dtype="int64"), Field(name="day", dtype="int64")],
            source=src,
        )
        repo.apply(customer, src, view)
        out = repo.hist(ent, [f"v{i}:orders", f"v{i}:day"])
        assert out.column("orders").to_pylist() == [1, 2, 7], path
        assert out.column("day").to_pylist() == [1, 2, 2], path


def test_pushed_rows_are_part_of_the_source(pq_repo: Repo) -> None:
    from quiver.offline.sources import append_to_source

    repo = simple_repo(pq_repo)
    src = repo.store.get_data_source("stats_source")
    append_to_source(
        repo.store.config,
        src,
        pa.table(
            {
                "customer_id": pa.array([2], pa.int64()),
                "orders": pa.array([50], pa.int64()),
                "event_timestamp": pa.array([h(6)], UTC_US),
            }
        ),
    )
    out = repo.hist(entities([(2, h(5)), (2, h(7))]), ["stats:orders", "stats:spend"])
    assert out.column("orders").to_pylist() == [5, 50]
    assert out.column("spend").to_pylist() == [0.5, None]  # the pushed row has no 'spend'


# --- bad input --------------------------------------------------------------------------------


def test_unknown_feature_reference_suggests_nearest(pq_repo: Repo) -> None:
    repo = simple_repo(pq_repo)
    ent = entities([(1, h(1))])
    with pytest.raises(NotFoundError, match="did you mean 'orders'"):
        repo.hist(ent, ["stats:order"])
    with pytest.raises(NotFoundError, match="did you mean 'stats'"):
        repo.hist(ent, ["stat:orders"])
    with pytest.raises(NotFoundError, match="feature service"):
        repo.store.get_historical_features(ent, feature_service="nope")


def test_entity_df_missing_join_key_or_timestamp(pq_repo: Repo) -> None:
    repo = simple_repo(pq_repo)
    with pytest.raises(InvalidError, match=r"no column 'customer_id'.*join key.*'stats'"):
        repo.hist(
            pa.table({"cust_id": [1], "event_timestamp": pa.array([h(1)], UTC_US)}),
            ["stats:orders"],
        )
    with pytest.raises(
        InvalidError, match=r"no timestamp column 'event_timestamp'.*did you mean 'event_ts'"
    ):
        repo.hist(
            pa.table({"customer_id": [1], "event_ts": pa.array([h(1)], UTC_US)}), ["stats:orders"]
        )
    out = repo.hist(
        pa.table({"customer_id": [1], "event_ts": pa.array([h(1)], UTC_US)}),
        ["stats:orders"],
        timestamp_column="event_ts",
    )
    assert out.column("orders").to_pylist() == [10]


def test_timestamp_column_of_wrong_type(pq_repo: Repo) -> None:
    repo = simple_repo(pq_repo)
    with pytest.raises(InvalidError, match="timestamp column 'event_timestamp' has type int64"):
        repo.hist(pa.table({"customer_id": [1], "event_timestamp": [1714521600]}), ["stats:orders"])
    with pytest.raises(InvalidError, match="not a timestamp"):
        repo.hist(
            pa.table({"customer_id": [1], "event_timestamp": ["yesterday"]}), ["stats:orders"]
        )


def test_join_key_of_wrong_type(pq_repo: Repo) -> None:
    repo = simple_repo(pq_repo)
    out = repo.hist(  # castable keys are fine
        pa.table(
            {"customer_id": pa.array([1], pa.int32()), "event_timestamp": pa.array([h(1)], UTC_US)}
        ),
        ["stats:orders"],
    )
    assert out.column("orders").to_pylist() == [10]
    assert out.schema.field("customer_id").type == pa.int32()
    with pytest.raises(InvalidError, match=r"customer_id' has type string.*int64"):
        repo.hist(
            pa.table({"customer_id": ["x"], "event_timestamp": pa.array([h(1)], UTC_US)}),
            ["stats:orders"],
        )


def test_source_file_missing_or_lacking_a_column(repo: Repo, tmp_path: Path) -> None:
    src = repo.source("stats_source", stats_rows([(1, h(0), 1, 1.0)]).drop_columns(["spend"]))
    repo.apply(customer, src, stats_view(src))
    with pytest.raises(
        InvalidError, match=r"no column 'spend'.*feature 'spend' of feature view 'stats'"
    ):
        repo.hist(entities([(1, h(1))]), ["stats:orders", "stats:spend"])
    # only 'orders' requested: the missing column is never read
    assert repo.hist(entities([(1, h(1))]), ["stats:orders"]).column("orders").to_pylist() == [1]
    if repo.fmt == "iceberg":
        gone = IcebergSource(name="gone", table="features.gone")
    else:
        gone = FileSource(name="gone", path="data/gone.parquet")
    repo.apply(gone, stats_view(gone, name="gone_view"))
    with pytest.raises(NotFoundError, match="gone"):
        repo.hist(entities([(1, h(1))]), ["gone_view:orders"])


def test_source_timestamp_of_wrong_type(pq_repo: Repo) -> None:
    repo = pq_repo
    table = stats_rows([(1, h(0), 1, 1.0)]).set_column(
        1, "event_timestamp", pa.array([5], pa.int64())
    )
    src = repo.source("stats_source", table)
    repo.apply(customer, src, stats_view(src))
    with pytest.raises(InvalidError, match="timestamp column 'event_timestamp' has type BIGINT"):
        repo.hist(entities([(1, h(1))]), ["stats:orders"])


def test_entity_df_path_or_source_that_does_not_exist(pq_repo: Repo, tmp_path: Path) -> None:
    repo = simple_repo(pq_repo)
    with pytest.raises(
        NotFoundError, match="neither an existing file nor a registered data source"
    ):
        repo.hist(str(tmp_path / "nope.parquet"), ["stats:orders"])
    with pytest.raises(NotFoundError, match="did you mean 'stats_source'"):
        repo.hist("stats_sourc", ["stats:orders"])


def test_output_name_clash_with_entity_column(pq_repo: Repo) -> None:
    repo = simple_repo(pq_repo)
    ent = entities([(1, h(1))], orders=[5])
    with pytest.raises(InvalidError, match="already has column"):
        repo.hist(ent, ["stats:orders"])
    out = repo.hist(ent, ["stats:orders"], full_feature_names=True)
    assert out.column("stats__orders").to_pylist() == [10]


def test_entity_timestamps_all_null_or_some_null(pq_repo: Repo) -> None:
    repo = simple_repo(pq_repo)
    out = repo.hist(
        pa.table({"customer_id": [1, 1], "event_timestamp": pa.array([None, h(1)], UTC_US)}),
        ["stats:orders"],
    )
    assert out.column("orders").to_pylist() == [None, 10]
    out = repo.hist(
        pa.table({"customer_id": [1], "event_timestamp": pa.array([None], UTC_US)}),
        ["stats:orders"],
    )
    assert out.column("orders").to_pylist() == [None]


def test_dtypes_of_every_kind(repo: Repo) -> None:
    table = pa.table(
        {
            "customer_id": pa.array([1], pa.int64()),
            "event_timestamp": pa.array([h(0)], UTC_US),
            "i32": pa.array([7], pa.int32()),
            "f32": pa.array([1.5], pa.float32()),
            "s": ["x"],
            "b": [True],
            "ts": pa.array([h(-1)], UTC_US),
        }
    )
    src = repo.source("src", table)
    feats = [
        Field(name="i32", dtype="int32"),
        Field(name="f32", dtype="float32"),
        Field(name="s", dtype="string"),
        Field(name="b", dtype="bool"),
        Field(name="ts", dtype="timestamp"),
    ]
    repo.apply(
        customer, src, FeatureView(name="v", entities=["customer"], features=feats, source=src)
    )
    out = repo.hist(entities([(1, h(1))]), ["v:*"])
    assert out.schema.field("i32").type == pa.int32()
    assert out.schema.field("f32").type == pa.float32()
    assert out.schema.field("s").type == pa.string()
    assert out.schema.field("b").type == pa.bool_()
    assert out.schema.field("ts").type == UTC_US
    assert out.select(["i32", "f32", "s", "b", "ts"]).to_pylist() == [
        {"i32": 7, "f32": 1.5, "s": "x", "b": True, "ts": h(-1)}
    ]


def test_date_typed_entity_column_is_midnight_utc(pq_repo: Repo) -> None:
    repo = simple_repo(pq_repo)
    ent = pa.table(
        {"customer_id": [1], "event_timestamp": pa.array([date(2024, 5, 2)], pa.date32())}
    )
    out = repo.hist(ent, ["stats:orders"])
    assert out.column("orders").to_pylist() == [30]
    assert out.column("event_timestamp").to_pylist() == [datetime(2024, 5, 2, tzinfo=UTC)]


def test_list_features(pq_repo: Repo) -> None:
    table = pa.table(
        {
            "customer_id": pa.array([1, 1], pa.int64()),
            "event_timestamp": pa.array([h(0), h(2)], UTC_US),
            "recent": pa.array([[1, 2], None], pa.list_(pa.int32())),
            "tags": pa.array([["a"], ["b", "c"]], pa.list_(pa.large_string())),
        }
    )
    src = pq_repo.source("src", table)
    feats = [Field(name="recent", dtype="list<int64>"), Field(name="tags", dtype="list<string>")]
    pq_repo.apply(
        customer, src, FeatureView(name="v", entities=["customer"], features=feats, source=src)
    )
    out = pq_repo.hist(entities([(1, h(1)), (1, h(3)), (2, h(3))]), ["v:*"])
    assert out.schema.field("recent").type == pa.list_(pa.int64())
    assert out.column("recent").to_pylist() == [[1, 2], None, None]
    assert out.column("tags").to_pylist() == [["a"], ["b", "c"], None]


def test_nanosecond_source_timestamps_are_truncated_to_microseconds(pq_repo: Repo) -> None:
    base = int(h(0).timestamp()) * 10**9
    table = pa.table(
        {
            "customer_id": pa.array([1, 1], pa.int64()),
            # pandas writes naive nanoseconds; 999 ns after the hour still counts as the hour
            "event_timestamp": pa.array(
                [base + 999, base + 3_600 * 10**9 + 999], pa.timestamp("ns")
            ),
            "orders": pa.array([1, 2], pa.int64()),
        }
    )
    src = pq_repo.source("src", table)
    pq_repo.apply(
        customer,
        src,
        stats_view(src).model_copy(update={"features": [Field(name="orders", dtype="int64")]}),
    )
    out = pq_repo.hist(
        entities([(1, h(0)), (1, h(1)), (1, h(1) - timedelta(microseconds=1))]), ["stats:orders"]
    )
    assert out.column("orders").to_pylist() == [1, 2, 1]
