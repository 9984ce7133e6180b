"""The Spark engine's session and source reader: data sources as Spark DataFrames.

Every source is read by Spark itself: Parquet and CSV files (local paths, or ``s3://`` paths as
``s3a://``, which needs the ``hadoop-aws`` connector on the cluster), the Parquet files pushed to
a file source, and Iceberg tables, whose data files pyiceberg plans on the driver (metadata only:
no Spark Iceberg runtime) and Spark reads. Tables with delete files are refused by name.

:func:`source_frame` is the Spark twin of :func:`quiver.offline.sources.source_select`: it
applies the source's ``field_mapping``, casts columns to their declared dtypes, normalizes the
event and created timestamps (any Parquet timestamp unit, naive or zoned, dates, ISO strings) to
Spark ``TIMESTAMP`` (UTC: the session time zone is UTC) and filters the time window.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quiver.definitions import FileSource, IcebergSource, did_you_mean
from quiver.errors import BackendError, ConfigError, InvalidError, NotFoundError, QuiverError
from quiver.offline.sources import TimeWindow
from quiver.types import is_list, is_map, is_nested, is_struct, map_value_dtype, struct_fields

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from quiver.config import RepoConfig, SparkOfflineEngineConfig
    from quiver.definitions import FeatureView
    from quiver.selection import ViewSelection

__all__ = [
    "CREATED",
    "TS",
    "open_session",
    "source_frame",
    "spark_error",
    "spark_type",
    "view_frame",
]

TS = "__ts"
"""The normalized event timestamp column of a source frame (Spark ``TIMESTAMP``, UTC)."""
CREATED = "__created"
"""The normalized created timestamp column (null when the source has none)."""

_SQL_TYPES = {
    "int32": "int",
    "int64": "bigint",
    "float32": "float",
    "float64": "double",
    "string": "string",
    "bool": "boolean",
    "timestamp": "timestamp",
    "json": "string",
}


def spark_type(dtype: str) -> str:
    """The Spark SQL type (DDL) of a dtype; a ``json`` value is its JSON text."""
    if is_list(dtype):
        return f"array<{spark_type(dtype[5:-1])}>"
    if is_map(dtype):
        return f"map<string,{spark_type(map_value_dtype(dtype))}>"
    if is_struct(dtype):
        inner = ",".join(f"`{n}`:{spark_type(d)}" for n, d in struct_fields(dtype))
        return f"struct<{inner}>"
    return _SQL_TYPES[dtype]


# --------------------------------------------------------------------------------------------
# the session
# --------------------------------------------------------------------------------------------


def _s3_conf(config: RepoConfig) -> dict[str, str]:
    """Hadoop S3A settings from ``config.s3`` (a setting in ``offline_engine.conf`` wins)."""
    s3 = config.s3
    out: dict[str, str] = {}
    endpoint = (
        s3.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        out["spark.hadoop.fs.s3a.endpoint"] = endpoint
        out["spark.hadoop.fs.s3a.path.style.access"] = "true"
        if endpoint.startswith("http://"):
            out["spark.hadoop.fs.s3a.connection.ssl.enabled"] = "false"
    region = s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        out["spark.hadoop.fs.s3a.endpoint.region"] = region
    if s3.access_key_id and s3.secret_access_key:
        out["spark.hadoop.fs.s3a.access.key"] = s3.access_key_id
        out["spark.hadoop.fs.s3a.secret.key"] = s3.secret_access_key
        if s3.session_token:
            out["spark.hadoop.fs.s3a.session.token"] = s3.session_token
    return out


SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Parquet TIMESTAMP(NANOS) (pandas' default unit before 3.0) reads as its INT64 value,
    # which source_frame turns into microseconds; without it Spark refuses the file.
    "spark.sql.legacy.parquet.nanosAsLong": "true",
}
"""Settings the engine needs on every session (set at run time on an existing one too)."""


def open_session(settings: SparkOfflineEngineConfig, config: RepoConfig) -> tuple[Any, bool]:
    """The Spark session for ``settings``, and whether the engine owns it (stops it on close).

    An active session in the process (a notebook's, a test's) is reused and not owned; else a
    new one is built from ``master`` (or ``remote``: Spark Connect), ``app_name`` and ``conf``.
    Either way the settings in :data:`SESSION_CONF` are set on it.

    Raises:
        MissingExtraError: pyspark is not installed (extra ``spark``).
        ConfigError: Spark cannot start with these settings.
    """
    from quiver.errors import require

    sql = require("pyspark.sql", "spark", "the Spark offline engine")
    session = None if settings.remote else sql.SparkSession.getActiveSession()
    owns = session is None
    if session is None:
        if not settings.remote and settings.master.startswith("local"):
            # Local Python workers run this interpreter (where quiver is installed).
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = sql.SparkSession.builder.appName(settings.app_name)
        builder = (
            builder.remote(settings.remote) if settings.remote else builder.master(settings.master)
        )
        conf = {**_s3_conf(config), **SESSION_CONF, **settings.conf}
        if not settings.remote:
            conf.setdefault("spark.ui.showConsoleProgress", "false")
            conf.setdefault("spark.log.level", "ERROR")
        for key, value in conf.items():
            builder = builder.config(key, value)
        try:
            session = builder.getOrCreate()
        except Exception as exc:
            raise ConfigError(
                f"offline_engine: Spark cannot start ({type(exc).__name__}: "
                f"{_first_line(exc)}); check master/remote/conf and that Java 17+ is installed"
            ) from exc
    for key, value in SESSION_CONF.items():
        if key not in settings.conf:
            session.conf.set(key, value)
    quiet_pyspark()
    return session, owns


def quiet_pyspark() -> None:
    """Silence PySpark's own reports of errors the engine translates (JSON lines on stdout) and
    its warning about the pandas version (the engine exchanges Arrow, not pandas)."""
    import logging
    import warnings

    logging.getLogger("DataFrameQueryContextLogger").setLevel(logging.CRITICAL)
    warnings.filterwarnings(
        "ignore", message="PySpark does not yet fully support pandas", category=FutureWarning
    )


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def spark_error(exc: Exception, what: str) -> QuiverError:
    """A Spark failure as a Quiver error naming ``what``."""
    if isinstance(exc, QuiverError):
        return exc
    text = str(exc)
    cls = type(exc).__name__
    if "PATH_NOT_FOUND" in text or "FileNotFoundException" in text:
        return NotFoundError(f"{what}: cannot read: {_first_line(exc)}")
    if cls in ("AnalysisException", "NumberFormatException", "SparkNumberFormatException") or any(
        tag in text
        for tag in ("CAST_INVALID_INPUT", "CANNOT_PARSE", "DATATYPE_MISMATCH", "INVALID_")
    ):
        return InvalidError(f"{what}: {_first_line(exc)}")
    return BackendError(f"{what}: Spark failed: {cls}: {_first_line(exc)}")


# --------------------------------------------------------------------------------------------
# the inputs of a source
# --------------------------------------------------------------------------------------------


@dataclass
class _Part:
    """One physical input of a source, as Spark reads it."""

    kind: str  # "parquet" | "csv" | "frame" (a DataFrame already built)
    paths: list[str] = field(default_factory=list)  # Spark-readable URIs
    base: str | None = None  # the hive partitioning root, when partitioned
    frame: Any = None
    mapped: bool = True  # whether the source's field_mapping applies to its columns
    label: str = ""
    footer: Any = None  # (i) -> pyarrow schema of file i (what Spark's types lose)
    schema: Any = None  # the first file's schema, once read
    columns_hint: list[str] | None = None  # every column (for "missing column" errors)


def _s3a(path: str) -> str:
    """A path as Spark's S3A connector reads it (``bucket/key`` from pyarrow, or ``s3://``)."""
    if path.lower().startswith("s3a://"):
        return path
    if path.lower().startswith("s3://"):
        return "s3a://" + path[5:]
    return "s3a://" + path


