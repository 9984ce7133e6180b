"""Training and batch prediction requests, run as jobs in worker processes.

A job route checks its request first (paths, bounds; in the threadpool), then hands the job to
the app's :class:`~quiver.jobs.runner.JobRunner` and waits for it. The job is killed when its
time runs out (``server.job_timeout_seconds``: a 422 ``job_timeout``), when the client goes away,
and when the server stops (SIGTERM or Ctrl-C: a 503 ``job_cancelled``, answered within a moment
so that the server can exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

if TYPE_CHECKING:
    from fastapi import FastAPI, Request

    from quiver.jobs.runner import JobRunner

__all__ = ["install_stop_on_signals", "job_runner", "run_job"]

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

    def handler(signum: int, frame: FrameType | None) -> None:
        runner = getattr(app.state, "jobs", None)
        if runner is not None:
            runner.stop()
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
