"""The DuckDB offline engine: in-process point-in-time joins and latest-per-key pulls.

The point-in-time join is one ``ASOF LEFT JOIN`` per feature view, with identifiers quoted and
values bound as parameters. Inside DuckDB every timestamp is a naive ``TIMESTAMP`` holding UTC
microseconds (the sources are normalized by :func:`quiver.offline.sources.source_select`, the
entity table here), so comparisons never mix types or time zones.

Plan choices:

* each source is read with only the needed columns and only rows in the time window
  ``(min(t) - ttl, max(t)]``, pushed into the Parquet scan where the column allows;
* when a source is much larger than the entity table, its rows are first reduced to the entity
  table's keys, each within its own key's window ``(min(t) - ttl, max(t)]`` (a hash join
  against one row per key) before the ``ASOF JOIN``; that costs more than it saves when the two
  are of similar size, so it is chosen from a cheap estimate of the source's rows (Parquet
  metadata, Iceberg snapshot summary; unknown counts as large);
* ties on the event timestamp are resolved by the join itself, for sources that have a created
  timestamp: the ASOF inequality compares ``(event time, created time)`` structs (a missing
  created time sorts first), so among the rows of the greatest event time at or before ``t`` it
  takes the greatest created time, with no window over the source (``QUALIFY row_number()``
  cost twice the join). The struct order makes the join's sort about half as costly again, so
  where the source is joined whole (not first cut to the entity keys) and is Parquet, the keys
  and event times are first checked for ties (one streamed pass when the rows are in key or
  time order, else a hash aggregate); without ties the join compares event times alone, with
  the same result.

The latest row per key (materialization) runs in a second in-memory DuckDB database with its own
memory budget (``offline_engine.memory_limit``, else :data:`PULL_MEMORY_LIMIT`), one thread per
:data:`PULL_BYTES_PER_THREAD` of it unless ``offline_engine.threads`` is set, and spills to a temp
directory beyond it. For local Parquet it reads the source twice and never holds all of its rows:
first the greatest event timestamp per key (key and timestamp columns only), then the rows at
those timestamps (about one per key), sorted by key with ties broken by the created timestamp.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError, InvalidError, NotFoundError, QuiverError
from quiver.offline.sources import (
    SourceSelect,
    TimeWindow,
    _first_line,
    _translate,
    is_s3,
    quote,
    to_utc_micros,
)
from quiver.types import arrow_type

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from quiver.config import RepoConfig
    from quiver.definitions import FileSource, IcebergSource
    from quiver.offline.retrieval import RetrievalJob
    from quiver.selection import ViewSelection

__all__ = ["DuckDBOfflineEngine"]

_ROW = "__qv_row"
_TS = "__qv_ts"
_CREATED = "__qv_created"
_ORDER = '"__qv_order"'
_ORDER_OF = (
    'CASE WHEN {src}."__qv_ts" IS NOT NULL THEN {{\'t\': {src}."__qv_ts", '
    "'c': coalesce({src}.\"__qv_created\", '-infinity'::TIMESTAMP)}} END AS \"__qv_order\""
)
"""A source row's place in the ASOF order: its event time, then its created time (none: before
any), so that the join takes, among the rows of the greatest event time, the greatest created."""


PULL_MEMORY_LIMIT = "256MB"
"""DuckDB's memory budget for :meth:`DuckDBOfflineEngine.pull_latest` (materialization) when
``offline_engine.memory_limit`` is not set. Beyond it, DuckDB spills to a temp directory."""

PULL_BYTES_PER_THREAD = 256 * 2**20
"""Unless ``offline_engine.threads`` is set, materialization runs one DuckDB thread per this much
of its budget (at least one): each thread's Parquet scan needs buffers for every column, so
more threads in a small budget run out of memory on wide sources."""

PULL_BATCH_ROWS = 10_000
"""Rows per record batch streamed by :meth:`DuckDBOfflineEngine.pull_latest`."""

_UNITS = {"bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "PiB": 2**50}


def _rescannable(sel: ViewSelection) -> bool:
    """Whether reading a view's keys and event time once more is cheap and possible: Parquet
    files (columnar: two columns of the scan), not CSV (every line parsed again) nor an
    Iceberg scan (a one-pass reader)."""
    from quiver.definitions import FileSource

    return all(
        isinstance(s, FileSource) and s.format == "parquet"
        for s in (sel.source, *sel.query_sources)
    )


def _has_ties(cur: Any, sql: str, params: list[Any], keys: Sequence[str]) -> bool:
    """Whether two rows of ``sql`` (with an event time) share their keys and event time.

    Rows in order, by their keys then time or by time then keys (as tables are often written),
    are seen to have none in one streamed pass over those columns; others are grouped by a
    64-bit hash of both, so a hash collision answers ``True`` too: the join then breaks ties it
    did not need to, with the same result.
    """
    import pyarrow as pa

    cols = ", ".join(quote(c) for c in [*keys, _TS])
    where = f"FROM ({sql}) AS s WHERE {quote(_TS)} IS NOT NULL"
    reader = cur.sql(f"SELECT {cols} {where}", params=params).to_arrow_reader(_SORTED_BATCH)
    try:
        if _strictly_ordered(reader, len(keys)):
            return False
    except pa.ArrowNotImplementedError:  # a key type without an order: the aggregate decides
        pass
    finally:
        reader.close()  # read to its end or not: the cursor runs the next query
    found = cur.execute(
        f"SELECT 1 {where} GROUP BY hash({cols}) HAVING count(*) > 1 LIMIT 1", params
    ).fetchall()
    return bool(found)


_SORTED_BATCH = 1 << 20
"""Rows per batch of the ordered check (:func:`_strictly_ordered`): two 8-byte columns, 16 MiB."""


def _strictly_ordered(reader: pa.RecordBatchReader, n_keys: int) -> bool:
    """Whether the rows (key columns, then the time) strictly increase by (keys, time) or by
    (time, keys); stops at the first batch where neither holds."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ts = n_keys
    orders = [[*range(n_keys), ts], [ts, *range(n_keys)]]
    last: pa.RecordBatch | None = None
    for batch in reader:
        if batch.num_rows == 0:
            continue
        rows = batch if last is None else pa.concat_batches([last, batch])
        last = batch.slice(batch.num_rows - 1)
        if rows.num_rows < 2:
            continue
        kept = []
        for order in orders:
            greater: Any = None
            equal: Any = None
            for i in order:
                before, after = rows.column(i).slice(0, rows.num_rows - 1), rows.column(i).slice(1)
                g, e = pc.greater(after, before), pc.equal(after, before)
                greater = g if greater is None else pc.or_(greater, pc.and_(equal, g))
                equal = e if equal is None else pc.and_(equal, e)
            if pc.all(pc.fill_null(greater, False)).as_py():
                kept.append(order)
        orders = kept
        if not orders:
            return False
    return True


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class DuckDBOfflineEngine:
    """The default offline engine: DuckDB in process, one connection, a cursor per call.

    Args:
        config: The repo config (``offline_engine.threads`` / ``memory_limit``, paths, S3,
            Iceberg catalogs).
    """

    prefilter_ratio: float = 4.0
    """Semi-join the source to the entity keys when it has more than this many times the rows
    of the entity table (or when its size is unknown)."""

    def __init__(self, config: RepoConfig) -> None:
        import duckdb

        self.config = config
        settings: dict[str, Any] = {}
        engine = config.offline_engine
        if engine.threads:
            settings["threads"] = int(engine.threads)
        if engine.memory_limit:
            settings["memory_limit"] = engine.memory_limit
        # Where DuckDB spills joins and sorts that exceed memory_limit; removed on close().
        self._spill_dir = tempfile.mkdtemp(prefix="quiver-duckdb-")
        settings["temp_directory"] = self._spill_dir
        # Hand the memory of a finished join back to the OS in the background: otherwise the
        # allocator keeps it, and converting the result (to pandas) comes on top of it.
        settings["allocator_background_threads"] = True
        try:
            self._con = duckdb.connect(":memory:", config=settings)
        except duckdb.Error as exc:
            from quiver.errors import ConfigError

            shutil.rmtree(self._spill_dir, ignore_errors=True)
            raise ConfigError(f"offline_engine settings are invalid: {_first_line(exc)}") from exc
        self._lock = threading.Lock()
        self._closed = False
        self._pull_con: duckdb.DuckDBPyConnection | None = None
        weakref.finalize(self, shutil.rmtree, self._spill_dir, True)

    # -- plumbing -------------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._closed:
                raise BackendError("the DuckDB offline engine is closed")
            cur = self._con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    def _pull_cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for :meth:`pull_latest`, on the engine's second DuckDB database.

        Materialization has its own in-memory database so that its budget
        (``offline_engine.memory_limit``, else :data:`PULL_MEMORY_LIMIT`) holds whatever the
        point-in-time joins do, and so that its settings (threads, no Parquet prefetching) do
        not slow the joins down.
        """
        with self._lock:
            if self._closed:
                raise BackendError("the DuckDB offline engine is closed")
            if self._pull_con is None:
                self._pull_con = self._connect_pull()
            cur = self._pull_con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        # Prefetching reads whole Parquet row groups ahead (hundreds of MB for large row
        # groups); page by page the scan stays small. A per-connection setting.
        cur.execute("SET disable_parquet_prefetching = true")
        return cur

    def _connect_pull(self) -> duckdb.DuckDBPyConnection:
        import os

        import duckdb

        engine = self.config.offline_engine
        settings: dict[str, Any] = {
            "memory_limit": engine.memory_limit or PULL_MEMORY_LIMIT,
            # Not the joins' directory: two databases would reuse each other's file names.
            "temp_directory": os.path.join(self._spill_dir, "materialize"),
        }
        if engine.threads:
            settings["threads"] = int(engine.threads)
        con = duckdb.connect(":memory:", config=settings)
        if not engine.threads:
            (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone() or ("",)
            budget = _parse_bytes(str(limit))
            threads = max(1, min(os.cpu_count() or 1, budget // PULL_BYTES_PER_THREAD))
            con.execute(f"SET threads = {int(threads)}")
        return con

    def close(self) -> None:
        """Close the DuckDB connection (open cursors stop working)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._pull_con is not None:
                    self._pull_con.close()
                self._con.close()
                shutil.rmtree(self._spill_dir, ignore_errors=True)

    # -- latest per key -------------------------------------------------------------------------

    def pull_latest(
        self, selection: ViewSelection, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        """One row per entity key: the latest source row with ``start <= event_ts < end``.

        See :meth:`quiver.offline.OfflineEngine.pull_latest`. Rows with a null join key are
        left out. Runs in the engine's materialization database, within its memory budget
        (DuckDB spills to disk beyond it); the result streams in record batches of
        :data:`PULL_BATCH_ROWS` rows, in key order for local Parquet sources.

        Raises:
            NotFoundError: the source's files or table do not exist.
            InvalidError: a declared column is missing or cannot be cast.
            BackendError: DuckDB failed, e.g. ran out of the memory budget.
        """
        import pyarrow as pa

        from quiver.features.transformations import view_select, view_transform

        keys = selection.join_keys
        key_types = selection.key_types
        columns: dict[str, str | None] = {k: key_types[k] for k in keys}
        for f in selection.features:
            columns[f.name] = f.dtype
        tx = view_transform(selection.view, selection.features, selection.source)
        if tx is not None:  # read the inputs; the transformations run on the latest rows
            columns = tx.source_columns({k: key_types[k] for k in keys})
        window = TimeWindow(
            lo=None if start is None else to_utc_micros(start),
            lo_inclusive=True,
            hi=to_utc_micros(end),
            hi_inclusive=False,
        )
        schema = pa.schema(
            [pa.field(k, arrow_type(key_types[k])) for k in keys]
            + [pa.field(f.name, arrow_type(f.dtype)) for f in selection.features]
            + [
                pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
                pa.field("created_timestamp", pa.timestamp("us", tz="UTC")),
            ]
        )
        what = f"feature view '{selection.view.name}'"
        if window.empty:
            return pa.RecordBatchReader.from_batches(schema, iter(()))
        cur = self._pull_cursor()
        try:
            select = view_select(
                cur,
                self.config,
                selection.view,
                selection.source,
                columns,
                window=window,
                roles=_roles(selection),
                query_sources=selection.query_sources,
            )
            two_pass = _scan_twice(selection.source)
            sql = _latest_sql(
                selection, select.sql, two_pass=two_pass, values=list(columns)[len(keys) :]
            )
            reader = cur.sql(sql, params=select.params).to_arrow_reader(PULL_BATCH_ROWS)
        except QuiverError:
            cur.close()
            raise
        except Exception as exc:
            cur.close()
            raise _pull_error(exc, what) from exc
        batches = pa.RecordBatchReader.from_batches(
            reader.schema, _pull_batches(reader, len(keys) if two_pass else 0, what)
        )
        if tx is not None:
            keep = [*keys, *tx.plain, "event_timestamp", "created_timestamp"]
            computed = tx.apply_batches(
                batches, keep, ts="event_timestamp", created="created_timestamp"
            )
            batches = pa.RecordBatchReader.from_batches(schema, _ordered(computed, schema))
        return pa.RecordBatchReader.from_batches(schema, _stream(batches, cur, schema, what))

    # -- tiles of windowed aggregations ----------------------------------------------------------

    def pull_tiles(
        self, selection: ViewSelection, spec: Any, lo_us: int | None, end_us: int
    ) -> pa.RecordBatchReader:
        """The partial aggregates per key and tile of a view's events with
        ``lo_us < event_ts < end_us`` (:mod:`quiver.features.tiles`), ordered by key and tile,
        streamed from the materialization database (within its memory budget)."""
        import pyarrow as pa

        from quiver.features.aggregation_sql import tiles_select

        what = f"feature view '{selection.view.name}'"
        cur = self._pull_cursor()
        try:
            sql, params = tiles_select(cur, self.config, selection, spec, lo_us, end_us)
            reader = cur.sql(sql, params=params).to_arrow_reader(PULL_BATCH_ROWS)
        except QuiverError:
            cur.close()
            raise
        except Exception as exc:
            cur.close()
            raise _pull_error(exc, what) from exc
        return pa.RecordBatchReader.from_batches(
            reader.schema, _stream(reader, cur, reader.schema, what)
        )

    # -- point-in-time join ---------------------------------------------------------------------

    def get_historical_features(
        self,
        entity_table: pa.Table,
        selections: list[ViewSelection],
        *,
        timestamp_column: str,
        full_feature_names: bool,
    ) -> RetrievalJob:
        """Build the point-in-time join (validated now, run lazily by the returned job).

        See :meth:`quiver.offline.OfflineEngine.get_historical_features`.

        Raises:
            InvalidError: a bad timestamp column, a join key that cannot be cast to its dtype,
                a missing source column.
            NotFoundError: a source's files or table do not exist.
        """
        from quiver.offline.retrieval import JoinInput

        join = JoinInput.of(
            entity_table,
            selections,
            timestamp_column=timestamp_column,
            full_feature_names=full_feature_names,
        )
        if entity_table.num_rows == 0:
            return join.job(None)
        plan = _JoinPlan(self, join.entity, join.ts, selections, join.names)
        plan.prepare()  # validates sources now; the first run reuses the prepared cursor
        return join.job(plan.run)

    # -- estimates ------------------------------------------------------------------------------

    def estimate_rows(self, source: FileSource | IcebergSource) -> int | None:
        """A cheap estimate of a source's row count from metadata (``None`` when unknown;
        :func:`quiver.offline.counting.estimate_rows`)."""
        from quiver.offline.counting import estimate_rows

        return estimate_rows(self.config, source)


def _scan_twice(source: FileSource | IcebergSource) -> bool:
    """Whether a source is cheap to read twice: local Parquet (CSV parses everything, remote
    files download twice, an Iceberg scan is registered as a one-shot stream)."""
    from quiver.definitions import FileSource

    return isinstance(source, FileSource) and source.format == "parquet" and not is_s3(source.path)


def _ordered(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """``batches`` with the columns of ``schema`` (by name), cast to its types."""
    import pyarrow as pa

    for batch in batches:
        arrays = [batch.column(f.name) for f in schema]
        arrays = [
            a if a.type == f.type else a.cast(f.type) for a, f in zip(arrays, schema, strict=True)
        ]
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)


def _latest_sql(
    selection: ViewSelection,
    source_sql: str,
    *,
    two_pass: bool,
    values: Sequence[str] | None = None,
) -> str:
    """The latest row per key of ``source_sql`` (a normalized :func:`source_select`).

    Two passes (``two_pass``): the greatest event timestamp per key (a hash aggregate over the
    key and timestamp columns only), then the source joined to it on key and timestamp, which
    keeps about one row per key, sorted by key and created timestamp (newest first, null last):
    the first row of each key wins (:func:`_first_per_key`). Only those rows are materialized
    (and spilled beyond the memory limit), and the output is in key order, which online stores
    write fastest. One pass: a window over every row in the range. ``values``: the columns
    after the keys (default: the selected features).
    """
    keys = [quote(k) for k in selection.join_keys]
    if values is None:
        values = [f.name for f in selection.features]
    outs = [f"s.{k}" for k in keys] + [f"s.{quote(v)}" for v in values]
    outs += [f"s.{quote(_TS)} AS event_timestamp", f"s.{quote(_CREATED)} AS created_timestamp"]
    part = ", ".join(f"s.{k}" for k in keys)
    if not two_pass:
        not_null = " AND ".join(f"s.{k} IS NOT NULL" for k in keys)
        return (
            f"SELECT {', '.join(outs)} FROM ({source_sql}) AS s WHERE {not_null} "
            f"QUALIFY row_number() OVER (PARTITION BY {part} "
            f"ORDER BY s.{quote(_TS)} DESC, s.{quote(_CREATED)} DESC NULLS LAST) = 1"
        )
    src, last = quote("__qv_src"), quote("__qv_last")
    not_null = " AND ".join(f"{k} IS NOT NULL" for k in keys)
    on = [f"s.{k} = l.{k}" for k in keys] + [f"s.{quote(_TS)} = l.{quote(_TS)}"]
    return (
        f"WITH {src} AS NOT MATERIALIZED ({source_sql}), "
        f"{last} AS (SELECT {', '.join(keys)}, max({quote(_TS)}) AS {quote(_TS)} FROM {src} "
        f"WHERE {not_null} GROUP BY {', '.join(keys)}) "
        f"SELECT {', '.join(outs)} FROM {src} AS s JOIN {last} AS l ON {' AND '.join(on)} "
        f"ORDER BY {part}, s.{quote(_CREATED)} DESC NULLS LAST"
    )


def _pull_error(exc: Exception, what: str) -> QuiverError:
    if "Out of Memory Error" in str(exc):
        return BackendError(
            f"{what}: DuckDB ran out of memory while materializing ({_first_line(exc)}); raise "
            f"offline_engine.memory_limit (materialization's budget, {PULL_MEMORY_LIMIT} by "
            "default) or lower offline_engine.threads"
        )
    return _engine_error(exc, what)


def _pull_batches(
    reader: pa.RecordBatchReader, dedupe_keys: int, what: str
) -> Iterator[pa.RecordBatch]:
    """``reader``'s batches, the first row per key only when ``dedupe_keys`` (see
    :func:`_first_per_key`); DuckDB errors become :class:`QuiverError`."""
    try:
        yield from _first_per_key(reader, dedupe_keys) if dedupe_keys else reader
    except QuiverError:
        raise
    except Exception as exc:
        raise _pull_error(exc, what) from exc


def _first_per_key(reader: pa.RecordBatchReader, n_keys: int) -> Iterator[pa.RecordBatch]:
    """The first row of each run of equal keys (the first ``n_keys`` columns, never null) of
    batches sorted by key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    last: list[Any] | None = None  # the key of the previous batch's last row
    for batch in reader:
        n = batch.num_rows
        if n == 0:
            continue
        new: Any = None
        for i in range(n_keys):
            col = batch.column(i)
            head = pa.array([True]) if last is None else pc.not_equal(col.slice(0, 1), last[i])
            diff = pa.concat_arrays([head, pc.not_equal(col.slice(1), col.slice(0, n - 1))])
            new = diff if new is None else pc.or_(new, diff)
        last = [batch.column(i)[n - 1] for i in range(n_keys)]
        if not pc.all(new).as_py():
            batch = batch.filter(new)
        yield batch


def _parse_bytes(text: str) -> int:
    """Bytes of a DuckDB size as it prints them (``244.1 MiB``); 0 when unreadable."""
    number, _, unit = text.strip().partition(" ")
    try:
        return int(float(number) * _UNITS.get(unit.strip(), 0))
    except ValueError:
        return 0


def _roles(sel: ViewSelection) -> dict[str, str]:
    roles = {k: f"join key '{k}' of feature view '{sel.view.name}'" for k in sel.join_keys}
    for f in sel.features:
        roles[f.name] = f"feature '{f.name}' of feature view '{sel.view.name}'"
    return roles


def _engine_error(exc: Exception, what: str) -> QuiverError:
    import duckdb

    if isinstance(exc, QuiverError):
        return exc
    if isinstance(exc, duckdb.Error):
        err = _translate(exc, what)
        assert isinstance(err, QuiverError)
        return err
    if isinstance(exc, OSError):
        return NotFoundError(f"{what}: cannot read: {exc}")
    return BackendError(f"{what}: {type(exc).__name__}: {exc}")


def _stream(
    reader: pa.RecordBatchReader, cur: Any, schema: pa.Schema, what: str
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    try:
        for batch in reader:
            if batch.num_rows == 0:
                continue
            arrays = [
                batch.column(i) if batch.column(i).type == f.type else batch.column(i).cast(f.type)
                for i, f in enumerate(schema)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except QuiverError:
        raise
    except Exception as exc:
        raise _engine_error(exc, what) from exc
    finally:
        cur.close()


class _JoinPlan:
    """The SQL of one point-in-time join and the Arrow tables it reads."""

    def __init__(
        self,
        engine: DuckDBOfflineEngine,
        entity: pa.Table,
        ts: pa.ChunkedArray,
        selections: Sequence[ViewSelection],
        names: Sequence[str],
    ) -> None:
        self.engine = engine
        self.selections = list(selections)
        self.names = list(names)
        self.what = "feature view(s) " + ", ".join(f"'{s.view.name}'" for s in selections)
        self._prepared: tuple[Any, str, list[Any]] | None = None
        self._prepared_lock = threading.Lock()
        self._build_entity(entity, ts)

    def _build_entity(self, entity: pa.Table, ts: pa.ChunkedArray) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = entity.num_rows
        naive = ts.cast(pa.timestamp("us"))
        arrays: dict[str, Any] = {_ROW: pa.array(np.arange(n, dtype=np.int64))}
        arrays[_TS] = naive
        self.key_cols: dict[tuple[str, str], str] = {}
        for sel in self.selections:
            for key in sel.join_keys:
                dtype = sel.key_types[key]
                if (key, dtype) in self.key_cols:
                    continue
                name = f"__qv_k{len(self.key_cols)}"
                self.key_cols[(key, dtype)] = name
                arrays[name] = _entity_key(entity.column(key), key, dtype, sel)
        self.lo_cols: dict[int, str] = {}
        for sel in self.selections:
            if sel.view.ttl is not None:
                ttl = _us(sel.view.ttl)
                if ttl not in self.lo_cols:
                    name = f"__qv_lo{len(self.lo_cols)}"
                    self.lo_cols[ttl] = name
                    micros = pc.subtract(naive.cast(pa.int64()), pa.scalar(ttl, pa.int64()))
                    arrays[name] = micros.cast(pa.timestamp("us"))
        self.duck_entity = pa.table(arrays)
        bounds = pc.min_max(naive)
        lo, hi = bounds["min"], bounds["max"]
        self.t_min = None if not lo.is_valid else lo.cast(pa.int64()).as_py()
        self.t_max = None if not hi.is_valid else hi.cast(pa.int64()).as_py()
        self.entity_rows = n
        self.distinct_keys = n

    def prepare(self) -> None:
        """Register everything on a fresh cursor and build the SQL (validates the sources)."""
        with self._prepared_lock:
            if self._prepared is None:
                self._prepared = self._build()

    def _build(self) -> tuple[Any, str, list[Any]]:
        cur = self.engine._cursor()
        try:
            entity_name = f"__qv_entity_{uuid.uuid4().hex[:12]}"
            cur.register(entity_name, self.duck_entity)
            self.entity_name = entity_name
            ctes: list[str] = []
            params: list[Any] = []
            joins: list[str] = []
            outputs: list[str] = []
            i = 0
            for v, sel in enumerate(self.selections):
                alias = f"s{v}"
                feature_names = self.names[i : i + len(sel.features)]
                i += len(sel.features)
                window = self._window(sel)
                if window is None:  # no entity row has a timestamp: nothing can match
                    outputs += [
                        f"CAST(NULL AS {_sql(f.dtype)}) AS {quote(n)}"
                        for f, n in zip(sel.features, feature_names, strict=True)
                    ]
                    continue
                if sel.view.aggregations:  # windowed aggregations: a range join, per entity row
                    from quiver.features.aggregation_sql import historical_cte

                    keys = [self.key_cols[(k, sel.key_types[k])] for k in sel.join_keys]
                    assert self.t_min is not None and self.t_max is not None
                    cte, cte_params = historical_cte(
                        cur,
                        self.engine.config,
                        sel,
                        feature_names,
                        (entity_name, keys, _ROW, _TS),
                        (self.t_min, self.t_max),
                    )
                    ctes.append(f"{quote('__qv_' + alias)} AS ({cte})")
                    params += cte_params
                    joins.append(
                        f"LEFT JOIN {quote('__qv_' + alias)} AS {alias} "
                        f"ON {alias}.{quote(_ROW)} = e.{quote(_ROW)}"
                    )
                    outputs += [f"{alias}.{quote(n)} AS {quote(n)}" for n in feature_names]
                    continue
                cte, cte_params, ordered = self._view_cte(cur, sel, window)
                ctes.append(f"{quote('__qv_' + alias)} AS ({cte})")
                params += cte_params
                on = [
                    f"e.{quote(self.key_cols[(k, sel.key_types[k])])} = {alias}.{quote(k)}"
                    for k in sel.join_keys
                ]
                if ordered:  # ties: the greatest created wins
                    at = (  # a struct of nulls is not null: no time, no match
                        f"CASE WHEN e.{quote(_TS)} IS NOT NULL "
                        f"THEN {{'t': e.{quote(_TS)}, 'c': 'infinity'::TIMESTAMP}} END"
                    )
                    on.append(f"{at} >= {alias}.{_ORDER}")
                else:
                    on.append(f"e.{quote(_TS)} >= {alias}.{quote(_TS)}")
                joins.append(
                    f"ASOF LEFT JOIN {quote('__qv_' + alias)} AS {alias} ON {' AND '.join(on)}"
                )
                for f, n in zip(sel.features, feature_names, strict=True):
                    value = f"{alias}.{quote(f.name)}"
                    if sel.view.ttl is not None:
                        lo = self.lo_cols[_us(sel.view.ttl)]
                        value = f"CASE WHEN {alias}.{quote(_TS)} > e.{quote(lo)} THEN {value} END"
                    outputs.append(f"{value} AS {quote(n)}")
            sql = (
                ("WITH " + ", ".join(ctes) + " " if ctes else "")
                + f"SELECT {', '.join(outputs)} FROM {quote(entity_name)} AS e "
                + " ".join(joins)
                + f" ORDER BY e.{quote(_ROW)}"
            )
            return cur, sql, params
        except QuiverError:
            cur.close()
            raise
        except Exception as exc:
            cur.close()
            raise _engine_error(exc, self.what) from exc

    def _window(self, sel: ViewSelection) -> TimeWindow | None:
        if self.t_max is None or self.t_min is None:
            return None
        lo = None if sel.view.ttl is None else self.t_min - _us(sel.view.ttl)
        return TimeWindow(lo=lo, lo_inclusive=False, hi=self.t_max, hi_inclusive=True)

    def _view_cte(
        self, cur: Any, sel: ViewSelection, window: TimeWindow
    ) -> tuple[str, list[Any], bool]:
        """The view's rows for the ASOF join: the SQL, its parameters, and whether they carry
        the ``(event, created)`` order (a created timestamp and ties on the event time)."""
        from quiver.features.transformations import view_select, view_transform

        columns: dict[str, str | None] = {k: sel.key_types[k] for k in sel.join_keys}
        for f in sel.features:
            columns[f.name] = f.dtype
        tx = view_transform(sel.view, sel.features, sel.source)
        if tx is not None:
            columns = tx.source_columns({k: sel.key_types[k] for k in sel.join_keys})
        select: SourceSelect = view_select(
            cur,
            self.engine.config,
            sel.view,
            sel.source,
            columns,
            window=window,
            roles=_roles(sel),
            query_sources=sel.query_sources,
        )
        sql = f"SELECT src.* FROM ({select.sql}) AS src"
        estimate = self.engine.estimate_rows(sel.source)
        prefilter = estimate is None or estimate > self.engine.prefilter_ratio * self.entity_rows
        if prefilter:
            # Keep only rows of the entity table's keys, each within its own key's window
            # (min(t) - ttl, max(t)]: a hash join against one row per key.
            key_cols = [self.key_cols[(k, sel.key_types[k])] for k in sel.join_keys]
            keys = ", ".join(quote(c) for c in key_cols)
            bounds = [f"max({quote(_TS)}) AS hi"]
            on = [
                f"src.{quote(k)} = ek.{quote(c)}"
                for k, c in zip(sel.join_keys, key_cols, strict=True)
            ]
            on.append(f"src.{quote(_TS)} <= ek.hi")
            if sel.view.ttl is not None:
                bounds.append(f"min({quote(self.lo_cols[_us(sel.view.ttl)])}) AS lo")
                on.append(f"src.{quote(_TS)} > ek.lo")
            sql += (
                f" JOIN (SELECT {keys}, {', '.join(bounds)} FROM {quote(self.entity_name)}"
                f" GROUP BY {keys}) AS ek ON {' AND '.join(on)}"
            )
        params = list(select.params)
        if tx is not None:
            # Transformations run in the SQL sandbox on the window's rows, before the ASOF match.
            rows = cur.sql(sql, params=params).to_arrow_table()
            keep = [*sel.join_keys, _TS, _CREATED, *tx.plain]
            name = f"__qv_tx_{uuid.uuid4().hex[:12]}"
            cur.register(name, tx.apply(rows, keep, ts=_TS, created=_CREATED))
            sql, params, prefilter = f"SELECT * FROM {quote(name)}", [], False
        ordered = bool(sel.source.created_timestamp_field)
        if ordered and not prefilter and (tx is not None or _rescannable(sel)):
            # The ASOF join sorts every row of the window: the (event, created) order costs
            # about half of it again, so it is used only where an event time repeats for a key.
            ordered = _has_ties(cur, sql, params, sel.join_keys)
        if ordered:
            sql = f"SELECT *, {_ORDER_OF.format(src='s')} FROM ({sql}) AS s"
        return sql, params, ordered

    def run(self, batch_size: int) -> pa.RecordBatchReader:
        """Run the join; the feature columns stream in entity-row order."""
        import pyarrow as pa

        with self._prepared_lock:
            prepared, self._prepared = self._prepared, None
        cur, sql, params = prepared if prepared is not None else self._build()
        try:
            reader = cur.sql(sql, params=params).to_arrow_reader(batch_size)
        except Exception as exc:
            cur.close()
            raise _engine_error(exc, self.what) from exc
        return pa.RecordBatchReader.from_batches(
            reader.schema, _stream(reader, cur, reader.schema, self.what)
        )


def _sql(dtype: str) -> str:
    from quiver.offline.sources import sql_type

    return sql_type(dtype)


def _entity_key(column: pa.ChunkedArray, key: str, dtype: str, sel: ViewSelection) -> Any:
    """The entity table's join key column, cast to the key's dtype (naive UTC for timestamps)."""
    import pyarrow as pa

    from quiver.offline.timestamps import normalize_timestamp

    entity = next(e.name for e in sel.entities if key in e.join_keys)
    if dtype == "timestamp":
        return normalize_timestamp(column, what=f"entity_df join key '{key}'").cast(
            pa.timestamp("us")
        )
    target = arrow_type(dtype)
    if column.type == target:
        return column
    try:
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidError(
            f"entity_df column '{key}' has type {column.type}, but join key '{key}' of entity "
            f"'{entity}' is {dtype} and the values cannot be converted ({exc}); "
            f"pass {dtype} values"
        ) from exc
