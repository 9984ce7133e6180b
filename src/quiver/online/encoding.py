"""How a feature view is laid out in an online store: entity keys and row values as bytes.

A :class:`ViewLayout` describes one view's online shape (join keys, features, TTL) and carries a
schema version, a hash of the key and feature names and dtypes: stores name their tables and
keys with it, so a view whose schema changed never reads columns written under the old schema.

Values travel in their *physical* form between Arrow and the stores: integers, floats and
strings as such, ``bool`` as ``bool``, timestamps as ``int`` microseconds since the epoch (UTC)
and lists, maps, structs and ``json`` documents as compact JSON text (timestamps inside as
microseconds). :func:`python_converter` turns a physical value back into what users get
(``datetime`` in UTC, ``list``, ``dict``, any JSON value). Nested values are checked before they
are written (:func:`check_nested`): at most :data:`MAX_NESTED_BYTES` of JSON text and
:data:`MAX_JSON_DEPTH` levels.

Entity keys are encoded to bytes (:class:`KeyEncoder`): integers and timestamps as 8-byte
big-endian signed integers, booleans as one byte, strings as UTF-8 (length-prefixed when the
key is compound). Row values for Redis are encoded by :class:`RowCodec`: a 16-byte header
(event and created timestamps as offset-binary big-endian ``uint64``, so they compare as byte
strings and as pairs of 32-bit words in Lua), a null bitmap, the fixed-width features packed
with :mod:`struct`, then the strings and lists, each prefixed by its length.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError
from quiver.types import (
    arrow_type,
    contains_timestamp,
    is_list,
    is_map,
    is_nested,
    is_struct,
    map_value_dtype,
    struct_fields,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.definitions import Entity, FeatureView
    from quiver.selection import ViewSelection

__all__ = [
    "CREATED_TS",
    "EVENT_TS",
    "FORMAT_VERSION",
    "MAX_JSON_DEPTH",
    "MAX_NESTED_BYTES",
    "NO_CREATED",
    "KeyEncoder",
    "RowCodec",
    "ViewLayout",
    "WriteColumns",
    "arrow_to_physical",
    "check_nested",
    "datetime_to_us",
    "prepare_write",
    "python_converter",
    "timestamps_us",
    "us_to_datetime",
]

EVENT_TS = "event_timestamp"
"""The event timestamp column of a batch written to an online store."""
CREATED_TS = "created_timestamp"
"""The (optional) created timestamp column of a batch written to an online store."""
FORMAT_VERSION = "v2"
"""Part of every schema version: bump it when the byte layout changes."""
NO_CREATED = -(1 << 63)
"""The created timestamp stored for rows that have none (it loses every tie)."""
MAX_NESTED_BYTES = 1 << 20
"""The largest map, struct or ``json`` value written to an online store (JSON text, bytes)."""
MAX_JSON_DEPTH = 64
"""The deepest ``json`` document written to an online store (arrays and objects nested)."""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SIGN = 1 << 63
_INT64 = struct.Struct(">q")
_U32 = struct.Struct(">I")
_FIXED_CODES = {
    "int32": "i",
    "int64": "q",
    "float32": "f",
    "float64": "d",
    "bool": "?",
    "timestamp": "q",
}


def us_to_datetime(value: int) -> datetime:
    """Microseconds since the epoch to an aware UTC ``datetime``."""
    return EPOCH + timedelta(microseconds=value)


def datetime_to_us(value: datetime) -> int:
    """An aware (or naive = UTC) ``datetime`` to microseconds since the epoch."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class ViewLayout:
    """The online shape of one feature view.

    Attributes:
        project: The project the view belongs to.
        view: The view's name.
        join_keys: The join keys, in the entities' order.
        key_dtypes: The dtype of each join key.
        feature_names: Every feature of the view, in order.
        feature_dtypes: The dtype of each feature.
        ttl_us: The view's TTL in microseconds, or ``None`` for no limit.
    """

    project: str
    view: str
    join_keys: tuple[str, ...]
    key_dtypes: tuple[str, ...]
    feature_names: tuple[str, ...]
    feature_dtypes: tuple[str, ...]
    ttl_us: int | None = None

    @classmethod
    def from_view(cls, project: str, view: FeatureView, entities: Sequence[Entity]) -> ViewLayout:
        """The layout of ``view`` (all its features) given its entity objects."""
        ttl = view.ttl
        return cls(
            project=project,
            view=view.name,
            join_keys=tuple(k for e in entities for k in e.join_keys),
            key_dtypes=tuple(e.value_type for e in entities for _ in e.join_keys),
            feature_names=tuple(f.name for f in view.features),
            feature_dtypes=tuple(f.dtype for f in view.features),
            ttl_us=None if ttl is None else ttl // timedelta(microseconds=1),
        )

    @classmethod
    def from_selection(cls, project: str, selection: ViewSelection) -> ViewLayout:
        """The layout of a selection's view (all of the view's features, not just the selected)."""
        return cls.from_view(project, selection.view, selection.entities)

    @cached_property
    def version(self) -> str:
        """A short hash of the key and feature names and dtypes (and the byte format)."""
        spec = {
            "format": FORMAT_VERSION,
            "keys": list(zip(self.join_keys, self.key_dtypes, strict=True)),
            "features": list(zip(self.feature_names, self.feature_dtypes, strict=True)),
        }
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @cached_property
    def ident(self) -> str:
        """``<project>__<view>__<version>``: names the view's current table or keys."""
        return f"{self.project}__{self.view}__{self.version}"

    @cached_property
    def single_int_key(self) -> bool:
        """Whether the entity key is one integer (int32 or int64)."""
        return len(self.key_dtypes) == 1 and self.key_dtypes[0] in ("int32", "int64")

    @cached_property
    def feature_index(self) -> dict[str, int]:
        """Feature name -> position in :attr:`feature_names`."""
        return {name: i for i, name in enumerate(self.feature_names)}

    @cached_property
    def key_encoder(self) -> KeyEncoder:
        """The entity key encoder of this view."""
        return KeyEncoder(self.key_dtypes)

    @cached_property
    def row_codec(self) -> RowCodec:
        """The row codec of this view (used by byte-oriented stores such as Redis)."""
        return RowCodec(self.feature_dtypes)

    def indices(self, features: Sequence[str]) -> tuple[int, ...]:
        """The positions of ``features`` among the view's features."""
        return tuple(self.feature_index[f] for f in features)


