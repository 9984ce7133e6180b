"""The JSON bodies of the online serving routes, built once for both ways of answering them.

``POST /api/v1/serving/online`` and Feast's ``POST /get-online-features`` are answered by the
FastAPI routes (which document them) and by the lean ASGI path (:mod:`quiver.server.fastpath`);
both call the functions here, so their bodies are the same bytes.

The features of one view share their statuses and event times (``OnlineResponse.groups``): each
conversion runs once per view, not once per feature. Bodies are encoded by orjson: datetimes as
ISO 8601 UTC with ``Z`` (event times are written as that text directly: cheaper than a datetime),
NaN and infinities as ``null``, anything else it does not know as ``str(value)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import date
from itertools import repeat
from typing import TYPE_CHECKING, Any

import orjson
from pydantic_core import to_json

if TYPE_CHECKING:
    from quiver.online.serving import OnlineResponse

__all__ = [
    "EPOCH",
    "FEAST_STATUS",
    "dumps",
    "feast_content",
    "feast_online_json",
    "iso_utc",
    "online_content",
    "online_json",
]

FEAST_STATUS = {"present": "PRESENT", "not_found": "NOT_FOUND", "expired": "OUTSIDE_MAX_AGE"}
"""Quiver's value statuses as Feast's ``FieldStatus`` names."""

EPOCH = "1970-01-01T00:00:00Z"
"""Feast's event timestamp of a value it has none for (and of the entity key columns)."""

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
_dumps = orjson.dumps
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_STAMPS: dict[int, str] = {}
"""Microseconds since the epoch -> ISO 8601 text: rows of one batch share their event time, so
most lookups hit. Bounded: cleared when full."""


def dumps(content: Any) -> bytes:
    """``content`` as JSON bytes (see the module for the conventions)."""
    try:
        return orjson.dumps(content, default=str, option=_OPTIONS)
    except orjson.JSONEncodeError:
        # Beyond orjson (an int wider than 64 bits, say): pydantic's encoder, same conventions.
        return to_json(content, inf_nan_mode="null", fallback=str)


