"""Migration 0002 and the materialization run records on a real PostgreSQL registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from quiver.registry import Registry
from quiver.registry.runs import finish_run, get_watermark, last_run_per_view, list_runs, start_run

T0 = datetime(2024, 1, 1, 12, 30, 15, 123456, tzinfo=UTC)


def test_runs_and_watermarks_on_postgres(postgres_url: str) -> None:
    registry = Registry(postgres_url, "proj")
    try:
        tables = set(sa.inspect(registry.engine).get_table_names())
        assert {"materialization_runs", "materialization_watermarks"} <= tables
        run = start_run(registry, "v", T0 - timedelta(days=1), T0, "s1")
        done = finish_run(registry, run, rows_written=3, duration_seconds=0.25)
        assert done.status == "succeeded"
        assert get_watermark(registry, "v", schema_version="s1") == T0  # microseconds kept
        (stored,) = list_runs(registry)
        assert (stored.start, stored.end, stored.rows_written) == (T0 - timedelta(days=1), T0, 3)
        assert last_run_per_view(registry)["v"].run_id == run.run_id
        # A second registry object (another process, say) sees the same records.
        again = Registry(postgres_url, "proj")
        assert get_watermark(again, "v") == T0
        again.close()
    finally:
        registry.close()