def _file_parts(config: RepoConfig, source: FileSource, include_pushed: bool) -> list[_Part]:
    from quiver.offline._files import list_files, pushed_files

    what = f"data source '{source.name}'"
    pushed = pushed_files(config, source) if include_pushed else []
    listing = list_files(config, source.path, source.format, what=what, must_exist=not pushed)
    parts: list[_Part] = []
    if listing.files:
        if listing.local:
            paths = list(listing.files)
            base = listing.base if listing.hive else None
        else:
            paths = [_s3a(f) for f in listing.files]
            base = _s3a(listing.base) if listing.hive else None
        files, fs = list(listing.files), listing.filesystem
        parts.append(
            _Part(
                source.format,
                paths=paths,
                base=base,
                label=f"{what} ({source.path})",
                footer=lambda i: _read_schema(files[i], fs),
            )
        )
    if pushed:
        parts.append(
            _Part(
                "parquet",
                paths=list(pushed),
                mapped=False,
                label=f"{what} (pushed rows)",
                footer=lambda i: _read_schema(pushed[i], None),
            )
        )
    return parts


def _read_schema(path: str, filesystem: Any) -> Any:
    import pyarrow.parquet as pq

    return pq.read_schema(path, filesystem=filesystem)


def _iceberg_part(
    session: SparkSession,
    config: RepoConfig,
    source: IcebergSource,
    raw_columns: Sequence[str],
    ts_raw: str,
    window: TimeWindow,
) -> _Part:
    """The data files of an Iceberg table's current snapshot within ``window`` (pyiceberg plans
    them from the table's metadata); refused when any has delete files."""
    from quiver.offline._iceberg import _iceberg_filter, load_iceberg_table

    what = f"data source '{source.name}' (Iceberg table {source.table})"
    table = load_iceberg_table(config, source)
    present = [f.name for f in table.schema().fields]
    wanted = tuple(c for c in dict.fromkeys(raw_columns) if c in present)
    try:
        scan = table.scan(
            row_filter=_iceberg_filter(table, ts_raw, window), selected_fields=wanted or ("*",)
        )
        tasks = list(scan.plan_files())
    except QuiverError:
        raise
    except Exception as exc:
        raise BackendError(f"{what}: cannot plan the scan: {_first_line(exc)}") from exc
    with_deletes = [t for t in tasks if t.delete_files]
    if with_deletes:
        example = next(iter(with_deletes[0].delete_files)).file_path
        raise InvalidError(
            f"{what}: {len(with_deletes)} data file(s) have delete files (e.g. {example}); the "
            "Spark engine reads data files only: compact the table (rewrite its data files) "
            "or use offline_engine type duckdb"
        )
    paths = [_data_path(t.file.file_path) for t in tasks]
    if not paths:  # no data in the window: an empty frame with the table's columns
        arrow_schema = table.schema().as_arrow()
        frame = session.createDataFrame(arrow_schema.empty_table())
        return _Part("frame", frame=frame, label=what, columns_hint=present)
    return _Part("parquet", paths=paths, label=what, columns_hint=present)


