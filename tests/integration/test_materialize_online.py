"""Materialization, incremental runs, the consistency check and the online CLI, on both stores."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import quiver.materialize as materialize_module
from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.consistency import validate_consistency
from quiver.errors import BackendError, InvalidError, NotFoundError
from quiver.online.encoding import datetime_to_us
from quiver.registry.runs import get_watermark, last_run_per_view, list_runs
from quiver.types import arrow_type

TS = arrow_type("timestamp")
NOW = datetime.now(UTC).replace(microsecond=0)
FAR = NOW - timedelta(days=3650)

customer = Entity(name="customer", join_keys=["customer_id"])
activity_src = FileSource(
    name="activity_src",
    path="data/activity.parquet",
    timestamp_field="ts",
    created_timestamp_field="created",
    field_mapping={"n_clicks": "clicks"},
)
activity = FeatureView(
    name="activity",
    entities=[customer],
    features=[
        Field(name="clicks", dtype="int64"),
        Field(name="score", dtype="float64"),
        Field(name="label", dtype="string"),
    ],
    source=activity_src,
    ttl=timedelta(days=10),
)
offline_src = FileSource(name="offline_src", path="data/activity.parquet", timestamp_field="ts")
offline_only = FeatureView(
    name="offline_only",
    entities=[customer],
    features=[Field(name="score", dtype="float64")],
    source=offline_src,
    online=False,
)


def activity_rows(keys: int, per_key: int = 3, seed: int = 0) -> pa.Table:
    """``per_key`` rows per key over the last 20 days (some older than the 10-day TTL)."""
    rng = np.random.default_rng(seed)
    n = keys * per_key
    ids = np.repeat(np.arange(1, keys + 1), per_key)
    ages_s = rng.integers(0, 20 * 86_400, size=n)
    ts = [NOW - timedelta(seconds=int(a)) for a in ages_s]
    return pa.table(
        {
            "customer_id": ids,
            "ts": pa.array(ts, type=TS),
            "created": pa.array([t + timedelta(seconds=5) for t in ts], type=TS),
            "n_clicks": rng.integers(0, 1000, size=n),
            "score": rng.random(n),
            "label": [f"l{v}" for v in rng.integers(0, 50, size=n)],
        }
    )


def make_store(root: Path, online: dict[str, Any], table: pa.Table) -> FeatureStore:
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = {
        "project": "acme",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": online,
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    pq.write_table(table, root / "data" / "activity.parquet")
    store = FeatureStore(root)
    store.apply([customer, activity_src, activity, offline_src, offline_only])
    return store


def online_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "sqlite":
        return {"type": "sqlite", "path": "data/online.db"}
    if request.param == "dynamodb":
        settings: dict[str, Any] = request.getfixturevalue("dynamodb_settings")
        return settings
    url = request.getfixturevalue("redis_url")
    return {"type": "redis", "url": url, "key_prefix": f"t{uuid.uuid4().hex[:6]}"}


@pytest.fixture(params=["sqlite", "redis", "dynamodb"])
def online(request: pytest.FixtureRequest) -> dict[str, Any]:
    return online_config(request)


@pytest.fixture
def store(online: dict[str, Any], tmp_path: Path) -> Iterator[FeatureStore]:
    s = make_store(tmp_path / "repo", online, activity_rows(300))
    yield s
    s.close()


def snapshot(store: FeatureStore, keys: int = 310) -> dict[str, Any]:
    res = store.get_online_features(
        ["activity:*"], [{"customer_id": i} for i in range(1, keys + 1)]
    )
    return {**res.to_dict(), "statuses": res.statuses, "times": res.event_timestamps}


def latest_oracle(table: pa.Table, end: datetime) -> dict[int, dict[str, Any]]:
    """Brute force: per key, the row with the greatest (ts, created) before ``end``."""
    best: dict[int, dict[str, Any]] = {}
    for row in table.to_pylist():
        if row["ts"] >= end:
            continue
        rank = (row["ts"], row["created"] or FAR)
        current = best.get(row["customer_id"])
        if current is None or rank > (current["ts"], current["created"] or FAR):
            best[row["customer_id"]] = row
    return best


# -- materialize ---------------------------------------------------------------------------------


def test_materialize_matches_the_latest_rows_and_is_idempotent(store: FeatureStore) -> None:
    table = pq.read_table(store.repo_path / "data" / "activity.parquet")
    runs = store.materialize(FAR, NOW + timedelta(seconds=1))
    assert [(r.view, r.status, r.rows_written) for r in runs] == [("activity", "succeeded", 300)]
    first = snapshot(store)
    expected = latest_oracle(table, NOW + timedelta(seconds=1))
    cutoff = datetime.now(UTC) - timedelta(days=10)
    for i, cid in enumerate(first["customer_id"]):
        row = expected.get(cid)
        if row is None:
            assert first["statuses"]["clicks"][i] == "not_found"
        elif row["ts"] <= cutoff:
            assert first["statuses"]["clicks"][i] == "expired"
            assert first["times"]["clicks"][i] == row["ts"]
        else:
            assert first["statuses"]["clicks"][i] == "present"
            assert (first["clicks"][i], first["score"][i], first["label"][i]) == (
                row["n_clicks"], row["score"], row["label"],
            )  # fmt: skip
    again = store.materialize(FAR, NOW + timedelta(seconds=1))
    assert again[0].status == "succeeded"
    assert snapshot(store) == first
    # An older range never overwrites what a newer one wrote.
    store.materialize(FAR, NOW - timedelta(days=15))
    assert snapshot(store) == first


def test_runs_and_watermarks_are_recorded(store: FeatureStore) -> None:
    end1, end2 = NOW - timedelta(days=5), NOW - timedelta(days=1)
    (first,) = store.materialize(FAR, end1)
    (second,) = store.materialize(end1, end2, ["activity"])
    assert get_watermark(store.registry, "activity") == end2
    runs = list_runs(store.registry)
    assert [r.run_id for r in runs] == [second.run_id, first.run_id]
    assert runs[0].to_dict()["start"] == end1.isoformat()
    assert runs[0].finished_at is not None and runs[0].duration_seconds >= 0
    assert list_runs(store.registry, view="activity", limit=1)[0].run_id == second.run_id
    assert last_run_per_view(store.registry)["activity"].run_id == second.run_id
    # An explicit range that ends earlier does not move the watermark back.
    store.materialize(FAR, end1)
    assert get_watermark(store.registry, "activity") == end2


def test_incremental_starts_at_ttl_then_resumes_from_the_watermark(store: FeatureStore) -> None:
    end1 = NOW - timedelta(days=2)
    (run,) = store.materialize_incremental(end1)
    assert run.start == end1 - timedelta(days=10)  # older rows would be expired anyway
    assert store.materialize_incremental(end1) == []  # nothing to do: no run recorded
    (run2,) = store.materialize_incremental(NOW + timedelta(seconds=1))
    assert run2.start == end1
    report = validate_consistency(store, "activity", sample=None)
    assert report.ok and report.keys_sampled == 300, report.to_dict()


def test_offline_only_views_are_skipped_or_refused(store: FeatureStore) -> None:
    runs = store.materialize(FAR, NOW)
    assert [r.view for r in runs] == ["activity"]
    with pytest.raises(InvalidError, match="'offline_only' has online=False"):
        store.materialize(FAR, NOW, ["offline_only"])


def test_views_with_no_features_yet_are_skipped_or_refused(store: FeatureStore) -> None:
    # A feature set (POST /api/v1/feature-sets) is a view created before its features.
    empty = FeatureView(name="empty_set", entities=[customer], features=[], source=activity_src)
    store.apply(store.plan([empty]))
    assert [r.view for r in store.materialize_incremental(NOW)] == ["activity"]
    assert [r.view for r in store.materialize(FAR, NOW)] == ["activity"]
    with pytest.raises(InvalidError, match="'empty_set' has no features yet"):
        store.materialize(FAR, NOW, ["empty_set"])


def test_bad_input_writes_nothing(store: FeatureStore) -> None:
    with pytest.raises(NotFoundError, match=r"feature view 'activty' does not exist.*'activity'"):
        store.materialize(FAR, NOW, ["activity", "activty"])
    with pytest.raises(InvalidError, match="must be before end"):
        store.materialize(NOW, FAR)
    with pytest.raises(InvalidError, match="start 'last week' is not a time"):
        store.materialize("last week", NOW)
    with pytest.raises(NotFoundError):
        store.materialize_incremental(NOW, ["nope"])
    assert list_runs(store.registry) == []
    assert set(snapshot(store, 5)["statuses"]["clicks"]) == {"not_found"}


def test_a_failing_source_records_a_failed_run(store: FeatureStore) -> None:
    (store.repo_path / "data" / "activity.parquet").unlink()
    with pytest.raises(NotFoundError):
        store.materialize(FAR, NOW)
    (run,) = list_runs(store.registry)
    assert run.status == "failed" and run.error and run.finished_at is not None
    assert get_watermark(store.registry, "activity") is None


def test_incremental_resumes_after_a_failure_half_way(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(materialize_module, "BATCH_ROWS", 40)
    end0 = NOW - timedelta(days=4)
    store.materialize_incremental(end0)

    class FailAfterTwoBatches:
        batches = 0
        rows = 0

        def rows_written(self, view: str, rows: int) -> None:
            self.batches += 1
            self.rows += rows
            if self.batches == 2:
                raise RuntimeError("injected failure")

    end = NOW + timedelta(seconds=1)
    progress = FailAfterTwoBatches()
    with pytest.raises(BackendError, match=r"after \d+ rows: RuntimeError: injected failure"):
        store.materialize_incremental(end, progress=progress)
    failed = list_runs(store.registry, limit=1)[0]
    assert (failed.status, failed.rows_written, failed.start) == ("failed", progress.rows, end0)
    assert 0 < progress.rows <= 80
    assert "injected failure" in (failed.error or "")
    assert get_watermark(store.registry, "activity") == end0  # not moved by the failed run
    (resumed,) = store.materialize_incremental(end)
    assert resumed.start == end0 and resumed.status == "succeeded"
    report = validate_consistency(store, "activity", sample=None)
    assert report.ok, report.to_dict()


@pytest.mark.slow
def test_incremental_resumes_after_the_process_is_killed(
    online: dict[str, Any], tmp_path: Path
) -> None:
    keys = 5_000 if online["type"] == "dynamodb" else 20_000  # moto takes ~10 ms a put
    store = make_store(tmp_path / "repo", online, activity_rows(keys, per_key=2))
    end = (NOW + timedelta(seconds=1)).isoformat()
    script = (
        "import sys, time\n"
        "import quiver.materialize as m\n"
        "from quiver import FeatureStore\n"
        "m.BATCH_ROWS = 500\n"
        "class Slow:\n"
        "    def rows_written(self, view, rows):\n"
        "        print('batch', flush=True)\n"
        "        time.sleep(0.05)\n"
        "FeatureStore(sys.argv[1]).materialize_incremental(sys.argv[2], progress=Slow())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(store.repo_path), end],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(3):  # three batches written: the run is mid-way
            assert proc.stdout is not None and proc.stdout.readline() == "batch\n"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (killed,) = list_runs(store.registry)
    assert killed.status == "running"
    assert 0 < _stored_rows(store) < keys
    (resumed,) = store.materialize_incremental(end)
    assert resumed.status == "succeeded" and resumed.start == killed.start
    runs = {r.run_id: r for r in list_runs(store.registry)}
    assert runs[killed.run_id].status == "failed"
    assert "interrupted" in (runs[killed.run_id].error or "")
    end_dt = datetime.fromisoformat(end)
    latest = latest_oracle(activity_rows(keys, per_key=2), end_dt).values()
    # The first incremental run starts one TTL before its end: older rows would be expired.
    assert _stored_rows(store) == sum(r["ts"] >= end_dt - timedelta(days=10) for r in latest)
    report = validate_consistency(store, "activity", sample=2000)
    assert report.ok, report.to_dict()
    store.close()


def _stored_rows(store: FeatureStore) -> int:
    if store.config.online_store.type == "sqlite":
        path = store.config.resolve(store.config.online_store.path)  # type: ignore[union-attr]
        with sqlite3.connect(path) as conn:
            (table,) = conn.execute(
                "SELECT name FROM sqlite_master WHERE name LIKE 'acme__activity__%'"
            ).fetchone()
            return int(conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
    if store.config.online_store.type == "dynamodb":
        online = store.online_store
        pages = online.client.get_paginator("scan").paginate(
            TableName=f"{online.table_prefix}acme.activity", Select="COUNT"
        )
        return sum(int(page["Count"]) for page in pages)
    return int(store.online_store.client.dbsize())


def test_pandas_nanosecond_sources_materialize(online: dict[str, Any], tmp_path: Path) -> None:
    base = pd.Timestamp(NOW) - pd.Timedelta(days=1)
    frame = pd.DataFrame(
        {
            "customer_id": [1, 1, 2, 3],
            "ts": [
                base + pd.Timedelta(nanoseconds=1_001),  # sub-microsecond digits
                base + pd.Timedelta(hours=1, nanoseconds=999),
                (base + pd.Timedelta(hours=2)).tz_convert("Europe/Paris"),  # another zone
                base,
            ],
            "created": [base] * 4,
            "n_clicks": [1, 2, 3, 4],
            "score": [0.5, 1.5, np.nan, 3.5],
            "label": ["a", "b", None, "d"],
        }
    )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    assert str(frame["ts"].dtype) == "datetime64[ns, UTC]"
    root = tmp_path / "repo"
    store = make_store(root, online, activity_rows(1))
    frame.to_parquet(root / "data" / "activity.parquet")  # pandas writes nanoseconds
    store.materialize(FAR, NOW)
    res = store.get_online_features(["activity:*"], [{"customer_id": i} for i in (1, 2, 3)])
    assert res.to_dict() == {
        "customer_id": [1, 2, 3],
        "clicks": [2, 3, 4],
        "score": [1.5, None, 3.5],
        "label": ["b", None, "d"],
    }
    assert res.event_timestamps["clicks"] == [
        (base + pd.Timedelta(hours=1)).to_pydatetime(),
        (base + pd.Timedelta(hours=2)).to_pydatetime(),
        base.to_pydatetime(),
    ]
    assert validate_consistency(store, "activity", sample=None).ok
    store.close()


# -- consistency -------------------------------------------------------------------------------


def test_consistency_reports_skew(store: FeatureStore) -> None:
    with pytest.raises(InvalidError, match="has not been materialized"):
        validate_consistency(store, "activity")
    with pytest.raises(NotFoundError, match="did you mean 'activity'"):
        validate_consistency(store, "activiti")
    end = NOW - timedelta(hours=1)
    store.materialize_incremental(end)
    assert validate_consistency(store, "activity", sample=50).ok
    # A value pushed online only, older than the watermark: training never sees it.
    row = {"customer_id": 1, "clicks": -1, "score": 0.0, "label": "skew"}
    store.push("activity", [{**row, "event_timestamp": end - timedelta(microseconds=2)}])
    # A value pushed after the watermark is not compared.
    store.push("activity", [{**row, "customer_id": 2, "event_timestamp": NOW}])
    report = validate_consistency(store, "activity", sample=None)
    assert not report.ok
    assert report.keys_mismatched == 1 and report.newer_online == 1
    assert {m.feature for m in report.mismatches} == {"clicks", "score", "label"}
    assert report.mismatches[0].key == {"customer_id": 1}
    assert report.to_dict()["mismatch_count"] == 3


@st.composite
def _histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], int | None, list[int]]:
    """Source rows over ~40 days for a few keys (with ties), a TTL, incremental end points."""
    n = draw(st.integers(0, 25))
    rows = []
    for i in range(n):
        day = draw(st.integers(0, 40))
        rows.append(
            {
                "customer_id": draw(st.integers(1, 6)),
                "day": day,
                "created": draw(st.none() | st.integers(0, 2)),
                "n_clicks": i,  # unique: a value names its row
            }
        )
    ttl = draw(st.none() | st.integers(1, 15))
    ends = sorted(set(draw(st.lists(st.integers(1, 45), min_size=1, max_size=3))))
    return rows, ttl, ends


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=_histories())
def test_online_equals_offline_point_in_time_at_the_watermark(
    store: FeatureStore, case: tuple
) -> None:
    rows, ttl_days, ends = case
    t0 = NOW - timedelta(days=60)
    name = f"v{uuid.uuid4().hex[:8]}"
    path = store.repo_path / "data" / f"{name}.parquet"
    # Break exact (ts, created) ties between different rows of a key: they are ambiguous.
    seen: set[tuple] = set()
    clean = []
    for r in rows:
        rank = (r["customer_id"], r["day"], r["created"])
        if rank not in seen:
            seen.add(rank)
            clean.append(r)
    ts = [t0 + timedelta(days=r["day"]) for r in clean]
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([r["customer_id"] for r in clean], pa.int64()),
                "ts": pa.array(ts, type=TS),
                "created": pa.array(
                    [
                        None if r["created"] is None else t0 + timedelta(hours=r["created"])
                        for r in clean
                    ],
                    type=TS,
                ),
                "n_clicks": pa.array([r["n_clicks"] for r in clean], pa.int64()),
                "score": pa.array([float(r["n_clicks"]) for r in clean], pa.float64()),
                "label": pa.array([str(r["n_clicks"]) for r in clean], pa.string()),
            }
        ),
        path,
    )
    source = activity_src.model_copy(update={"name": f"{name}_src", "path": str(path)})
    view = activity.model_copy(
        update={
            "name": name,
            "source": source.name,
            "ttl": None if ttl_days is None else timedelta(days=ttl_days),
        }
    )
    store.apply([source, view])
    for end_day in ends:
        store.materialize_incremental(t0 + timedelta(days=end_day), [name])
    report = validate_consistency(store, name, sample=None)
    assert report.ok, report.to_dict()
    # And against a brute-force oracle of the point-in-time rule at the watermark.
    watermark = t0 + timedelta(days=ends[-1])
    expected: dict[int, tuple[datetime, int] | None] = {}
    for cid in range(1, 7):
        candidates = [
            (t, r["created"] if r["created"] is not None else -1, r["n_clicks"])
            for r, t in zip(clean, ts, strict=True)
            if r["customer_id"] == cid
            and t < watermark
            and (ttl_days is None or t >= watermark - timedelta(days=ttl_days))
        ]
        best = max(candidates) if candidates else None
        expected[cid] = None if best is None else (best[0], best[2])
    request = _request(store, name, [(cid,) for cid in range(1, 7)])
    (raw,) = store.online_store.read([request])
    cutoff = watermark - timedelta(days=ttl_days) if ttl_days is not None else None
    retention = store.online_store.retention_us(request.layout)
    now_us = datetime_to_us(datetime.now(UTC))
    for cid, row in zip(range(1, 7), raw, strict=True):
        want = expected[cid]
        if (
            want is not None
            and retention is not None
            and datetime_to_us(want[0]) + retention <= now_us
        ):
            assert row is None  # Redis already reclaimed the (now stale) key
            continue
        fresh = row is not None and (cutoff is None or row[0] >= datetime_to_us(cutoff))
        assert (row[2] if fresh else None) == (want[1] if want else None), (cid, row, want)


def _request(store: FeatureStore, view: str, keys: list[tuple]) -> Any:
    from quiver.online import ReadRequest
    from quiver.online.encoding import ViewLayout

    fv = store.get_feature_view(view)
    layout = ViewLayout.from_view(store.project, fv, [customer])
    return ReadRequest(layout, (0,), [[k[0] for k in keys]])


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_commands(store: FeatureStore) -> None:
    from quiver.cli import app

    runner = CliRunner()
    repo = ["--repo", str(store.repo_path)]
    result = runner.invoke(app, ["materialize", "2000-01-01", NOW.isoformat(), *repo])
    assert result.exit_code == 0, result.output
    assert "Materialized 1 view, 300 rows" in result.stdout
    result = runner.invoke(app, ["materialize-incremental", "now", "--views", "activity", *repo])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["materialize-incremental", "now", "--json", *repo])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["runs"][0]["status"] == "succeeded"
    result = runner.invoke(app, ["validate-consistency", "activity", "--sample", "0", *repo])
    assert result.exit_code == 0, result.output
    assert "0 mismatches" in result.stdout
    result = runner.invoke(
        app,
        ["get-online", "-f", "activity:clicks,activity:label", "-e", "customer_id=1",
         "-e", "customer_id=999", "--json", *repo],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["customer_id"] == [1, 999]
    assert payload["statuses"]["clicks"][1] == "not_found"
    result = runner.invoke(
        app, ["get-online", "-f", "activity:clicks", "-e", "customer_id=1", *repo]
    )
    assert result.exit_code == 0 and "customer_id" in result.stdout
    result = runner.invoke(app, ["materialization-runs", "--json", *repo])
    assert len(json.loads(result.stdout)["runs"]) == 3
    store.push("activity", [{"customer_id": 1, "clicks": -5, "score": 0.0, "label": "x",
                             "event_timestamp": NOW - timedelta(days=1)}])  # fmt: skip
    result = runner.invoke(app, ["validate-consistency", "activity", "-n", "0", *repo])
    assert result.exit_code == 1 and "mismatches" in result.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    store = make_store(tmp_path / "repo", {"type": "sqlite"}, activity_rows(3))
    env = {**os.environ, "QUIVER_REPO": str(store.repo_path)}
    result = subprocess.run(
        [sys.executable, "-m", "quiver", "materialize", "tomorrow", "now"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: start 'tomorrow' is not a time; use ISO 8601 such as 2024-01-31 or "
        "2024-01-31T12:00:00Z, or 'now'"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "quiver",
            "get-online",
            "-f",
            "activity:clicks",
            "-e",
            "customer_id=x",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 1 and "join key 'customer_id' must be int64" in result.stderr


def test_apply_makes_the_dynamodb_tables_and_says_when_it_cannot(
    dynamodb_settings: dict[str, Any], tmp_path: Path
) -> None:
    """``apply`` creates a table per online view (not for offline-only views); when DynamoDB
    cannot be reached, the definitions are still applied and the error says so."""
    store = make_store(tmp_path / "repo", dynamodb_settings, activity_rows(5))
    pages = store.online_store.client.get_paginator("list_tables").paginate()
    names = [name for page in pages for name in page["TableNames"]]
    prefix = dynamodb_settings["table_prefix"]
    assert sorted(n for n in names if n.startswith(prefix)) == [f"{prefix}acme.activity"]
    store.close()

    from _servers import free_port

    dead = {**dynamodb_settings, "endpoint_url": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(BackendError, match="definitions were applied, but the online store"):
        make_store(tmp_path / "dead", dead, activity_rows(5))
    with FeatureStore(tmp_path / "dead") as again:
        assert again.get_feature_view("activity").online
