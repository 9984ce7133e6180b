"""Background job records and schedule leases, kept in the registry database.

A job (:class:`JobRecord`) is created ``queued`` by the process that will run it, becomes
``running``, and ends ``succeeded``, ``failed`` or ``cancelled``. While it runs, its process
refreshes ``heartbeat_at``. A cancel (from any process) sets ``cancel_requested``; the running
job sees it at its next safe point. A job whose process died is marked ``failed`` with the
error ``interrupted: ...`` by the next process that starts a job pool (:func:`reap_interrupted`):
at once when the process was on the same host (its pid is gone), else when its heartbeat is
older than the lease.

A schedule's lease (:func:`take_lease`) is one row per (project, view), taken by a conditional
``UPDATE`` in a transaction: it succeeds for exactly one taker when the view's due fire time is
later than the last one taken and the lease is free or expired. The same statement works on
SQLite and PostgreSQL (the row lock serializes the two takers; the second re-checks the
condition and updates nothing).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.errors import ConflictError, NotFoundError
from quiver.registry.tables import metadata

if TYPE_CHECKING:
    from quiver.registry import Registry

__all__ = [
    "JOB_KINDS",
    "JOB_STATUSES",
    "JobRecord",
    "create_job",
    "finish_job",
    "get_job",
    "heartbeat",
    "lease_state",
    "list_jobs",
    "reap_interrupted",
    "release_lease",
    "request_cancel",
    "start_job",
    "take_lease",
    "update_progress",
]

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_KINDS = ("materialize", "train", "predict_batch")
FINISHED = ("succeeded", "failed", "cancelled")

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("project", sa.String(63), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("progress", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_by", sa.String(255), nullable=True),
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("schedule", sa.String(63), nullable=True),
    sa.Index("ix_jobs_project", "project", "created_at"),
    sa.Index("ix_jobs_status", "status"),
)

schedule_leases = sa.Table(
    "schedule_leases",
    metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("view", sa.String(63), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_fire", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_job_id", sa.String(32), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class JobRecord:
    """One background job.

    Attributes:
        job_id: A unique id (32 hex characters); a batch prediction's record has the same id.
        kind: ``materialize``, ``train`` or ``predict_batch``.
        status: ``queued``, ``running``, ``succeeded``, ``failed`` or ``cancelled``.
        params: What was asked (the request, as JSON).
        progress: What is done so far (e.g. ``{"views_done": 1, "views": 3, "rows": 10}``).
        result: What the job produced (run records, a model id, a prediction job id).
        error: Why it failed or was cancelled.
        created_at: When it was asked for.
        started_at: When it began running.
        finished_at: When it ended.
        heartbeat_at: When its process last said it was alive.
        created_by: Who asked (the REST caller; ``scheduler`` for a schedule's run).
        host: The host of the process that runs it.
        pid: That process's id.
        cancel_requested: A cancel was asked for and not yet honoured.
        schedule: The view whose schedule made the job, if any.
    """

    job_id: str
    kind: str
    status: str
    params: dict[str, Any]
    progress: dict[str, Any]
    result: Any
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    created_by: str | None
    host: str | None
    pid: int | None
    cancel_requested: bool
    schedule: str | None

    @property
    def duration_seconds(self) -> float | None:
        """Seconds from start to end (or to now while running)."""
        if self.started_at is None:
            return None
        end = self.finished_at or _now()
        return max((end - self.started_at).total_seconds(), 0.0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (timestamps in ISO 8601)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "status": self.status,
            "params": self.params,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "duration_seconds": self.duration_seconds,
            "created_by": self.created_by,
            "cancel_requested": self.cancel_requested,
            "schedule": self.schedule,
        }


def _from_row(row: Any) -> JobRecord:
    return JobRecord(
        job_id=row.job_id,
        kind=row.kind,
        status=row.status,
        params=json.loads(row.params),
        progress=json.loads(row.progress),
        result=json.loads(row.result) if row.result is not None else None,
        error=row.error,
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        started_at=_utc(row.started_at),
        finished_at=_utc(row.finished_at),
        heartbeat_at=_utc(row.heartbeat_at),
        created_by=row.created_by,
        host=row.host,
        pid=row.pid,
        cancel_requested=bool(row.cancel_requested),
        schedule=row.schedule,
    )


def _key(registry: Registry, job_id: str) -> Any:
    return (jobs.c.project == registry.project) & (jobs.c.job_id == job_id)


# -- jobs ------------------------------------------------------------------------------------------


def create_job(
    registry: Registry,
    kind: str,
    params: dict[str, Any],
    *,
    created_by: str | None = None,
    schedule: str | None = None,
    job_id: str | None = None,
) -> JobRecord:
    """Record a new ``queued`` job of this process."""
    now = _now()
    job_id = job_id or uuid.uuid4().hex
    with registry.writing("jobs") as conn:
        conn.execute(
            jobs.insert().values(
                job_id=job_id,
                project=registry.project,
                kind=kind,
                status="queued",
                params=json.dumps(params, default=str),
                progress="{}",
                created_at=now,
                heartbeat_at=now,
                created_by=created_by,
                host=socket.gethostname(),
                pid=os.getpid(),
                schedule=schedule,
            )
        )
    return get_job(registry, job_id)


def get_job(registry: Registry, job_id: str) -> JobRecord:
    """The job ``job_id``.

    Raises:
        NotFoundError: no such job in this project.
    """
    with registry.reading("jobs") as conn:
        row = conn.execute(sa.select(jobs).where(_key(registry, job_id))).first()
    if row is None:
        raise NotFoundError(f"job '{job_id}' does not exist in project '{registry.project}'")
    return _from_row(row)


def list_jobs(
    registry: Registry,
    *,
    status: Sequence[str] | None = None,
    kind: str | None = None,
    schedule: str | None = None,
    limit: int = 100,
) -> list[JobRecord]:
    """The most recent jobs, newest first, filtered by status, kind or schedule (view)."""
    query = sa.select(jobs).where(jobs.c.project == registry.project)
    if status:
        query = query.where(jobs.c.status.in_(list(status)))
    if kind is not None:
        query = query.where(jobs.c.kind == kind)
    if schedule is not None:
        query = query.where(jobs.c.schedule == schedule)
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.job_id).limit(max(limit, 0))
    with registry.reading("jobs") as conn:
        rows = conn.execute(query).all()
    return [_from_row(r) for r in rows]


def start_job(registry: Registry, job_id: str) -> bool:
    """Mark a queued job ``running``; ``False`` if it is no longer queued (cancelled)."""
    now = _now()
    with registry.writing("jobs") as conn:
        done = conn.execute(
            jobs.update()
            .where(_key(registry, job_id), jobs.c.status == "queued")
            .values(status="running", started_at=now, heartbeat_at=now)
        )
    return done.rowcount == 1


def update_progress(registry: Registry, job_id: str, progress: dict[str, Any]) -> bool:
    """Record a running job's progress; whether a cancel was asked for."""
    with registry.writing("jobs") as conn:
        conn.execute(
            jobs.update()
            .where(_key(registry, job_id))
            .values(progress=json.dumps(progress, default=str), heartbeat_at=_now())
        )
        flag = conn.execute(
            sa.select(jobs.c.cancel_requested).where(_key(registry, job_id))
        ).scalar()
    return bool(flag)


def finish_job(
    registry: Registry,
    job_id: str,
    status: str,
    *,
    result: Any = None,
    error: str | None = None,
    progress: dict[str, Any] | None = None,
) -> None:
    """Record the end of a job (``succeeded``, ``failed`` or ``cancelled``)."""
    values: dict[str, Any] = {
        "status": status,
        "result": json.dumps(result, default=str) if result is not None else None,
        "error": error,
        "finished_at": _now(),
        "cancel_requested": False,
    }
    if progress is not None:
        values["progress"] = json.dumps(progress, default=str)
    with registry.writing("jobs") as conn:
        conn.execute(
            jobs.update()
            .where(_key(registry, job_id), jobs.c.status.in_(("queued", "running")))
            .values(**values)
        )


def cancel_requested(registry: Registry, job_id: str) -> bool:
    """Whether a cancel of the job was asked for."""
    with registry.reading("jobs") as conn:
        flag = conn.execute(
            sa.select(jobs.c.cancel_requested).where(_key(registry, job_id))
        ).scalar()
    return bool(flag)


def request_cancel(registry: Registry, job_id: str) -> JobRecord:
    """Ask a job to stop: a queued job is ``cancelled`` at once, a running one at its next safe
    point (by the process running it).

    A queued batch prediction's record (``quiver.ml``, under the job's id) is ``cancelled`` in
    the same transaction, so that the prediction job list agrees with the job at once.

    Raises:
        NotFoundError: no such job.
        InvalidError: the job already ended.
    """
    now = _now()
    error = "cancelled before it started"
    with registry.writing("jobs") as conn:
        row = conn.execute(
            sa.select(jobs.c.status, jobs.c.kind).where(_key(registry, job_id))
        ).first()
        if row is None:
            raise NotFoundError(f"job '{job_id}' does not exist in project '{registry.project}'")
        if row.status in FINISHED:
            raise ConflictError(f"job '{job_id}' has already ended ({row.status}); nothing to stop")
        conn.execute(
            jobs.update()
            .where(_key(registry, job_id), jobs.c.status == "queued")
            .values(status="cancelled", error=error, finished_at=now)
        )
        if row.status == "queued" and row.kind == "predict_batch":
            from quiver.ml.tables import prediction_jobs as predictions

            conn.execute(
                predictions.update()
                .where(
                    predictions.c.project == registry.project,
                    predictions.c.prediction_id == job_id,
                    predictions.c.status == "queued",
                )
                .values(status="cancelled", error=error)
            )
        conn.execute(
            jobs.update()
            .where(_key(registry, job_id), jobs.c.status == "running")
            .values(cancel_requested=True)
        )
    return get_job(registry, job_id)


def heartbeat(registry: Registry, job_ids: Sequence[str]) -> set[str]:
    """Mark this process's jobs alive; the ids among them whose cancel was asked for."""
    if not job_ids:
        return set()
    ids = list(job_ids)
    with registry.writing("jobs") as conn:
        conn.execute(
            jobs.update()
            .where(jobs.c.project == registry.project, jobs.c.job_id.in_(ids))
            .values(heartbeat_at=_now())
        )
        rows = conn.execute(
            sa.select(jobs.c.job_id).where(
                jobs.c.project == registry.project,
                jobs.c.job_id.in_(ids),
                jobs.c.cancel_requested.is_(True),
            )
        ).all()
    return {r.job_id for r in rows}


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


def reap_interrupted(registry: Registry, stale_after: float) -> list[str]:
    """Mark jobs whose process died ``failed`` (``interrupted: ...``); their ids.

    A job of a process on this host that is gone is reaped at once; one of another host when
    its heartbeat is older than ``stale_after`` seconds.
    """
    host = socket.gethostname()
    now = _now()
    stale = now - timedelta(seconds=stale_after)
    reaped = []
    with registry.writing("jobs") as conn:
        rows = conn.execute(
            sa.select(jobs.c.job_id, jobs.c.host, jobs.c.pid, jobs.c.heartbeat_at).where(
                jobs.c.project == registry.project, jobs.c.status.in_(("queued", "running"))
            )
        ).all()
        for row in rows:
            if row.host == host and row.pid is not None:
                dead = _process_gone(int(row.pid))
            else:
                beat = _utc(row.heartbeat_at)
                dead = beat is None or beat < stale
            if not dead:
                continue
            conn.execute(
                jobs.update()
                .where(_key(registry, row.job_id), jobs.c.status.in_(("queued", "running")))
                .values(
                    status="failed",
                    error=f"interrupted: the process running it (pid {row.pid} on {row.host}) "
                    "ended before the job did; run it again",
                    finished_at=now,
                    cancel_requested=False,
                )
            )
            reaped.append(row.job_id)
    return reaped


# -- schedule leases -------------------------------------------------------------------------------


def take_lease(
    registry: Registry, view: str, fire: datetime, holder: str, now: datetime, seconds: float
) -> bool:
    """Take the lease of ``view``'s schedule for its fire time ``fire``.

    Succeeds for one taker only: when ``fire`` is later than the last fire taken and the lease
    is free, expired (its holder died) or already this holder's.
    """
    with registry.writing("jobs") as conn:
        key = (schedule_leases.c.project == registry.project) & (schedule_leases.c.view == view)
        exists = conn.execute(sa.select(schedule_leases.c.view).where(key)).first()
        if exists is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        schedule_leases.insert().values(
                            project=registry.project, view=view, updated_at=now
                        )
                    )
            except sa.exc.IntegrityError:
                pass  # another taker created it meanwhile
        done = conn.execute(
            schedule_leases.update()
            .where(
                key,
                sa.or_(schedule_leases.c.last_fire.is_(None), schedule_leases.c.last_fire < fire),
                sa.or_(
                    schedule_leases.c.holder.is_(None),
                    schedule_leases.c.holder == holder,
                    schedule_leases.c.expires_at < now,
                ),
            )
            .values(
                holder=holder,
                expires_at=now + timedelta(seconds=seconds),
                last_fire=fire,
                updated_at=now,
            )
        )
    return done.rowcount == 1


