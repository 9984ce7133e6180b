"""Value types of fields and join keys, and their Arrow types.

A dtype is written as a short string: ``int32``, ``int64``, ``float32``, ``float64``,
``string``, ``bool``, ``timestamp`` or a list of one of these, ``list<int64>`` (``list[int64]``
is accepted too). Timestamps are always UTC with microsecond precision.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator

from quiver.errors import InvalidError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["SCALAR_DTYPES", "DType", "arrow_type", "dtype_from_arrow", "is_list", "normalize_dtype"]

SCALAR_DTYPES: tuple[str, ...] = (
    "int32",
    "int64",
    "float32",
    "float64",
    "string",
    "bool",
    "timestamp",
)

_ALIASES = {
    "int": "int64",
    "integer": "int64",
    "long": "int64",
    "float": "float64",
    "double": "float64",
    "str": "string",
    "varchar": "string",
    "boolean": "bool",
    "datetime": "timestamp",
}

_LIST_RE = re.compile(r"^(?:list|array)\s*[<\[]\s*(\w+)\s*[>\]]$", re.IGNORECASE)


def normalize_dtype(value: Any) -> str:
    """Return the canonical spelling of a dtype, or raise :class:`InvalidError`.

    Args:
        value: A dtype string such as ``"int64"`` or ``"list<string>"``.
    """
    if not isinstance(value, str):
        raise InvalidError(f"dtype must be a string such as 'int64', got {value!r}")
    text = value.strip()
    match = _LIST_RE.match(text)
    if match:
        return f"list<{_scalar(match.group(1), value)}>"
    return _scalar(text, value)


def _scalar(text: str, original: str) -> str:
    key = text.lower()
    key = _ALIASES.get(key, key)
    if key in SCALAR_DTYPES:
        return key
    allowed = ", ".join(SCALAR_DTYPES)
    raise InvalidError(
        f"unknown dtype {original!r}; use one of {allowed}, or list<...> of one of them"
    )


def _validate(value: Any) -> str:
    try:
        return normalize_dtype(value)
    except InvalidError as exc:
        raise ValueError(exc.message) from None


DType = Annotated[str, BeforeValidator(_validate)]
"""A validated, canonical dtype string (use as a pydantic field type)."""


def is_list(dtype: str) -> bool:
    """Whether ``dtype`` is a list type."""
    return dtype.startswith("list<")


@cache
def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type of a dtype (any accepted spelling, e.g. ``int`` or ``list[string]``).

    Raises:
        InvalidError: if ``dtype`` is not a dtype.
    """
    return _arrow_type(normalize_dtype(dtype))


@cache
def _arrow_type(dtype: str) -> pa.DataType:
    import pyarrow as pa

    if is_list(dtype):
        return pa.list_(_arrow_type(dtype[5:-1]))
    return {
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }[dtype]


def dtype_from_arrow(arrow: pa.DataType) -> str:
    """The closest dtype of an Arrow type, or raise :class:`InvalidError`."""
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_list(arrow) or t.is_large_list(arrow):
        return f"list<{dtype_from_arrow(arrow.value_type)}>"
    if (
        t.is_int8(arrow)
        or t.is_int16(arrow)
        or t.is_int32(arrow)
        or t.is_uint8(arrow)
        or t.is_uint16(arrow)
    ):
        return "int32"
    if t.is_integer(arrow):
        return "int64"
    if t.is_float32(arrow) or t.is_float16(arrow):
        return "float32"
    if t.is_floating(arrow) or t.is_decimal(arrow):
        return "float64"
    if t.is_string(arrow) or t.is_large_string(arrow) or t.is_dictionary(arrow):
        return "string"
    if t.is_boolean(arrow):
        return "bool"
    if t.is_timestamp(arrow) or t.is_date(arrow):
        return "timestamp"
    if arrow == pa.null():
        return "string"
    raise InvalidError(f"Arrow type {arrow} has no Quiver dtype")