# -- entity keys -----------------------------------------------------------------------------


def _encode_scalar_key(dtype: str) -> Callable[[Any], bytes]:
    if dtype in ("int32", "int64", "timestamp"):
        return _INT64.pack
    if dtype == "string":
        return str.encode
    if dtype == "bool":
        return lambda v: b"\x01" if v else b"\x00"
    raise InvalidError(f"dtype {dtype!r} cannot be a join key")


class KeyEncoder:
    """Encodes entity keys (tuples of physical values, one per join key) to bytes.

    Args:
        dtypes: The dtype of each join key.
    """

    def __init__(self, dtypes: Sequence[str]) -> None:
        self.dtypes = tuple(dtypes)
        self._parts = [_encode_scalar_key(d) for d in self.dtypes]
        self.single = self._parts[0] if len(self._parts) == 1 else None

    def encode(self, values: Sequence[Any]) -> bytes:
        """Encode one key given its physical values, in join-key order."""
        if self.single is not None:
            return self.single(values[0])
        out = []
        for dtype, part, value in zip(self.dtypes, self._parts, values, strict=True):
            data = part(value)
            if dtype == "string":
                out.append(_U32.pack(len(data)))
            out.append(data)
        return b"".join(out)

    def encode_columns(self, columns: Sequence[Sequence[Any]]) -> list[bytes]:
        """Encode keys given as one sequence of physical values per join key."""
        if self.single is not None:
            return list(map(self.single, columns[0]))
        return [self.encode(values) for values in zip(*columns, strict=True)]

    def encode_arrow(self, arrays: Sequence[pa.Array | pa.ChunkedArray]) -> list[bytes]:
        """Encode keys given as Arrow arrays (no nulls), one per join key."""
        import numpy as np
        import pyarrow as pa

        if self.single is not None and self.dtypes[0] in ("int32", "int64", "timestamp"):
            arr = arrays[0]
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            if pa.types.is_timestamp(arr.type):
                arr = arr.cast(arrow_type("timestamp")).cast(pa.int64())
            data = np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=">i8")
            buf = data.tobytes()
            return [buf[i : i + 8] for i in range(0, len(buf), 8)]
        columns = [
            arrow_to_physical(arr, dtype) for arr, dtype in zip(arrays, self.dtypes, strict=True)
        ]
        return self.encode_columns(columns)

    def decode(self, data: bytes) -> tuple[Any, ...]:
        """Decode a key back to physical values (integers, strings, booleans)."""
        out: list[Any] = []
        pos = 0
        single = len(self.dtypes) == 1
        for dtype in self.dtypes:
            if dtype in ("int32", "int64", "timestamp"):
                out.append(_INT64.unpack_from(data, pos)[0])
                pos += 8
            elif dtype == "bool":
                out.append(data[pos] == 1)
                pos += 1
            elif single:
                out.append(data.decode())
            else:
                (length,) = _U32.unpack_from(data, pos)
                out.append(data[pos + 4 : pos + 4 + length].decode())
                pos += 4 + length
        return tuple(out)


