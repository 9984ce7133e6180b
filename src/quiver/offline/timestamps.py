"""Normalizing timestamps at the edge: every form users have becomes ``timestamp[us, UTC]``.

Accepted: Arrow timestamps of any unit, naive (taken as UTC) or with a time zone (converted),
dates (midnight UTC), and ISO-8601 strings with or without an offset (parsed by DuckDB, the same
parser the offline engine uses for CSV sources). Sub-microsecond digits are truncated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quiver.errors import InvalidError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["UTC_US", "is_timestamp_like", "normalize_timestamp", "normalize_timestamp_columns"]


def _utc_us() -> pa.DataType:
    import pyarrow as pa

    return pa.timestamp("us", tz="UTC")


UTC_US = "timestamp[us, tz=UTC]"
"""The one timestamp type of Quiver's data in motion."""


def is_timestamp_like(arrow_type: pa.DataType) -> bool:
    """Whether a column of this type can be normalized to ``timestamp[us, UTC]``."""
    import pyarrow.types as t

    return (
        t.is_timestamp(arrow_type)
        or t.is_date(arrow_type)
        or t.is_string(arrow_type)
        or t.is_large_string(arrow_type)
        or getattr(t, "is_string_view", lambda _x: False)(arrow_type)
        or t.is_null(arrow_type)
    )


def normalize_timestamp(values: pa.Array | pa.ChunkedArray, *, what: str) -> pa.ChunkedArray:
    """Convert a timestamp-like column to ``timestamp[us, UTC]``.

    Args:
        values: Timestamps (any unit; naive = UTC), dates, or ISO-8601 strings.
        what: How to name the column in errors, e.g. ``entity_df column 'event_timestamp'``.

    Raises:
        InvalidError: the column has another type, or a string cannot be parsed.
    """
    import pyarrow as pa
    import pyarrow.types as t

    if isinstance(values, pa.Array):
        values = pa.chunked_array([values], type=values.type)
    target = _utc_us()
    typ = values.type
    if typ == target:
        return values
    if t.is_timestamp(typ):
        if typ.tz is None:
            values = values.cast(pa.timestamp(typ.unit, tz="UTC"))
        return values.cast(target, safe=False)
    if t.is_date(typ) or t.is_null(typ):
        return values.cast(target)
    if t.is_dictionary(typ) and is_timestamp_like(typ.value_type):
        return normalize_timestamp(values.cast(typ.value_type), what=what)
    if is_timestamp_like(typ):
        return _parse_strings(values, what=what)
    raise InvalidError(
        f"{what} has type {typ}; expected timestamps, dates or ISO-8601 strings "
        "(e.g. '2024-05-01 12:00:00' or '2024-05-01T12:00:00+02:00')"
    )


def _parse_strings(values: pa.ChunkedArray, *, what: str) -> pa.ChunkedArray:
    import duckdb
    import pyarrow as pa

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        data = pa.table({"v": values.cast(pa.string())})
        con.register("__qv_strings", data)
        out = con.sql('SELECT CAST("v" AS TIMESTAMPTZ) AS v FROM "__qv_strings"').to_arrow_table()
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidError(
            f"{what} holds a string that is not a timestamp ({first}); use ISO-8601 such as "
            "'2024-05-01 12:00:00' or '2024-05-01T12:00:00+02:00'"
        ) from exc
    finally:
        con.close()
    return out.column("v").cast(_utc_us())


def normalize_timestamp_columns(table: pa.Table, *, what: str) -> pa.Table:
    """``table`` with every timestamp and date column cast to ``timestamp[us, UTC]``."""
    import pyarrow.types as t

    for i, f in enumerate(table.schema):
        if t.is_timestamp(f.type) or t.is_date(f.type):
            col = normalize_timestamp(table.column(i), what=f"{what}: column '{f.name}'")
            table = table.set_column(i, f.name, col)
    return table
