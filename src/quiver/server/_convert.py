"""Turning JSON payloads into Arrow and rows, and store results into JSON-ready values."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quiver._paths import check_path_text, user_path
from quiver.errors import InvalidError, PayloadTooLargeError
from quiver.types import is_nested

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.store import FeatureStore

__all__ = [
    "as_utc",
    "check_columns",
    "check_path_text",
    "iceberg_ref",
    "inline_table",
    "looks_like_path",
    "push_table",
    "readable_path",
    "table_ref",
    "table_rows",
    "writable_path",
    "writable_table",
]


_US = timedelta(microseconds=1)
_MIN_US = (datetime.min.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // _US
_MAX_US = (datetime.max.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // _US
_TIME_RANGE = "between 0001-01-01 and 9999-12-31 in UTC"
_GLOB = re.compile(r"[*?\[]")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive is taken as UTC).

    Raises:
        InvalidError: the time is outside years 1..9999 once moved to UTC.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise InvalidError(
            f"timestamp {value.isoformat()} is out of range: use a time {_TIME_RANGE}"
        ) from exc


def check_columns(entities: Mapping[str, Sequence[Any]], limit: int, what: str = "entities") -> int:
    """Check columnar ``{"key": [v1, v2]}`` input and return its row count.

    Raises:
        InvalidError: no columns, no rows, or columns of different lengths.
        PayloadTooLargeError: more rows than ``limit``.
    """
    if not entities:
        raise InvalidError(f"'{what}' is empty; give at least one join key, e.g. {{'id': [1]}}")
    lengths = {k: len(v) for k, v in entities.items()}
    n = next(iter(lengths.values()))
    if any(length != n for length in lengths.values()):
        raise InvalidError(
            f"every column of '{what}' must have the same length; got "
            + ", ".join(f"{k}: {v}" for k, v in lengths.items())
        )
    if n == 0:
        raise InvalidError(f"'{what}' has no rows; give at least one value per column")
    if n > limit:
        raise PayloadTooLargeError(
            f"'{what}' has {n} rows, more than the limit of {limit} (server.max_inline_rows); "
            "split the request",
            details={"rows": n, "limit": limit},
        )
    return n


def _array(name: str, values: Sequence[Any]) -> pa.Array:
    import pyarrow as pa

    try:
        return pa.array(list(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidError(
            f"column '{name}' mixes value types or holds values that cannot be stored: {exc}; "
            "use one JSON type per column"
        ) from exc


def _timestamps(name: str, arr: pa.Array) -> pa.Array:
    """Parse an array of ISO strings (or epoch seconds) into ``timestamp[us, UTC]``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.types as t

    target = pa.timestamp("us", tz="UTC")
    if t.is_timestamp(arr.type):
        return _in_range(name, arr.cast(target))
    if t.is_null(arr.type):
        return arr.cast(target)
    try:
        if t.is_integer(arr.type) or t.is_floating(arr.type):
            parsed = pd.to_datetime(arr.to_pandas(), unit="s", utc=True)
        elif t.is_string(arr.type):
            parsed = pd.to_datetime(arr.to_pandas(), utc=True, format="ISO8601")
        else:
            raise TypeError(f"values of type {arr.type}")
        out = pa.array(parsed.dt.tz_convert("UTC").astype("datetime64[us, UTC]"), type=target)
    except (ValueError, TypeError, OverflowError, pd.errors.OutOfBoundsDatetime) as exc:
        raise InvalidError(
            f"column '{name}' must hold ISO 8601 timestamps (e.g. '2026-01-01T00:00:00Z'): {exc}"
        ) from exc
    return _in_range(name, out)


def _in_range(name: str, arr: pa.Array) -> pa.Array:
    """``arr`` (``timestamp[us, UTC]``) if every value is a time Python can represent."""
    import pyarrow as pa
    import pyarrow.compute as pc

    bounds = pc.min_max(arr.cast(pa.int64()))
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low < _MIN_US or high > _MAX_US):
        raise InvalidError(
            f"column '{name}' holds a timestamp out of range: use times {_TIME_RANGE}"
        )
    return arr


