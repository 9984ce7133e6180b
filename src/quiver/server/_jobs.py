"""Training and batch prediction requests, run as jobs in worker processes; background jobs.

A job route checks its request first (paths, bounds; in the threadpool), then hands the job to
the app's :class:`~quiver.jobs.runner.JobRunner` and waits for it. The job is killed when its
time runs out (``server.job_timeout_seconds``: a 422 ``job_timeout``), when the client goes away,
and when the server stops (SIGTERM or Ctrl-C: a 503 ``job_cancelled``, answered within a moment
so that the server can exit).

With ``"async": true`` in the body or ``Prefer: respond-async``, a materialization, training or
batch prediction is checked the same way and then given to the app's
:class:`~quiver.jobs.pool.JobPool` (:func:`submit_job`): the answer is a ``202`` with the job's
record and ``Location: /api/v1/jobs/{id}``. On SIGTERM the pool takes no new job and its
running jobs get ``jobs.grace_seconds`` to finish (then they are cancelled); a second SIGTERM
exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from quiver.jobs.pool import JobPool, Work
    from quiver.jobs.runner import JobRunner

__all__ = [
    "ASYNC_DESCRIPTION",
    "ASYNC_RESPONSES",
    "JobOut",
    "install_stop_on_signals",
    "job_pool",
    "job_runner",
    "run_job",
    "start_background",
    "submit_job",
    "wants_async",
]

ASYNC_DESCRIPTION = (
    "run in the background: answer 202 with the job (poll GET /api/v1/jobs/{id}); "
    "the header 'Prefer: respond-async' does the same"
)


class JobOut(BaseModel):
    """A background job."""

    model_config = ConfigDict(extra="ignore")

    job_id: str
    kind: str = PydanticField(description="materialize, train or predict_batch")
    status: str = PydanticField(description="queued, running, succeeded, failed or cancelled")
    params: dict[str, Any]
    progress: dict[str, Any]
    result: Any = PydanticField(
        default=None,
        description="materialize: the runs; train: the model id; predict_batch: the prediction "
        "job id",
    )
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_seconds: float | None = None
    created_by: str | None = None
    cancel_requested: bool = False
    schedule: str | None = PydanticField(
        default=None, description="the view whose schedule made the job"
    )


ASYNC_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {
        "model": JobOut,
        "description": 'accepted as a background job ("async": true or Prefer: '
        "respond-async); the Location header names it",
    },
}
"""Declared on the routes that take ``"async": true``."""

logger = logging.getLogger("quiver.server")

_DISCONNECT_POLL = 0.5
_runner_lock = threading.Lock()


def job_runner(app: FastAPI) -> JobRunner:
    """The app's job runner (created at the first job)."""
    runner: JobRunner | None = getattr(app.state, "jobs", None)
    if runner is None:
        with _runner_lock:
            runner = getattr(app.state, "jobs", None)
            if runner is None:
                from quiver.jobs.runner import JobRunner

                runner = JobRunner(app.state.store.config)
                app.state.jobs = runner
    return runner


def job_pool(app: FastAPI) -> JobPool:
    """The app's pool of background jobs (created at the first one, or with the scheduler)."""
    pool: JobPool | None = getattr(app.state, "job_pool", None)
    if pool is None:
        with _runner_lock:
            pool = getattr(app.state, "job_pool", None)
            if pool is None:
                from quiver.jobs.pool import JobPool

                pool = JobPool(app.state.store, reap_at_start=False)  # reaped at start-up
                app.state.job_pool = pool
    return pool


async def start_background(app: FastAPI, scheduler: bool) -> Callable[[], Any]:
    """At start-up: mark the jobs of dead processes ``failed: interrupted``, and with
    ``scheduler`` start the app's job pool and scheduler thread.

    Returns:
        An async function that stops them (the pool gets ``jobs.grace_seconds``).
    """
    store = app.state.store

    def begin() -> tuple[Any, Any]:
        from quiver.jobs.pool import reap

        try:
            reaped = reap(store)
        except Exception as exc:  # the registry cannot be opened yet: /ready reports it
            logger.warning("cannot check for interrupted jobs: %s", exc)
        else:
            if reaped:
                logger.warning("marked %d interrupted job(s) failed", len(reaped))
        if not scheduler:
            return None, None
        from quiver.jobs.scheduler import Scheduler

        running = Scheduler(store, job_pool(app))
        thread, stop = running.start()
        logger.info("scheduler started (every %g s)", store.config.scheduler.poll_seconds)
        return thread, stop

    thread, stop = await asyncio.to_thread(begin)

    async def close() -> None:
        if stop is not None:
            stop.set()
        pool = getattr(app.state, "job_pool", None)
        if pool is not None:
            await asyncio.to_thread(pool.close)
        if thread is not None:
            await asyncio.to_thread(thread.join, 10.0)

    return close