def renew_lease(
    registry: Registry, view: str, holder: str, now: datetime, seconds: float, job_id: str
) -> None:
    """Keep a held lease (its job still runs) and note the job."""
    with registry.writing("jobs") as conn:
        conn.execute(
            schedule_leases.update()
            .where(
                schedule_leases.c.project == registry.project,
                schedule_leases.c.view == view,
                schedule_leases.c.holder == holder,
            )
            .values(expires_at=now + timedelta(seconds=seconds), last_job_id=job_id, updated_at=now)
        )


def release_lease(registry: Registry, view: str, holder: str) -> None:
    """Give a lease back (its job ended)."""
    with registry.writing("jobs") as conn:
        conn.execute(
            schedule_leases.update()
            .where(
                schedule_leases.c.project == registry.project,
                schedule_leases.c.view == view,
                schedule_leases.c.holder == holder,
            )
            .values(holder=None, expires_at=None, updated_at=_now())
        )


def lease_state(registry: Registry) -> dict[str, dict[str, Any]]:
    """Every view's lease row: ``holder``, ``expires_at``, ``last_fire``, ``last_job_id``."""
    with registry.reading("jobs") as conn:
        rows = conn.execute(
            sa.select(schedule_leases).where(schedule_leases.c.project == registry.project)
        ).all()
    return {
        r.view: {
            "holder": r.holder,
            "expires_at": _utc(r.expires_at),
            "last_fire": _utc(r.last_fire),
            "last_job_id": r.last_job_id,
        }
        for r in rows
    }
