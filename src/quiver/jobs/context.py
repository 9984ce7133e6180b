"""The job a process is running, as seen from inside it.

A worker process (:mod:`quiver.jobs.worker`) runs one job at a time and sets its context here:

- :func:`current_token` names the job's temporary files and records (a model's staging folder
  ``.staging-<token>``, an output's ``.<name>.<token>.tmp``, the prediction job's id), so the
  server can remove what a killed job left behind and mark its record cancelled;
- :func:`critical` wraps the short steps that must not be cut in the middle (moving a model's
  files into place and registering it; renaming a finished output and recording the job): the
  server waits for them to end before it kills a job whose time ran out.

Outside a worker (the CLI, the SDK) there is no token and :func:`critical` does nothing.

A background job of the pool (:mod:`quiver.jobs.pool`) runs in a thread with its id and its
:class:`Checkpoint` set (:func:`in_job`): a materialization asks :func:`current_checkpoint` for
it and stops at a safe point within a view when the job is cancelled (:mod:`quiver.materialize`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

__all__ = [
    "Checkpoint",
    "critical",
    "current_checkpoint",
    "current_job_id",
    "current_token",
    "in_job",
    "running",
]


class Checkpoint(Protocol):
    """Where a running background job learns that it should stop."""

    def check(self) -> None:
        """A safe point: raise :class:`~quiver.errors.JobCancelledError` if asked to stop."""
        ...

    def time_left(self) -> float | None:
        """Seconds until the job must have ended (the process is stopping), else ``None``."""
        ...


_job_id: ContextVar[str | None] = ContextVar("quiver_job_id", default=None)
_checkpoint: ContextVar[Checkpoint | None] = ContextVar("quiver_job_checkpoint", default=None)

_token: str | None = None
_notify: Callable[[tuple[Any, ...]], None] | None = None


def current_token() -> str | None:
    """The token of the job this process runs, or ``None`` outside a worker."""
    return _token


def current_job_id() -> str | None:
    """The id of the background job (:mod:`quiver.jobs.pool`) this thread works for, if any."""
    return _job_id.get()


def current_checkpoint() -> Checkpoint | None:
    """The :class:`Checkpoint` of the background job this thread works for, if any."""
    return _checkpoint.get()


@contextmanager
def in_job(job_id: str, checkpoint: Checkpoint | None = None) -> Iterator[None]:
    """Run the block as part of the background job ``job_id`` (its runs record the id), which
    stops at ``checkpoint``."""
    reset = _job_id.set(job_id)
    reset_checkpoint = _checkpoint.set(checkpoint)
    try:
        yield
    finally:
        _checkpoint.reset(reset_checkpoint)
        _job_id.reset(reset)


@contextmanager
def critical() -> Iterator[None]:
    """A step the server must not cut by killing the job (it waits for the step to end)."""
    notify = _notify
    if notify is not None:
        notify(("critical", True))
    try:
        yield
    finally:
        if notify is not None:
            notify(("critical", False))


@contextmanager
def running(token: str, notify: Callable[[tuple[Any, ...]], None]) -> Iterator[None]:
    """Set the context of one job (used by the worker process around each job).

    Args:
        token: The job's token.
        notify: Sends a message to the server (``("critical", True|False)``).
    """
    global _token, _notify
    _token, _notify = token, notify
    try:
        yield
    finally:
        _token, _notify = None, None
