"""Reading data sources: files (Parquet, CSV; local or S3) and Iceberg tables.

Every source is read through DuckDB, which gets either its own readers (local files) or Arrow
(``pyarrow.dataset`` over ``pyarrow.fs.S3FileSystem`` for S3, ``pyiceberg`` scans for Iceberg):
no DuckDB extension is downloaded. :func:`source_select` builds the one SQL ``SELECT`` that
applies the source's ``field_mapping``, casts columns to their declared dtypes, normalizes the
timestamps (every input form: any Arrow/Parquet timestamp unit, naive or zoned, dates, ISO strings)
to UTC microseconds, and filters the time window, pushing it into the scan where it can.

Rows pushed to a file source (:func:`append_to_source`) are written as Parquet files under
``<data_dir>/_pushed/<source name>/`` and every read of the source includes them.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.definitions import FileSource, IcebergSource, did_you_mean
from quiver.errors import BackendError, ConfigError, InvalidError, NotFoundError, require
from quiver.types import is_list

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    import pyarrow.fs as pafs

    from quiver.config import RepoConfig

__all__ = [
    "PUSHED_DIR",
    "TimeWindow",
    "append_to_source",
    "iceberg_catalog",
    "load_iceberg_table",
    "pushed_files",
    "quote",
    "s3_filesystem",
    "scan_source",
    "source_select",
    "sql_type",
    "to_utc_micros",
]

PUSHED_DIR = "_pushed"
"""Folder under the data directory that holds rows pushed to file sources."""

_GLOB_CHARS = re.compile(r"[*?\[]")
_HIVE_DIR = re.compile(r"^[^=/]+=[^/]*$")


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
}


def sql_type(dtype: str) -> str:
    """The DuckDB type of a dtype (timestamps are naive UTC ``TIMESTAMP`` inside DuckDB)."""
    if is_list(dtype):
        return sql_type(dtype[5:-1]) + "[]"
    return _SQL_TYPES[dtype]


def to_utc_micros(value: datetime) -> int:
    """Microseconds since the epoch of ``value`` (naive values are UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _utc_datetime(micros: int) -> datetime:
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def is_s3(path: str) -> bool:
    """Whether ``path`` is an ``s3://`` (or ``s3a://``) URI."""
    return path.lower().startswith(("s3://", "s3a://"))


def _strip_s3(path: str) -> str:
    return path.split("://", 1)[1]


def s3_filesystem(config: RepoConfig) -> pafs.S3FileSystem:
    """A ``pyarrow`` S3 filesystem from ``config.s3``, falling back to the ``AWS_*`` variables.

    The endpoint comes from ``s3.endpoint_url`` or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``;
    the region from ``s3.region`` or ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; credentials from
    ``s3.access_key_id`` / ``s3.secret_access_key`` / ``s3.session_token`` or the usual AWS chain.
    """
    import pyarrow.fs as pafs

    s3 = config.s3
    kwargs: dict[str, Any] = {}
    endpoint = (
        s3.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        scheme, sep, rest = endpoint.partition("://")
        if sep:
            kwargs["scheme"] = scheme
            kwargs["endpoint_override"] = rest.rstrip("/")
        else:
            kwargs["endpoint_override"] = endpoint.rstrip("/")
    region = s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if s3.access_key_id or s3.secret_access_key:
        kwargs["access_key"] = s3.access_key_id
        kwargs["secret_key"] = s3.secret_access_key
        if s3.session_token:
            kwargs["session_token"] = s3.session_token
    try:  # delayed open: a small output is one PUT, a large one a multipart upload
        return pafs.S3FileSystem(allow_delayed_open=True, **kwargs)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for bad settings
        raise ConfigError(f"cannot set up S3 access from the 's3:' settings: {exc}") from exc


# --------------------------------------------------------------------------------------------
# file listing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileListing:
    """The data files of a path: local paths, or ``bucket/key`` paths on ``filesystem``."""

    files: list[str]
    filesystem: pafs.FileSystem | None
    base: str
    hive: bool

    @property
    def local(self) -> bool:
        """Whether the files are on the local disk."""
        return self.filesystem is None


def _is_data_file(name: str, fmt: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    if base.startswith((".", "_")) or base.endswith((".crc", ".tmp")):
        return False
    lowered = base.lower()
    if fmt == "csv":
        return lowered.endswith((".csv", ".csv.gz", ".tsv", ".txt")) or "." not in base
    return lowered.endswith((".parquet", ".pq", ".parq")) or "." not in base


def _has_hive_dirs(files: Sequence[str], base: str) -> bool:
    for f in files[:1000]:
        rel = f[len(base) :].lstrip("/") if f.startswith(base) else f
        parts = rel.split("/")[:-1]
        if parts and any(_HIVE_DIR.match(p) for p in parts):
            return True
    return False


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    out: list[str] = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        out.append(part)
    return "/".join(out)


def list_files(
    config: RepoConfig, path: str, fmt: str, *, what: str, must_exist: bool = True
) -> FileListing:
    """List the data files of a file, directory or glob, local or on S3.

    Args:
        config: The repo config (relative paths are relative to the repo; S3 settings).
        path: A file, a directory (read recursively) or a glob (``**`` allowed).
        fmt: ``parquet`` or ``csv``: which files of a directory count.
        what: How to name the owner in errors, e.g. ``data source 'x'``.
        must_exist: Raise :class:`NotFoundError` when nothing matches.

    Raises:
        NotFoundError: no file matches (when ``must_exist``).
    """
    if is_s3(path):
        return _list_s3(config, path, fmt, what=what, must_exist=must_exist)
    resolved = str(config.resolve(path))
    if _GLOB_CHARS.search(path):
        files = sorted(f for f in glob.glob(resolved, recursive=True) if os.path.isfile(f))
        base = _glob_base(resolved)
    elif os.path.isdir(resolved):
        files = []
        for root, dirs, names in os.walk(resolved):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) or "=" in d)
            files.extend(os.path.join(root, n) for n in sorted(names) if _is_data_file(n, fmt))
        base = resolved
    elif os.path.isfile(resolved):
        files = [resolved]
        base = os.path.dirname(resolved)
    else:
        files = []
        base = resolved
    if not files and must_exist:
        where = "matches no file" if _GLOB_CHARS.search(path) else "does not exist"
        if os.path.isdir(resolved):
            where = f"holds no {fmt} files"
        raise NotFoundError(f"{what}: path '{path}' ({resolved}) {where}")
    return FileListing(files=files, filesystem=None, base=base, hive=_has_hive_dirs(files, base))


def _list_s3(
    config: RepoConfig, path: str, fmt: str, *, what: str, must_exist: bool
) -> FileListing:
    import pyarrow.fs as pafs

    fs = s3_filesystem(config)
    raw = _strip_s3(path).rstrip("/")
    try:
        if _GLOB_CHARS.search(raw):
            base = _glob_base(raw)
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            pattern = raw.replace("**/", "*").replace("/**", "*")
            files = sorted(
                i.path
                for i in infos
                if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, pattern)
            )
        else:
            info = fs.get_file_info(raw)
            base = raw
            if info.type == pafs.FileType.File:
                files = [raw]
                base = raw.rsplit("/", 1)[0]
            elif info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(raw, recursive=True))
                files = sorted(
                    i.path
                    for i in infos
                    if i.type == pafs.FileType.File
                    and _is_data_file(i.path, fmt)
                    and not any(
                        p.startswith((".", "_")) and "=" not in p
                        for p in i.path[len(raw) :].split("/")[:-1]
                    )
                )
            else:
                files = []
    except OSError as exc:
        raise BackendError(f"{what}: cannot list '{path}' on S3: {exc}") from exc
    if not files and must_exist:
        raise NotFoundError(f"{what}: path '{path}' does not exist or holds no {fmt} files")
    return FileListing(files=files, filesystem=fs, base=base, hive=_has_hive_dirs(files, base))


