"""Background jobs: a bounded pool of threads in the server or scheduler process.

:class:`JobPool` takes a job (``materialize``, ``train``, ``predict_batch``), records it
``queued`` in the registry (:mod:`quiver.jobs.records`) and runs it on one of ``jobs.workers``
threads; at most ``jobs.max_queued`` wait. Training and batch prediction run in a worker process
through a :class:`~quiver.jobs.runner.JobRunner` of the pool's own (time limit, cleanup after a
kill); a materialization runs in the thread, one view at a time.

**Cancel** (:meth:`JobPool.cancel`, or ``cancel_requested`` set by another process and seen by
the heartbeat) stops a job at its next safe point, leaving nothing half-written:

- a materialization between two batches of a view: each view's online rows are all from before
  the job or all from after it (see :mod:`quiver.materialize`: a view's rows are read and checked
  first, then written in one transaction on SQLite, which a cancel rolls back; Redis and
  DynamoDB cannot roll back, so a write that has begun is finished, and while the pool stops one
  begins only if it fits in the time left). A view of windowed aggregations stops between views;
- a training or batch prediction by killing its worker outside its critical steps; the kind's
  cleanup removes its staging files and marks the prediction record ``cancelled``.

**Stopping** (:meth:`JobPool.close`): no new job is taken, jobs still queued are cancelled,
running ones get ``grace`` seconds to finish, then are cancelled (:meth:`JobContext.time_left`
tells them the time left). A job whose process died
anyway is marked ``failed: interrupted`` by the next pool that starts (:func:`reap`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError, JobCancelledError, QuiverError
from quiver.jobs import records

if TYPE_CHECKING:
    from quiver.jobs.runner import JobRunner
    from quiver.store import FeatureStore

__all__ = ["JobPool", "reap"]

logger = logging.getLogger("quiver.jobs")


def reap(store: Any) -> list[str]:
    """Mark jobs and materialization runs whose process died as failed (``interrupted``).

    Returns:
        The ids of the jobs marked.
    """
    from quiver.registry.runs import reap_dead_runs

    config = store.config
    stale = max(config.scheduler.lease_seconds, 3 * config.jobs.heartbeat_seconds)
    reaped = records.reap_interrupted(store.registry, stale)
    reap_dead_runs(store.registry)
    if reaped:  # a batch prediction's record has its job's id
        from quiver.ml.registry import ModelRegistry

        ModelRegistry(store.registry).settle_jobs(
            reaped, "failed", "interrupted: the process running it ended before the job did"
        )
    return reaped


@dataclass(eq=False)
class _Running:
    job_id: str
    cancel: threading.Event = field(default_factory=threading.Event)
    on_done: Callable[[records.JobRecord | None], None] | None = None


class JobContext:
    """What a running job sees: its id, whether to stop, where to report progress."""

    def __init__(self, pool: JobPool, running: _Running) -> None:
        self._pool = pool
        self._running = running

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self._running.job_id

    @property
    def cancel_event(self) -> threading.Event:
        """Set when the job should stop."""
        return self._running.cancel

    def check(self) -> None:
        """A safe point: raise :class:`~quiver.errors.JobCancelledError` if asked to stop."""
        if self._running.cancel.is_set():
            raise JobCancelledError(f"job '{self.job_id}' was cancelled")

    def time_left(self) -> float | None:
        """Seconds left of the grace period while the pool stops, else ``None``."""
        deadline = self._pool._deadline
        return None if deadline is None else deadline - time.monotonic()

    def progress(self, progress: dict[str, Any]) -> None:
        """Record progress (and notice a cancel asked for by another process)."""
        if records.update_progress(self._pool.registry, self.job_id, progress):
            self._running.cancel.set()


Work = Callable[[JobContext], Any]


class JobPool:
    """Runs background jobs on a bounded pool of threads (see the module docstring).

    Args:
        store: The store jobs work on (a REST job gets the caller's scoped store instead).
        workers: Jobs run at once.
        max_queued: Jobs waiting at most; more are refused (503).
        heartbeat_seconds: How often running jobs are marked alive and checked for cancels.
        reap_at_start: Mark jobs of dead processes ``failed: interrupted`` first.
    """

    def __init__(
        self,
        store: FeatureStore,
        *,
        workers: int | None = None,
        max_queued: int | None = None,
        heartbeat_seconds: float | None = None,
        reap_at_start: bool = True,
    ) -> None:
        settings = store.config.jobs
        self.store = store
        self.registry = store.registry
        self._workers = workers or settings.workers
        self._max_queued = max_queued or settings.max_queued
        self._heartbeat_seconds = heartbeat_seconds or settings.heartbeat_seconds
        self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="quiver-job")
        self._lock = threading.Lock()
        self._queued: dict[str, _Running] = {}
        self._running: dict[str, _Running] = {}
        self._closing = threading.Event()
        self._deadline: float | None = None
        self._runner: JobRunner | None = None
        if reap_at_start:
            reaped = reap(store)
            if reaped:
                logger.warning("marked %d interrupted job(s) failed", len(reaped))
        self._beat = threading.Thread(target=self._heartbeat, name="quiver-job-beat", daemon=True)
        self._beat.start()

    # -- submitting ------------------------------------------------------------------------------

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        work: Work,
        *,
        created_by: str | None = None,
        schedule: str | None = None,
        principal: Any = None,
        on_done: Callable[[records.JobRecord | None], None] | None = None,
        job_id: str | None = None,
    ) -> records.JobRecord:
        """Record a job and queue it; its ``queued`` record.

        Raises:
            BackendError: the pool is stopping, or its queue is full (503).
        """
        with self._lock:
            if self._closing.is_set():
                raise JobCancelledError("the server is stopping; send the job again later")
            if len(self._queued) >= self._max_queued:
                raise BackendError(
                    f"{len(self._queued)} jobs are waiting already (jobs.max_queued); send the "
                    "job again later"
                )
            record = records.create_job(
                self.registry,
                kind,
                params,
                created_by=created_by,
                schedule=schedule,
                job_id=job_id,
            )
            running = _Running(record.job_id, on_done=on_done)
            self._queued[record.job_id] = running
        self._executor.submit(self._run, running, work, principal)
        return record

    def cancel(self, job_id: str) -> records.JobRecord:
        """Ask a job to stop (this process's or another's); its record after the request.

        Raises:
            NotFoundError: no such job.
            ConflictError: it already ended.
        """
        record = records.request_cancel(self.registry, job_id)
        with self._lock:
            local = self._running.get(job_id) or self._queued.get(job_id)
        if local is not None:
            local.cancel.set()
        return record

    def busy(self) -> int:
        """Jobs of this pool queued or running."""
        with self._lock:
            return len(self._queued) + len(self._running)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running; whether that happened in time."""
        deadline = time.monotonic() + timeout
        while self.busy():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    # -- running ---------------------------------------------------------------------------------

    def _run(self, running: _Running, work: Work, principal: Any) -> None:
        from quiver.jobs.context import in_job

        job_id = running.job_id
        with self._lock:
            self._queued.pop(job_id, None)
            self._running[job_id] = running
        record: records.JobRecord | None = None
        try:
            if running.cancel.is_set() or self._closing.is_set():
                records.finish_job(
                    self.registry, job_id, "cancelled", error="cancelled before it started"
                )
                return
            if not records.start_job(self.registry, job_id):
                return  # cancelled while queued (by another process)
            context = JobContext(self, running)
            try:
                with in_job(job_id, context), _acting(principal):
                    result = work(context)
            except JobCancelledError as exc:
                records.finish_job(self.registry, job_id, "cancelled", error=exc.message)
            except QuiverError as exc:
                records.finish_job(self.registry, job_id, "failed", error=exc.message)
            except Exception as exc:
                logger.exception("job %s failed", job_id)
                records.finish_job(
                    self.registry, job_id, "failed", error=f"{type(exc).__name__}: {exc}"
                )
            else:
                records.finish_job(self.registry, job_id, "succeeded", result=result)
        except QuiverError as exc:  # the registry is down: the next start reaps the job
            logger.error("cannot record the end of job %s: %s", job_id, exc)
        finally:
            if running.on_done is not None:
                with contextlib.suppress(QuiverError):
                    record = records.get_job(self.registry, job_id)
                try:
                    running.on_done(record)
                except Exception:
                    logger.exception("after job %s", job_id)
            with self._lock:
                self._running.pop(job_id, None)

    def _heartbeat(self) -> None:
        """Mark running jobs alive; pass on cancels asked for by other processes."""
        while not self._closing.wait(self._heartbeat_seconds):
            with self._lock:
                ids = list(self._running)
            if not ids:
                continue
            try:
                wanted = records.heartbeat(self.registry, ids)
            except QuiverError as exc:
                logger.warning("job heartbeat failed: %s", exc)
                continue
            with self._lock:
                for job_id in wanted:
                    if job_id in self._running:
                        self._running[job_id].cancel.set()

    def runner(self) -> JobRunner:
        """The pool's worker-process runner (training, batch prediction)."""
        with self._lock:
            if self._runner is None:
                from quiver.jobs.runner import JobRunner

                self._runner = JobRunner(self.store.config)
            return self._runner

    # -- stopping --------------------------------------------------------------------------------

    def stop_taking(self) -> None:
        """Refuse new jobs from now on (safe in a signal handler); :meth:`close` does the rest."""
        self._closing.set()

    def close(self, grace: float | None = None) -> None:
        """Stop: cancel queued jobs, give running ones ``grace`` seconds, then cancel them.

        Args:
            grace: Seconds running jobs may take to finish (default ``jobs.grace_seconds``).
        """
        grace = self.store.config.jobs.grace_seconds if grace is None else grace
        self._closing.set()
        with self._lock:
            queued = list(self._queued.values())
        for running in queued:
            running.cancel.set()
        deadline = self._deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running and not self._queued:
                    break
            time.sleep(0.05)
        with self._lock:
            left = list(self._running.values())
        for running in left:
            running.cancel.set()
        if self._runner is not None:
            self._runner.stop()
        self._executor.shutdown(wait=False, cancel_futures=False)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            with self._lock:
                if not self._running and not self._queued:
                    break
            time.sleep(0.05)
        if self._runner is not None:
            self._runner.close(timeout=5.0)


@contextlib.contextmanager
def _acting(principal: Any) -> Any:
    if principal is None:
        yield
        return
    from quiver.security.principal import acting_as

    with acting_as(principal):
        yield


# -- the job kinds ---------------------------------------------------------------------------


class _ViewProgress:
    """Reports a materialization job's progress within a view (at most every 0.2 s, and at
    each change of phase: ``reading`` the view's rows, then ``writing`` them, with the first
    batch of each)."""

    def __init__(self, ctx: JobContext, views: int) -> None:
        self._ctx = ctx
        self._state: dict[str, Any] = {"views": views, "views_done": 0, "rows_written": 0}
        self._sent = 0.0

    def _send(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._sent >= 0.2:
            self._sent = now
            self._ctx.progress(dict(self._state))

    def view_started(self, view: str, start: datetime | None, end: datetime) -> None:
        self._state.update(view=view, phase="reading", view_rows_read=0, view_rows_written=0)
        self._send(force=True)

    def rows_read(self, view: str, rows: int) -> None:
        first = not self._state["view_rows_read"]
        self._state["view_rows_read"] += rows
        self._send(first)

    def rows_written(self, view: str, rows: int) -> None:
        force = self._state.get("phase") != "writing"
        self._state["phase"] = "writing"
        self._state["view_rows_written"] += rows
        self._send(force)

    def view_done(self, rows: int) -> None:
        state = self._state
        state["views_done"] += 1
        state["rows_written"] += rows
        for name in ("view", "phase", "view_rows_read", "view_rows_written"):
            state.pop(name, None)
        self._send(force=True)


def materialize_work(
    store: Any,
    *,
    views: list[str] | None,
    start: datetime | None,
    end: datetime,
    incremental: bool,
) -> Work:
    """A materialization, one view at a time; a cancel stops it at the next safe point, within
    a view (see the module docstring)."""

    def work(ctx: JobContext) -> dict[str, Any]:
        names = views
        if names is None:
            names = [v.name for v in store.registry.list("feature_view") if v.online]
        else:
            for name in names:  # unknown or offline views fail before anything is written
                view = store.get_feature_view(name)
                if not view.online:
                    from quiver.errors import InvalidError

                    raise InvalidError(
                        f"feature view '{name}' has online=False, so it is not materialized; "
                        "set online=True and apply first"
                    )
        runs: list[dict[str, Any]] = []
        rows = 0
        progress = _ViewProgress(ctx, len(names))
        progress._send(force=True)
        for name in names:
            ctx.check()
            if incremental:
                made = store.materialize_incremental(end, [name], progress=progress)
            else:
                assert start is not None
                made = store.materialize(start, end, [name], progress=progress)
            view_rows = 0
            for run in made:
                runs.append(run.to_dict())
                view_rows += run.rows_written
            rows += view_rows
            progress.view_done(view_rows)
        return {"runs": runs, "rows_written": rows}

    return work


def runner_work(pool: JobPool, store: Any, kind: str, payload: dict[str, Any]) -> Work:
    """A training or batch prediction, in a worker process of ``pool``'s runner."""

    def work(ctx: JobContext) -> dict[str, Any]:
        timeout = store.config.server.job_timeout_seconds
        ctx.progress({"phase": "running"})
        result = pool.runner().run(
            store,
            kind,
            payload,
            timeout=timeout,
            cancel=ctx.cancel_event,
            token=ctx.job_id,
            cancel_reason="a cancel was asked for, or the server stopped",
        )
        key = "model_id" if kind == "train" else "prediction_id"
        return {key: result}

    return work


def utc_now() -> datetime:
    """Now, in UTC."""
    return datetime.now(UTC)