def inline_table(
    columns: Sequence[str], data: Sequence[Sequence[Any]], limit: int, timestamp_column: str
) -> pa.Table:
    """An Arrow table from ``{"columns", "data"}``, its timestamp column parsed.

    Raises:
        PayloadTooLargeError: more rows than ``limit``.
        InvalidError: duplicate columns, ragged rows, mixed types or bad timestamps.
    """
    import pyarrow as pa

    if len(data) > limit:
        raise PayloadTooLargeError(
            f"the entity table has {len(data)} rows, more than the limit of {limit} "
            "(server.max_inline_rows); reference a file or a data source instead",
            details={"rows": len(data), "limit": limit},
        )
    if len(set(columns)) != len(columns):
        raise InvalidError(f"the entity table lists a column twice: {list(columns)}")
    if not data:
        raise InvalidError("the entity table has no rows")
    for i, row in enumerate(data):
        if len(row) != len(columns):
            raise InvalidError(
                f"row {i} of the entity table has {len(row)} values but there are "
                f"{len(columns)} columns"
            )
    arrays = []
    for j, name in enumerate(columns):
        arr = _array(name, [row[j] for row in data])
        if name == timestamp_column:
            arr = _timestamps(name, arr)
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=list(columns))


def push_table(
    store: FeatureStore,
    view_name: str,
    columns: Mapping[str, Sequence[Any]],
    *,
    view_columns_only: bool = False,
) -> pa.Table:
    """An Arrow table of pushed rows, with the timestamp columns parsed (naive is UTC).

    Args:
        store: The feature store.
        view_name: The feature view the rows are for.
        columns: Column name -> values.
        view_columns_only: Drop columns the view does not use (Feast pushes one frame to
            every view of a source); otherwise the store's push rejects them.

    Everything else (missing keys, value types) is validated by the store's push.
    """
    import pyarrow as pa

    view = store.registry.get("feature_view", view_name)
    source = store.registry.get("data_source", view.source_name)
    time_columns = {
        source.timestamp_field,
        source.created_timestamp_field,
        "event_timestamp",
        "created_timestamp",
        *(f.name for f in view.features if f.dtype == "timestamp"),
    }
    time_columns |= {source.field_mapping.get(c or "", "") for c in set(time_columns)}
    used: set[str] | None = None
    if view_columns_only:
        keys = {k for e in view.entities for k in store.registry.get("entity", e).join_keys}
        from quiver.features.transformations import input_columns

        used = keys | set(view.feature_names) | time_columns | input_columns(view)
    if len({len(v) for v in columns.values()}) > 1:
        raise InvalidError("every pushed column must have the same number of values")
    nested = {f.name: f.dtype for f in view.features if is_nested(f.dtype)}
    arrays, names = [], []
    for name, values in columns.items():
        if used is not None and name not in used:
            continue
        if name in nested:
            from quiver.online._nested import nested_array

            arr = nested_array(list(values), nested[name], f"column '{name}'")
        else:
            arr = _array(name, values)
        arrays.append(_timestamps(name, arr) if name in time_columns else arr)
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def rows_to_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Records -> columns; a key missing from a row is ``None`` there."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return {k: [row.get(k) for row in rows] for k in keys}


def table_rows(table: pa.Table) -> list[list[Any]]:
    """The rows of an Arrow table as lists of Python values."""
    cols = [col.to_pylist() for col in table.columns]
    return [list(r) for r in zip(*cols, strict=True)] if cols else []


def readable_path(store: FeatureStore, path: str, what: str = "entity_path") -> str:
    """A path a REST caller reads, checked by the store's file boundary.

    Returns the absolute local path (or glob), or the ``s3://`` URI: what the core must read, so
    that nothing is resolved twice.

    Raises:
        ForbiddenError: outside the read roots or the allowed S3 locations, or one of the
            server's own files (see :mod:`quiver.security.paths`).
        InvalidError: path text no file system takes.
        NotFoundError: a local path (not a glob) that does not exist.
    """
    from quiver.security.paths import FileBoundary

    return FileBoundary.of(store).readable(path, what)


