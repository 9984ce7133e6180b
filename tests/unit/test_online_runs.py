"""Materialization runs and watermarks in the registry (SQLite registry file)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from quiver.registry import Registry
from quiver.registry.runs import (
    finish_run,
    get_watermark,
    last_run_per_view,
    list_runs,
    list_watermarks,
    start_run,
)
from quiver.registry.tables import materialization_runs

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(f"sqlite:///{tmp_path / 'registry.db'}", "proj")
    yield reg
    reg.close()


def test_a_run_moves_the_watermark_only_when_it_succeeds(registry: Registry) -> None:
    run = start_run(registry, "v", None, T0, "s1")
    assert (run.status, run.start, run.end) == ("running", None, T0)
    assert list_runs(registry)[0].status == "running"
    assert get_watermark(registry, "v") is None
    failed = finish_run(registry, run, rows_written=5, duration_seconds=0.5, error="boom")
    assert (failed.status, failed.error, failed.rows_written) == ("failed", "boom", 5)
    assert get_watermark(registry, "v") is None
    ok = finish_run(
        registry, start_run(registry, "v", T0, T0 + timedelta(days=1), "s1"),
        rows_written=7, duration_seconds=1.0,
    )  # fmt: skip
    assert ok.status == "succeeded" and ok.finished_at is not None
    assert get_watermark(registry, "v") == T0 + timedelta(days=1)
    stored = list_runs(registry, view="v")
    assert [r.status for r in stored] == ["succeeded", "failed"]
    assert stored[0].to_dict()["start"] == T0.isoformat()
    assert stored[0].start == T0 and stored[0].end.tzinfo is not None


def test_the_watermark_never_moves_back_but_follows_the_schema(registry: Registry) -> None:
    def succeed(end: datetime, version: str = "s1") -> None:
        finish_run(registry, start_run(registry, "v", None, end, version), rows_written=0,
                   duration_seconds=0.0)  # fmt: skip

    succeed(T0 + timedelta(days=5))
    succeed(T0 + timedelta(days=2))
    assert get_watermark(registry, "v") == T0 + timedelta(days=5)
    assert get_watermark(registry, "v", schema_version="s1") == T0 + timedelta(days=5)
    assert get_watermark(registry, "v", schema_version="s2") is None
    succeed(T0 + timedelta(days=1), "s2")  # a new schema starts its own watermark
    assert get_watermark(registry, "v", schema_version="s2") == T0 + timedelta(days=1)
    assert list_watermarks(registry) == {"v": T0 + timedelta(days=1)}


def test_listing_is_newest_first_and_per_view(registry: Registry) -> None:
    for view in ("a", "b", "a"):
        finish_run(registry, start_run(registry, view, None, T0, "s"), rows_written=1,
                   duration_seconds=0.1)  # fmt: skip
    runs = list_runs(registry)
    assert [r.view for r in runs] == ["a", "b", "a"]
    assert runs[0].started_at >= runs[1].started_at >= runs[2].started_at
    assert len(list_runs(registry, limit=2)) == 2
    assert [r.view for r in list_runs(registry, view="a")] == ["a", "a"]
    last = last_run_per_view(registry)
    assert set(last) == {"a", "b"} and last["a"].run_id == runs[0].run_id
    other = Registry(registry.url, "other_project")
    assert list_runs(other) == [] and last_run_per_view(other) == {}
    other.close()


def test_runs_of_dead_processes_are_marked_failed(registry: Registry) -> None:
    run = start_run(registry, "v", None, T0, "s")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    with registry.engine.begin() as conn:
        conn.execute(
            sa.update(materialization_runs)
            .where(materialization_runs.c.run_id == run.run_id)
            .values(pid=int(dead.stdout))
        )
    alive = start_run(registry, "other", None, T0, "s")  # another view: not touched
    start_run(registry, "v", None, T0, "s")
    runs = {r.run_id: r for r in list_runs(registry)}
    assert runs[run.run_id].status == "failed"
    assert "interrupted" in (runs[run.run_id].error or "")
    assert runs[alive.run_id].status == "running"


def test_watermarks_name_a_dynamodb_store_by_endpoint_or_region_and_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quiver.config import build_config
    from quiver.registry.runs import online_store_key

    def key(**online: str) -> str:
        config = build_config(
            {"repo_path": tmp_path, "online_store": {"type": "dynamodb", **online}}
        )
        return online_store_key(config)

    assert key(region="eu-west-1", table_prefix="prod.") == "dynamodb:eu-west-1/prod."
    assert key(endpoint_url="http://127.0.0.1:8000") == "dynamodb:http://127.0.0.1:8000/quiver."
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert key() == "dynamodb:us-west-2/quiver."
    assert key(access_key_id="AKIA", secret_access_key="s") == "dynamodb:us-west-2/quiver."
