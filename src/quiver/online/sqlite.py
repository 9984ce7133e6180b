"""The embedded online store: one SQLite file in WAL mode.

Each feature view (per project and schema version) is one table keyed by the encoded entity
key, with typed columns::

    k <key> PRIMARY KEY, ts INTEGER, cts INTEGER, f_<feature> <INTEGER|REAL|TEXT>, ...

An entity key that is one integer is stored as such (``k INTEGER PRIMARY KEY``, SQLite's
fastest lookup); any other key as the encoded bytes (``k BLOB`` in a ``WITHOUT ROWID`` table).
``ts`` and ``cts`` are the event and created timestamps in microseconds; timestamp features
are stored as microseconds, booleans as 0/1, lists as JSON text. Writes are upserts whose
``WHERE`` clause keeps the newer row. WAL mode lets one writer and many readers work at once;
each thread gets its own connection. SQLite cannot store NaN (it reads back as NULL).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError
from quiver.online import ReadRequest, StoredRow
from quiver.online.encoding import ViewLayout, arrow_to_physical, prepare_write, python_converter
from quiver.types import is_list

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["SqliteOnlineStore", "table_name"]

_CHUNK = 500
_last = itemgetter(-1)
_SQL_TYPES = {
    "int32": "INTEGER",
    "int64": "INTEGER",
    "float32": "REAL",
    "float64": "REAL",
    "string": "TEXT",
    "bool": "INTEGER",
    "timestamp": "INTEGER",
}


def table_name(layout: ViewLayout) -> str:
    """The table holding one view's rows: ``<project>__<view>__<schema version>``."""
    return layout.ident


def _sql_type(dtype: str) -> str:
    return "TEXT" if is_list(dtype) else _SQL_TYPES[dtype]