def table_ref(store: FeatureStore, text: str, what: str) -> str:
    """A training or prediction input as the ML services take it, with any path checked.

    A registered data source's name and an Iceberg table pass as they are (``iceberg:...``, or a
    dotted ``namespace.table`` that is no existing path); anything else that names a file or
    folder (a path, or a name that exists relative to the repo, such as ``..``) goes through
    :func:`readable_path` and is replaced by its resolved path. Other text is passed on, for the
    services to report as not found.

    Raises:
        ForbiddenError: a path the caller may not read.
        InvalidError: empty text, or text no file system takes.
    """
    from quiver.definitions import NAME_RE

    value = text.strip()
    if not value:
        raise InvalidError(f"{what} is empty; give a data source name, a path or an Iceberg table")
    check_path_text(value, what)
    if value.lower().startswith("iceberg:"):
        return iceberg_ref(value, what)
    if NAME_RE.match(value) and store.registry.find("data_source", value) is not None:
        return value
    if looks_like_path(value) or _exists(store, value, what):
        return readable_path(store, value, what)
    if _DOTTED.match(value):
        return iceberg_ref(value, what)
    return value


def _exists(store: FeatureStore, value: str, what: str) -> bool:
    try:
        return store.config.resolve(user_path(value, what)).exists()
    except OSError:
        return False


def looks_like_path(text: str) -> bool:
    """Whether a table reference names a file, directory or glob rather than a table."""
    lowered = text.lower()
    return (
        "/" in text
        or "\\" in text
        or _GLOB.search(text) is not None
        or lowered.endswith((".parquet", ".pq", ".csv", ".csv.gz"))
    )


def iceberg_ref(text: str, what: str) -> str:
    """An Iceberg table reference ``iceberg:[catalog/]namespace.table``, checked.

    ``text`` may carry the ``iceberg:`` prefix or not.

    Raises:
        InvalidError: not ``[catalog/]namespace.table`` made of plain identifiers (letters,
            digits and ``_``, at most 63 characters each).
    """
    from quiver.definitions import NAME_RE

    body = text.strip().removeprefix("iceberg:").removeprefix("//")
    catalog, _, table = body.rpartition("/")
    parts = table.split(".")
    if (
        len(parts) < 2
        or not all(NAME_RE.match(p) for p in parts)
        or (catalog and not NAME_RE.match(catalog))
    ):
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidError(
            f"{what} {shown!r} is not an Iceberg table: write 'namespace.table' or "
            "'catalog/namespace.table' with plain identifiers (letters, digits and '_', at most "
            "63 characters each)"
        )
    return f"iceberg:{catalog + '/' if catalog else ''}{table}"


def writable_path(
    store: FeatureStore,
    path: str | None,
    prefix: str,
    what: str = "output_path",
    *,
    overwrite: bool = False,
) -> str:
    """Where a REST caller's output file goes, checked by the store's file boundary.

    Args:
        store: The feature store (its ``server.write_root``, default ``outputs/``).
        path: The caller's path (relative to the repository root), an ``s3://`` URI, or
            ``None`` for a new file ``<write_root>/<prefix>-<time>-<id>.parquet``.
        prefix: The file name prefix of a default path.
        what: The request field, for messages.
        overwrite: Whether the caller asked to replace an existing file.

    Raises:
        ForbiddenError: outside the write root or the allowed S3 locations, or on the server's
            files or a data source's (see :mod:`quiver.security.paths`).
        ConflictError: the file exists and ``overwrite`` is false.
        InvalidError: a directory, a pattern, or text no file system takes.
    """
    from quiver.security.paths import FileBoundary

    return FileBoundary.of(store).writable(path, what, prefix=prefix, overwrite=overwrite)


def writable_table(store: FeatureStore, text: str, what: str = "output_table") -> str:
    """An Iceberg output table (``iceberg:...``) that is no registered data source's table.

    Raises:
        InvalidError: not ``[catalog/]namespace.table``.
        ForbiddenError: a data source's table.
    """
    from quiver.security.paths import FileBoundary

    return FileBoundary.of(store).writable_table(iceberg_ref(text, what), what)
