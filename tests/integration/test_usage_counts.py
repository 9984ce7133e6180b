"""Usage counts (quiver.monitoring.usage): in-memory counts added to the registry by flushes,
on SQLite and on a real PostgreSQL (migration 0008), by several recorders (workers) at once."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from quiver.errors import BackendError, InvalidError
from quiver.monitoring.usage import UsageRecorder, usage_report
from quiver.registry import Registry

SERVICE = (("feature_service", "svc"), ("feature_view", "v"), ("feature", "v:a"))
MODEL = (("model", "churn"),)


def _check(url: str) -> None:
    registry = Registry(url, "proj")
    try:
        assert "usage_counts" in set(sa.inspect(registry.engine).get_table_names())
        workers = [UsageRecorder(url, "proj") for _ in range(3)]

        def serve(recorder: UsageRecorder) -> None:
            for i in range(200):
                recorder.record(SERVICE, 2)
                if i % 4 == 0:
                    recorder.record(MODEL, 1)
                if i % 50 == 0:
                    recorder.flush()

        threads = [threading.Thread(target=serve, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for w in workers:
            w.close()  # the last flush
        today = datetime.now(UTC).date()
        got = {(r.kind, r.name): (r.requests, r.rows) for r in usage_report(registry)}
        assert got == {
            ("feature_service", "svc"): (600, 1200),
            ("feature_view", "v"): (600, 1200),
            ("feature", "v:a"): (600, 1200),
            ("model", "churn"): (150, 150),
        }
        assert usage_report(registry, today, today, kind="model")[0].requests == 150
        assert usage_report(registry, date(2000, 1, 1), date(2000, 1, 2)) == []
        with pytest.raises(InvalidError):
            usage_report(registry, today, date(2000, 1, 1))
        with pytest.raises(InvalidError):
            usage_report(registry, kind="nope")
    finally:
        registry.close()


def test_usage_counts_on_sqlite(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'registry.db'}")


def test_usage_counts_on_postgres(postgres_url: str) -> None:
    _check(postgres_url)


def test_a_failed_flush_keeps_the_counts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    Registry(url, "proj").close()  # migrated
    recorder = UsageRecorder(url, "proj")
    recorder.record(MODEL, 3)
    good = recorder.engine
    recorder._engine = sa.create_engine(f"sqlite:///{tmp_path / 'missing' / 'x.db'}")
    with pytest.raises(BackendError):
        recorder.flush()
    recorder.record(MODEL, 1)
    assert recorder.pending() == {(datetime.now(UTC).date(), "model", "churn"): (2, 4)}
    recorder._engine = good
    assert recorder.flush() == 1
    registry = Registry(url, "proj")
    assert [(r.requests, r.rows) for r in usage_report(registry)] == [(2, 4)]
    registry.close()
    recorder.close()