def _data_path(path: str) -> str:
    """An Iceberg data file's path as Spark reads it."""
    if path.lower().startswith(("s3://", "s3a://")):
        return _s3a(path)
    return path[len("file://") :] if path.startswith("file://") else path


def _read_part(
    session: SparkSession, part: _Part, raw_hints: Mapping[str, str | None]
) -> DataFrame:
    """The raw columns of ``part`` as a DataFrame (nothing read yet beyond schemas)."""
    if part.kind == "frame":
        frame: DataFrame = part.frame
        return frame
    reader = session.read
    if part.base is not None:
        reader = reader.option("basePath", part.base)
    try:
        if part.kind == "parquet":
            if len(part.paths) > 1:
                reader = reader.option("mergeSchema", "true")
            return reader.parquet(*part.paths)
        # CSV: the declared columns as text (cast below, so "007" stays a string key); the
        # others (a transformation's inputs) typed as Spark infers them.
        reader = reader.option("header", "true").option("mode", "FAILFAST")
        if any(d is None for d in raw_hints.values()):
            from pyspark.sql.types import StringType, StructField, StructType

            inferred = reader.option("inferSchema", "true").csv(part.paths).schema
            schema = StructType(
                [
                    StructField(f.name, StringType()) if raw_hints.get(f.name) else f
                    for f in inferred.fields
                ]
            )
            return session.read.option("header", "true").schema(schema).csv(part.paths)
        return reader.csv(part.paths)
    except Exception as exc:
        raise spark_error(exc, f"{part.label}: cannot read the files") from exc


# --------------------------------------------------------------------------------------------
# normalizing columns
# --------------------------------------------------------------------------------------------


def _ts_column(frame: DataFrame, part: _Part, raw: str, *, what: str) -> Column:
    """``raw`` as a Spark ``TIMESTAMP`` (UTC), from any timestamp, date or ISO text."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    dtype = frame.schema[raw].dataType
    col = F.col(f"`{raw}`")
    if isinstance(dtype, T.TimestampType):
        return col
    if isinstance(dtype, (T.TimestampNTZType, T.DateType, T.StringType)):
        return col.cast("timestamp")
    if isinstance(dtype, T.LongType) and part.footer is not None and _is_nanos(part, raw):
        # TIMESTAMP(NANOS) read as its value: floor to microseconds
        q = f"`{raw}`"
        return F.expr(f"timestamp_micros(({q} - pmod({q}, 1000)) div 1000)")
    raise InvalidError(
        f"{what} has type {dtype.simpleString()}; expected a timestamp, a date or ISO-8601 strings"
    )


def _file_type(part: _Part, raw: str) -> Any:
    """The Arrow type of column ``raw`` in one of the part's Parquet files (``None``: unknown)."""
    if part.footer is None:
        return None
    if part.schema is None:
        try:
            part.schema = part.footer(0)
        except Exception:  # an unreadable footer: Spark reports the file itself
            part.footer = None
            return None
    idx = part.schema.get_field_index(raw)
    return None if idx < 0 else part.schema.field(idx).type


