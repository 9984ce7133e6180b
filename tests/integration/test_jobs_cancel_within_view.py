"""A cancelled materialization job stops within a view, and leaves each view all old or all new.

On SQLite, Redis and DynamoDB (moto on loopback): a cancel while the view's rows are read
leaves the store untouched; a cancel while they are written rolls the write back on SQLite and
lets it finish on Redis and DynamoDB (which cannot roll back); while the pool stops, a Redis or
DynamoDB write begins only if the write speed measured says it fits in the grace period left.

The cancel is asked for at an exact point of the run: when the job reports that point as its
progress (the real :meth:`JobPool.cancel`, through the registry).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import quiver.materialize as materialize_module
from quiver import Aggregation, Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.jobs import records
from quiver.jobs.pool import JobPool, materialize_work
from quiver.registry.runs import list_runs
from quiver.types import arrow_type

T0 = datetime(2024, 3, 1, tzinfo=UTC)
OLD, NEW = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
KEYS = {"sqlite": 6_000, "redis": 6_000, "dynamodb": 900}  # moto's conditional puts are slow
CHUNK = 300  # rows per write batch here: a view is written in several batches

customer = Entity(name="customer", join_keys=["customer_id"])
src = FileSource(name="src", path="data/events.parquet", timestamp_field="ts")
views = [
    FeatureView(
        name=name, entities=[customer], features=[Field(name="clicks", dtype="int64")], source=src
    )
    for name in ("first", "second")
]


def events(keys: int) -> pa.Table:
    """Every key has an old row (clicks 1) and a new one (clicks 2)."""
    ids = np.tile(np.arange(1, keys + 1), 2)
    ts = pa.array([OLD] * keys + [NEW] * keys, type=arrow_type("timestamp"))
    return pa.table({"customer_id": ids, "ts": ts, "clicks": np.repeat([1, 2], keys)})


@pytest.fixture(params=["sqlite", "redis", "dynamodb"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FeatureStore]:
    online: dict[str, Any] = {"type": "sqlite", "path": "data/online.db"}
    if request.param == "redis":
        online = {"type": "redis", "url": request.getfixturevalue("redis_url")}
    elif request.param == "dynamodb":
        online = request.getfixturevalue("dynamodb_settings")
    (tmp_path / "data").mkdir()
    config = {"project": "acme", "definitions": [], "online_store": online}
    (tmp_path / "quiver.yaml").write_text(yaml.safe_dump(config))
    pq.write_table(events(KEYS[request.param]), tmp_path / "data" / "events.parquet")
    monkeypatch.setattr(materialize_module, "BATCH_ROWS", CHUNK)
    monkeypatch.setattr(materialize_module, "_seconds_per_row", {})
    s = FeatureStore(tmp_path)
    s.apply([customer, src, *views])
    s.materialize(T0, OLD + timedelta(minutes=1))  # every key holds its old row
    yield s
    s.close()


def values(store: FeatureStore, view: str) -> set[Any]:
    keys = KEYS[store.config.online_store.type]
    rows = [{"customer_id": i} for i in range(1, keys + 1)]
    return set(store.get_online_features([f"{view}:clicks"], rows).to_dict()["clicks"])


def run_job(
    store: FeatureStore,
    monkeypatch: pytest.MonkeyPatch,
    when: Callable[[dict[str, Any]], bool],
    act: Callable[[JobPool, str], None],
    views: tuple[str, ...] = ("first", "second"),
) -> records.JobRecord:
    """Materialize both views to the new rows as a job; ``act`` at the first progress that
    ``when`` matches; the job's final record."""
    pool = JobPool(store, workers=1)
    real = records.update_progress
    job_id: list[str] = []
    acted = threading.Event()

    def update_progress(registry: Any, jid: str, progress: dict[str, Any]) -> bool:
        if not acted.is_set() and when(progress):
            acted.set()
            act(pool, jid)
        return real(registry, jid, progress)

    monkeypatch.setattr(records, "update_progress", update_progress)
    try:
        work = materialize_work(
            store,
            views=list(views),
            start=T0,
            end=NEW + timedelta(minutes=1),
            incremental=False,
        )
        job_id.append(pool.submit("materialize", {}, work).job_id)
        assert pool.wait_idle(120)
        assert acted.is_set()
    finally:
        pool.close(grace=5)
    return records.get_job(store.registry, job_id[0])


def in_first(phase: str) -> Callable[[dict[str, Any]], bool]:
    def match(progress: dict[str, Any]) -> bool:
        done = progress.get(f"view_rows_{'read' if phase == 'reading' else 'written'}", 0)
        return progress.get("view") == "first" and progress.get("phase") == phase and done > 0

    return match


