"""The worker process: imports the heavy libraries once, then runs jobs one at a time.

Started by :class:`~quiver.jobs.runner.JobRunner` as ``python -m quiver.jobs.worker FD PID``: a
fresh interpreter, never a fork of the threaded server. It talks to the server over the socket
``FD`` (``multiprocessing`` connections: pickled messages):

- it receives ``("config", RepoConfig)`` first, and opens the server's store with it;
- it receives ``("run", kind, payload, token, principal, scoped)`` and answers ``("started",)``,
  any
  number of ``("critical", bool)`` (:mod:`quiver.jobs.context`), then one of ``("done",
  result)``, ``("error", {...})`` (a :class:`~quiver.errors.QuiverError`, rebuilt by the server)
  or ``("crash", traceback)``;
- ``("exit",)`` or a closed pipe ends it.

It runs in its own process group (the server kills the group, threads and any children of the
job together) and ignores Ctrl-C (the server decides). It exits by itself when the server
process is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["main"]

_WARM_MODULES = (
    "pyarrow.parquet",
    "duckdb",
    "quiver.store",
    "quiver.ml.training",
    "quiver.ml.predict",
    "sklearn.ensemble",
    "sklearn.linear_model",
    "sklearn.metrics",
    "lightgbm",
    "xgboost",
    "skops.io",
)
"""Imported before the first job (a missing optional one is skipped)."""


def main(conn: Connection, parent_pid: int) -> None:
    """The worker's main loop.

    Args:
        conn: This end of the socket to the server.
        parent_pid: The server's process id: the worker exits when it is gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    import importlib

    for module in _WARM_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    try:
        _, config = conn.recv()
    except (EOFError, OSError):
        return
    from quiver.store import FeatureStore

    store: FeatureStore | None = None
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                return
            if message[0] != "run":
                return
            _, kind, payload, token, principal, scoped, *fold = message
            if store is None:
                store = FeatureStore(config=config)
            audit: list[str] | None = [] if fold and fold[0] else None
            run = _run(store, conn, kind, payload, token, principal, scoped, audit)
            conn.send(run if audit is None else (*run, audit))
    finally:
        if store is not None:
            store.close()


def _run(
    store: Any,
    conn: Connection,
    kind: str,
    payload: dict[str, Any],
    token: str,
    principal: Any,
    scoped: bool,
    audit: list[str] | None,
) -> tuple[Any, ...]:
    """Run one job; the message that reports its outcome.

    With ``scoped`` (the request's store checked every call for its principal: ``auth:
    api_key``), the job runs on ``store.as_principal(principal)``: the same permission checks,
    made here. With ``audit`` (a REST request's job), the job runs in an audit scope: what it
    touches is put in ``audit``, and the server adds it to the request's audit row, which stays
    the only one; without, the facade writes the job's own row.
    """
    from quiver.errors import QuiverError
    from quiver.jobs.context import running
    from quiver.jobs.kinds import KINDS
    from quiver.security.audit import AuditScope, request_scope

    conn.send(("started",))
    scope = contextlib.nullcontext() if audit is None else request_scope(AuditScope(audit))
    try:
        with running(token, conn.send), _acting(principal), scope:
            target = store.as_principal(principal) if scoped and principal is not None else store
            return ("done", KINDS[kind].run(target, payload))
    except QuiverError as exc:
        return ("error", _error(exc))
    except BaseException:
        return ("crash", traceback.format_exc())


@contextlib.contextmanager
def _acting(principal: Any) -> Any:
    """Act as the REST caller who asked for the job (model authors, job records)."""
    if principal is None:
        yield
        return
    from quiver.security.principal import acting_as

    with acting_as(principal):
        yield


def _error(exc: Any) -> dict[str, Any]:
    """A :class:`~quiver.errors.QuiverError` as plain data (the server rebuilds it)."""
    import pickle

    details = exc.details
    try:
        pickle.dumps(details)
    except Exception:  # details that cannot cross the pipe are sent as text
        details = str(details)
    cls = type(exc)
    return {
        "module": cls.__module__,
        "name": cls.__qualname__,
        "message": exc.message,
        "details": details,
    }


def _watch_parent(parent_pid: int) -> None:
    """Exit when the server process is gone (it was killed without stopping its jobs)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(1)


if __name__ == "__main__":
    import sys
    from multiprocessing.connection import Connection

    main(Connection(int(sys.argv[1])), int(sys.argv[2]))