def pushed_dir(config: RepoConfig, source: FileSource | IcebergSource) -> Path:
    """The folder holding rows pushed to a file source."""
    return config.data_path / PUSHED_DIR / source.name


def pushed_files(config: RepoConfig, source: FileSource | IcebergSource) -> list[str]:
    """The Parquet files pushed to a file source so far (complete files only)."""
    folder = pushed_dir(config, source)
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))


# --------------------------------------------------------------------------------------------
# Iceberg
# --------------------------------------------------------------------------------------------

_CATALOGS: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
_CATALOG_LOCK = threading.Lock()


def _catalog_properties(config: RepoConfig, name: str) -> dict[str, str]:
    catalogs = config.iceberg.catalogs
    if name not in catalogs:
        raise ConfigError(
            f"Iceberg catalog '{name}' is not configured; add it under iceberg.catalogs in "
            f"quiver.yaml (configured: {', '.join(sorted(catalogs)) or 'none'})"
            + did_you_mean(name, list(catalogs))
        )
    cfg = catalogs[name]
    props: dict[str, str] = {"type": cfg.type}
    uri = cfg.uri
    if cfg.type == "sql":
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
            db = config.resolve(uri[len(prefix) :])
            db.parent.mkdir(parents=True, exist_ok=True)
            uri = prefix + str(db)
    props["uri"] = uri
    warehouse = cfg.warehouse
    if cfg.type == "rest":  # the server names its warehouse: pass only what the user set
        warehouse = warehouse if "warehouse" in cfg.model_fields_set else ""
    elif warehouse and "://" not in warehouse:
        folder = config.resolve(warehouse)
        folder.mkdir(parents=True, exist_ok=True)
        warehouse = folder.as_uri()
    if warehouse:
        props["warehouse"] = warehouse
    s3 = config.s3
    endpoint = (
        s3.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    for key, value in (
        ("s3.endpoint", endpoint),
        ("s3.region", s3.region),
        ("s3.access-key-id", s3.access_key_id),
        ("s3.secret-access-key", s3.secret_access_key),
        ("s3.session-token", s3.session_token),
    ):
        if value:
            props[key] = value
    props.update(cfg.properties)
    return props


def iceberg_catalog(config: RepoConfig, name: str = "default") -> Any:
    """The pyiceberg catalog ``name`` from ``config.iceberg.catalogs`` (cached per settings).

    A ``sql`` catalog with a relative SQLite URI or warehouse is resolved against the repo, so
    the default is an embedded catalog under ``data/``.

    Raises:
        ConfigError: the catalog is not configured.
        BackendError: the catalog cannot be opened.
    """
    props = _catalog_properties(config, name)
    key = (name, tuple(sorted(props.items())))
    with _CATALOG_LOCK:
        catalog = _CATALOGS.get(key)
        if catalog is None:
            require("pyiceberg", "iceberg", "Iceberg sources")
            from pyiceberg.catalog import load_catalog

            try:
                catalog = load_catalog(name, **props)
            except Exception as exc:
                raise BackendError(f"cannot open Iceberg catalog '{name}': {exc}") from exc
            _CATALOGS[key] = catalog
    return catalog


def load_iceberg_table(config: RepoConfig, source: IcebergSource) -> Any:
    """The pyiceberg table of an Iceberg source.

    Raises:
        NotFoundError: the table does not exist in the catalog.
    """
    catalog = iceberg_catalog(config, source.catalog)
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    try:
        return catalog.load_table(source.table)
    except (NoSuchTableError, NoSuchNamespaceError) as exc:
        raise NotFoundError(
            f"data source '{source.name}': Iceberg table '{source.table}' does not exist in "
            f"catalog '{source.catalog}'"
        ) from exc
    except Exception as exc:
        raise BackendError(
            f"data source '{source.name}': cannot load Iceberg table '{source.table}': {exc}"
        ) from exc


def _iceberg_filter(table: Any, column: str, window: TimeWindow) -> Any:
    """A conservative pyiceberg row filter for the window (exact filtering happens in DuckDB)."""
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThanOrEqual
    from pyiceberg.types import DateType, TimestampType, TimestamptzType

    try:
        ftype = table.schema().find_field(column).field_type
    except ValueError:
        return AlwaysTrue()
    expr: Any = AlwaysTrue()
    makers: tuple[tuple[int | None, Any], ...] = (
        (window.lo, GreaterThanOrEqual),
        (window.hi, LessThanOrEqual),
    )
    for bound, make in makers:
        if bound is None:
            continue
        when = _utc_datetime(bound)
        if isinstance(ftype, TimestamptzType):
            literal = when.isoformat()
        elif isinstance(ftype, TimestampType):
            literal = when.replace(tzinfo=None).isoformat()
        elif isinstance(ftype, DateType):
            literal = when.date().isoformat()
        else:
            continue
        expr = And(expr, make(column, literal))
    return expr


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
        if dtype == "timestamp" or is_list(dtype):
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
            c: (pa.string() if d == "timestamp" or is_list(d) else arrow_type(d))
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
    target = sql_type(dtype)
    if duck_type.upper() == target:
        return quote(raw)
    return f"CAST({quote(raw)} AS {target})"


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


def _append_iceberg(config: RepoConfig, source: IcebergSource, table: pa.Table) -> None:
    import pyarrow as pa

    ice = load_iceberg_table(config, source)
    schema = ice.schema().as_arrow()
    out_of = {f.name: source.field_mapping.get(f.name, f.name) for f in schema}
    unknown = sorted(set(table.column_names) - set(out_of.values()))
    if unknown:
        raise InvalidError(
            f"Iceberg table '{source.table}' (data source '{source.name}') has no column for "
            f"{', '.join(repr(u) for u in unknown)}; its columns are: {', '.join(out_of.values())}"
        )
    arrays = []
    for f in schema:
        out = out_of[f.name]
        if out in table.column_names:
            col = table.column(out)
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidError(
                    f"column '{out}' pushed to Iceberg table '{source.table}' has type {col.type}, "
                    f"which cannot be cast to {f.type}: {exc}"
                ) from exc
        else:
            if not f.nullable:
                raise InvalidError(
                    f"rows pushed to Iceberg table '{source.table}' lack required column '{out}'"
                )
            col = pa.nulls(table.num_rows, f.type)
        arrays.append(col)
    data = pa.Table.from_arrays(arrays, schema=schema)
    try:
        ice.append(data)
    except Exception as exc:
        raise BackendError(
            f"cannot append to Iceberg table '{source.table}' (data source '{source.name}'): {exc}"
        ) from exc