def cancel(pool: JobPool, job_id: str) -> None:
    pool.cancel(job_id)


def test_a_cancel_while_a_view_is_read_leaves_it_untouched(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = run_job(store, monkeypatch, in_first("reading"), cancel)
    assert job.status == "cancelled", job
    assert values(store, "first") == {1}
    assert values(store, "second") == {1}
    (run, *_) = list_runs(store.registry, view="first")
    assert run.status == "failed" and "cancelled" in (run.error or "")


def test_a_cancel_while_a_view_is_written_leaves_it_all_old_or_all_new(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = run_job(store, monkeypatch, in_first("writing"), cancel)
    assert job.status == "cancelled", job
    rolled_back = store.config.online_store.type == "sqlite"
    assert values(store, "first") == ({1} if rolled_back else {2})
    assert values(store, "second") == {1}  # never begun


def test_stopping_begins_a_write_only_if_it_fits_in_the_grace_left(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stop(pool: JobPool, job_id: str) -> None:  # the grace period starts while reading
        threading.Thread(target=pool.close, kwargs={"grace": 60}, daemon=True).start()
        while pool._deadline is None:
            pass

    job = run_job(store, monkeypatch, in_first("reading"), stop)
    if store.config.online_store.type == "sqlite":  # a write that can be rolled back begins
        assert job.status == "succeeded", job
        assert values(store, "first") == values(store, "second") == {2}
        return
    # No write speed measured yet in this process: the write does not begin.
    assert job.status == "cancelled" and "would not end within" in (job.error or ""), job
    assert values(store, "first") == values(store, "second") == {1}
    # Measured now (a job's write); a write that fits then begins, and is finished.
    done = run_job(store, monkeypatch, lambda p: True, lambda pool, jid: None)
    assert done.status == "succeeded"
    assert materialize_module._seconds_per_row
    store.materialize(T0, OLD + timedelta(minutes=1))
    job = run_job(store, monkeypatch, in_first("reading"), stop)
    assert job.status == "succeeded", job
    assert values(store, "first") == values(store, "second") == {2}


# Windowed aggregations: sums over a window wide enough to be read today. Tile writes merge into
# the stored state (never rolled back), so the tiles are held like rows and written only under
# the rule for stores that cannot roll back.
totals = FeatureView(
    name="totals",
    entities=[customer],
    schema=[Field(name="clicks", dtype="int64")],
    source=src,
    aggregations=[Aggregation(column="clicks", function="sum", time_window=timedelta(days=9000))],
    aggregation_interval=timedelta(hours=1),
)


def sums(store: FeatureStore) -> set[Any]:
    keys = KEYS[store.config.online_store.type]
    rows = [{"customer_id": i} for i in range(1, keys + 1)]
    return set(
        store.get_online_features(["totals:clicks_sum_9000d"], rows).to_dict()["clicks_sum_9000d"]
    )


def reading(view: str) -> Callable[[dict[str, Any]], bool]:
    def match(progress: dict[str, Any]) -> bool:
        return progress.get("view") == view and progress.get("view_rows_read", 0) > 0

    return match


@pytest.fixture
def with_totals(store: FeatureStore) -> FeatureStore:
    store.apply([totals])
    store.materialize(T0, OLD + timedelta(minutes=1), views=["totals"])  # the old rows: sum 1
    assert sums(store) == {1}
    return store


def test_a_cancel_while_tiles_are_read_leaves_them_untouched(
    with_totals: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = run_job(with_totals, monkeypatch, reading("totals"), cancel, views=("totals", "first"))
    assert job.status == "cancelled", job
    assert sums(with_totals) == {1}
    assert values(with_totals, "first") == {1}


def test_stopping_begins_a_tile_write_only_if_it_fits(
    with_totals: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stop(pool: JobPool, job_id: str) -> None:
        threading.Thread(target=pool.close, kwargs={"grace": 60}, daemon=True).start()
        while pool._deadline is None:
            pass

    job = run_job(with_totals, monkeypatch, reading("totals"), stop, views=("totals",))
    assert job.status == "cancelled" and "would not end within" in (job.error or ""), job
    assert sums(with_totals) == {1}
    # Measured by a job's tile write; then a write that fits begins and is finished.
    done = run_job(with_totals, monkeypatch, lambda p: True, lambda pool, jid: None, ("totals",))
    assert done.status == "succeeded"
    assert sums(with_totals) == {3}
    with_totals.materialize(T0, OLD + timedelta(minutes=1), views=["totals"])
    assert sums(with_totals) == {1}
    job = run_job(with_totals, monkeypatch, reading("totals"), stop, views=("totals",))
    assert job.status == "succeeded", job
    assert sums(with_totals) == {3}