def _null_everywhere(part: _Part, raw: str) -> bool:
    """Whether column ``raw`` has Arrow's null type in every file of the part."""
    import pyarrow as pa

    for i in range(1, len(part.paths)):
        schema = part.footer(i)
        idx = schema.get_field_index(raw)
        if idx >= 0 and not pa.types.is_null(schema.field(idx).type):
            return False
    return True


def _is_nanos(part: _Part, raw: str) -> bool:
    import pyarrow as pa

    t = _file_type(part, raw)
    return bool(t is not None and pa.types.is_timestamp(t) and t.unit == "ns")


def _cast_column(frame: DataFrame, part: _Part, raw: str, dtype: str | None, *, what: str) -> Any:
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    col = F.col(f"`{raw}`")
    if dtype is None:
        import pyarrow as pa

        t = _file_type(part, raw)
        if t is not None and pa.types.is_null(t) and _null_everywhere(part, raw):
            return F.lit(None)  # Parquet stores a null column as INT32: keep it untyped
        return col
    if dtype == "timestamp":
        return _ts_column(frame, part, raw, what=what)
    current = frame.schema[raw].dataType
    text = isinstance(current, T.StringType)
    if dtype == "json":
        return col if text else F.to_json(col)
    target = spark_type(dtype)
    if (is_nested(dtype) or is_list(dtype)) and text:
        return F.from_json(col, target)
    if current.simpleString() == target:
        return col
    return col.cast(target)


def _missing_column(part: _Part, frame: DataFrame, out: str, raw: str, role: str) -> InvalidError:
    cols = sorted(part.columns_hint or frame.columns)
    hint = did_you_mean(raw, cols)
    mapping = "" if raw != out else " (or map a column to it with field_mapping)"
    return InvalidError(
        f"{part.label} has no column '{raw}' (needed for {role}){hint}{mapping}; "
        f"its columns are: {', '.join(cols)}"
    )


def _window_filter(ts: Column, window: TimeWindow) -> Column | None:
    from pyspark.sql import functions as F

    cond: Column | None = None
    if window.lo is not None:
        lo = F.timestamp_micros(F.lit(window.lo))
        c = ts >= lo if window.lo_inclusive else ts > lo
        cond = c
    if window.hi is not None:
        hi = F.timestamp_micros(F.lit(window.hi))
        c = ts <= hi if window.hi_inclusive else ts < hi
        cond = c if cond is None else cond & c
    return cond


