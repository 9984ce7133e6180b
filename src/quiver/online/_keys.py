"""Serving's entity rows: the request's rows validated and encoded as key columns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from numbers import Integral
from typing import Any

from quiver.errors import InvalidError
from quiver.online._plans import _INT_RANGES, _Plan
from quiver.online.encoding import datetime_to_us

_INT_ONLY = frozenset({int})
_STR_ONLY = frozenset({str})


# -- entity rows -------------------------------------------------------------------------------


def _key_columns(plan: _Plan, entity_rows: Any) -> list[list[Any]]:
    """Validated physical key values, one list per join key of the plan."""
    if plan.int_key is not None:
        # The most common call, one entity with one integer join key, as a list of one dict
        # or a dict of one list: take a plain int in range as it is. Anything else (and every
        # error) goes through the general checks below.
        key, low, high = plan.int_key
        kind = type(entity_rows)
        if kind is list and len(entity_rows) == 1 and type(entity_rows[0]) is dict:
            value = entity_rows[0].get(key)
        elif kind is dict and type(column := entity_rows.get(key)) is list and len(column) == 1:
            value = column[0]
        else:
            value = None
        if type(value) is int and low <= value <= high:
            return [[value]]
    if type(entity_rows) is list:
        out = []
        for key, dtype in zip(plan.join_keys, plan.key_dtypes, strict=True):
            try:
                column = [row[key] for row in entity_rows]
            except (KeyError, TypeError, IndexError):
                raise _row_error(plan, key, entity_rows) from None
            out.append(_validate_keys(key, dtype, column))
        return out
    raw = _entity_columns(plan, entity_rows)
    return [
        _validate_keys(key, dtype, raw[key])
        for key, dtype in zip(plan.join_keys, plan.key_dtypes, strict=True)
    ]


def _row_error(plan: _Plan, key: str, rows: Sequence[Any]) -> InvalidError:
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            return InvalidError(f"entity row {i} is {type(row).__name__}, not a dict of join keys")
        if key not in row:
            return InvalidError(_missing_key(plan, key, i))
    return InvalidError(f"entity rows cannot be read for join key '{key}'")  # pragma: no cover


def _entity_columns(plan: _Plan, entity_rows: Any) -> dict[str, list[Any]]:
    """Join key -> raw values, from a list of dicts, a dict of lists, or a DataFrame/Table."""
    if entity_rows is None:
        raise InvalidError(
            f"entity_rows is missing; pass a list of dicts such as [{{'{plan.join_keys[0]}': ...}}]"
        )
    if isinstance(entity_rows, Mapping):
        return _columns_from_mapping(plan, entity_rows)
    if not isinstance(entity_rows, (list, tuple)):
        for attr, args in (("to_pydict", ()), ("to_dict", ("list",))):
            method = getattr(entity_rows, attr, None)
            if method is not None:
                try:
                    as_columns = method(*args)
                except TypeError:
                    as_columns = entity_rows.to_dict(as_series=False)  # polars
                return _columns_from_mapping(plan, as_columns)
        raise InvalidError(
            f"entity_rows must be a list of dicts, a dict of lists or a DataFrame, "
            f"not {type(entity_rows).__name__}"
        )
    columns: dict[str, list[Any]] = {}
    for key in plan.join_keys:
        try:
            columns[key] = [row[key] for row in entity_rows]
        except (KeyError, TypeError, IndexError):
            raise _row_error(plan, key, entity_rows) from None
    return columns


def _columns_from_mapping(plan: _Plan, mapping: Mapping[str, Any]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    length = None
    for key in plan.join_keys:
        if key not in mapping:
            raise InvalidError(_missing_key(plan, key, None))
        values = mapping[key]
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise InvalidError(f"entity column '{key}' must be a list of values")
        values = list(values)
        if length is not None and len(values) != length:
            raise InvalidError("entity columns have different lengths")
        length = len(values)
        columns[key] = values
    return columns


def _missing_key(plan: _Plan, key: str, row: int | None) -> str:
    where = f"entity row {row}" if row is not None else "entity_rows"
    return (
        f"{where} has no join key '{key}' (needed by feature view '{plan.key_users[key]}'); "
        f"every row needs: {', '.join(plan.join_keys)}"
    )


def _bad_key(key: str, dtype: str, values: list[Any]) -> InvalidError:
    for i, v in enumerate(values):
        try:
            _physical_key(dtype, v)
        except (TypeError, ValueError, OverflowError) as exc:
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            return InvalidError(
                f"entity row {i}: join key '{key}' must be {dtype}, got "
                f"{type(v).__name__} {shown}" + (f" ({exc})" if str(exc) else "")
            )
    return InvalidError(f"join key '{key}' has a value that is not {dtype}")  # pragma: no cover


def _physical_key(dtype: str, v: Any) -> Any:
    """One join key value as its physical form, or raise TypeError / ValueError."""
    if v is None:
        raise ValueError("null")
    if dtype in _INT_RANGES:
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError("")
        low, high = _INT_RANGES[dtype]
        v = int(v)
        if not low <= v <= high:
            raise OverflowError("out of range")
        return v
    if dtype == "string":
        if not isinstance(v, str):
            raise TypeError("")
        return str(v)
    if dtype == "bool":
        if type(v).__name__ not in ("bool", "bool_"):
            raise TypeError("")
        return bool(v)
    if dtype == "timestamp":
        if isinstance(v, str):
            try:
                v = datetime.fromisoformat(v)
            except ValueError:
                raise TypeError("not an ISO 8601 timestamp") from None
        if not isinstance(v, datetime):
            raise TypeError("")
        return datetime_to_us(v)
    raise TypeError(f"unsupported join key dtype {dtype}")  # pragma: no cover


def _validate_keys(key: str, dtype: str, values: list[Any]) -> list[Any]:
    """Physical values of one join key column, or raise a clear InvalidError."""
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if len(values) == 1:
            v = values[0]
            if type(v) is int and low <= v <= high:
                return values
        elif not values or (
            set(map(type, values)) == _INT_ONLY and low <= min(values) and max(values) <= high
        ):
            return values
        try:
            return [_physical_key(dtype, v) for v in values]
        except (TypeError, ValueError, OverflowError):
            raise _bad_key(key, dtype, values) from None
    if dtype == "string" and set(map(type, values)) <= _STR_ONLY:
        return values
    try:
        return [_physical_key(dtype, v) for v in values]
    except (TypeError, ValueError, OverflowError):
        raise _bad_key(key, dtype, values) from None
