"""Materialization runs and per-view watermarks, kept in the registry database.

Every run of :func:`quiver.materialize.materialize` records a row (``running`` when it starts,
``succeeded`` or ``failed`` when it ends). A successful run moves the view's *watermark* (the
end of the materialized time range, exclusive) forward; ``materialize-incremental`` resumes
from it. A watermark belongs to the view *and the online store* the run wrote to
(:func:`online_store_key`: after switching stores, the new one starts empty) and to the view's
online schema version: after a schema change the view has no watermark until it is
materialized again.

A run whose process died (e.g. killed) stays ``running`` until a process on the same host
notices the process is gone and marks it ``failed`` (the next run of the same view, and every
job pool or scheduler at start, :func:`reap_dead_runs`).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.registry.tables import materialization_runs as runs_table
from quiver.registry.tables import materialization_watermarks as marks_table

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from quiver.quality import ValidationCounts
    from quiver.registry import Registry

__all__ = [
    "MaterializationRun",
    "finish_run",
    "get_watermark",
    "last_run_per_view",
    "list_runs",
    "list_watermarks",
    "online_store_key",
    "reap_dead_runs",
    "start_run",
]

STATUSES = ("running", "succeeded", "failed")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class MaterializationRun:
    """One materialization of one feature view over ``[start, end)``.

    Attributes:
        run_id: A unique id (32 hex characters).
        view: The feature view.
        start: The range start (inclusive), ``None`` for "from the beginning".
        end: The range end (exclusive); the new watermark when the run succeeds.
        rows_written: Rows (entity keys) written to the online store.
        duration_seconds: Wall time of the run.
        status: ``running``, ``succeeded`` or ``failed``.
        error: What went wrong, for a failed run.
        started_at: When the run started (UTC).
        finished_at: When it ended (UTC), ``None`` while running.
        schema_version: The view's online schema version the run wrote.
        online_store: The online store written (:func:`online_store_key`).
        job_id: The background job the run belongs to, if any.
        rows_invalid: Rows failing the view's validation rules.
        rows_dropped: Rows left out by the ``drop`` policy.
        validation: The validation's counts (:meth:`ValidationCounts.to_dict`), ``None`` when
            the view has no rules.
    """

    run_id: str
    view: str
    start: datetime | None
    end: datetime
    rows_written: int
    duration_seconds: float
    status: str
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    schema_version: str = ""
    online_store: str = ""
    job_id: str | None = None
    rows_invalid: int = 0
    rows_dropped: int = 0
    validation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (timestamps in ISO 8601)."""
        return {
            "run_id": self.run_id,
            "view": self.view,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat(),
            "rows_written": self.rows_written,
            "duration_seconds": self.duration_seconds,
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "schema_version": self.schema_version,
            "online_store": self.online_store,
            "job_id": self.job_id,
            "rows_invalid": self.rows_invalid,
            "rows_dropped": self.rows_dropped,
            "validation": self.validation,
        }


def _from_row(row: Any) -> MaterializationRun:
    return MaterializationRun(
        run_id=row.run_id,
        view=row.view,
        start=_utc(row.start_ts),
        end=_utc(row.end_ts),  # type: ignore[arg-type]
        rows_written=int(row.rows_written),
        duration_seconds=float(row.duration_seconds),
        status=row.status,
        error=row.error,
        started_at=_utc(row.started_at),  # type: ignore[arg-type]
        finished_at=_utc(row.finished_at),
        schema_version=row.schema_version,
        online_store=row.online_store,
        job_id=row.job_id,
        rows_invalid=int(row.rows_invalid or 0),
        rows_dropped=int(row.rows_dropped or 0),
        validation=json.loads(row.validation) if row.validation else None,
    )