# -- values: Arrow <-> physical <-> Python ----------------------------------------------------


def timestamps_us(arr: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A timestamp array (any unit, naive = UTC) as ``int64`` microseconds since the epoch."""
    import pyarrow as pa

    return arr.cast(pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64())


def _list_json(values: list[Any]) -> list[Any]:
    dumps = json.dumps
    return [
        None if v is None else dumps(v, separators=(",", ":"), ensure_ascii=False) for v in values
    ]


def arrow_to_physical(arr: pa.Array | pa.ChunkedArray, dtype: str) -> list[Any]:
    """The physical Python values of an Arrow array of ``dtype`` (``None`` for nulls).

    A map or struct column may also be given as its physical form already (a string column of
    JSON text, as :func:`prepare_write` leaves it).
    """
    import pyarrow as pa

    if dtype == "timestamp":
        return timestamps_us(arr).to_pylist()
    if is_list(dtype):
        inner = dtype[5:-1]
        if inner == "timestamp":
            arr = arr.cast(pa.list_(pa.timestamp("us", tz="UTC")), safe=False).cast(
                pa.list_(pa.int64())
            )
        return _list_json(arr.to_pylist())
    if is_nested(dtype) and (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return arr.to_pylist()
    if dtype == "json":  # any other Arrow value: its JSON text
        return [
            None if v is None else json.dumps(v, separators=(",", ":"), default=str)
            for v in arr.to_pylist(maps_as_pydicts="lossy")
        ]
    if is_nested(dtype):
        return _list_json(_nested_pylist(arr, dtype))
    return arr.to_pylist()


def _nested_pylist(arr: pa.Array | pa.ChunkedArray, dtype: str) -> list[Any]:
    """A map or struct array as Python dicts, timestamps inside as microseconds."""
    if contains_timestamp(dtype):
        arr = arr.cast(_physical_arrow(dtype), safe=False)
    return arr.to_pylist(maps_as_pydicts="lossy")


def _physical_arrow(dtype: str) -> pa.DataType:
    import pyarrow as pa

    if dtype == "timestamp":
        return pa.int64()
    if is_list(dtype):
        return pa.list_(_physical_arrow(dtype[5:-1]))
    if is_map(dtype):
        return pa.map_(pa.string(), _physical_arrow(map_value_dtype(dtype)))
    if is_struct(dtype):
        return pa.struct([pa.field(n, _physical_arrow(d)) for n, d in struct_fields(dtype)])
    return arrow_type(dtype)


def _json_timestamps(text: str) -> list[Any]:
    return [None if v is None else us_to_datetime(v) for v in json.loads(text)]


def _timestamps_in(dtype: str) -> Callable[[Any], Any]:
    """A function turning a decoded nested value's microseconds into datetimes, by ``dtype``."""
    if dtype == "timestamp":
        return us_to_datetime
    if dtype == "list<timestamp>":
        return lambda v: [None if x is None else us_to_datetime(x) for x in v]
    if not contains_timestamp(dtype):
        return lambda v: v
    if is_map(dtype):
        inner = _timestamps_in(map_value_dtype(dtype))
        return lambda v: {k: None if x is None else inner(x) for k, x in v.items()}
    fields = [(n, _timestamps_in(d)) for n, d in struct_fields(dtype) if contains_timestamp(d)]

    def struct_value(v: dict[str, Any]) -> dict[str, Any]:
        for name, conv in fields:
            if v.get(name) is not None:
                v[name] = conv(v[name])
        return v

    return struct_value


def python_converter(dtype: str) -> Callable[[Any], Any] | None:
    """A function turning a (non-null) physical value of ``dtype`` into its Python value.

    ``None`` when the physical value already is the Python value.
    """
    if dtype == "timestamp":
        return us_to_datetime
    if dtype == "bool":
        return bool
    if dtype == "list<timestamp>":
        return _json_timestamps
    if is_list(dtype) or dtype == "json":
        return json.loads
    if is_nested(dtype):
        if not contains_timestamp(dtype):
            return json.loads
        walk = _timestamps_in(dtype)
        return lambda text: walk(json.loads(text))
    return None


def _json_depth(value: Any) -> int:
    """The nesting depth of a decoded JSON value (a scalar is 0), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            items: Any = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        stack.extend((x, depth + 1) for x in items if isinstance(x, (dict, list)))
    return deepest


def check_nested(texts: Sequence[str | None], dtype: str, what: str) -> list[str | None]:
    """Check physical nested values (JSON text) before a write; ``json`` texts come back compact.

    Args:
        texts: The JSON texts (``None`` for nulls).
        dtype: A map, struct or ``json`` dtype.
        what: Names the feature in errors (``feature 'profile' of view 'drivers'``).

    Raises:
        InvalidError: a value is larger than :data:`MAX_NESTED_BYTES`, is not JSON, or is
            nested deeper than :data:`MAX_JSON_DEPTH`.
    """
    out: list[str | None] = []
    is_json = dtype == "json"
    for text in texts:
        if text is None:
            out.append(None)
            continue
        if len(text) > MAX_NESTED_BYTES or len(text.encode()) > MAX_NESTED_BYTES:
            raise InvalidError(
                f"{what} ({dtype}) has a value of more than {MAX_NESTED_BYTES} bytes as JSON; "
                "store large documents elsewhere and keep a reference"
            )
        if is_json:
            try:
                value = json.loads(text)
            except RecursionError:
                value, depth = None, MAX_JSON_DEPTH + 1
            except ValueError as exc:
                raise InvalidError(
                    f"{what} (json) has a value that is not JSON ({exc}): {text[:60]!r}"
                ) from None
            else:
                depth = _json_depth(value)
            if depth > MAX_JSON_DEPTH:
                raise InvalidError(
                    f"{what} (json) has a value nested deeper than {MAX_JSON_DEPTH} levels"
                )
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        out.append(text)
    return out


# -- rows as bytes (Redis) -------------------------------------------------------------------


class RowCodec:
    """Encodes whole rows (timestamps + every feature) as compact bytes, and back.

    Args:
        dtypes: The dtype of each feature, in the view's order.
    """

    HEADER = 16

    def __init__(self, dtypes: Sequence[str]) -> None:
        self.dtypes = tuple(dtypes)
        n = len(self.dtypes)
        self.words = (n + 63) // 64
        self.fixed_idx = [i for i, d in enumerate(self.dtypes) if d in _FIXED_CODES]
        self.var_idx = [i for i, d in enumerate(self.dtypes) if d not in _FIXED_CODES]
        codes = "".join(_FIXED_CODES[self.dtypes[i]] for i in self.fixed_idx)
        self.fixed = struct.Struct(">QQ" + "Q" * self.words + codes)
        self._first_value = 2 + self.words
        self._converters = [
            (i, conv)
            for i, d in enumerate(self.dtypes)
            if (conv := python_converter(d)) is not None and d != "bool"
        ]

    def encode_arrow(
        self,
        features: Sequence[pa.Array | pa.ChunkedArray],
        event_us: Sequence[int],
        created_us: Sequence[int],
    ) -> list[bytes]:
        """Encode one row per position: ``features`` holds one Arrow array per feature."""
        import numpy as np

        rows = len(event_us)
        header_e = (
            np.asarray(event_us, dtype=np.int64).view(np.uint64) ^ np.uint64(_SIGN)
        ).tolist()
        header_c = (
            np.asarray(created_us, dtype=np.int64).view(np.uint64) ^ np.uint64(_SIGN)
        ).tolist()
        bitmaps: list[list[int]] = []
        for w in range(self.words):
            word = np.zeros(rows, dtype=np.uint64)
            for bit, arr in enumerate(features[w * 64 : (w + 1) * 64]):
                if arr.null_count:
                    nulls = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
                    word |= nulls.astype(np.uint64) << np.uint64(bit)
            bitmaps.append(word.tolist())
        fixed_cols = []
        for i in self.fixed_idx:
            values = arrow_to_physical(features[i], self.dtypes[i])
            if features[i].null_count:
                zero = False if self.dtypes[i] == "bool" else 0
                values = [zero if v is None else v for v in values]
            fixed_cols.append(values)
        pack = self.fixed.pack
        fixed_rows = [pack(*r) for r in zip(header_e, header_c, *bitmaps, *fixed_cols, strict=True)]
        if not self.var_idx:
            return fixed_rows
        u32 = _U32.pack
        var_cols = []
        for i in self.var_idx:
            values = arrow_to_physical(features[i], self.dtypes[i])
            encoded = [b"" if v is None else v.encode() for v in values]
            var_cols.append([u32(len(b)) + b for b in encoded])
        return [b"".join(parts) for parts in zip(fixed_rows, *var_cols, strict=True)]

    def decode(self, data: bytes) -> tuple[int, int, list[Any]]:
        """Decode a row: ``(event_us, created_us, python values of every feature)``."""
        vals = self.fixed.unpack_from(data, 0)
        out: list[Any] = [None] * len(self.dtypes)
        first = self._first_value
        for pos, i in enumerate(self.fixed_idx):
            out[i] = vals[first + pos]
        if self.var_idx:
            off = self.fixed.size
            unpack = _U32.unpack_from
            for i in self.var_idx:
                (length,) = unpack(data, off)
                off += 4
                out[i] = data[off : off + length].decode()
                off += length
        nulls = vals[2:first]
        has_nulls = any(nulls)
        for i, conv in self._converters:
            if not (has_nulls and nulls[i >> 6] >> (i & 63) & 1):
                out[i] = conv(out[i])
        if has_nulls:
            for i in range(len(out)):
                if nulls[i >> 6] >> (i & 63) & 1:
                    out[i] = None
        return vals[0] - _SIGN, vals[1] - _SIGN, out


@dataclass
class WriteColumns:
    """A batch prepared for writing: keys, timestamps and one Arrow array per feature.

    ``keys`` are encoded bytes, or the plain integers when ``raw_int_keys`` was asked for.
    """

    keys: list[Any]
    event_us: list[int]
    created_us: list[int]
    features: list[Any]

    def __len__(self) -> int:
        return len(self.keys)


def prepare_write(
    layout: ViewLayout, batch: pa.Table | pa.RecordBatch, *, raw_int_keys: bool = False
) -> WriteColumns:
    """Split a batch (join keys, every feature, ``event_timestamp``, optional
    ``created_timestamp``) into what a store writes. NaN floats become nulls (SQLite cannot
    store NaN, and every store behaves the same).

    Raises:
        InvalidError: a column is missing, or a join key or event timestamp is null.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    names = set(batch.schema.names)
    needed = [*layout.join_keys, *layout.feature_names, EVENT_TS]
    missing = [c for c in needed if c not in names]
    if missing:
        raise InvalidError(
            f"rows for feature view '{layout.view}' lack the column(s) {', '.join(missing)}"
        )
    for col in (*layout.join_keys, EVENT_TS):
        if batch.column(col).null_count:
            raise InvalidError(
                f"rows for feature view '{layout.view}' have nulls in '{col}'; every row needs "
                "its join keys and an event timestamp"
            )
    if raw_int_keys and layout.single_int_key:
        keys = batch.column(layout.join_keys[0]).cast(pa.int64()).to_pylist()
    else:
        keys = layout.key_encoder.encode_arrow([batch.column(k) for k in layout.join_keys])
    event_us = timestamps_us(batch.column(EVENT_TS)).to_pylist()
    if CREATED_TS in names:
        created = pc.fill_null(timestamps_us(batch.column(CREATED_TS)), pa.scalar(NO_CREATED))
        created_us = created.to_pylist()
    else:
        created_us = [NO_CREATED] * len(keys)
    features = []
    for name, dtype in zip(layout.feature_names, layout.feature_dtypes, strict=True):
        col = batch.column(name)
        if dtype in ("float32", "float64") and pa.types.is_floating(col.type):
            nan = pc.is_nan(col)
            if pc.any(nan).as_py():
                col = pc.if_else(nan, pa.scalar(None, col.type), col)
        elif is_nested(dtype):
            what = f"feature '{name}' of feature view '{layout.view}'"
            col = pa.array(check_nested(arrow_to_physical(col, dtype), dtype, what), pa.string())
        features.append(col)
    return WriteColumns(keys, event_us, created_us, features)