@dataclass
class _ReadPlan:
    select: str
    converters: list[tuple[int, Callable[[Any], Any]]]
    statements: dict[int, str]

    @cached_property
    def one(self) -> str:
        """The statement reading one key."""
        return f"{self.select} WHERE k = ?"

    def sql(self, n: int) -> str:
        """The statement reading ``n`` keys."""
        found = self.statements.get(n)
        if found is None:
            marks = ",".join("?" * n)
            found = self.statements[n] = f"{self.select} WHERE k IN ({marks})"
        return found

    def convert(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A stored row with its physical values turned into Python values."""
        values = list(row)
        for pos, conv in self.converters:
            if values[pos] is not None:
                values[pos] = conv(values[pos])
        return tuple(values)


class SqliteOnlineStore:
    """An online store in one SQLite file.

    Args:
        path: The database file (created with its parent directory if missing).
    """

    name = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._tables: set[str] = set()
        self._read_plans: dict[tuple[str, tuple[int, ...]], _ReadPlan] = {}
        self._upserts: dict[str, str] = {}
        self._closed = False

    # -- connections ---------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise BackendError(f"the SQLite online store at {self.path} is closed")
        try:
            # The default isolation level: plain SELECTs run without a transaction (autocommit
            # mode, isolation_level=None, costs more per statement); writes BEGIN explicitly.
            conn = sqlite3.connect(
                self.path, timeout=60, check_same_thread=False, cached_statements=512
            )
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise BackendError(
                f"cannot open the SQLite online store at {self.path}: {exc}"
            ) from exc
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        return conn if conn is not None else self._connect()

    def close(self) -> None:
        """Close every connection this store opened."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._closed = True
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def retention_us(self, layout: ViewLayout) -> int | None:
        """Rows stay until overwritten."""
        return None

    def ping(self) -> None:
        """Check that the database file can be read."""
        try:
            self._conn().execute("SELECT count(*) FROM sqlite_master").fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"the SQLite online store at {self.path} fails: {exc}") from exc

    # -- schema --------------------------------------------------------------------------------

    def _ensure_table(self, conn: sqlite3.Connection, layout: ViewLayout) -> str:
        name = table_name(layout)
        if name in self._tables:
            return name
        columns = ", ".join(
            f'"f_{f}" {_sql_type(d)}'
            for f, d in zip(layout.feature_names, layout.feature_dtypes, strict=True)
        )
        if layout.single_int_key:
            key, suffix = "k INTEGER PRIMARY KEY NOT NULL", ""
        else:
            key, suffix = "k BLOB PRIMARY KEY NOT NULL", " WITHOUT ROWID"
        conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{name}" ({key}, '
            f"ts INTEGER NOT NULL, cts INTEGER NOT NULL, {columns}){suffix}"
        )
        self._tables.add(name)
        return name

    def delete_view(self, layout: ViewLayout) -> None:
        """Drop the tables of every schema version of one view."""
        conn = self._conn()
        prefix = f"{layout.project}__{layout.view}__"
        try:
            names = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND substr(name, 1, ?) = ?",
                    (len(prefix), prefix),
                )
            ]
            for name in names:
                conn.execute(f'DROP TABLE IF EXISTS "{name}"')
                self._tables.discard(name)
        except sqlite3.Error as exc:
            raise BackendError(f"SQLite online store at {self.path}: {exc}") from exc

    # -- writes --------------------------------------------------------------------------------

    def _upsert_sql(self, layout: ViewLayout, table: str) -> str:
        found = self._upserts.get(table)
        if found is None:
            cols = [f'"f_{f}"' for f in layout.feature_names]
            marks = ",".join("?" * (3 + len(cols)))
            updates = ", ".join(f"{c} = excluded.{c}" for c in ["ts", "cts", *cols])
            found = self._upserts[table] = (
                f'INSERT INTO "{table}" (k, ts, cts, {", ".join(cols)}) VALUES ({marks}) '
                f"ON CONFLICT(k) DO UPDATE SET {updates} "
                f'WHERE excluded.ts > "{table}".ts '
                f'OR (excluded.ts = "{table}".ts AND excluded.cts >= "{table}".cts)'
            )
        return found

    def write(self, layout: ViewLayout, batch: pa.Table | pa.RecordBatch) -> int:
        """Upsert rows in one transaction, keeping the newer row per key."""
        cols = prepare_write(layout, batch, raw_int_keys=True)
        if not len(cols):
            return 0
        physical = [
            arrow_to_physical(arr, dtype)
            for arr, dtype in zip(cols.features, layout.feature_dtypes, strict=True)
        ]
        rows = zip(cols.keys, cols.event_us, cols.created_us, *physical, strict=True)
        conn = self._conn()
        try:
            table = self._ensure_table(conn, layout)
            sql = self._upsert_sql(layout, table)
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BackendError(
                f"writing feature view '{layout.view}' to the SQLite online store at "
                f"{self.path} failed: {exc}"
            ) from exc
        return len(cols)

    # -- reads ---------------------------------------------------------------------------------

    def _read_plan(self, layout: ViewLayout, features: tuple[int, ...]) -> _ReadPlan:
        key = (layout.ident, features)
        plan = self._read_plans.get(key)
        if plan is None:
            cols = "".join(f'"f_{layout.feature_names[i]}", ' for i in features)
            converters = []
            for pos, i in enumerate(features):
                conv = python_converter(layout.feature_dtypes[i])
                if conv is not None:
                    converters.append((pos + 2, conv))  # after ts, cts
            # The key comes last: a row is then a StoredRow as it is (no slicing).
            plan = self._read_plans[key] = _ReadPlan(
                select=f'SELECT ts, cts, {cols}k FROM "{key[0]}"',
                converters=converters,
                statements={},
            )
        return plan

    def read(self, requests: Sequence[ReadRequest]) -> list[list[StoredRow | None]]:
        """Read rows per view with ``SELECT ... WHERE k IN (...)``."""
        conn = getattr(self._local, "conn", None) or self._connect()
        return [self._read_one(conn, req) for req in requests]

    def _read_one(self, conn: sqlite3.Connection, req: ReadRequest) -> list[StoredRow | None]:
        layout, features, key_columns = req
        if layout.single_int_key:
            keys = key_columns[0]
        else:
            keys = layout.key_encoder.encode_columns(key_columns)
        n = len(keys)
        if not n:
            return []
        plan = self._read_plans.get((layout.ident, features)) or self._read_plan(layout, features)
        try:
            if n == 1:
                row = conn.execute(plan.one, keys).fetchone()
                if row is not None and plan.converters:
                    row = plan.convert(row)
                return [row]
            if n <= _CHUNK:
                rows = conn.execute(plan.sql(n), keys).fetchall()
            else:
                rows = []
                for i in range(0, n, _CHUNK):
                    part = keys[i : i + _CHUNK]
                    rows.extend(conn.execute(plan.sql(len(part)), part).fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return [None] * n
            raise self._read_error(layout, exc) from exc
        except sqlite3.Error as exc:
            raise self._read_error(layout, exc) from exc
        if plan.converters:
            rows = [plan.convert(row) for row in rows]
        # Rows come back in key order, not request order: match them by their key (last item).
        found = dict(zip(map(_last, rows), rows, strict=True))
        return list(map(found.get, keys))

    def _read_error(self, layout: ViewLayout, exc: sqlite3.Error) -> BackendError:
        return BackendError(
            f"reading feature view '{layout.view}' from the SQLite online store at "
            f"{self.path} failed: {exc}"
        )
