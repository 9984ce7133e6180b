"""Reading data sources: files (Parquet, CSV; local or S3) and Iceberg tables.

Every source is read through DuckDB, which gets either its own readers (local files) or Arrow
(``pyarrow.dataset`` over ``pyarrow.fs.S3FileSystem`` for S3, ``pyiceberg`` scans for Iceberg):
no DuckDB extension is downloaded. :func:`source_select` builds the one SQL ``SELECT`` that
applies the source's ``field_mapping``, casts columns to their declared dtypes, normalizes the
timestamps (every input form: any Arrow/Parquet timestamp unit, naive or zoned, dates, ISO strings)
to UTC microseconds, and filters the time window, pushing it into the scan where it can.

Rows pushed to a file source (:func:`append_to_source`) are written as Parquet files under
``<data_dir>/_pushed/<source name>/`` and every read of the source includes them.

Listing the files of a file source (local or S3) and the S3 filesystem are in ``_files``;
Iceberg catalogs, tables, scan filters and appends in ``_iceberg``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quiver.definitions import FileSource, IcebergSource, did_you_mean
from quiver.errors import BackendError, InvalidError, NotFoundError
from quiver.offline._files import (
    PUSHED_DIR,
    FileListing,
    is_s3,
    list_files,
    pushed_dir,
    pushed_files,
    s3_filesystem,
)
from quiver.offline._iceberg import (
    _append_iceberg,
    _iceberg_filter,
    iceberg_catalog,
    load_iceberg_table,
)
from quiver.types import is_list, is_map, is_nested, is_struct, map_value_dtype, struct_fields

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from quiver.config import RepoConfig

__all__ = [
    "PUSHED_DIR",
    "TimeWindow",
    "append_to_source",
    "iceberg_catalog",
    "is_s3",
    "load_iceberg_table",
    "pushed_files",
    "quote",
    "s3_filesystem",
    "scan_source",
    "source_select",
    "sql_type",
    "to_utc_micros",
]


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def quote(name: str) -> str:
    """A DuckDB identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


_SQL_TYPES = {
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "string": "VARCHAR",
    "bool": "BOOLEAN",
    "timestamp": "TIMESTAMP",
    "json": "VARCHAR",
}


def sql_type(dtype: str) -> str:
    """The DuckDB type of a dtype (timestamps are naive UTC ``TIMESTAMP`` inside DuckDB; a
    ``json`` value is its JSON text)."""
    if is_list(dtype):
        return sql_type(dtype[5:-1]) + "[]"
    if is_map(dtype):
        return f"MAP(VARCHAR, {sql_type(map_value_dtype(dtype))})"
    if is_struct(dtype):
        return (
            "STRUCT("
            + ", ".join(f"{quote(n)} {sql_type(d)}" for n, d in struct_fields(dtype))
            + ")"
        )
    return _SQL_TYPES[dtype]