def source_frame(
    session: SparkSession,
    config: RepoConfig,
    source: FileSource | IcebergSource,
    columns: Mapping[str, str | None],
    *,
    window: TimeWindow = TimeWindow(),
    roles: Mapping[str, str] | None = None,
    include_pushed: bool = True,
    parts: Sequence[_Part] | None = None,
) -> DataFrame:
    """A source's rows as a Spark DataFrame, normalized (the Spark twin of
    :func:`quiver.offline.sources.source_select`; lazy: Spark reads only schemas here).

    Args:
        session: The Spark session.
        config: The repo config.
        source: A file or Iceberg source.
        columns: Output column (after ``field_mapping``) -> the dtype to cast it to, or ``None``
            to keep the source's type.
        window: Bounds on the event timestamp (pushed into the Parquet scan by Spark; for
            Iceberg, also used by pyiceberg to skip data files).
        roles: How to name each column in "missing column" errors.
        include_pushed: Include rows pushed to the source.
        parts: The inputs to read instead of the source's own.

    Returns:
        ``columns`` in order, then :data:`TS` (the event time) and :data:`CREATED` (the
        created time, null when the source has none), both ``TIMESTAMP`` in UTC; only rows
        within ``window``.

    Raises:
        NotFoundError: the source's files or table do not exist.
        InvalidError: a declared column is missing, or the timestamp column has a wrong type,
            or an Iceberg table has delete files.
    """
    from pyspark.sql import functions as F

    roles = roles or {}
    ts_out = source.field_mapping.get(source.timestamp_field, source.timestamp_field)
    created_out = (
        source.field_mapping.get(source.created_timestamp_field, source.created_timestamp_field)
        if source.created_timestamp_field
        else None
    )
    out_columns = [c for c in columns if c not in (TS, CREATED)]
    if parts is None:
        if isinstance(source, IcebergSource):
            raw_cols = [source.column_for(c) for c in out_columns] + [source.timestamp_field]
            if source.created_timestamp_field:
                raw_cols.append(source.created_timestamp_field)
            parts = [
                _iceberg_part(session, config, source, raw_cols, source.timestamp_field, window)
            ]
        else:
            parts = _file_parts(config, source, include_pushed)
    frames: list[DataFrame] = []
    for part in parts:
        raw_of = {c: (source.column_for(c) if part.mapped else c) for c in out_columns}
        ts_raw = source.timestamp_field if part.mapped else ts_out
        created_raw = None
        if created_out is not None:
            created_raw = source.created_timestamp_field if part.mapped else created_out
        hints: dict[str, str | None] = {raw_of[c]: columns[c] for c in out_columns}
        hints[ts_raw] = "timestamp"
        if created_raw:
            hints[created_raw] = "timestamp"
        frame = _read_part(session, part, hints)
        present = set(frame.columns)
        if ts_raw not in present:
            raise _missing_column(part, frame, ts_out, ts_raw, "the timestamp_field")
        exprs: list[Column] = []
        for out in out_columns:
            raw = raw_of[out]
            dtype = columns[out]
            if raw not in present:
                if not part.mapped:  # pushed rows may leave columns out
                    null = F.lit(None)
                    exprs.append((null.cast(spark_type(dtype)) if dtype else null).alias(out))
                    continue
                raise _missing_column(part, frame, out, raw, roles.get(out, f"'{out}'"))
            exprs.append(
                _cast_column(frame, part, raw, dtype, what=f"{part.label} column '{raw}'").alias(
                    out
                )
            )
        ts = _ts_column(frame, part, ts_raw, what=f"{part.label}: timestamp column '{ts_raw}'")
        exprs.append(ts.alias(TS))
        if created_raw and created_raw in present:
            created = _ts_column(
                frame,
                part,
                created_raw,
                what=f"{part.label}: created timestamp column '{created_raw}'",
            )
        elif created_raw and part.mapped:
            raise _missing_column(
                part, frame, created_out or "", created_raw, "the created_timestamp_field"
            )
        else:
            created = F.lit(None).cast("timestamp")
        exprs.append(created.alias(CREATED))
        try:
            selected = frame.select(*exprs)
        except Exception as exc:
            raise spark_error(exc, part.label) from exc
        cond = _window_filter(F.col(TS), window)
        frames.append(selected if cond is None else selected.where(cond))
    result = frames[0]
    for other in frames[1:]:
        result = result.unionByName(other)
    return result


def view_frame(
    session: SparkSession,
    config: RepoConfig,
    sel: ViewSelection,
    columns: Mapping[str, str | None],
    *,
    window: TimeWindow = TimeWindow(),
    roles: Mapping[str, str] | None = None,
) -> DataFrame:
    """The rows a view reads, as :func:`source_frame` returns them: its source's rows or, with a
    ``source_query``, the query's result.

    A ``source_query`` runs in the SQL sandbox on the driver over every row of the sources it
    reads, as with DuckDB (those rows must fit in memory); its result goes into Spark.
    """
    view: FeatureView = sel.view
    source = sel.source
    if view.source_query is None:
        return source_frame(session, config, source, columns, window=window, roles=roles)
    from quiver.features.sql import parse_query, run_query
    from quiver.features.transformations import _query_inputs

    what = f"source query of feature view '{view.name}'"
    rows = _query_inputs(config, source, sel.query_sources)
    query = parse_query(view.source_query, tuple(rows), what)
    result = run_query(query, rows, what=what)
    mapping = source.field_mapping
    created = source.created_timestamp_field
    flat = source.model_copy(
        update={
            "field_mapping": {},
            "timestamp_field": mapping.get(source.timestamp_field, source.timestamp_field),
            "created_timestamp_field": mapping.get(created, created) if created else None,
        }
    )
    frame = session.createDataFrame(_utc_timestamps(result))
    part = _Part("frame", frame=frame, label=what)
    return source_frame(session, config, flat, columns, window=window, roles=roles, parts=[part])


def _utc_timestamps(table: Any) -> Any:
    """``table`` with naive timestamp columns marked UTC (Spark reads naive ones as NTZ)."""
    import pyarrow as pa

    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type.tz is None:
            table = table.set_column(i, f.name, table.column(i).cast(pa.timestamp("us", "UTC")))
    return table