def _process_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def online_store_key(config: Any) -> str:
    """Which online store a config writes to, as watermarks record it (no credentials).

    ``sqlite:<absolute path>``, ``redis:<host:port/db>/<key prefix>`` or
    ``dynamodb:<endpoint or region>/<table prefix>``.
    """
    online = config.online_store
    if online.type == "sqlite":
        return f"sqlite:{config.resolve(online.path)}"
    if online.type == "dynamodb":
        where = (
            online.endpoint_url
            or online.region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or ""
        )
        return f"dynamodb:{where}/{online.table_prefix}"[:255]
    from urllib.parse import urlsplit

    url = urlsplit(online.url)
    where = f"{url.hostname or ''}:{url.port or ''}{url.path or ''}"
    return f"redis:{where}/{online.key_prefix}"[:255]


def reap_dead_runs(registry: Registry) -> None:
    """Mark every ``running`` run whose process on this host is gone as failed."""
    with registry.writing("materialization runs") as conn:
        _reap(conn, registry, None, datetime.now(UTC))


def _reap(conn: Connection, registry: Registry, view: str | None, now: datetime) -> None:
    """Mark ``running`` runs (of ``view``, or all) whose process on this host is gone failed."""
    host = socket.gethostname()
    query = sa.select(runs_table.c.run_id, runs_table.c.pid, runs_table.c.started_at).where(
        runs_table.c.project == registry.project,
        runs_table.c.status == "running",
        runs_table.c.host == host,
    )
    if view is not None:
        query = query.where(runs_table.c.view == view)
    rows = conn.execute(query).all()
    for row in rows:
        if row.pid is not None and _process_gone(int(row.pid)):
            started = _utc(row.started_at) or now
            conn.execute(
                runs_table.update()
                .where(runs_table.c.run_id == row.run_id)
                .values(
                    status="failed",
                    error=f"interrupted: process {row.pid} on {host} exited during the run",
                    finished_at=now,
                    duration_seconds=max((now - started).total_seconds(), 0.0),
                )
            )


def start_run(
    registry: Registry,
    view: str,
    start: datetime | None,
    end: datetime,
    schema_version: str,
    online_store: str = "",
    job_id: str | None = None,
) -> MaterializationRun:
    """Record a new ``running`` run (and mark dead runs of the same view as failed)."""
    now = datetime.now(UTC)
    run = MaterializationRun(
        run_id=uuid.uuid4().hex,
        view=view,
        start=_utc(start),
        end=_utc(end),  # type: ignore[arg-type]
        rows_written=0,
        duration_seconds=0.0,
        status="running",
        error=None,
        started_at=now,
        finished_at=None,
        schema_version=schema_version,
        online_store=online_store,
        job_id=job_id,
    )
    with registry.writing("materialization runs") as conn:
        _reap(conn, registry, view, now)
        conn.execute(
            runs_table.insert().values(
                run_id=run.run_id,
                project=registry.project,
                view=view,
                schema_version=schema_version,
                start_ts=run.start,
                end_ts=run.end,
                status="running",
                rows_written=0,
                duration_seconds=0.0,
                error=None,
                started_at=now,
                finished_at=None,
                host=socket.gethostname(),
                pid=os.getpid(),
                online_store=online_store,
                job_id=job_id,
            )
        )
    return run


def finish_run(
    registry: Registry,
    run: MaterializationRun,
    *,
    rows_written: int,
    duration_seconds: float,
    error: str | None = None,
    validation: ValidationCounts | None = None,
) -> MaterializationRun:
    """Record the end of a run; a success moves the view's watermark up to ``run.end``.

    ``validation``: what the view's validation rules found (stored with the run).

    The watermark never moves back: it becomes the later of its current value (if it belongs
    to the same schema version) and ``run.end``.
    """
    now = datetime.now(UTC)
    counts = validation.to_dict() if validation is not None else None
    done = replace(
        run,
        rows_written=rows_written,
        duration_seconds=duration_seconds,
        status="failed" if error is not None else "succeeded",
        error=error,
        finished_at=now,
        rows_invalid=validation.rows_invalid if validation is not None else 0,
        rows_dropped=validation.rows_dropped if validation is not None else 0,
        validation=counts,
    )
    with registry.writing("materialization runs") as conn:
        conn.execute(
            runs_table.update()
            .where(runs_table.c.run_id == run.run_id)
            .values(
                status=done.status,
                rows_written=rows_written,
                duration_seconds=duration_seconds,
                error=error,
                finished_at=now,
                rows_invalid=done.rows_invalid,
                rows_dropped=done.rows_dropped,
                validation=json.dumps(counts, default=str) if counts is not None else None,
            )
        )
        if error is None:
            _advance_watermark(conn, registry, done, now)
    return done


