"""The audit log: who did what, to what, when, from where, and how it ended.

One row per state-changing REST request (denied ones included), per denied read, and per local
operation of the CLI or the SDK (apply, delete, restore, push, materialize, train, promote,
batch prediction, key and permission changes). Rows are only ever inserted: no code path of
Quiver updates or deletes them, and the API has no route that could.

Rows are written on their own database engine (not the registry's), so an audit write neither
takes the registry's connections nor clears the caches that registry commits clear. The server
writes through an :class:`AuditWriter` (a background thread that inserts in batches); a request
that changed something waits for its row before its answer is sent, a denial does not.

An operation is audited once: :func:`audited` opens a scope in a context variable; a REST
request opens one for the whole request (``channel`` ``rest``), and facade operations inside it
only add their resources to it. Outside a request, the outermost operation writes the row
(``channel`` ``cli`` or ``sdk``).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.errors import InvalidError, QuiverError
from quiver.security.principal import (
    current_principal,
    local_channel,
    local_principal,
    set_local_channel,
)
from quiver.security.tables import audit_log

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from quiver.registry import Registry

__all__ = [
    "MAX_LIMIT",
    "AuditEntry",
    "AuditLog",
    "AuditScope",
    "AuditWriter",
    "audited",
    "current_scope",
    "hostname",
    "local_channel",
    "set_local_channel",
]

logger = logging.getLogger("quiver.audit")

MAX_LIMIT = 10_000
"""The most rows one query returns."""
_MAX_RESOURCE = 2000
_MAX_MESSAGE = 500


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass
class AuditEntry:
    """One row of the audit log.

    Attributes:
        project: The project acted on.
        principal: Who acted (an API key's name, ``anonymous``, or the local user).
        action: What was done: the REST route's operation id (``create_feature_view``) or the
            local operation (``apply``, ``push``, ``create_key``, ...).
        outcome: ``ok``, or the error type (``forbidden``, ``unauthorized``, ``conflict``...).
        resource: What it was done to, ``kind:name`` (several are comma-separated).
        key_id: The API key used, if any.
        channel: ``rest``, ``cli`` or ``sdk``.
        status: The HTTP status (REST only).
        request_id: The request's id (REST: also sent back as ``X-Request-ID``).
        client: The client's address (REST) or the host name (local).
        method: The HTTP method (REST only).
        path: The HTTP path (REST only).
        message: The error message, if it failed (at most 500 characters).
        created_at: When (UTC).
    """

    project: str
    principal: str
    action: str
    outcome: str
    resource: str = ""
    key_id: str | None = None
    channel: str = "rest"
    status: int | None = None
    request_id: str | None = None
    client: str | None = None
    method: str | None = None
    path: str | None = None
    message: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        """The values to insert (long texts shortened)."""
        values = asdict(self)
        if len(self.resource) > _MAX_RESOURCE:
            values["resource"] = self.resource[: _MAX_RESOURCE - 3] + "..."
        if self.message is not None and len(self.message) > _MAX_MESSAGE:
            values["message"] = self.message[: _MAX_MESSAGE - 3] + "..."
        return values

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {**asdict(self), "created_at": self.created_at.isoformat()}


class AuditLog:
    """The audit log of one project, in the registry database, on an engine of its own.

    Args:
        registry: The registry (its URL and project).
    """

    def __init__(self, registry: Registry) -> None:
        self.url = registry.url
        self.project = registry.project
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """The log's own engine (made on first use)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    from quiver.registry._registry import make_engine

                    self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        """Release the log's connections."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def append(self, *entries: AuditEntry) -> None:
        """Insert rows, in one transaction."""
        if not entries:
            return
        with self.engine.connect() as conn:
            conn.execution_options(quiver_write=True)
            with conn.begin():
                conn.execute(audit_log.insert(), [e.row() for e in entries])

    def query(
        self,
        *,
        since: datetime | None = None,
        principal: str | None = None,
        resource: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        limit: int = 100,
    ) -> list[AuditEntry]:
        """Rows of the project, newest first.

        Args:
            since: Only rows at or after this time.
            principal: Only this principal's rows.
            resource: Only rows whose resource contains this text (``customer`` finds
                ``feature_view:customer_stats``).
            action: Only this action.
            outcome: Only this outcome (``ok``, ``forbidden``, ...).
            limit: At most this many rows (1..:data:`MAX_LIMIT`).
        """
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidError(f"limit must be between 1 and {MAX_LIMIT}")
        query = sa.select(audit_log).where(audit_log.c.project == self.project)
        if since is not None:
            query = query.where(audit_log.c.created_at >= _utc(since))
        if principal is not None:
            query = query.where(audit_log.c.principal == principal)
        if resource is not None:
            query = query.where(audit_log.c.resource.contains(resource, autoescape=True))
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if outcome is not None:
            query = query.where(audit_log.c.outcome == outcome)
        query = query.order_by(audit_log.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        names = [c.name for c in audit_log.columns if c.name != "id"]
        out = []
        for row in rows:
            values = {n: getattr(row, n) for n in names}
            values["created_at"] = _utc(values["created_at"])
            out.append(AuditEntry(**values))
        return out


class AuditWriter:
    """Writes audit rows from a background thread, in batches (the server's writer).

    :meth:`submit` never blocks; its future completes when the row is committed. Call
    :meth:`close` at shutdown: it writes what is queued.
    """

    _STOP: Any = object()

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, entry: AuditEntry) -> Future[None]:
        """Queue a row; the future completes when it is written (or failed to be)."""
        future: Future[None] = Future()
        if self._closed:
            self._write([(entry, future)])
            return future
        if self._thread is None:
            self._start()
        self._queue.put((entry, future))
        return future

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every row queued before this call is written."""
        if self._thread is None or self._closed:
            return
        marker: Future[None] = Future()
        self._queue.put((None, marker))
        marker.result(timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(self._STOP)
            thread.join(timeout=timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="quiver-audit-writer", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            stop = item is self._STOP
            batch = [] if stop else [item]
            while len(batch) < 500:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is self._STOP:
                    stop = True
                else:
                    batch.append(more)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: Sequence[tuple[AuditEntry | None, Future[None]]]) -> None:
        entries = [e for e, _ in batch if e is not None]
        error: BaseException | None = None
        try:
            self.log.append(*entries)
        except Exception as exc:  # the log cannot be written: say so loudly, keep serving
            error = exc
            for entry in entries:
                logger.error("audit row not written (%s): %s", exc, entry.to_dict())
        for _, future in batch:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)


@dataclass
class AuditScope:
    """One audited request or operation, while it runs (kept in a context variable).

    Attributes:
        resources: What it acted on, ``kind:name``, added by the operations inside it.
        request_id: The REST request's id (``None`` for a local operation).
    """

    resources: list[str] = field(default_factory=list)
    request_id: str | None = None

    def add(self, *refs: str) -> None:
        """Record resources acted on (each once, in order)."""
        for ref in refs:
            if ref not in self.resources:
                self.resources.append(ref)


_scope: ContextVar[AuditScope | None] = ContextVar("quiver_audit_scope", default=None)


def current_scope() -> AuditScope | None:
    """The audited request or operation running in this context, if any."""
    return _scope.get()


@contextmanager
def request_scope(scope: AuditScope) -> Iterator[AuditScope]:
    """Run a REST request inside ``scope`` (its operations add their resources to it)."""
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


@contextmanager
def audited(log: AuditLog, action: str, *resources: str) -> Iterator[AuditScope]:
    """Audit a local operation: one row when it ends (``ok`` or the error type).

    Inside a REST request or another audited operation, the resources are added to that one
    instead, which writes the only row. The acting principal is the one of
    :func:`~quiver.security.principal.acting_as`, else the local user.

    Yields:
        The scope; add resources known only later with ``scope.add("kind:name")``.
    """
    outer = _scope.get()
    if outer is not None:
        outer.add(*resources)
        yield outer
        return
    scope = AuditScope()
    scope.add(*resources)
    token = _scope.set(scope)
    outcome, message = "ok", None
    try:
        yield scope
    except QuiverError as exc:
        outcome, message = exc.error_type, exc.message
        raise
    except KeyboardInterrupt:
        outcome, message = "cancelled", "interrupted"
        raise
    except Exception as exc:
        outcome, message = "error", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        _scope.reset(token)
        principal = current_principal() or local_principal()
        entry = AuditEntry(
            project=log.project,
            principal=principal.name,
            key_id=principal.key_id,
            action=action,
            outcome=outcome,
            resource=",".join(scope.resources),
            channel=local_channel(),
            client=hostname(),
            message=message,
        )
        try:
            log.append(entry)
        except Exception as exc:  # the operation's own result stands; the gap is logged
            logger.warning("audit row not written (%s): %s", exc, entry.to_dict())


def hostname() -> str:
    """This machine's name (the client of local operations)."""
    try:
        return socket.gethostname()
    except OSError:  # pragma: no cover
        return "localhost"
