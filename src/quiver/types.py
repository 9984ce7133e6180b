"""Value types of fields and join keys, and their Arrow types.

A dtype is written as a short string: ``int32``, ``int64``, ``float32``, ``float64``,
``string``, ``bool``, ``timestamp`` or a list of one of these, ``list<int64>`` (``list[int64]``
is accepted too). Timestamps are always UTC with microsecond precision.

Nested values (issue 15): ``map<string, T>`` (string keys, ``T`` any dtype but ``json``),
``struct<name: T, ...>`` (named fields, plain identifiers, in order) and ``json`` (any JSON
document; in Arrow a string column holding the JSON text). They nest up to
:data:`MAX_NESTING` levels; a list holds scalars only.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator

from quiver.errors import InvalidError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "MAX_NESTING",
    "SCALAR_DTYPES",
    "DType",
    "arrow_type",
    "contains_timestamp",
    "dtype_from_arrow",
    "is_list",
    "is_map",
    "is_nested",
    "is_struct",
    "map_value_dtype",
    "normalize_dtype",
    "struct_fields",
]

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

_MAX_DTYPE_CHARS = 2000
MAX_NESTING = 8
"""How deep ``list``/``map``/``struct`` types may nest in one dtype."""

_TOKEN_RE = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|([<>\[\],:]))")
_FIELD_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_OPEN = {"<": ">", "[": "]"}


def normalize_dtype(value: Any) -> str:
    """Return the canonical spelling of a dtype, or raise :class:`InvalidError`.

    Canonical spellings: ``int64``, ``list<string>``, ``map<string, float64>``,
    ``struct<name: string, age: int32>``, ``json``.

    Args:
        value: A dtype string such as ``"int64"`` or ``"list<string>"``.
    """
    if not isinstance(value, str):
        raise InvalidError(f"dtype must be a string such as 'int64', got {value!r}")
    if len(value) > _MAX_DTYPE_CHARS:
        raise InvalidError(f"dtype is longer than {_MAX_DTYPE_CHARS} characters")
    return _canonical(value)


@cache
def _canonical(value: str) -> str:
    tokens = _tokens(value)
    parser = _Parser(tokens, value)
    out = parser.dtype(0)
    if parser.pos != len(tokens):
        raise _unknown(value)
    return out


def _tokens(value: str) -> list[str]:
    tokens: list[str] = []
    text = value.rstrip()
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise _unknown(value)
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


def _unknown(original: str, detail: str = "") -> InvalidError:
    allowed = ", ".join(SCALAR_DTYPES)
    return InvalidError(
        f"unknown dtype {original!r}{detail}; use one of {allowed}, or list<...> of one of "
        "them, map<string, T>, struct<name: T, ...> or json"
    )


class _Parser:
    """Recursive descent over the tokens of a dtype; builds the canonical spelling."""

    def __init__(self, tokens: list[str], original: str) -> None:
        self.tokens = tokens
        self.pos = 0
        self.original = original

    def _next(self) -> str:
        if self.pos >= len(self.tokens):
            raise _unknown(self.original)
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def _expect(self, token: str) -> None:
        if self._next() != token:
            raise _unknown(self.original)

    def _open(self) -> str:
        token = self._next()
        if token not in _OPEN:
            raise _unknown(self.original)
        return _OPEN[token]

    def _inner(self, depth: int) -> str:
        inner = self.dtype(depth + 1)
        if inner == "json":
            raise _unknown(self.original, " (json is only a whole feature's dtype)")
        return inner

    def dtype(self, depth: int) -> str:
        if depth > MAX_NESTING:
            raise _unknown(self.original, f" (nested deeper than {MAX_NESTING} levels)")
        name = self._next().lower()
        if name in ("list", "array"):
            close = self._open()
            inner = self._inner(depth)
            self._expect(close)
            if inner not in SCALAR_DTYPES:
                raise _unknown(self.original, " (a list holds scalars)")
            return f"list<{inner}>"
        if name == "map":
            close = self._open()
            key = self._next().lower()
            if _ALIASES.get(key, key) != "string":
                raise _unknown(self.original, " (map keys are strings)")
            self._expect(",")
            value = self._inner(depth)
            self._expect(close)
            return f"map<string, {value}>"
        if name == "struct":
            close = self._open()
            fields: list[str] = []
            seen: set[str] = set()
            while True:
                field = self._next()
                if not _FIELD_NAME_RE.match(field) or field in seen:
                    raise _unknown(self.original, f" (bad or repeated struct field {field!r})")
                seen.add(field)
                self._expect(":")
                fields.append(f"{field}: {self._inner(depth)}")
                token = self._next()
                if token == close:
                    break
                if token != ",":
                    raise _unknown(self.original)
            return f"struct<{', '.join(fields)}>"
        if name == "json":
            return "json"
        key = _ALIASES.get(name, name)
        if key in SCALAR_DTYPES:
            return key
        raise _unknown(self.original)


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


def is_map(dtype: str) -> bool:
    """Whether ``dtype`` is a ``map<string, T>`` type."""
    return dtype.startswith("map<")


def is_struct(dtype: str) -> bool:
    """Whether ``dtype`` is a ``struct<...>`` type."""
    return dtype.startswith("struct<")


def is_nested(dtype: str) -> bool:
    """Whether ``dtype`` is a map, a struct or ``json``: values are JSON documents online."""
    return dtype == "json" or dtype.startswith(("map<", "struct<"))


def map_value_dtype(dtype: str) -> str:
    """The value dtype of a canonical ``map<string, T>``."""
    return dtype[len("map<string, ") : -1]


@cache
def struct_fields(dtype: str) -> tuple[tuple[str, str], ...]:
    """The ``(name, dtype)`` fields of a canonical ``struct<...>``, in order."""
    body = dtype[len("struct<") : -1]
    fields: list[tuple[str, str]] = []
    depth = 0
    start = 0
    for i, ch in enumerate(body):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            fields.append(_field(body[start:i]))
            start = i + 1
    fields.append(_field(body[start:]))
    return tuple(fields)


def _field(text: str) -> tuple[str, str]:
    name, _, dtype = text.strip().partition(": ")
    return name, dtype


@cache
def contains_timestamp(dtype: str) -> bool:
    """Whether ``dtype`` holds a timestamp anywhere (itself, a list's, a map's or a struct's)."""
    if dtype == "timestamp":
        return True
    if is_list(dtype):
        return dtype == "list<timestamp>"
    if is_map(dtype):
        return contains_timestamp(map_value_dtype(dtype))
    if is_struct(dtype):
        return any(contains_timestamp(d) for _, d in struct_fields(dtype))
    return False


@cache
def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type of a dtype (any accepted spelling, e.g. ``int`` or ``list[string]``).

    ``json`` is a string column holding JSON text.

    Raises:
        InvalidError: if ``dtype`` is not a dtype.
    """
    return _arrow_type(normalize_dtype(dtype))


@cache
def _arrow_type(dtype: str) -> pa.DataType:
    import pyarrow as pa

    if is_list(dtype):
        return pa.list_(_arrow_type(dtype[5:-1]))
    if is_map(dtype):
        return pa.map_(pa.string(), _arrow_type(map_value_dtype(dtype)))
    if is_struct(dtype):
        return pa.struct([pa.field(n, _arrow_type(d)) for n, d in struct_fields(dtype)])
    return {
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "json": pa.string(),
    }[dtype]


def dtype_from_arrow(arrow: pa.DataType) -> str:
    """The closest dtype of an Arrow type, or raise :class:`InvalidError`."""
    import pyarrow as pa
    import pyarrow.types as t

    if isinstance(arrow, pa.BaseExtensionType) and arrow.extension_name == "arrow.json":
        return "json"
    if t.is_list(arrow) or t.is_large_list(arrow):
        inner = dtype_from_arrow(arrow.value_type)
        if inner not in SCALAR_DTYPES:
            raise InvalidError(f"Arrow type {arrow} has no Quiver dtype (a list holds scalars)")
        return f"list<{inner}>"
    if t.is_map(arrow):
        if dtype_from_arrow(arrow.key_type) != "string":
            raise InvalidError(f"Arrow type {arrow} has no Quiver dtype (map keys are strings)")
        return f"map<string, {dtype_from_arrow(arrow.item_type)}>"
    if t.is_struct(arrow):
        if arrow.num_fields == 0:
            raise InvalidError(f"Arrow type {arrow} has no Quiver dtype (a struct without fields)")
        fields = ", ".join(
            f"{arrow.field(i).name}: {dtype_from_arrow(arrow.field(i).type)}"
            for i in range(arrow.num_fields)
        )
        return normalize_dtype(f"struct<{fields}>")
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