def _advance_watermark(
    conn: Connection, registry: Registry, run: MaterializationRun, now: datetime
) -> None:
    key = (
        (marks_table.c.project == registry.project)
        & (marks_table.c.view == run.view)
        & (marks_table.c.online_store == run.online_store)
    )
    row = conn.execute(sa.select(marks_table).where(key)).first()
    values = {
        "watermark": run.end,
        "schema_version": run.schema_version,
        "run_id": run.run_id,
        "updated_at": now,
    }
    if row is None:
        conn.execute(
            marks_table.insert().values(
                project=registry.project, view=run.view, online_store=run.online_store, **values
            )
        )
        return
    current = _utc(row.watermark)
    if row.schema_version == run.schema_version and current is not None and current >= run.end:
        return
    conn.execute(marks_table.update().where(key).values(**values))


def get_watermark(
    registry: Registry,
    view: str,
    schema_version: str | None = None,
    online_store: str | None = None,
) -> datetime | None:
    """The view's watermark (end of the last materialized range), or ``None``.

    Args:
        registry: The registry.
        view: The feature view.
        schema_version: If given, a watermark recorded under another schema version counts as
            none (the online data of the current schema starts empty).
        online_store: The online store's key (:func:`online_store_key`); ``None``: the most
            recently moved watermark of the view in any store.
    """
    query = sa.select(marks_table).where(
        marks_table.c.project == registry.project, marks_table.c.view == view
    )
    if online_store is not None:
        query = query.where(marks_table.c.online_store == online_store)
    with registry.reading("materialization runs") as conn:
        row = conn.execute(query.order_by(marks_table.c.updated_at.desc())).first()
    if row is None or (schema_version is not None and row.schema_version != schema_version):
        return None
    return _utc(row.watermark)


def list_watermarks(registry: Registry, online_store: str | None = None) -> dict[str, datetime]:
    """Every view's watermark (in ``online_store``, or the latest in any), by view name."""
    query = sa.select(marks_table).where(marks_table.c.project == registry.project)
    if online_store is not None:
        query = query.where(marks_table.c.online_store == online_store)
    with registry.reading("materialization runs") as conn:
        rows = conn.execute(query.order_by(marks_table.c.updated_at)).all()
    return {r.view: _utc(r.watermark) for r in rows}  # type: ignore[misc]


def list_runs(
    registry: Registry, view: str | None = None, limit: int = 100
) -> list[MaterializationRun]:
    """The most recent runs (of one view, or of all), newest first."""
    query = sa.select(runs_table).where(runs_table.c.project == registry.project)
    if view is not None:
        query = query.where(runs_table.c.view == view)
    query = query.order_by(runs_table.c.started_at.desc(), runs_table.c.run_id).limit(max(limit, 0))
    with registry.reading("materialization runs") as conn:
        rows = conn.execute(query).all()
    return [_from_row(r) for r in rows]


def last_run_per_view(registry: Registry) -> dict[str, MaterializationRun]:
    """The most recent run of every view that has one, by view name."""
    latest = (
        sa.select(runs_table.c.view, sa.func.max(runs_table.c.started_at).label("started_at"))
        .where(runs_table.c.project == registry.project)
        .group_by(runs_table.c.view)
        .subquery()
    )
    query = (
        sa.select(runs_table)
        .join(
            latest,
            (runs_table.c.view == latest.c.view) & (runs_table.c.started_at == latest.c.started_at),
        )
        .where(runs_table.c.project == registry.project)
    )
    with registry.reading("materialization runs") as conn:
        rows = conn.execute(query).all()
    return {r.view: _from_row(r) for r in rows}
