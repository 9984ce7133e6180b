"""Turning JSON payloads into Arrow and rows, and store results into JSON-ready values."""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quiver._paths import check_path_text, user_path
from quiver.errors import BackendError, InvalidError, NotFoundError, PayloadTooLargeError

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
    "output_path",
    "push_table",
    "repo_input_path",
    "table_rows",
]


_US = timedelta(microseconds=1)
_MIN_US = (datetime.min.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // _US
_MAX_US = (datetime.max.replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // _US
_TIME_RANGE = "between 0001-01-01 and 9999-12-31 in UTC"
_GLOB = re.compile(r"[*?\[]")
_CLIENT_OS_ERRORS = frozenset(
    {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ELOOP, errno.EINVAL}
)


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
    arrays, names = [], []
    for name, values in columns.items():
        if used is not None and name not in used:
            continue
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


def _os_error(exc: OSError, what: str, path: str) -> Exception:
    """An OS error about a client's path: their mistake (422) or the server's (503)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _CLIENT_OS_ERRORS:
        return InvalidError(f"{what} {path!r} cannot be used: {reason}")
    return BackendError(f"{what} {path!r}: {reason}")


def _s3_uri(path: str, what: str, *, needs_key: bool) -> str:
    bucket, _, key = path.split("://", 1)[1].partition("/")
    if not bucket or (needs_key and not key.strip("/")):
        example = "s3://bucket/path/file.parquet" if needs_key else "s3://bucket/path"
        missing = "object" if bucket else "bucket"
        raise InvalidError(f"{what} {path!r} names no {missing}: write {example}")
    return path


def repo_input_path(store: FeatureStore, path: str, what: str = "entity_path") -> str:
    """An input path: ``s3://`` as is, a local one inside the repo (made absolute).

    A local path may be a file, a directory or a glob (``data/*.parquet``); a glob is not
    checked for matches here (the reader says when nothing matches).

    Args:
        store: The feature store (its repo is the only local place read).
        path: The client's path.
        what: The request field, for error messages.

    Raises:
        InvalidError: a local path outside the repository, or one no file system accepts.
        NotFoundError: a local path (not a glob) that does not exist.
    """
    check_path_text(path, what)
    if "://" in path:
        if not path.lower().startswith(("s3://", "s3a://")):
            raise InvalidError(f"{what} {path!r}: only local paths and s3:// URIs are read")
        return _s3_uri(path, what, needs_key=False)
    root = store.repo_path.resolve()
    local = user_path(path, what)  # '~user' with no such user: an InvalidError naming `what`
    try:
        resolved = store.config.resolve(local)
        if not resolved.is_relative_to(root):
            raise InvalidError(
                f"{what} {path!r} is outside the repository {root}; the API reads local files "
                "inside the repo only"
            )
        exists = _GLOB.search(path) is not None or resolved.exists()
    except OSError as exc:
        raise _os_error(exc, what, path) from exc
    if not exists:
        raise NotFoundError(f"{what} {path!r} does not exist (looked at {resolved})")
    return str(resolved)


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


def output_path(
    store: FeatureStore, path: str | None, prefix: str, what: str = "output_path"
) -> str:
    """Where to write an output file: ``s3://`` as is, or a path under the data directory.

    Args:
        store: The feature store (outputs go under its data directory).
        path: The client's path (relative to the data directory), or ``None`` for a new file
            ``outputs/<prefix>-<time>-<id>.parquet``.
        prefix: The file name prefix of a default path.
        what: The request field, for error messages.

    Raises:
        InvalidError: a local path that leaves the data directory, names a directory, or that
            no file system accepts.
    """
    import uuid

    data = store.config.data_path.resolve()
    if path is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        target = data / "outputs" / f"{prefix}-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
    else:
        check_path_text(path, what)
        if "://" in path:
            if not path.startswith("s3://"):
                raise InvalidError(f"{what} {path!r}: use a local path or an s3:// URI")
            return _s3_uri(path, what, needs_key=True)
        p = user_path(path, what)
        try:
            target = (p if p.is_absolute() else data / p).resolve()
        except OSError as exc:
            raise _os_error(exc, what, path) from exc
        if not target.is_relative_to(data):
            raise InvalidError(
                f"{what} {path!r} is outside the data directory {data}; the API writes "
                "only under it (relative paths are relative to it)"
            )
    try:
        if target.is_dir():
            raise InvalidError(f"{what} {path!r} is a directory; give a .parquet file path")
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _os_error(exc, what, str(path)) from exc
    return str(target)
