"""Running jobs in worker processes, with a time limit and a way to stop them.

The REST server runs training and batch prediction through a :class:`JobRunner`: the job goes
to a worker process (:mod:`quiver.jobs.worker`), and the request's thread waits for its answer.
A job is killed, with its process group, when

- its time limit runs out (counted from when the worker starts it): a
  :class:`~quiver.errors.JobTimeoutError`;
- its client went away, or the server is stopping (:meth:`JobRunner.stop`, called on SIGTERM):
  a :class:`~quiver.errors.JobCancelledError`.

A job inside a critical step (:func:`quiver.jobs.context.critical`: moving a model into place and
registering it, renaming a finished output and recording the job) is given up to
:data:`CRITICAL_GRACE` seconds to leave it first. After the kill the job kind's cleanup removes
what the job had begun (named after its token) and marks its record ``cancelled``.

Workers are fresh interpreters (never a fork of the threaded server) that import the ML
libraries before their first job, which takes seconds; so a worker that finished its job waits
for the next one (``spares`` of them at most), and only the first job of a server, jobs running
at the same time and the job after a kill pay for a new worker.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quiver.errors import JobCancelledError, JobTimeoutError, QuiverError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from quiver.config import RepoConfig
    from quiver.store import FeatureStore

__all__ = ["CRITICAL_GRACE", "JobRunner"]

logger = logging.getLogger("quiver.jobs")

CRITICAL_GRACE = 10.0
"""Seconds a job past its time may take to leave a critical step before it is killed anyway."""
START_TIMEOUT = 180.0
"""Seconds a new worker may take to start and import its libraries."""
_POLL = 0.1


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Connection

    def alive(self) -> bool:
        return self.process.poll() is None


class JobRunner:
    """Runs jobs in worker processes (see the module docstring).

    Args:
        config: The repository's settings; workers open a store with them.
        spares: How many workers that finished a job wait for the next one.
    """

    def __init__(self, config: RepoConfig, *, spares: int = 1) -> None:
        self._config = config
        self._spares = spares
        self._lock = threading.Lock()
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._stopping = threading.Event()

    # -- running ---------------------------------------------------------------------------------

    def run(
        self,
        store: FeatureStore,
        kind: str,
        payload: dict[str, Any],
        *,
        timeout: float,
        cancel: threading.Event | None = None,
        token: str | None = None,
        cancel_reason: str = "its client went away",
    ) -> Any:
        """Run a job of ``kind`` in a worker process and return its result.

        Blocks the calling thread until the job ends. The acting principal (a REST caller) is
        passed to the worker, so the model's author and the job's record name the caller; when
        ``store`` checks every call for a principal (a scoped store, ``auth: api_key``), the
        worker's store does the same checks for it.

        Args:
            store: The request handler's store (its principal; the cleanup after a kill).
            kind: A name of :data:`~quiver.jobs.kinds.KINDS`.
            payload: The job's arguments (picklable).
            timeout: The time limit in seconds, from when the worker starts the job.
            cancel: Set by the caller to cancel the job (its client went away).
            token: The job's token (default: a new one); a background job passes its id, so
                that its batch prediction record has the same id.
            cancel_reason: What the error says when ``cancel`` was set.

        Raises:
            QuiverError: the job's own error (the same type as in the worker).
            JobTimeoutError: the time limit ran out; the job was killed.
            JobCancelledError: cancelled (client gone, or the server is stopping).
            RuntimeError: the worker crashed (the server log has its traceback).
        """
        self._check_running()
        worker = self._take()
        token = token or uuid.uuid4().hex
        try:
            scoped = getattr(store, "principal", None)
            principal = scoped if scoped is not None else _principal()
            fold = _audit_scope() is not None  # a REST request: the job's audit goes into its row
            worker.conn.send(("run", kind, payload, token, principal, scoped is not None, fold))
        except OSError as exc:
            self._discard(worker)
            raise RuntimeError(f"cannot hand the job to its worker process: {exc}") from exc
        return self._wait(worker, store, kind, payload, token, timeout, cancel, cancel_reason)

    def _wait(
        self,
        worker: _Worker,
        store: FeatureStore,
        kind: str,
        payload: dict[str, Any],
        token: str,
        timeout: float,
        cancel: threading.Event | None,
        cancel_reason: str = "its client went away",
    ) -> Any:
        started: float | None = None
        critical = False
        stop_at: float | None = None  # when a job past its time is killed even if critical
        begun = time.monotonic()
        while True:
            if worker.conn.poll(_POLL):
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    self._discard(worker)
                    self._cleanup(store, kind, payload, token, "the worker process died", begun)
                    raise RuntimeError(
                        f"the worker process of a {kind} job died (exit code "
                        f"{worker.process.returncode}); the server log has its output"
                    ) from None
                tag = message[0]
                if tag == "started":
                    started = time.monotonic()
                elif tag == "critical":
                    critical = bool(message[1])
                elif tag == "done":
                    self._release(worker)
                    _fold_audit(message)
                    return message[1]
                elif tag == "error":
                    self._release(worker)
                    _fold_audit(message)
                    raise _rebuild(message[1])
                elif tag == "crash":
                    self._discard(worker)
                    raise RuntimeError(f"a {kind} job failed in its worker:\n{message[1]}")
                continue
            now = time.monotonic()
            error = self._why_stop(kind, begun, started, now, timeout, cancel, cancel_reason)
            if error is None:
                continue
            stop_at = stop_at or now + CRITICAL_GRACE
            if critical and now < stop_at and worker.alive():
                continue
            self._discard(worker)
            self._cleanup(store, kind, payload, token, error.message, started or begun)
            raise error

    def _why_stop(
        self,
        kind: str,
        begun: float,
        started: float | None,
        now: float,
        timeout: float,
        cancel: threading.Event | None,
        cancel_reason: str = "its client went away",
    ) -> QuiverError | None:
        """The error to end a running job with, or ``None`` to keep waiting."""
        if self._stopping.is_set():
            return JobCancelledError(
                f"the {kind} job was cancelled: the server is stopping; send it again later"
            )
        if cancel is not None and cancel.is_set():
            return JobCancelledError(f"the {kind} job was cancelled: {cancel_reason}")
        if started is not None and now - started > timeout:
            return JobTimeoutError(
                f"the {kind} job ran longer than its time limit of {timeout:g} s "
                "(server.job_timeout_seconds) and was cancelled; use fewer rows or a smaller "
                "model, or ask the server's owner for a longer limit",
                details={"timeout_seconds": timeout},
            )
        if started is None and now - begun > START_TIMEOUT:
            return JobCancelledError(
                f"the {kind} job was cancelled: its worker process did not start within "
                f"{START_TIMEOUT:g} s"
            )
        return None

    @staticmethod
    def _cleanup(
        store: FeatureStore,
        kind: str,
        payload: dict[str, Any],
        token: str,
        reason: str,
        since: float,
    ) -> None:
        from quiver.jobs.kinds import KINDS

        try:
            KINDS[kind].cleanup(store, payload, token, reason, time.monotonic() - since)
        except Exception:  # the job's error is what the caller must see; log this one
            logger.exception("cleaning up after a cancelled %s job failed", kind)

    # -- workers ---------------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._stopping.is_set():
            raise JobCancelledError("the server is stopping; send the job again later")

    def _spawn(self) -> _Worker:
        """Start a worker: a new interpreter running :mod:`quiver.jobs.worker`, in its own
        process group, talking over a socket pair (the server's ``__main__`` is not re-run, as
        ``multiprocessing``'s spawn would)."""
        from multiprocessing.connection import Connection

        here, there = socket.socketpair()
        with there:
            process = subprocess.Popen(
                [sys.executable, "-m", "quiver.jobs.worker", str(there.fileno()), str(os.getpid())],
                pass_fds=[there.fileno()],
                stdin=subprocess.DEVNULL,
                process_group=0,
            )
        conn = Connection(here.detach())
        worker = _Worker(process, conn)
        try:
            conn.send(("config", self._config))
        except OSError:
            _kill(worker)
            raise
        return worker

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    self._busy.add(worker)
                    return worker
                worker.conn.close()
            worker = self._spawn()
            self._busy.add(worker)
            return worker

    def _release(self, worker: _Worker) -> None:
        """A worker that finished its job waits for the next one (or exits if enough do)."""
        with self._lock:
            self._busy.discard(worker)
            if not self._stopping.is_set() and len(self._idle) < self._spares:
                self._idle.append(worker)
                return
        with contextlib.suppress(OSError):
            worker.conn.send(("exit",))
        worker.conn.close()

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        _kill(worker)

    # -- stopping --------------------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel every running job and stop the idle workers; further jobs are refused.

        Returns at once (safe in a signal handler): each running job's waiting thread kills
        its worker and cleans up within a moment, or after its critical step.
        """
        self._stopping.set()
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            _kill(worker)

    def close(self, timeout: float = CRITICAL_GRACE + 5.0) -> None:
        """:meth:`stop`, then wait up to ``timeout`` seconds for running jobs to end."""
        self.stop()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._busy:
                    return
            time.sleep(_POLL)
        with self._lock:
            busy = list(self._busy)
        for worker in busy:
            _kill(worker)


def _kill(worker: _Worker) -> None:
    """Kill a worker and its process group now."""
    process = worker.process
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:  # not its own group: the process alone
            with contextlib.suppress(OSError):
                process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    worker.conn.close()


def _audit_scope() -> Any:
    """The audited REST request running in this thread, if any (:mod:`quiver.security.audit`)."""
    from quiver.security.audit import current_scope

    return current_scope()


def _fold_audit(message: tuple[Any, ...]) -> None:
    """Add the resources a job touched (sent back by the worker) to the request's audit row."""
    scope = _audit_scope()
    if scope is not None and len(message) > 2:
        scope.add(*message[2])


def _principal() -> Any:
    """The principal acting in this thread (a REST caller), passed on to the worker."""
    try:
        from quiver.security.principal import current_principal
    except ImportError:  # pragma: no cover - the security package is always there
        return None
    return current_principal()


def _rebuild(error: dict[str, Any]) -> QuiverError:
    """The :class:`~quiver.errors.QuiverError` a worker raised, rebuilt from plain data."""
    cls: type[QuiverError] = QuiverError
    try:
        found = getattr(importlib.import_module(error["module"]), error["name"])
        if isinstance(found, type) and issubclass(found, QuiverError):
            cls = found
    except (ImportError, AttributeError):
        pass
    exc = cls.__new__(cls)
    QuiverError.__init__(exc, error["message"], details=error["details"])
    return exc
