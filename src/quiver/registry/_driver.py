"""The registry's reads on one kept database-driver connection, without SQLAlchemy.

The common reads (the revision, the records of a kind or of the project, the migration check)
are plain SQL in the driver's own parameter style, on a connection kept in autocommit mode: a
read costs about 10 us instead of SQLAlchemy's 300 us, and for a SQLite file the connection is
opened with the standard library's ``sqlite3``, so a fresh process that only reads the registry
(a training script, ``quiver training-set``) never imports SQLAlchemy (about 150 ms). Other
databases, and SQLite URLs with options or in memory, take the connection from SQLAlchemy's
engine, and keep on it only the reads at open and the revision (polled): their other reads go
through the engine's pool, so that many threads read at once. Writes always go through
SQLAlchemy (:mod:`quiver.registry._registry`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quiver.errors import BackendError

__all__ = ["DriverReads", "one_line", "sqlite_file", "stamp"]

_PREFIXES = ("sqlite:///", "sqlite+pysqlite:///")


def sqlite_file(url: str) -> str | None:
    """The database file of a plain SQLite URL (``sqlite:///path``), else ``None`` (another
    database, in memory, or options after ``?`` that only SQLAlchemy reads)."""
    for prefix in _PREFIXES:
        if url.startswith(prefix):
            path = url[len(prefix) :]
            return None if not path or path == ":memory:" or "?" in path else path
    return None


def one_line(error: BaseException | None) -> str:
    """A database error's message on one line (drivers add hints on extra lines)."""
    return " ".join(str(error).split())


def stamp(value: Any) -> datetime | None:
    """A timestamp column as an aware UTC datetime (SQLite's driver gives text back)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def connect_sqlite(path: str) -> Any:
    """A ``sqlite3`` connection to the registry file as the SQLAlchemy engine sets its own up
    (WAL, a 60 s busy timeout), in autocommit mode and usable from any thread under a lock."""
    import sqlite3

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=60000")
    except Exception:
        conn.close()
        raise
    return conn


class DriverReads:
    """Reads on one kept driver connection (opened at the first read, again after a failure).

    Args:
        opener: Opens a new driver connection in autocommit mode.
        mark: The driver's positional parameter (``?`` for sqlite3, ``%s`` for psycopg).
        where: The database as errors name it (password hidden).
    """

    def __init__(self, opener: Callable[[], Any], mark: str, where: str) -> None:
        self.opener = opener
        self.mark = mark
        self.where = where
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of one statement (``?`` marks its parameters).

        A kept connection that fails (a database restart) is opened anew and the statement
        run once more.

        Raises:
            BackendError: the database cannot be read.
        """
        sql = sql.replace("?", self.mark) if self.mark != "?" else sql
        with self._lock:
            for attempt in (1, 2):
                kept = self._conn is not None and self._pid == os.getpid()
                try:
                    return self._run(sql, params)
                except Exception as exc:
                    self._drop()
                    if not kept or attempt == 2:
                        raise BackendError(
                            f"reading the registry at {self.where} failed: {one_line(exc)}"
                        ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _run(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._conn is None or self._pid != os.getpid():  # a fork's copy is not ours
            self._conn, self._pid = self.opener(), os.getpid()
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql, tuple(params))
            return [tuple(r) for r in cursor.fetchall()]
        finally:
            cursor.close()

    @property
    def connection(self) -> Any:
        """The kept connection (``None`` before the first read or after a failure)."""
        return self._conn

    def close(self) -> None:
        """Close the kept connection."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with suppress(Exception):  # already broken: nothing to release
                conn.close()
