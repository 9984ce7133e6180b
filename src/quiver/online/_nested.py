"""Python values of map, struct and ``json`` features (pushed rows, REST bodies) as Arrow.

A pushed value is checked against its dtype before anything is written: a map is a dict with
string keys, a struct a dict whose keys are among its fields (a missing field is null), a
timestamp inside may be a ``datetime`` or ISO 8601 text, and a ``json`` value is any JSON value
(a ``str`` is read as JSON *text*, as Feast's ``Json`` type takes it). Size and depth are
bounded by :func:`quiver.online.encoding.check_nested` when the rows are written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError
from quiver.types import (
    arrow_type,
    is_list,
    is_map,
    is_struct,
    map_value_dtype,
    struct_fields,
)

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["nested_array", "served_array"]


def served_array(values: Sequence[Any], dtype: str) -> pa.Array:
    """Served Python values (a response's) as an Arrow array of ``dtype``; a ``json`` value
    becomes its JSON text again, as offline."""
    import pyarrow as pa

    if dtype == "json":
        values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
    return pa.array(values, type=arrow_type(dtype))


def nested_array(values: Sequence[Any], dtype: str, what: str) -> pa.Array:
    """An Arrow array of ``dtype`` (a map, a struct or ``json``) from Python values.

    Args:
        values: One value per row (``None`` for null).
        dtype: The feature's dtype.
        what: Names the column in errors (``push to feature view 'v': column 'c'``).

    Raises:
        InvalidError: a value does not match ``dtype`` (naming the row and the path inside).
    """
    import pyarrow as pa

    if dtype == "json":
        out: list[str | None] = []
        for i, value in enumerate(values):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                out.append(None)
            elif isinstance(value, (str, bytes)):
                out.append(value.decode() if isinstance(value, bytes) else value)
            else:
                try:
                    out.append(json.dumps(value, separators=(",", ":"), ensure_ascii=False))
                except (TypeError, ValueError, RecursionError) as exc:
                    raise InvalidError(f"{what} row {i}: not a JSON value ({exc})") from None
        from quiver.online.encoding import check_nested

        return pa.array(check_nested(out, "json", what), pa.string())
    converted = []
    for i, value in enumerate(values):
        if isinstance(value, float) and math.isnan(value):  # pandas' missing value
            value = None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                raise InvalidError(f"{what} row {i}: {dtype} values are objects") from None
        converted.append(_convert(value, dtype, f"{what} row {i}"))
    try:
        return pa.array(converted, type=arrow_type(dtype))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise InvalidError(f"{what}: cannot be read as {dtype}: {exc}") from None


def _convert(value: Any, dtype: str, where: str) -> Any:
    """``value`` checked against ``dtype``, timestamps as datetimes (recursive, bounded by the
    dtype's own nesting)."""
    if value is None:
        return None
    if is_map(dtype):
        if not isinstance(value, Mapping):
            raise InvalidError(f"{where}: {dtype} values are objects, got {type(value).__name__}")
        inner = map_value_dtype(dtype)
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidError(f"{where}: map keys are strings, got {key!r}")
            out[key] = _convert(item, inner, f"{where}[{key!r}]")
        return out
    if is_struct(dtype):
        if not isinstance(value, Mapping):
            raise InvalidError(f"{where}: {dtype} values are objects, got {type(value).__name__}")
        fields = dict(struct_fields(dtype))
        unknown = [k for k in value if k not in fields]
        if unknown:
            raise InvalidError(
                f"{where}: unknown struct field(s) {', '.join(map(repr, unknown[:5]))}; "
                f"{dtype} has {', '.join(fields)}"
            )
        return {k: _convert(value.get(k), d, f"{where}.{k}") for k, d in fields.items()}
    if is_list(dtype):
        if not isinstance(value, (list, tuple)):
            raise InvalidError(f"{where}: {dtype} values are arrays, got {type(value).__name__}")
        return [_convert(v, dtype[5:-1], where) for v in value]
    if dtype == "timestamp":
        return _timestamp(value, where)
    if dtype in ("int32", "int64") and (isinstance(value, bool) or not isinstance(value, int)):
        raise InvalidError(f"{where}: expected an integer, got {value!r}"[:200])
    if dtype in ("float32", "float64") and (
        isinstance(value, bool) or not isinstance(value, (int, float))
    ):
        raise InvalidError(f"{where}: expected a number, got {value!r}"[:200])
    if dtype == "string" and not isinstance(value, str):
        raise InvalidError(f"{where}: expected a string, got {value!r}"[:200])
    if dtype == "bool" and not isinstance(value, bool):
        raise InvalidError(f"{where}: expected true or false, got {value!r}"[:200])
    return value


def _timestamp(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise InvalidError(f"{where}: expected an ISO 8601 timestamp, got {value!r}"[:200])