def to_utc_micros(value: datetime) -> int:
    """Microseconds since the epoch of ``value`` (naive values are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --------------------------------------------------------------------------------------------
# the normalized SELECT over a source
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeWindow:
    """Bounds on the event timestamp, in UTC microseconds (``None``: unbounded)."""

    lo: int | None = None
    lo_inclusive: bool = True
    hi: int | None = None
    hi_inclusive: bool = False

    @property
    def empty(self) -> bool:
        """Whether no timestamp can satisfy the bounds."""
        if self.lo is None or self.hi is None:
            return False
        if self.lo_inclusive and self.hi_inclusive:
            return self.lo > self.hi
        return self.lo >= self.hi


@dataclass
class _Part:
    """One physical input of a source: the files (or table) and how columns are named in it."""

    kind: str  # "parquet" | "csv" | "dataset" | "iceberg" | "arrow" (a table already read)
    listing: FileListing | None = None
    table: Any = None
    mapped: bool = True  # whether the source's field_mapping applies to its columns
    label: str = ""


def _raw_name(source: FileSource | IcebergSource, out: str, part: _Part) -> str:
    return source.column_for(out) if part.mapped else out


def _ts_expr(col: str, duck_type: str, *, what: str) -> str:
    """SQL turning ``col`` of ``duck_type`` into a naive-UTC microsecond ``TIMESTAMP``."""
    t = duck_type.upper()
    q = quote(col)
    if t == "TIMESTAMP":
        return q
    if t in ("TIMESTAMP_NS", "TIMESTAMPTZ_NS", "TIMESTAMP_NS WITH TIME ZONE"):
        return f"make_timestamp(epoch_ns({q}) // 1000)"
    if t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        return f"make_timestamp(epoch_us({q}))"
    if t in ("TIMESTAMP_MS", "TIMESTAMP_S", "DATE"):
        return f"CAST({q} AS TIMESTAMP)"
    if t == "VARCHAR":
        return f"make_timestamp(epoch_us(CAST({q} AS TIMESTAMPTZ)))"
    raise InvalidError(
        f"{what} has type {duck_type}; expected a timestamp, a date or ISO-8601 strings"
    )


def _prefilter(col: str, duck_type: str, window: TimeWindow) -> tuple[list[str], list[Any]]:
    """Filters on the raw column that DuckDB can push into the scan (row-group pruning).

    They keep every row the exact filter on the normalized value keeps (and maybe a few more):
    the bounds are cast to the column's own type, and nanosecond columns get one extra
    microsecond on the upper bound because normalizing truncates them.
    """
    t = duck_type.upper()
    if t in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMPTZ"):
        target, extra = "TIMESTAMPTZ", 0
    elif t in ("TIMESTAMP", "TIMESTAMP_MS", "TIMESTAMP_S"):
        target, extra = t, 0
    elif t in ("TIMESTAMP_NS", "TIMESTAMPTZ_NS", "TIMESTAMP_NS WITH TIME ZONE"):
        target, extra = ("TIMESTAMP_NS" if t == "TIMESTAMP_NS" else "TIMESTAMPTZ_NS"), 1
    else:
        return [], []
    parts: list[str] = []
    params: list[Any] = []
    if window.lo is not None:
        parts.append(f"{quote(col)} >= CAST(make_timestamp(?::BIGINT) AS {target})")
        params.append(window.lo)
    if window.hi is not None:
        op = "<" if extra else "<="
        parts.append(f"{quote(col)} {op} CAST(make_timestamp(?::BIGINT) AS {target})")
        params.append(window.hi + extra)
    return parts, params


@dataclass
class SourceSelect:
    """A ``SELECT`` over a source, ready to embed as a subquery, and its bound parameters."""

    sql: str
    params: list[Any]
    columns: list[str]


def _view_name(prefix: str) -> str:
    return f"__qv_{prefix}_{uuid.uuid4().hex[:12]}"


def _open_parts(
    config: RepoConfig,
    source: FileSource | IcebergSource,
    *,
    include_pushed: bool = True,
) -> list[_Part]:
    what = f"data source '{source.name}'"
    if isinstance(source, IcebergSource):
        return [_Part("iceberg", table=load_iceberg_table(config, source), label=what)]
    parts: list[_Part] = []
    pushed = pushed_files(config, source) if include_pushed else []
    listing = list_files(config, source.path, source.format, what=what, must_exist=not pushed)
    if listing.files:
        kind = source.format if listing.local else "dataset"
        parts.append(_Part(kind, listing=listing, label=f"{what} ({source.path})"))
    if pushed:
        pushed_listing = FileListing(files=pushed, filesystem=None, base="", hive=False)
        parts.append(
            _Part("parquet", listing=pushed_listing, mapped=False, label=f"{what} (pushed rows)")
        )
    return parts


def _describe(cur: duckdb.DuckDBPyConnection, name: str) -> dict[str, str]:
    rows = cur.execute(f"DESCRIBE SELECT * FROM {quote(name)}").fetchall()
    return {r[0]: str(r[1]) for r in rows}


def _csv_types(hints: Mapping[str, str | None], present: Sequence[str]) -> dict[str, str]:
    out = {}
    for col, dtype in hints.items():
        if col not in present or dtype is None:
            continue
        if dtype == "timestamp" or is_list(dtype) or is_nested(dtype):
            out[col] = "VARCHAR"
        else:
            out[col] = sql_type(dtype)
    return out


def _register_part(
    cur: duckdb.DuckDBPyConnection,
    part: _Part,
    name: str,
    *,
    raw_columns: Sequence[str],
    raw_hints: Mapping[str, str | None],
    ts_raw: str,
    window: TimeWindow,
) -> dict[str, str]:
    """Create a view (or Arrow registration) ``name`` over ``part``; return its column types."""
    import duckdb

    try:
        if part.kind == "parquet":
            assert part.listing is not None
            files = part.listing.files
            rel = cur.read_parquet(
                files, hive_partitioning=part.listing.hive, union_by_name=len(files) > 1
            )
            rel.create_view(name)
        elif part.kind == "csv":
            assert part.listing is not None
            csv_files: Any = part.listing.files  # DuckDB accepts a list of paths
            opts: dict[str, Any] = {
                "header": True,
                "hive_partitioning": part.listing.hive,
                "union_by_name": len(csv_files) > 1,
            }
            probe = cur.read_csv(
                csv_files,
                header=True,
                union_by_name=len(csv_files) > 1,
                hive_partitioning=False,
                all_varchar=True,
            )
            types = _csv_types(raw_hints, probe.columns)
            rel = (
                cur.read_csv(csv_files, **opts, dtype=types)
                if types
                else cur.read_csv(csv_files, **opts)
            )
            rel.create_view(name)
        elif part.kind == "dataset":
            assert part.listing is not None
            cur.register(name, _arrow_dataset(part, raw_hints))
        elif part.kind == "arrow":
            cur.register(name, part.table)
        elif part.kind == "iceberg":
            table = part.table
            present = [f.name for f in table.schema().fields]
            wanted = tuple(c for c in dict.fromkeys(raw_columns) if c in present)
            scan = table.scan(
                row_filter=_iceberg_filter(table, ts_raw, window),
                selected_fields=wanted or ("*",),
            )
            cur.register(name, scan.to_arrow_batch_reader())
        else:  # pragma: no cover - internal
            raise AssertionError(part.kind)
    except duckdb.IOException as exc:
        raise NotFoundError(f"{part.label}: cannot read the files: {_first_line(exc)}") from exc
    except (
        duckdb.InvalidInputException,
        duckdb.BinderException,
        duckdb.ConversionException,
    ) as exc:
        raise InvalidError(f"{part.label}: cannot read the files: {_first_line(exc)}") from exc
    except OSError as exc:
        raise BackendError(f"{part.label}: cannot read: {exc}") from exc
    return _describe(cur, name)


def _arrow_dataset(part: _Part, raw_hints: Mapping[str, str | None]) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.dataset as ds

    from quiver.types import arrow_type

    assert part.listing is not None
    listing = part.listing
    if (
        part.kind == "dataset"
        and listing.files
        and listing.files[0].lower().endswith((".csv", ".csv.gz", ".tsv", ".txt"))
    ):
        column_types = {
            c: (pa.string() if d == "timestamp" or is_list(d) or is_nested(d) else arrow_type(d))
            for c, d in raw_hints.items()
            if d is not None
        }
        fmt: Any = ds.CsvFileFormat(convert_options=pacsv.ConvertOptions(column_types=column_types))
    else:
        fmt = "parquet"
    return ds.dataset(
        listing.files,
        filesystem=listing.filesystem,
        format=fmt,
        partitioning="hive" if listing.hive else None,
        partition_base_dir=listing.base if listing.hive else None,
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _missing_column(
    source: FileSource | IcebergSource,
    part: _Part,
    out: str,
    raw: str,
    types: Mapping[str, str],
    role: str,
) -> InvalidError:
    if part.kind == "iceberg":  # only the wanted columns were registered: list the table's
        cols = sorted(f.name for f in part.table.schema().fields)
    else:
        cols = sorted(types)
    hint = did_you_mean(raw, cols)
    mapping = "" if raw != out else " (or map a column to it with field_mapping)"
    return InvalidError(
        f"{part.label} has no column '{raw}' (needed for {role}){hint}{mapping}; "
        f"its columns are: {', '.join(cols)}"
    )


def source_select(
    cur: duckdb.DuckDBPyConnection,
    config: RepoConfig,
    source: FileSource | IcebergSource,
    columns: Mapping[str, str | None],
    *,
    window: TimeWindow = TimeWindow(),
    ts_alias: str = "__qv_ts",
    created_alias: str | None = "__qv_created",
    roles: Mapping[str, str] | None = None,
    include_pushed: bool = True,
    parts: Sequence[_Part] | None = None,
) -> SourceSelect:
    """Register ``source`` on ``cur`` and build the normalized ``SELECT`` over it.

    Args:
        cur: A DuckDB cursor (views and Arrow objects are registered on it).
        config: The repo config.
        source: The data source.
        columns: Output column (feature or join key name, after ``field_mapping``) -> dtype to
            cast to, or ``None`` to keep the source's type. ``None`` as a whole is not allowed;
            pass every column wanted.
        window: Bounds on the event timestamp; pushed into the scan where possible.
        ts_alias: The output name of the normalized event timestamp.
        created_alias: The output name of the created timestamp (``NULL`` when the source has
            none), or ``None`` to leave it out.
        roles: How to name each column in "missing column" errors (``feature 'x' of view 'v'``).
        include_pushed: Include rows pushed to the source.
        parts: The inputs to read instead of the source's own (e.g. a table already read).

    Returns:
        The SQL (a ``SELECT ... UNION ALL ...``) and its parameters. Timestamps are naive
        ``TIMESTAMP`` in UTC inside DuckDB.

    Raises:
        NotFoundError: the source's files or table do not exist.
        InvalidError: a declared column is missing, or the timestamp column has a wrong type.
    """
    if parts is None:
        parts = _open_parts(config, source, include_pushed=include_pushed)
    roles = roles or {}
    selects: list[str] = []
    params: list[Any] = []
    ts_out = source.field_mapping.get(source.timestamp_field, source.timestamp_field)
    created_out = (
        source.field_mapping.get(source.created_timestamp_field, source.created_timestamp_field)
        if source.created_timestamp_field
        else None
    )
    out_columns = [c for c in columns if c not in (ts_alias, created_alias)]
    for part in parts:
        raw_of = {c: _raw_name(source, c, part) for c in out_columns}
        ts_raw = source.timestamp_field if part.mapped else ts_out
        created_raw = None
        if created_out is not None:
            created_raw = source.created_timestamp_field if part.mapped else created_out
        raw_hints: dict[str, str | None] = {raw_of[c]: columns[c] for c in out_columns}
        raw_hints[ts_raw] = "timestamp"
        if created_raw:
            raw_hints[created_raw] = "timestamp"
        name = _view_name("src")
        types = _register_part(
            cur,
            part,
            name,
            raw_columns=list(raw_hints),
            raw_hints=raw_hints,
            ts_raw=ts_raw,
            window=window,
        )
        if ts_raw not in types:
            raise _missing_column(source, part, ts_out, ts_raw, types, "the timestamp_field")
        exprs: list[str] = []
        for out in out_columns:
            raw = raw_of[out]
            if raw not in types:
                if not part.mapped:  # pushed rows may leave columns out
                    dtype = columns[out]
                    exprs.append(
                        f"CAST(NULL AS {sql_type(dtype)}) AS {quote(out)}"
                        if dtype
                        else f"NULL AS {quote(out)}"
                    )
                    continue
                raise _missing_column(source, part, out, raw, types, roles.get(out, f"'{out}'"))
            exprs.append(
                _cast_expr(raw, types[raw], columns[out], what=f"{part.label} column '{raw}'")
                + f" AS {quote(out)}"
            )
        ts_sql = _ts_expr(ts_raw, types[ts_raw], what=f"{part.label}: timestamp column '{ts_raw}'")
        exprs.append(f"{ts_sql} AS {quote(ts_alias)}")
        if created_alias is not None:
            if created_raw and created_raw in types:
                c_sql = _ts_expr(
                    created_raw,
                    types[created_raw],
                    what=f"{part.label}: created timestamp column '{created_raw}'",
                )
            elif created_raw and part.mapped:
                raise _missing_column(
                    source,
                    part,
                    created_out or "",
                    created_raw,
                    types,
                    "the created_timestamp_field",
                )
            else:
                c_sql = "CAST(NULL AS TIMESTAMP)"
            exprs.append(f"{c_sql} AS {quote(created_alias)}")
        where, wparams = _prefilter(ts_raw, types[ts_raw], window)
        if window.lo is not None:
            op = ">=" if window.lo_inclusive else ">"
            where.append(f"{ts_sql} {op} make_timestamp(?::BIGINT)")
            wparams.append(window.lo)
        if window.hi is not None:
            op = "<=" if window.hi_inclusive else "<"
            where.append(f"{ts_sql} {op} make_timestamp(?::BIGINT)")
            wparams.append(window.hi)
        sql = f"SELECT {', '.join(exprs)} FROM {quote(name)}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        selects.append(sql)
        params.extend(wparams)
    outputs = [*out_columns, ts_alias] + ([created_alias] if created_alias is not None else [])
    return SourceSelect(
        sql=" UNION ALL ".join(f"({s})" for s in selects), params=params, columns=outputs
    )


def _cast_expr(raw: str, duck_type: str, dtype: str | None, *, what: str) -> str:
    if dtype is None:
        return quote(raw)
    if dtype == "timestamp":
        return _ts_expr(raw, duck_type, what=what)
    if is_nested(dtype):
        return _nested_expr(raw, duck_type, dtype)
    target = sql_type(dtype)
    if duck_type.upper() == target:
        return quote(raw)
    return f"CAST({quote(raw)} AS {target})"


def _nested_expr(raw: str, duck_type: str, dtype: str) -> str:
    """A map, struct or ``json`` column: ``json`` is JSON text (any other type becomes its JSON
    text); a map or struct is cast by field name, from JSON text when the column is text (CSV)."""
    text = duck_type.upper() in ("VARCHAR", "JSON")
    if dtype == "json":
        return quote(raw) if text else f"CAST(to_json({quote(raw)}) AS VARCHAR)"
    if text:
        return f"CAST(CAST({quote(raw)} AS JSON) AS {sql_type(dtype)})"
    return f"CAST({quote(raw)} AS {sql_type(dtype)})"


# --------------------------------------------------------------------------------------------
# public helpers: scan and append
# --------------------------------------------------------------------------------------------


def scan_source(
    config: RepoConfig,
    source: FileSource | IcebergSource,
    columns: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    *,
    dtypes: Mapping[str, str] | None = None,
    batch_size: int = 65_536,
) -> pa.RecordBatchReader:
    """Stream a source's rows as Arrow, with ``field_mapping`` applied and pushed rows included.

    Args:
        config: The repo config.
        source: A file or Iceberg source.
        columns: Column names after ``field_mapping`` (default: every column). The event
            timestamp and the created timestamp (if any) are always included, under their
            mapped names, as ``timestamp[us, UTC]``.
        start: Keep rows with ``event_ts >= start`` (naive = UTC).
        end: Keep rows with ``event_ts < end``.
        dtypes: Optional ``{column: dtype}`` casts (e.g. the view's declared dtypes).
        batch_size: Rows per record batch.

    Returns:
        A ``RecordBatchReader`` that DuckDB, pyarrow, pandas and polars can all consume.

    Raises:
        NotFoundError: the source does not exist.
        InvalidError: a requested column is missing or the timestamp column has a wrong type.
    """
    import duckdb
    import pyarrow as pa

    dtypes = dict(dtypes or {})
    ts_out = source.field_mapping.get(source.timestamp_field, source.timestamp_field)
    created_out = (
        source.field_mapping.get(source.created_timestamp_field, source.created_timestamp_field)
        if source.created_timestamp_field
        else None
    )
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if columns is None:
            columns = _all_columns(con, config, source)
        wanted = [c for c in dict.fromkeys(columns) if c not in (ts_out, created_out)]
        window = TimeWindow(
            lo=None if start is None else to_utc_micros(start),
            hi=None if end is None else to_utc_micros(end),
            hi_inclusive=False,
        )
        select = source_select(
            con,
            config,
            source,
            {c: dtypes.get(c) for c in wanted},
            window=window,
            ts_alias=ts_out,
            created_alias=created_out,
        )
        outer = [quote(c) for c in wanted] + [
            f"CAST({quote(ts_out)} AS TIMESTAMPTZ) AS {quote(ts_out)}"
        ]
        if created_out:
            outer.append(f"CAST({quote(created_out)} AS TIMESTAMPTZ) AS {quote(created_out)}")
        sql = f"SELECT {', '.join(outer)} FROM ({select.sql})"
        reader = con.sql(sql, params=select.params).to_arrow_reader(batch_size)
    except duckdb.Error as exc:
        con.close()
        raise _translate(exc, f"data source '{source.name}'") from exc
    except BaseException:
        con.close()
        raise
    schema = reader.schema
    return pa.RecordBatchReader.from_batches(schema, _drain(reader, con, source.name))


def _drain(reader: pa.RecordBatchReader, con: Any, name: str) -> Iterator[pa.RecordBatch]:
    import duckdb

    try:
        yield from reader
    except duckdb.Error as exc:
        raise _translate(exc, f"data source '{name}'") from exc
    finally:
        con.close()


def _all_columns(
    cur: duckdb.DuckDBPyConnection, config: RepoConfig, source: FileSource | IcebergSource
) -> list[str]:
    part = _open_parts(config, source)[0]
    if part.kind == "iceberg":
        raw = [f.name for f in part.table.schema().fields]
    else:
        name = _view_name("probe")
        raw = list(
            _register_part(
                cur,
                part,
                name,
                raw_columns=[],
                raw_hints={},
                ts_raw=source.timestamp_field,
                window=TimeWindow(),
            )
        )
    return [source.field_mapping.get(c, c) if part.mapped else c for c in raw]


def read_table(
    config: RepoConfig,
    source: FileSource | IcebergSource,
    *,
    dtypes: Mapping[str, str] | None = None,
) -> pa.Table:
    """Read every column of a source (``field_mapping`` applied, pushed rows included).

    Values are returned as read (timestamps are not normalized); ``dtypes`` only tells the CSV
    reader how to type those columns (so ``"007"`` stays a string key). Used for entity tables
    given as a path or a label source: they must fit in memory.

    Raises:
        NotFoundError: the source does not exist.
        InvalidError: a value cannot be cast.
    """
    import duckdb

    dtypes = dict(dtypes or {})
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        selects = []
        for part in _open_parts(config, source):
            name = _view_name("src")
            raw_hints: dict[str, str | None] = {}
            if part.kind == "csv" or part.kind == "dataset":
                raw_hints = {_raw_name(source, c, part): d for c, d in dtypes.items()}
            types = _register_part(
                con,
                part,
                name,
                raw_columns=[],
                raw_hints=raw_hints,
                ts_raw=source.timestamp_field,
                window=TimeWindow(),
            )
            renamed = {r: source.field_mapping.get(r, r) if part.mapped else r for r in types}
            exprs = [f"{quote(raw)} AS {quote(out)}" for raw, out in renamed.items()]
            selects.append(f"SELECT {', '.join(exprs)} FROM {quote(name)}")
        return con.sql(" UNION ALL BY NAME ".join(f"({s})" for s in selects)).to_arrow_table()
    except duckdb.Error as exc:
        raise _translate(exc, f"data source '{source.name}'") from exc
    finally:
        con.close()


def _translate(exc: Exception, what: str) -> Exception:
    import duckdb

    if isinstance(exc, duckdb.ConversionException):
        return InvalidError(f"{what}: a value cannot be converted: {_first_line(exc)}")
    if isinstance(exc, duckdb.IOException):
        return NotFoundError(f"{what}: cannot read: {_first_line(exc)}")
    if isinstance(exc, (duckdb.BinderException, duckdb.InvalidInputException)):
        return InvalidError(f"{what}: {_first_line(exc)}")
    return BackendError(f"{what}: DuckDB failed: {_first_line(exc)}")


def append_to_source(
    config: RepoConfig, source: FileSource | IcebergSource, table: pa.Table
) -> None:
    """Append rows to a source's offline data (push to the offline store).

    Columns are named after ``field_mapping`` (join keys, feature names, the timestamp field).
    For an Iceberg source the rows are appended to the table (columns renamed back to the
    table's names and cast to its schema). For a file source a new Parquet file is written under
    ``<data_dir>/_pushed/<source name>/`` (timestamps as ``timestamp[us, UTC]``); every read of
    the source includes it. The file appears atomically (written, then renamed).

    Raises:
        InvalidError: the timestamp column is missing, or a column is unknown to an Iceberg table
            or cannot be cast to its type.
    """
    import pyarrow as pa

    if not isinstance(table, pa.Table):
        raise InvalidError(f"append_to_source needs a pyarrow Table, got {type(table).__name__}")
    ts_out = source.field_mapping.get(source.timestamp_field, source.timestamp_field)
    if ts_out not in table.column_names:
        raise InvalidError(
            f"rows pushed to data source '{source.name}' have no timestamp column '{ts_out}'"
        )
    from quiver.offline.timestamps import normalize_timestamp_columns

    table = normalize_timestamp_columns(table, what=f"rows pushed to data source '{source.name}'")
    if isinstance(source, IcebergSource):
        _append_iceberg(config, source, table)
        return
    folder = pushed_dir(config, source)
    folder.mkdir(parents=True, exist_ok=True)
    import pyarrow.parquet as pq

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    final = folder / f"{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = folder / f".{final.name}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise BackendError(
            f"cannot write pushed rows for data source '{source.name}': {exc}"
        ) from exc