def wants_async(request: Request, flag: bool) -> bool:
    """Whether the request asks for a background job (the flag, or ``Prefer: respond-async``)."""
    prefer = request.headers.get("prefer", "")
    return flag or any(p.strip().lower() == "respond-async" for p in prefer.split(","))


async def submit_job(
    request: Request,
    store: Any,
    kind: str,
    params: dict[str, Any],
    prepare: Callable[[], Work],
    *,
    job_id: str | None = None,
    on_done: Callable[[Any], None] | None = None,
) -> JSONResponse:
    """Check a request (``prepare``, in the threadpool) and run it as a background job.

    Args:
        job_id: The job's id (default: a new one).
        on_done: Called with the job's final record (``None`` if the job was refused).

    Returns:
        The ``202`` answer: the job's record, ``Location: /api/v1/jobs/{id}``.
    """
    from quiver.security.principal import current_principal

    principal = current_principal()

    def work() -> dict[str, Any]:
        job = prepare()
        pool = job_pool(request.app)
        by = getattr(principal, "name", None)
        try:
            record = pool.submit(
                kind,
                params,
                job,
                created_by=by,
                principal=principal,
                job_id=job_id,
                on_done=on_done,
            )
        except BaseException:
            if on_done is not None:
                on_done(None)
            raise
        return record.to_dict()

    record = await run_in_threadpool(work)
    body = JobOut(**record).model_dump(mode="json")
    headers = {"Location": f"/api/v1/jobs/{record['job_id']}"}
    if wants_async(request, False):
        headers["Preference-Applied"] = "respond-async"
    return JSONResponse(body, status_code=202, headers=headers)


async def run_job(
    request: Request, store: Any, kind: str, prepare: Callable[[], dict[str, Any]]
) -> Any:
    """Check a job request and run the job; its result (see :mod:`quiver.jobs.kinds`).

    Args:
        request: The request (its app's settings and runner; its connection, watched so that
            the job stops when the client goes away).
        store: The handler's store (a scoped one checks the job's calls for its principal).
        kind: The job kind.
        prepare: Checks the request and returns the job's payload; runs in the threadpool, so
            it may read files and the registry. Its errors are the request's answer.

    Raises:
        QuiverError: the request's or the job's error (job_timeout 422, job_cancelled 503 ...).
    """
    app = request.app
    cancel = threading.Event()

    def work() -> Any:
        payload = prepare()
        timeout = app.state.settings.job_timeout_seconds
        return job_runner(app).run(store, kind, payload, timeout=timeout, cancel=cancel)

    watcher = asyncio.create_task(_watch_disconnect(request, cancel))
    try:
        return await run_in_threadpool(work)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _watch_disconnect(request: Request, cancel: threading.Event) -> None:
    """Set ``cancel`` when the client of ``request`` goes away."""
    while not await request.is_disconnected():
        await asyncio.sleep(_DISCONNECT_POLL)
    cancel.set()


def install_stop_on_signals(app: FastAPI) -> Callable[[], None]:
    """Cancel the app's jobs when the process gets SIGTERM or SIGINT (the server stopping).

    The server's own handlers (uvicorn's graceful shutdown) still run: ours is chained in front
    of them. Only possible in the main thread (``quiver serve``); elsewhere (a test client) it
    does nothing.

    Returns:
        A function that puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if len(received) > 1 and signum == signal.SIGTERM:
            os._exit(1)  # a second SIGTERM: exit at once (the next start reaps the jobs)
        runner = getattr(app.state, "jobs", None)
        if runner is not None:
            runner.stop()
        pool = getattr(app.state, "job_pool", None)
        if pool is not None:
            pool.stop_taking()
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)
        elif chained == signal.SIG_DFL:  # nobody else handles it: do what it does by default
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[signum] = signal.signal(signum, handler)
        except (OSError, ValueError) as exc:  # pragma: no cover - not the main interpreter
            logger.debug("cannot watch signal %s: %s", signum, exc)

    def restore() -> None:
        for signum, old in previous.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                if signal.getsignal(signum) is handler:
                    signal.signal(signum, old)

    return restore