def iso_utc(us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC with ``Z``, exactly as pydantic (and orjson)
    write a UTC datetime: ``2024-05-01T12:00:00Z``, ``2024-05-01T12:00:00.250000Z``."""
    text = _STAMPS.get(us)
    if text is not None:
        return text
    days, rest = divmod(us, 86_400_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    day = date.fromordinal(_EPOCH_ORDINAL + days).isoformat()
    text = f"{day}T{hours:02d}:{minutes:02d}:{seconds:02d}"
    text += f".{fraction:06d}Z" if fraction else "Z"
    if len(_STAMPS) >= 4096:
        _STAMPS.clear()
    _STAMPS[us] = text
    return text


def online_json(result: OnlineResponse, n: int, feature_service: str | None, start: int) -> bytes:
    """The body of ``POST /api/v1/serving/online`` (``OnlineResponseOut``).

    Args:
        result: The lookup's result.
        n: The number of entity rows.
        feature_service: The requested feature service (echoed in the metadata).
        start: ``time.perf_counter_ns()`` when the request began (for ``latency_ms``).
    """
    latency_ms = (time.perf_counter_ns() - start) // 1000 / 1000  # to the microsecond
    if n == 1:
        try:
            return _online_one(result, feature_service, latency_ms)
        except orjson.JSONEncodeError:
            pass  # a value beyond orjson (an int wider than 64 bits, say): the general way
    return dumps(online_content(result, n, feature_service, latency_ms))


def online_content(
    result: OnlineResponse, n: int, feature_service: str | None, latency_ms: float
) -> dict[str, Any]:
    """The content of :func:`online_json`'s body, to encode with :func:`dumps`."""
    keys, ent = result.join_keys, result.entity_columns
    groups = [
        (names, statuses, [None if t is None else _STAMPS.get(t) or iso_utc(t) for t in ts], rows)
        for names, statuses, ts, rows in result.groups
    ]
    results = []
    for i in range(n):
        values: dict[str, Any] = {}
        statuses: dict[str, str] = {}
        stamps: dict[str, str | None] = {}
        for names, sta, times, rows in groups:
            row = rows[i]
            if row is None:
                values.update(dict.fromkeys(names))
            else:
                values.update(zip(names, row, strict=True))
            statuses.update(dict.fromkeys(names, sta[i]))
            stamps.update(dict.fromkeys(names, times[i]))
        results.append(
            {
                "entity": {k: ent[k][i] for k in keys},
                "values": values,
                "statuses": statuses,
                "event_timestamps": stamps,
            }
        )
    return {
        "feature_names": result.feature_names,
        "join_keys": keys,
        "results": results,
        "metadata": {
            "latency_ms": latency_ms,
            "feature_service": feature_service,
            "cache_hit": result.cache_hit,
        },
    }


def feast_online_json(result: OnlineResponse, n: int) -> bytes:
    """The body of Feast's ``POST /get-online-features`` (``FeastOnlineResponse``).

    Args:
        result: The lookup's result.
        n: The number of entity rows.
    """
    if n == 1:
        try:
            return _feast_one(result)
        except orjson.JSONEncodeError:
            pass  # a value beyond orjson (an int wider than 64 bits, say): the general way
    return dumps(feast_content(result, n))


def feast_content(result: OnlineResponse, n: int) -> dict[str, Any]:
    """The content of :func:`feast_online_json`'s body, to encode with :func:`dumps`."""
    present, epoch = ["PRESENT"] * n, [EPOCH] * n
    ent = result.entity_columns
    vectors: list[dict[str, Any]] = [
        {"values": ent[key], "statuses": present, "event_timestamps": epoch}
        for key in result.join_keys
    ]
    values = result.values
    for names, statuses, times, _ in result.groups:
        feast = [FEAST_STATUS.get(s, "NOT_FOUND") for s in statuses]
        stamps = [EPOCH if t is None else _STAMPS.get(t) or iso_utc(t) for t in times]
        vectors += [
            {"values": values[name], "statuses": feast, "event_timestamps": stamps}
            for name in names
        ]
    return {
        "metadata": {"feature_names": [*result.join_keys, *result.feature_names]},
        "results": vectors,
    }


# -- one entity row: Feast's body assembled from encoded pieces ---------------------------------
#
# The same bytes as ``dumps(feast_content(result, 1))`` (a property test holds them equal): each
# value is encoded alone by orjson, with the same options, and the constant parts around it are
# written once per view instead of building a dict and a list per feature.

_DEFAULT = repeat(str)  # endless: map() below stops at the row's end
_OPTION = repeat(_OPTIONS)
_FEAST_BYTES = {status: name.encode() for status, name in FEAST_STATUS.items()}
_VECTOR = b'{"values":['
_KEY_TAIL = b'],"statuses":["PRESENT"],"event_timestamps":["%b"]},' % EPOCH.encode()
_HEADS: dict[int, tuple[list[str], list[str], bytes]] = {}
"""``id(feature_names)`` -> (feature names, join keys, the body's head): a resolved request's
names are the same list objects call after call. Bounded: cleared when full."""


def _head(result: OnlineResponse) -> bytes:
    names, keys = result.feature_names, result.join_keys
    found = _HEADS.get(id(names))
    if found is not None and found[0] is names and found[1] is keys:
        return found[2]
    head = b'{"metadata":{"feature_names":%b},"results":[' % orjson.dumps(
        [*keys, *names], str, _OPTIONS
    )
    if len(_HEADS) >= 1024:
        _HEADS.clear()
    _HEADS[id(names)] = (names, keys, head)
    return head


def _feast_one(result: OnlineResponse) -> bytes:
    """Feast's body for one entity row; raises ``orjson.JSONEncodeError`` for a value orjson
    cannot encode."""
    parts = [_head(result)]
    ent = result.entity_columns
    for key in result.join_keys:
        parts += (_VECTOR, _dumps(ent[key][0], str, _OPTIONS), _KEY_TAIL)
    for names, statuses, times, rows in result.groups:
        if not names:
            continue
        t = times[0]
        tail = b'],"statuses":["%b"],"event_timestamps":["%b"]},' % (
            _FEAST_BYTES.get(statuses[0], b"NOT_FOUND"),
            (EPOCH if t is None else _STAMPS.get(t) or iso_utc(t)).encode(),
        )
        row = rows[0]
        if row is None:
            encoded: Iterable[bytes] = [b"null"] * len(names)
        else:
            # The row encoded at once and split at its commas: one piece per value unless a
            # value holds a comma itself (then there are more pieces: encode one by one).
            encoded = _dumps(row, str, _OPTIONS)[1:-1].split(b",")
            if len(encoded) != len(names):
                encoded = map(_dumps, row, _DEFAULT, _OPTION)
        parts += (_VECTOR, (tail + _VECTOR).join(encoded), tail)
    if len(parts) == 1:
        return parts[0] + b"]}"
    parts[-1] = parts[-1][:-1] + b"]}"  # the last vector's comma closes the results
    return b"".join(parts)


def _online_one(result: OnlineResponse, feature_service: str | None, latency_ms: float) -> bytes:
    """The native body for one entity row; raises ``orjson.JSONEncodeError`` for a value orjson
    cannot encode."""
    values: dict[str, Any] = {}
    statuses: list[bytes] = []
    stamps: list[bytes] = []
    for names, sta, times, rows in result.groups:
        if not names:
            continue
        keys = _members(names)
        t = times[0]
        status = _STATUS_JSON.get(sta[0]) or _dumps(sta[0])
        stamp = b"null" if t is None else b'"%b"' % (_STAMPS.get(t) or iso_utc(t)).encode()
        # A view's features share their status and event time: written once per view.
        statuses.append((status + b",").join(keys) + status)
        stamps.append((stamp + b",").join(keys) + stamp)
        row = rows[0]
        if row is None:
            values.update(dict.fromkeys(names))
        else:
            values.update(zip(names, row))  # noqa: B905 (a row holds one value per name)
    ent = result.entity_columns
    entity = {key: ent[key][0] for key in result.join_keys}
    metadata = {
        "latency_ms": latency_ms,
        "feature_service": feature_service,
        "cache_hit": result.cache_hit,
    }
    return b"".join(
        (
            _native_head(result),
            _dumps(entity, str, _OPTIONS),
            b',"values":',
            _dumps(values, str, _OPTIONS),
            b',"statuses":{',
            b",".join(statuses),
            b'},"event_timestamps":{',
            b",".join(stamps),
            b'}}],"metadata":',
            _dumps(metadata, str, _OPTIONS),
            b"}",
        )
    )


_STATUS_JSON = {status: b'"%b"' % status.encode() for status in FEAST_STATUS}
_MEMBERS: dict[int, tuple[Sequence[str], list[bytes]]] = {}
"""``id(names)`` -> (names, :func:`_members`): a resolved request's names are the same objects
call after call. Bounded: cleared when full."""


def _members(names: Sequence[str]) -> list[bytes]:
    """The keys of a JSON object's members: ``"a":``, ``"b":``..."""
    found = _MEMBERS.get(id(names))
    if found is not None and found[0] is names:
        return found[1]
    keys = [_dumps(name) + b":" for name in names]
    if len(_MEMBERS) >= 4096:
        _MEMBERS.clear()
    _MEMBERS[id(names)] = (names, keys)
    return keys


def _native_head(result: OnlineResponse) -> bytes:
    names, keys = result.feature_names, result.join_keys
    found = _NATIVE_HEADS.get(id(names))
    if found is not None and found[0] is names and found[1] is keys:
        return found[2]
    head = b'{"feature_names":%b,"join_keys":%b,"results":[{"entity":' % (
        _dumps(names, str, _OPTIONS),
        _dumps(keys, str, _OPTIONS),
    )
    if len(_NATIVE_HEADS) >= 1024:
        _NATIVE_HEADS.clear()
    _NATIVE_HEADS[id(names)] = (names, keys, head)
    return head


_NATIVE_HEADS: dict[int, tuple[list[str], list[str], bytes]] = {}
