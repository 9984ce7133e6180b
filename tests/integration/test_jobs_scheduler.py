"""Background jobs and the scheduler on a real registry (SQLite; PostgreSQL for two schedulers).

Time is a controllable clock given to the scheduler; jobs run in a real :class:`JobPool`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import quiver.materialize as materialize_module
from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.errors import ConflictError, InvalidError
from quiver.jobs import records
from quiver.jobs.pool import JobPool, materialize_work
from quiver.jobs.scheduler import Scheduler, last_fire, list_schedules, next_fire
from quiver.registry.runs import get_watermark, list_runs, online_store_key
from quiver.types import arrow_type

TS = arrow_type("timestamp")
T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
KEYS = 50

customer = Entity(name="customer", join_keys=["customer_id"])
src = FileSource(name="src", path="data/events.parquet", timestamp_field="ts")


def view(name: str, schedule: str | None = "* * * * *", tz: str = "UTC") -> FeatureView:
    return FeatureView(
        name=name,
        entities=[customer],
        features=[Field(name="clicks", dtype="int64")],
        source=src,
        materialization_schedule=schedule,
        schedule_timezone=tz,
    )


def events(start: datetime, minutes: int) -> pa.Table:
    """One row per key per minute from ``start``; clicks = minute index."""
    ids = np.tile(np.arange(1, KEYS + 1), minutes)
    minute = np.repeat(np.arange(minutes), KEYS)
    ts = [start + timedelta(minutes=int(m), seconds=30) for m in minute]
    return pa.table({"customer_id": ids, "ts": pa.array(ts, type=TS), "clicks": minute})


def make_store(root: Path, registry: str, online: str = "data/online.db") -> FeatureStore:
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = {
        "project": "acme",
        "definitions": [],
        "registry": {"url": registry},
        "online_store": {"type": "sqlite", "path": online},
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    if not (root / "data" / "events.parquet").exists():
        pq.write_table(events(T0 - timedelta(minutes=30), 90), root / "data" / "events.parquet")
    return FeatureStore(root)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    s = make_store(tmp_path / "repo", "sqlite:///data/registry.db")
    s.apply([customer, src, view("fresh")])
    yield s
    s.close()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def clicks(store: FeatureStore, name: str) -> list[Any]:
    res = store.get_online_features(
        [f"{name}:clicks"], [{"customer_id": i} for i in range(1, KEYS + 1)]
    )
    return list(res.to_dict()["clicks"])


def test_fire_times_in_a_time_zone() -> None:
    now = datetime(2024, 7, 1, 5, 30, tzinfo=UTC)  # 07:30 in Paris (UTC+2 in summer)
    assert last_fire("0 7 * * *", "Europe/Paris", now) == datetime(2024, 7, 1, 5, 0, tzinfo=UTC)
    assert next_fire("0 7 * * *", "Europe/Paris", now) == datetime(2024, 7, 2, 5, 0, tzinfo=UTC)
    assert last_fire("* * * * *", "UTC", T0) == T0  # a fire time exactly now is due


def test_definition_refuses_bad_schedules() -> None:
    with pytest.raises(InvalidError, match=r"'v'.*materialization_schedule"):
        view("v", schedule="every day")
    with pytest.raises(InvalidError, match=r"'v'.*schedule_timezone"):
        view("v", tz="Mars/Olympus")


def test_every_minute_schedule_fires_once_per_minute_and_catches_up_once(
    store: FeatureStore,
) -> None:
    clock = Clock(T0 + timedelta(seconds=5))
    pool = JobPool(store, workers=2)
    scheduler = Scheduler(store, pool, clock=clock, lease_seconds=60)
    try:
        assert len(scheduler.tick()) == 1  # never run: the latest fire is due now
        assert pool.wait_idle(60)
        assert scheduler.tick() == []  # the same minute
        clock.now = T0 + timedelta(seconds=59)
        assert scheduler.tick() == []
        clock.now = T0 + timedelta(minutes=1)
        (job_id,) = scheduler.tick()
        assert pool.wait_idle(60)
        job = records.get_job(store.registry, job_id)
        assert (job.status, job.kind, job.schedule, job.created_by) == (
            "succeeded",
            "materialize",
            "fresh",
            "scheduler",
        )
        key = online_store_key(store.config)
        assert get_watermark(store.registry, "fresh", online_store=key) == T0 + timedelta(minutes=1)
        # Downtime of ten minutes: one catch-up run, up to the latest fire.
        clock.now = T0 + timedelta(minutes=11, seconds=20)
        assert len(scheduler.tick()) == 1
        assert pool.wait_idle(60)
        assert scheduler.tick() == []
        assert get_watermark(store.registry, "fresh", online_store=key) == T0 + timedelta(
            minutes=11
        )
        # The online store holds the latest minute before the watermark (minute index 40).
        assert clicks(store, "fresh") == [40] * KEYS
        runs = list_runs(store.registry, view="fresh")
        assert len(runs) == 3 and all(r.job_id for r in runs)
        (sched,) = list_schedules(store, now=clock.now)
        assert sched.view == "fresh" and sched.next_run == T0 + timedelta(minutes=12)
        assert sched.last_fire == T0 + timedelta(minutes=11)
        assert sched.last_job is not None and sched.last_job["status"] == "succeeded"
        assert sched.holder is None  # given back when the job ended
    finally:
        pool.close(grace=5)


def test_a_dead_lease_holder_blocks_only_until_the_lease_expires(store: FeatureStore) -> None:
    # Another scheduler took the lease of the 12:00 fire, then died (it never renews it).
    assert records.take_lease(store.registry, "fresh", T0, "dead-host:1:x", T0, 120)
    clock = Clock(T0 + timedelta(minutes=1))
    pool = JobPool(store, workers=1)
    scheduler = Scheduler(store, pool, clock=clock, lease_seconds=120)
    try:
        assert scheduler.tick() == []  # 12:01 is due, but the lease is held
        clock.now = T0 + timedelta(seconds=119)
        assert scheduler.tick() == []
        clock.now = T0 + timedelta(seconds=121)  # expired
        assert len(scheduler.tick()) == 1
        assert pool.wait_idle(60)
        assert records.lease_state(store.registry)["fresh"]["last_fire"] == T0 + timedelta(
            minutes=2
        )
    finally:
        pool.close(grace=5)


def test_two_schedulers_on_postgres_run_each_fire_exactly_once(
    postgres_url: str, tmp_path: Path
) -> None:
    first = make_store(tmp_path / "repo", postgres_url)
    first.apply([customer, src, view("fresh"), view("hourly", "0 * * * *")])
    second = make_store(tmp_path / "repo", postgres_url)
    clock = Clock(T0 + timedelta(seconds=1))
    pools = [JobPool(first, workers=2), JobPool(second, workers=2)]
    schedulers = [
        Scheduler(first, pools[0], clock=clock, lease_seconds=300, holder="a"),
        Scheduler(second, pools[1], clock=clock, lease_seconds=300, holder="b"),
    ]
    ticks = 25
    try:
        for _ in range(ticks):
            barrier = threading.Barrier(2)

            def tick(s: Scheduler, b: threading.Barrier = barrier) -> None:
                b.wait()
                s.tick()

            threads = [threading.Thread(target=tick, args=(s,)) for s in schedulers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert all(p.wait_idle(60) for p in pools)
            clock.now += timedelta(minutes=1)
        jobs = records.list_jobs(first.registry, limit=1000)
        fresh = [j for j in jobs if j.schedule == "fresh"]
        hourly = [j for j in jobs if j.schedule == "hourly"]
        assert len(fresh) == ticks
        assert len({j.params["end"] for j in fresh}) == ticks
        assert len(hourly) == 1  # 12:00 only: the next is 13:00
        assert all(j.status == "succeeded" for j in jobs)
        assert len(list_runs(first.registry, view="fresh", limit=1000)) == ticks
        hosts = {j.job_id: j for j in fresh}
        assert len(hosts) == ticks
    finally:
        for p in pools:
            p.close(grace=5)
        first.close()
        second.close()


def test_cancel_of_a_running_materialization_never_leaves_half_a_view(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.apply([customer, src, view("fresh"), view("second", None), view("third", None)])
    store.materialize(T0 - timedelta(minutes=30), T0 - timedelta(minutes=20))  # old values
    old = {name: clicks(store, name) for name in ("fresh", "second", "third")}
    assert old["second"] == [9] * KEYS

    first_done = threading.Event()
    go_on = threading.Event()
    real = materialize_module._run_view

    def run_view(*args: Any, **kwargs: Any) -> Any:
        run = real(*args, **kwargs)
        first_done.set()
        assert go_on.wait(30)
        return run

    monkeypatch.setattr(materialize_module, "_run_view", run_view)
    pool = JobPool(store, workers=1)
    try:
        work = materialize_work(
            store, views=["fresh", "second", "third"], start=None, end=T0, incremental=True
        )
        job = pool.submit("materialize", {"views": ["fresh", "second", "third"]}, work)
        assert first_done.wait(30)
        asked = pool.cancel(job.job_id)
        assert asked.status == "running" and asked.cancel_requested
        go_on.set()
        assert pool.wait_idle(60)
        done = records.get_job(store.registry, job.job_id)
        assert done.status == "cancelled"
        assert done.progress["views_done"] == 1
        assert clicks(store, "fresh") == [29] * KEYS  # fully new
        assert clicks(store, "second") == old["second"]  # fully old
        assert clicks(store, "third") == old["third"]
        with pytest.raises(ConflictError, match="already ended"):
            pool.cancel(job.job_id)
    finally:
        go_on.set()
        pool.close(grace=5)


def test_a_queued_job_cancelled_never_runs(store: FeatureStore) -> None:
    gate = threading.Event()
    pool = JobPool(store, workers=1)
    try:
        blocker = pool.submit("materialize", {}, lambda ctx: gate.wait(30))
        queued = pool.submit("materialize", {}, lambda ctx: pytest.fail("must not run"))
        assert pool.cancel(queued.job_id).status == "cancelled"
        gate.set()
        assert pool.wait_idle(30)
        assert records.get_job(store.registry, blocker.job_id).status == "succeeded"
        assert records.get_job(store.registry, queued.job_id).status == "cancelled"
        listed = records.list_jobs(store.registry, status=["cancelled"])
        assert [j.job_id for j in listed] == [queued.job_id]
    finally:
        gate.set()
        pool.close(grace=5)


def test_switching_online_stores_then_incremental_fills_the_new_store(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    a = make_store(root, "sqlite:///data/registry.db", "data/a.db")
    a.apply([customer, src, view("fresh", None)])
    assert a.materialize_incremental(T0)[0].rows_written == KEYS
    a.close()
    b = make_store(root, "sqlite:///data/registry.db", "data/b.db")
    try:
        (run,) = b.materialize_incremental(T0)
        assert run.rows_written == KEYS
        assert clicks(b, "fresh") == [29] * KEYS
        assert b.materialize_incremental(T0) == []  # now at the watermark of b
    finally:
        b.close()


def test_jobs_cli_lists_shows_and_cancels(store: FeatureStore) -> None:
    from typer.testing import CliRunner

    from quiver.cli import app

    job = records.create_job(store.registry, "materialize", {"views": ["fresh"]})
    repo = ["--repo", str(store.repo_path)]
    runner = CliRunner()
    result = runner.invoke(app, ["jobs", "cancel", job.job_id, *repo])
    assert result.exit_code == 0, result.output
    assert "cancelled" in result.output
    result = runner.invoke(app, ["jobs", "list", "--status", "cancelled", "--json", *repo])
    assert [j["job_id"] for j in json.loads(result.output)] == [job.job_id]
    result = runner.invoke(app, ["jobs", "show", job.job_id, "--json", *repo])
    assert json.loads(result.output)["error"] == "cancelled before it started"
    result = runner.invoke(app, ["jobs", "cancel", job.job_id, *repo])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConflictError)
    result = runner.invoke(app, ["jobs", "list", "--status", "done", *repo])
    assert isinstance(result.exception, InvalidError)
    result = runner.invoke(app, ["schedules", "list", "--json", *repo])
    (item,) = json.loads(result.output)
    assert (item["view"], item["cron"], item["last_fire"]) == ("fresh", "* * * * *", None)


def test_quiver_scheduler_runs_due_schedules_and_stops_on_sigterm(store: FeatureStore) -> None:
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-c", "from quiver.cli import main; main()"]
    process = subprocess.Popen(
        [*command, "scheduler", "--poll", "0.2", "--repo", str(store.repo_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60  # liveness bound
        done: list[records.JobRecord] = []
        while time.monotonic() < deadline and not done:
            done = records.list_jobs(store.registry, status=["succeeded"], schedule="fresh")
            time.sleep(0.2)
        assert len(done) == 1, process.stdout and process.stdout.read1()
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output
    assert "1 scheduled view" in output
    assert records.lease_state(store.registry)["fresh"]["holder"] is None
