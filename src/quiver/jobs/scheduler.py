"""The scheduler: runs each view's ``materialization_schedule`` once, across every replica.

A view with ``materialization_schedule`` (cron, read in ``schedule_timezone``) is due when its
latest fire time at or before now is later than the last fire taken. Each
:meth:`Scheduler.tick` (every ``scheduler.poll_seconds``) reads the views and the leases (two
queries), and for a due view takes its lease (:func:`~quiver.jobs.records.take_lease`: one
conditional ``UPDATE`` in a transaction, so of several schedulers on one registry exactly one
wins the fire) and submits an incremental materialization of the view up to the fire time to
its :class:`~quiver.jobs.pool.JobPool`. The lease is held while the job runs (renewed at each
tick) and given back when it ends; a holder that died loses it ``scheduler.lease_seconds``
after its last renewal.

After downtime only the latest missed fire is due: one catch-up run, not one per missed tick.
A fire that comes while the view's previous run still runs is caught up after it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from quiver.errors import QuiverError
from quiver.jobs import records
from quiver.jobs.pool import materialize_work

if TYPE_CHECKING:
    from quiver.definitions import FeatureView
    from quiver.jobs.pool import JobPool
    from quiver.store import FeatureStore

__all__ = ["Schedule", "Scheduler", "last_fire", "list_schedules", "next_fire"]

logger = logging.getLogger("quiver.scheduler")


def last_fire(cron: str, timezone: str, now: datetime) -> datetime:
    """The latest fire time of ``cron`` (in ``timezone``) at or before ``now``, in UTC."""
    from croniter import croniter

    local = now.astimezone(ZoneInfo(timezone)) + timedelta(microseconds=1)
    fire: datetime = croniter(cron, local).get_prev(datetime)
    return fire.astimezone(UTC)


def next_fire(cron: str, timezone: str, now: datetime) -> datetime:
    """The first fire time of ``cron`` (in ``timezone``) after ``now``, in UTC."""
    from croniter import croniter

    fire: datetime = croniter(cron, now.astimezone(ZoneInfo(timezone))).get_next(datetime)
    return fire.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """A view's schedule and its state.

    Attributes:
        view: The feature view.
        cron: Its ``materialization_schedule``.
        timezone: Its ``schedule_timezone``.
        next_run: The next fire time (UTC).
        last_fire: The last fire time a scheduler took, if any.
        last_job: The last job the schedule made: its id, status, times and error.
        holder: The scheduler holding the lease now (its job runs), if any.
    """

    view: str
    cron: str
    timezone: str
    next_run: datetime
    last_fire: datetime | None
    last_job: dict[str, Any] | None
    holder: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "view": self.view,
            "cron": self.cron,
            "timezone": self.timezone,
            "next_run": self.next_run.isoformat(),
            "last_fire": self.last_fire.isoformat() if self.last_fire else None,
            "last_job": self.last_job,
            "holder": self.holder,
        }


def _scheduled(store: Any) -> list[FeatureView]:
    return [
        v
        for v in store.registry.list("feature_view")
        if v.materialization_schedule is not None and v.online
    ]


def list_schedules(store: Any, now: datetime | None = None) -> list[Schedule]:
    """Every scheduled view with its next and last run."""
    now = now or datetime.now(UTC)
    leases = records.lease_state(store.registry)
    out = []
    for view in sorted(_scheduled(store), key=lambda v: v.name):
        assert view.materialization_schedule is not None
        lease = leases.get(view.name, {})
        last_job = None
        if lease.get("last_job_id"):
            try:
                job = records.get_job(store.registry, lease["last_job_id"])
                last_job = {
                    k: job.to_dict()[k]
                    for k in ("job_id", "status", "started_at", "finished_at", "error")
                }
            except QuiverError:
                last_job = None
        out.append(
            Schedule(
                view=view.name,
                cron=view.materialization_schedule,
                timezone=view.schedule_timezone,
                next_run=next_fire(view.materialization_schedule, view.schedule_timezone, now),
                last_fire=lease.get("last_fire"),
                last_job=last_job,
                holder=lease.get("holder"),
            )
        )
    return out


class Scheduler:
    """Runs the views' schedules (see the module docstring).

    Args:
        store: The store (its registry holds the leases; its pool runs the jobs).
        pool: The job pool the materializations run in.
        clock: Returns now (UTC); tests pass a controllable one.
        lease_seconds: How long a lease outlives its last renewal (``scheduler.lease_seconds``).
        holder: This scheduler's name in the leases (default: host, pid and a random suffix).
    """

    def __init__(
        self,
        store: FeatureStore,
        pool: JobPool,
        *,
        clock: Callable[[], datetime] | None = None,
        lease_seconds: float | None = None,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.pool = pool
        self.clock = clock or (lambda: datetime.now(UTC))
        self.lease_seconds = lease_seconds or store.config.scheduler.lease_seconds
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._in_flight: dict[str, str] = {}  # view -> job id

    def tick(self) -> list[str]:
        """Check every schedule once; the ids of the jobs submitted."""
        now = self.clock()
        registry = self.store.registry
        with self._lock:
            in_flight = dict(self._in_flight)
        for name, job_id in in_flight.items():
            records.renew_lease(registry, name, self.holder, now, self.lease_seconds, job_id)
        views = _scheduled(self.store)
        if not views:
            return []
        leases = records.lease_state(registry)
        submitted = []
        for view in views:
            assert view.materialization_schedule is not None
            if view.name in in_flight:
                continue
            fire = last_fire(view.materialization_schedule, view.schedule_timezone, now)
            taken = leases.get(view.name, {}).get("last_fire")
            if taken is not None and taken >= fire:
                continue
            if not records.take_lease(
                registry, view.name, fire, self.holder, now, self.lease_seconds
            ):
                continue
            try:
                job_id = self._submit(view.name, fire)
            except QuiverError as exc:
                logger.error("cannot start the scheduled run of '%s': %s", view.name, exc)
                records.release_lease(registry, view.name, self.holder)
                continue
            records.renew_lease(registry, view.name, self.holder, now, self.lease_seconds, job_id)
            submitted.append(job_id)
        return submitted

    def _submit(self, view: str, fire: datetime) -> str:
        def done(record: records.JobRecord | None) -> None:
            with self._lock:
                self._in_flight.pop(view, None)
            try:
                records.release_lease(self.store.registry, view, self.holder)
            except QuiverError as exc:  # it expires by itself
                logger.warning("cannot give back the lease of '%s': %s", view, exc)

        work = materialize_work(self.store, views=[view], start=None, end=fire, incremental=True)
        params = {"views": [view], "end": fire.isoformat(), "incremental": True}
        with self._lock:
            self._in_flight[view] = ""
        try:
            record = self.pool.submit(
                "materialize", params, work, created_by="scheduler", schedule=view, on_done=done
            )
        except BaseException:
            with self._lock:
                self._in_flight.pop(view, None)
            raise
        with self._lock:
            if view in self._in_flight:
                self._in_flight[view] = record.job_id
        logger.info("scheduled run of '%s' for %s: job %s", view, fire, record.job_id)
        return record.job_id

    def run(self, stop: threading.Event, poll_seconds: float | None = None) -> None:
        """Tick every ``poll_seconds`` until ``stop`` is set (sleeping in between)."""
        poll = poll_seconds or self.store.config.scheduler.poll_seconds
        while not stop.is_set():
            try:
                self.tick()
            except QuiverError as exc:  # the registry is down: try again at the next tick
                logger.warning("scheduler tick failed: %s", exc)
            stop.wait(poll)

    def start(self, poll_seconds: float | None = None) -> tuple[threading.Thread, threading.Event]:
        """Run :meth:`run` in a daemon thread; the thread and the event that stops it."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self.run, args=(stop, poll_seconds), name="quiver-scheduler", daemon=True
        )
        thread.start()
        return thread, stop
