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

A read is one statement (per chunk of keys) for every requested view: the entity keys, as a
``VALUES`` list in request order, are left-joined with the views' tables on their primary keys,
so all views are read at one snapshot and a key without a row reads as a row of NULLs.
"""

from __future__ import annotations

import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError
from quiver.features.tiles import ANCHOR, HEADER_SIZE, INT64_MAX, NO_SUMMARY
from quiver.online import Reader, ReadRequest, StoredRow, ViewRead, reader_of_read
from quiver.online.encoding import ViewLayout, arrow_to_physical, prepare_write, python_converter
from quiver.types import is_list, is_nested

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["SqliteOnlineStore", "table_name"]

_TILE_ENDS = struct.Struct("<QQ")
"""Bytes 17-32 of a tile state: where its head and its summary end (see
quiver.features.tiles)."""
_CHUNK = 500
"""The most entity keys read with one statement."""
_MAX_JOIN = 32
"""The most views read with one joined statement (SQLite joins at most 64 tables)..."""
_MAX_JOIN_COLUMNS = 1000
"""...and the most columns it returns (SQLite's default limit is 2000)."""
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
    return "TEXT" if is_list(dtype) or is_nested(dtype) else _SQL_TYPES[dtype]


@dataclass
class _ViewColumns:
    """Where one view's stored row sits in a joined row, and how to convert its values."""

    start: int
    stop: int
    converters: list[tuple[int, Callable[[Any], Any]]]
    """``(position in the view's row, converter)`` for values needing a Python conversion."""

    def rows(self, joined: list[tuple[Any, ...]], whole: bool) -> list[StoredRow | None]:
        """The view's stored rows (``None`` where the key has none: ``ts`` is never NULL)."""
        start, stop = self.start, self.stop
        if whole:  # the joined row is this view's row
            out: list[Any] = [None if r[0] is None else r for r in joined]
        else:
            out = [None if r[start] is None else r[start:stop] for r in joined]
        if self.converters:
            out = [None if r is None else self.convert(r) for r in out]
        return out

    def convert(self, row: tuple[Any, ...]) -> tuple[Any, ...]:
        """A stored row with its physical values turned into Python values."""
        values = list(row)
        for pos, conv in self.converters:
            if values[pos] is not None:
                values[pos] = conv(values[pos])
        return tuple(values)


def _summary_bounds(state: bytes, summary_end: int) -> tuple[int, int]:
    """The read tiles a tile state's summary answers: from its anchor ``A`` to before ``A + H``
    (see :mod:`quiver.features.tiles`; none without a summary)."""
    if summary_end < HEADER_SIZE + ANCHOR.size:
        return NO_SUMMARY, 0
    anchor, _, horizon = ANCHOR.unpack_from(state, HEADER_SIZE)
    return anchor, min(INT64_MAX, anchor + horizon)


@dataclass
class _ReadPlan:
    """The statements reading some features of some views for a number of entity keys.

    One key of one view: ``SELECT v0.ts, v0.cts, v0."f_x", ... FROM <table> AS v0 WHERE
    v0.k = ?``. One key of several views: ``SELECT <their columns> FROM (SELECT 1) LEFT JOIN
    <table 0> AS v0 ON v0.k = ? LEFT JOIN <table 1> AS v1 ON v1.k = ? ...``. More keys: the keys
    are a ``VALUES`` list numbered in request order, joined the same way and ordered by that
    number, so rows come back one per key, in order, duplicates included.
    """

    columns: str
    tables: list[str]
    views: list[_ViewColumns]
    statements: dict[int, str] = field(default_factory=dict)
    slices: list[tuple[int, int, Callable[[StoredRow], StoredRow] | None]] = field(
        default_factory=list
    )
    """``(start, stop, convert)`` per view: its slice of a joined row and its ``convert`` (``None``
    without converters), unpacked faster."""
    retry_at: float = 0.0
    """A table was missing: read view by view until then (``time.monotonic()``)."""

    def one(self, row: tuple[Any, ...] | None) -> list[list[StoredRow | None]]:
        """Each view's stored row from the row read for one key (``None``: no row, which only
        the one-view statement gives; the joined one always gives a row)."""
        if len(self.views) == 1:
            view = self.views[0]
            return [[view.convert(row) if row is not None and view.converters else row]]
        out: list[list[StoredRow | None]] = []
        for start, stop, convert in self.slices:
            if row[start] is None:  # type: ignore[index]
                out.append([None])
            elif convert is None:
                out.append([row[start:stop]])  # type: ignore[index]
            else:
                out.append([convert(row[start:stop])])  # type: ignore[index]
        return out

    def sql(self, n: int) -> str:
        """The statement for ``n`` keys."""
        found = self.statements.get(n)
        if found is None:
            if n == 1 and len(self.tables) == 1:
                found = f'SELECT {self.columns} FROM "{self.tables[0]}" AS v0 WHERE v0.k = ?'
            elif n == 1:
                joins = " ".join(
                    f'LEFT JOIN "{t}" AS v{i} ON v{i}.k = ?' for i, t in enumerate(self.tables)
                )
                found = f"SELECT {self.columns} FROM (SELECT 1) {joins}"
            else:
                keys = ", ".join(f"k{i}" for i in range(len(self.tables)))
                marks = ", ".join("?" * len(self.tables))
                values = ", ".join(f"({r}, {marks})" for r in range(n))
                joins = " ".join(
                    f'LEFT JOIN "{t}" AS v{i} ON v{i}.k = q.k{i}' for i, t in enumerate(self.tables)
                )
                found = (
                    f"WITH q(i, {keys}) AS (VALUES {values}) "
                    f"SELECT {self.columns} FROM q {joins} ORDER BY q.i"
                )
            self.statements[n] = found
        return found


def _plan_key(requests: Sequence[ReadRequest]) -> tuple[Any, ...]:
    """What identifies a read plan: ``(table, features, table, features, ...)``."""
    return tuple(item for req in requests for item in (req.layout.ident, req.features))


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
        self._read_plans: dict[tuple[Any, ...], _ReadPlan] = {}
        self._max_params = 999  # SQLite's smallest default limit; the connection tells the real one
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
            self._max_params = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except sqlite3.Error as exc:
            raise BackendError(
                f"cannot open the SQLite online store at {self.path}: {exc}"
            ) from exc
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        # Reads reuse one cursor per thread (cheaper than a new cursor per statement); every
        # read fetches its rows to the end, which resets the statement and ends the snapshot.
        self._local.cursor = conn.cursor()
        return conn

    def _cursor(self) -> sqlite3.Cursor:
        cursor: sqlite3.Cursor | None = getattr(self._local, "cursor", None)
        if cursor is None:
            self._connect()
            cursor = self._local.cursor
        return cursor

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

    def prepare_views(self, layouts: Sequence[ViewLayout]) -> None:
        """Nothing to prepare: a view's first write makes what it needs."""

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

    def _rows(self, layout: ViewLayout, batch: pa.Table | pa.RecordBatch) -> tuple[int, Any]:
        """The rows of ``batch`` as the upsert's parameters, and how many there are."""
        cols = prepare_write(layout, batch, raw_int_keys=True)
        physical = [
            arrow_to_physical(arr, dtype)
            for arr, dtype in zip(cols.features, layout.feature_dtypes, strict=True)
        ]
        return len(cols), zip(cols.keys, cols.event_us, cols.created_us, *physical, strict=True)

    def write(self, layout: ViewLayout, batch: pa.Table | pa.RecordBatch) -> int:
        """Upsert rows in one transaction, keeping the newer row per key."""
        n, rows = self._rows(layout, batch)
        if not n:
            return 0
        self._transaction(layout, lambda conn, sql: conn.executemany(sql, rows))
        return n

    def write_atomic(
        self,
        layout: ViewLayout,
        batches: Iterable[pa.Table | pa.RecordBatch],
        check: Callable[[], None],
    ) -> int:
        """Upsert every batch in ONE transaction, calling ``check`` before each; whatever
        ``check`` (or anything else) raises rolls the whole write back. Readers see the old
        rows until the commit (WAL). Returns the rows processed."""
        total = 0

        def write_all(conn: sqlite3.Connection, sql: str) -> None:
            nonlocal total
            for batch in batches:
                check()
                n, rows = self._rows(layout, batch)
                if n:
                    conn.executemany(sql, rows)
                    total += n
            check()

        self._transaction(layout, write_all)
        return total

    def _transaction(
        self, layout: ViewLayout, work: Callable[[sqlite3.Connection, str], Any]
    ) -> None:
        """Run ``work(connection, upsert SQL)`` in one write transaction, rolled back if it
        raises."""
        conn = self._conn()
        try:
            table = self._ensure_table(conn, layout)
            sql = self._upsert_sql(layout, table)
            conn.execute("BEGIN IMMEDIATE")
            try:
                work(conn, sql)
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

    # -- tiles (windowed aggregations) ---------------------------------------------------------

    def _tile_keys(self, layout: ViewLayout, key_columns: Sequence[Sequence[Any]]) -> list[Any]:
        if layout.single_int_key:
            return list(key_columns[0])
        return layout.key_encoder.encode_columns(key_columns)

    def read_tiles(
        self,
        layout: ViewLayout,
        key_columns: Sequence[Sequence[Any]],
        head_only: bool = False,
        summary_only: bool = False,
        summary_at: tuple[int, int] | None = None,
    ) -> list[bytes | None]:
        """The tile state of each key (``None``: none), in key order; with ``summary_only`` or
        ``head_only``, the state's header and summary, or those and its head, may come alone
        (the table keeps them in columns of their own, ``s`` and ``h``, before the rest, ``v``,
        so SQLite reads no more of the row than that; ``s`` stays on the row's own page).
        With ``summary_at`` too, the same statement adds the head where the summary does not
        answer then (the table keeps the read tiles a summary answers, ``a`` to before ``z``,
        in columns ahead of ``s``: SQLite reads ``h`` only where they say it must)."""
        keys = self._tile_keys(layout, key_columns)
        if not keys:
            return []
        cursor = getattr(self._local, "cursor", None) or self._cursor()
        table = layout.ident
        params: tuple[int, ...] = ()
        if summary_only and summary_at is not None:
            value = "s, CASE WHEN ? >= a AND ? < z THEN x'' ELSE h END"
            params, summary_only = summary_at, False
        else:
            value = "s" if summary_only else "s, h" if head_only else "s, h, v"
        try:
            if len(keys) == 1:
                name = f"{table}/{value}"
                sql = self._upserts.get(name)  # statement texts, cached per table
                if sql is None:
                    sql = self._upserts[name] = f'SELECT {value} FROM "{table}" WHERE k = ?'
                row = cursor.execute(sql, (*params, keys[0])).fetchone()
                if row is None:
                    return [None]
                return [row[0] if summary_only else b"".join(row)]
            found: dict[Any, bytes] = {}
            for i in range(0, len(keys), _CHUNK):
                part = list(dict.fromkeys(keys[i : i + _CHUNK]))
                marks = ",".join("?" * len(part))
                sql = f'SELECT k, {value} FROM "{table}" WHERE k IN ({marks})'
                found.update(
                    (row[0], b"".join(row[1:])) for row in cursor.execute(sql, (*params, *part))
                )
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return [None] * len(keys)
            raise self._read_error([ReadRequest(layout, (), key_columns)], exc) from exc
        return [found.get(k) for k in keys]

    def update_tiles(
        self,
        layout: ViewLayout,
        key_columns: Sequence[Sequence[Any]],
        update: Callable[[int, bytes | None], bytes | None],
        expire_at_ms: Callable[[bytes], int | None] | None = None,
    ) -> int:
        """Replace the tile state of each key by ``update(position, old state)`` (``None``: keep
        it), in one transaction; returns the keys written. Rows do not expire here
        (``expire_at_ms`` is for stores that reclaim keys)."""
        keys = self._tile_keys(layout, key_columns)
        if not keys:
            return 0
        conn = self._conn()
        table = table_name(layout)
        written = 0
        try:
            if table not in self._tables:
                kind = "INTEGER" if layout.single_int_key else "BLOB"
                suffix = "" if layout.single_int_key else " WITHOUT ROWID"
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{table}" '
                    f"(k {kind} PRIMARY KEY NOT NULL, a INTEGER NOT NULL, z INTEGER NOT NULL, "
                    f"s BLOB NOT NULL, h BLOB NOT NULL, v BLOB NOT NULL){suffix}"
                )
                self._tables.add(table)
            conn.execute("BEGIN IMMEDIATE")
            try:
                for i in range(0, len(keys), _CHUNK):
                    part = keys[i : i + _CHUNK]
                    marks = ",".join("?" * len(set(part)))
                    old = {
                        k: s + h + v
                        for k, s, h, v in conn.execute(
                            f'SELECT k, s, h, v FROM "{table}" WHERE k IN ({marks})',
                            list(dict.fromkeys(part)),
                        )
                    }
                    rows = []
                    for j, key in enumerate(part, i):
                        new = update(j, old.get(key))
                        if new is not None:
                            old[key] = new
                            head, summary = _TILE_ENDS.unpack_from(new, 16)
                            anchor, until = _summary_bounds(new, summary)
                            rows.append(
                                (key, anchor, until, new[:summary], new[summary:head], new[head:])
                            )
                    conn.executemany(
                        f'INSERT OR REPLACE INTO "{table}" (k, a, z, s, h, v) '
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    written += len(rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BackendError(
                f"writing the tiles of feature view '{layout.view}' to the SQLite online store at "
                f"{self.path} failed: {exc}"
            ) from exc
        return written

    # -- reads ---------------------------------------------------------------------------------

    def _read_plan(self, requests: Sequence[ReadRequest], key: tuple[Any, ...]) -> _ReadPlan:
        plan = self._read_plans.get(key)
        if plan is None:
            columns: list[str] = []
            views: list[_ViewColumns] = []
            for i, (layout, features, _) in enumerate(requests):
                names = ["ts", "cts", *(f'"f_{layout.feature_names[j]}"' for j in features)]
                converters = []
                for pos, j in enumerate(features, 2):  # after ts, cts
                    conv = python_converter(layout.feature_dtypes[j])
                    if conv is not None:
                        converters.append((pos, conv))
                views.append(_ViewColumns(len(columns), len(columns) + len(names), converters))
                columns.extend(f"v{i}.{name}" for name in names)
            tables = [table_name(req.layout) for req in requests]
            slices: list[tuple[int, int, Callable[[StoredRow], StoredRow] | None]] = [
                (view.start, view.stop, view.convert if view.converters else None) for view in views
            ]
            plan = self._read_plans[key] = _ReadPlan(", ".join(columns), tables, views, {}, slices)
        return plan

    def reader(self, views: Sequence[ViewRead]) -> Reader:
        """A prepared read. The serving hot path, one key of views that each have one integer
        join key, runs the prepared statement of :meth:`read` and nothing else; any other call
        (more keys, a failing or missing table) goes through :meth:`read`."""
        general = reader_of_read(self.read, views)
        count = len(views)
        width = sum(2 + len(view.features) for view in views)
        if (
            not count
            or not all(view.layout.single_int_key for view in views)
            or (count > 1 and (count > _MAX_JOIN or width > _MAX_JOIN_COLUMNS))
        ):
            return general
        requests = [ReadRequest(view.layout, view.features, ()) for view in views]
        plan = self._read_plan(requests, _plan_key(requests))
        sql = plan.sql(1)
        positions = [0 if view.key_pos is None else view.key_pos[0] for view in views]
        first = positions[0]
        shared = len(set(positions)) == 1  # every view reads the same key column

        def read(columns: Sequence[Sequence[Any]]) -> list[list[StoredRow | None]]:
            if len(columns[0]) != 1 or (plan.retry_at and time.monotonic() < plan.retry_at):
                return general(columns)
            cursor = getattr(self._local, "cursor", None) or self._cursor()
            params = [columns[first][0]] * count if shared else [columns[p][0] for p in positions]
            try:
                row = cursor.execute(sql, params).fetchone()
            except sqlite3.Error:
                return general(columns)  # read() recovers (a missing table) or reports it
            return plan.one(row)

        return read

    def read(self, requests: Sequence[ReadRequest]) -> list[list[StoredRow | None]]:
        """Read the keys of every view with one statement (per chunk of keys) that joins the
        keys with the views' tables: one snapshot, one row per key in request order."""
        cursor = getattr(self._local, "cursor", None) or self._cursor()
        return self._read_views(cursor, requests) if requests else []

    def _read_views(
        self, cursor: sqlite3.Cursor, requests: Sequence[ReadRequest]
    ) -> list[list[StoredRow | None]]:
        """Views with the same number of keys, joined; else (or when a table is missing)
        one view at a time."""
        columns: list[Sequence[Any]] = []
        plan_key: list[Any] = []  # as _plan_key() builds it, inline (a hot path)
        n = -1
        width = 0
        for layout, features, key_columns in requests:
            if layout.single_int_key:
                keys = key_columns[0]
            else:
                keys = layout.key_encoder.encode_columns(key_columns)
            if len(keys) != n:
                if n >= 0:  # views with different numbers of keys: not one join
                    return self._one_by_one(cursor, requests)
                n = len(keys)
            columns.append(keys)
            plan_key.append(layout.ident)
            plan_key.append(features)
            width += 2 + len(features)
        views = len(requests)
        if views > 1 and (views > _MAX_JOIN or width > _MAX_JOIN_COLUMNS):
            return self._one_by_one(cursor, requests)
        if not n:
            return [[] for _ in requests]
        key = tuple(plan_key)
        plan = self._read_plans.get(key) or self._read_plan(requests, key)
        if views > 1 and plan.retry_at and time.monotonic() < plan.retry_at:
            return self._one_by_one(cursor, requests)
        try:
            if n == 1:
                # One view: SELECT ... WHERE k = ? (no row for a missing key); several: one row.
                params = columns[0] if views == 1 else [keys[0] for keys in columns]
                row = cursor.execute(plan.sql(1), params).fetchone()
                rows = [] if row is None else [row]
            else:
                # Parameters entity by entity: every view's key of the first entity, then...
                params = columns[0] if views == 1 else list(chain(*zip(*columns, strict=True)))
                step = min(_CHUNK, self._max_params // views) or 1
                rows = []
                for i in range(0, n, step):
                    part = params[i * views : (i + step) * views]
                    rows.extend(cursor.execute(plan.sql(len(part) // views), part).fetchall())
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise self._read_error(requests, exc) from exc
            if views == 1:
                return [[None] * n]  # the view was never written
            # Some view was never written: one view at a time for a second, then join again.
            plan.retry_at = time.monotonic() + 1.0
            return self._one_by_one(cursor, requests)
        except sqlite3.Error as exc:
            raise self._read_error(requests, exc) from exc
        if views == 1:
            if n == 1:  # one entity, one view
                return plan.one(rows[0] if rows else None)
            return [plan.views[0].rows(rows, whole=True)]
        if n == 1:  # one entity, several views: slice the one joined row
            return plan.one(rows[0])
        return [view.rows(rows, whole=False) for view in plan.views]

    def _one_by_one(
        self, cursor: sqlite3.Cursor, requests: Sequence[ReadRequest]
    ) -> list[list[StoredRow | None]]:
        return [self._read_views(cursor, [req])[0] for req in requests]

    def _read_error(self, requests: Sequence[ReadRequest], exc: sqlite3.Error) -> BackendError:
        views = ", ".join(f"'{req.layout.view}'" for req in requests)
        what = "feature view" if len(requests) == 1 else "feature views"
        return BackendError(
            f"reading {what} {views} from the SQLite online store at {self.path} failed: {exc}"
        )
