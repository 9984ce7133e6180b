"""Statistics on materialization, freshness and ``validate`` on a real store (SQLite and
PostgreSQL registries, DuckDB, Parquet)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from quiver import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
from quiver.config import build_config
from quiver.monitoring import service
from quiver.monitoring.statistics import QUANTILES, list_view_statistics
from quiver.types import arrow_type

TS = arrow_type("timestamp")
NOW = datetime.now(UTC).replace(microsecond=0)

customer = Entity(name="customer", join_keys=["customer_id"])
src = FileSource(name="activity_src", path="data/activity.parquet", timestamp_field="ts")
activity = FeatureView(
    name="activity",
    entities=[customer],
    features=[
        Field(name="clicks", dtype="int64"),
        Field(name="score", dtype="float64"),
        Field(name="label", dtype="string"),
        Field(name="active", dtype="bool"),
    ],
    source=src,
    ttl=timedelta(days=30),
)
svc = FeatureService(name="activity_svc", features=["activity:clicks", "activity:score"])


def rows(keys: int, per_key: int = 3, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = keys * per_key
    ts = [NOW - timedelta(seconds=int(a)) for a in rng.permutation(20 * 86_400)[:n]]
    score = rng.normal(5, 2, n)
    score[rng.random(n) < 0.1] = np.nan
    clicks = pa.array(rng.integers(0, 1000, n), mask=rng.random(n) < 0.05)
    return pa.table(
        {
            "customer_id": np.repeat(np.arange(1, keys + 1), per_key),
            "ts": pa.array(ts, type=TS),
            "clicks": clicks,
            "score": score,
            "label": pa.array([f"l{v}" for v in rng.integers(0, 7, n)], mask=rng.random(n) < 0.2),
            "active": rng.random(n) < 0.4,
        }
    )


def open_repo(root: Path, registry: str, **extra: Any) -> FeatureStore:
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = build_config(
        {
            "project": "mon",
            "registry": registry,
            "repo_path": root,
            "online_store": {"type": "sqlite", "path": "data/online.db"},
            **extra,
        }
    )
    return FeatureStore(config=config)


def make_repo(root: Path, registry: str, table: pa.Table, **extra: Any) -> FeatureStore:
    store = open_repo(root, registry, **extra)
    pq.write_table(table, root / "data" / "activity.parquet")
    store.apply([customer, src, activity, svc])
    return store


def latest_per_key(table: pa.Table) -> pd.DataFrame:
    df = table.to_pandas()
    return df.sort_values("ts").groupby("customer_id").tail(1)


def close(a: float | None, b: float) -> bool:
    return (a is None and math.isnan(b)) or (a is not None and math.isclose(a, b, rel_tol=1e-9))


def test_statistics_of_a_run_equal_pandas_on_the_rows_it_wrote(
    registry_url: str, tmp_path: Path
) -> None:
    table = rows(400)
    store = make_repo(tmp_path / "repo", registry_url, table)
    with store:
        (run,) = store.materialize(NOW - timedelta(days=60), NOW + timedelta(seconds=1))
        (stats,) = list_view_statistics(store.registry, "activity")
        assert stats.run_id == run.run_id and stats.rows == run.rows_written == 400
        df = latest_per_key(table)
        assert stats.newest_event_timestamp == df.ts.max().to_pydatetime()
        for name in ("clicks", "score", "active"):
            col = df[name].astype(float)
            s = stats.features[name]
            assert s["count"] == col.notna().sum() and s["nulls"] == col.isna().sum()
            assert close(s["mean"], col.mean()) and close(s["stddev"], col.std())
            assert s["min"] == (bool(col.min()) if name == "active" else col.min())
            if name != "active":
                for key, q in QUANTILES:
                    assert close(s["quantiles"][key], col.quantile(q))
        label = stats.features["label"]
        counts = df.label.value_counts()
        assert label["null_rate"] == pytest.approx(df.label.isna().mean())
        assert {t["value"]: t["count"] for t in label["top_values"]} == counts.to_dict()

        # the REST/CLI report leaves the drift samples out, filters by days
        report = service.statistics(store, "activity", days=1)
        latest = report["views"]["activity"]["latest"]
        assert latest["run_id"] == run.run_id and "sample" not in latest["features"]["score"]

        # freshness: up to date, then the source moves ahead of the online store
        (fresh,) = service.data_freshness(store)
        assert fresh.lag_seconds == 0 and fresh.watermark is not None
        assert fresh.age_seconds is not None and fresh.stale is False
        extra = rows(5, 1, seed=3)
        extra = extra.set_column(1, "ts", pa.array([NOW + timedelta(hours=2)] * 5, type=TS))
        newer = pa.concat_tables([table, extra])
        pq.write_table(newer, tmp_path / "repo" / "data" / "activity.parquet")
        (fresh,) = service.data_freshness(store)
        assert fresh.source_newest_event_timestamp is not None
        assert fresh.lag_seconds == pytest.approx(
            (fresh.source_newest_event_timestamp - stats.newest_event_timestamp).total_seconds()
        )
        assert fresh.lag_seconds > 3600


def test_statistics_switch_off_records_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with make_repo(tmp_path / "repo", url, rows(50), monitoring={"statistics": False}) as store:
        store.materialize(NOW - timedelta(days=60), NOW + timedelta(seconds=1))
        assert list_view_statistics(store.registry) == []
        (fresh,) = service.data_freshness(store, probe_source=False)
        assert fresh.newest_event_timestamp is None and fresh.watermark is not None


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    make_repo(root, f"sqlite:///{tmp_path / 'registry.db'}", rows(30)).close()
    return root


def lines(root: Path, **extra: Any) -> list[str]:
    url = extra.pop("registry", f"sqlite:///{root.parent / 'registry.db'}")
    with open_repo(root, url, **extra) as store:
        report = service.validate(store)
    assert report.ok is not bool(report.failures)
    return [f.line() for f in report.failures]


def test_validate_passes_on_a_sound_repo(repo: Path) -> None:
    assert lines(repo) == []


def test_validate_names_a_missing_source_file(repo: Path) -> None:
    (repo / "data" / "activity.parquet").unlink()
    (line,) = lines(repo)
    assert line.startswith("feature view 'activity': ") and "activity_src" in line
    assert "fix: write the data of source 'activity_src'" in line


def test_validate_names_a_column_of_the_wrong_type(repo: Path) -> None:
    table = rows(10)
    bad = table.set_column(2, "clicks", pa.array(["many"] * table.num_rows))
    pq.write_table(bad, repo / "data" / "activity.parquet")
    (line,) = lines(repo)
    assert line.startswith("feature view 'activity': ") and "clicks" in line
    assert "dtypes" in line


def test_validate_names_a_missing_column(repo: Path) -> None:
    pq.write_table(rows(10).drop_columns(["label"]), repo / "data" / "activity.parquet")
    (line,) = lines(repo)
    assert "label" in line and "feature view 'activity'" in line


def test_validate_names_an_unreachable_online_store(repo: Path) -> None:
    (repo / "blocker").write_text("a file, not a folder")
    (line,) = lines(repo, online_store={"type": "sqlite", "path": "blocker/online.db"})
    assert line.startswith("online store: does not answer")
    assert "check online_store in quiver.yaml" in line


def test_validate_names_an_unreachable_registry(repo: Path) -> None:
    (repo / "blocker").write_text("a file, not a folder")
    found = lines(repo, registry=f"sqlite:///{repo / 'blocker' / 'registry.db'}")
    assert len(found) == 1 and found[0].startswith("registry: cannot read sqlite:///")
    assert "check registry.url" in found[0]


def test_validate_names_inconsistent_definitions(repo: Path, tmp_path: Path) -> None:
    # A registry edited by hand (or by an old version): the entity the view uses is gone.
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM objects WHERE kind = 'entity'"))
    engine.dispose()
    (line,) = lines(repo)
    assert line.startswith("feature view 'activity': uses entity 'customer', which does not")
    assert "fix: define entity 'customer'" in line
