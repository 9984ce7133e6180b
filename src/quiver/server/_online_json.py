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
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson
from pydantic_core import to_json

if TYPE_CHECKING:
    from quiver.online.serving import OnlineResponse

__all__ = ["EPOCH", "FEAST_STATUS", "dumps", "feast_online_json", "iso_utc", "online_json"]

FEAST_STATUS = {"present": "PRESENT", "not_found": "NOT_FOUND", "expired": "OUTSIDE_MAX_AGE"}
"""Quiver's value statuses as Feast's ``FieldStatus`` names."""

EPOCH = "1970-01-01T00:00:00Z"
"""Feast's event timestamp of a value it has none for (and of the entity key columns)."""

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
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


def online_json(result: OnlineResponse, n: int, feature_service: str | None, start: float) -> bytes:
    """The body of ``POST /api/v1/serving/online`` (``OnlineResponseOut``).

    Args:
        result: The lookup's result.
        n: The number of entity rows.
        feature_service: The requested feature service (echoed in the metadata).
        start: ``time.perf_counter()`` when the request began (for ``latency_ms``).
    """
    keys, ent, val = result.join_keys, result.entity_columns, result.values
    groups = [
        (names, statuses, [None if t is None else _STAMPS.get(t) or iso_utc(t) for t in ts])
        for names, statuses, ts in result.groups
    ]
    rows = []
    for i in range(n):
        values, statuses, stamps = {}, {}, {}
        for names, sta, times in groups:
            status, stamp = sta[i], times[i]
            for f in names:
                values[f] = val[f][i]
                statuses[f] = status
                stamps[f] = stamp
        rows.append(
            {
                "entity": {k: ent[k][i] for k in keys},
                "values": values,
                "statuses": statuses,
                "event_timestamps": stamps,
            }
        )
    return dumps(
        {
            "feature_names": result.feature_names,
            "join_keys": keys,
            "results": rows,
            "metadata": {
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                "feature_service": feature_service,
            },
        }
    )


def feast_online_json(result: OnlineResponse, n: int) -> bytes:
    """The body of Feast's ``POST /get-online-features`` (``FeastOnlineResponse``).

    Args:
        result: The lookup's result.
        n: The number of entity rows.
    """
    present, epoch = ["PRESENT"] * n, [EPOCH] * n
    vectors: list[dict[str, Any]] = []
    for key in result.join_keys:
        vectors.append(
            {"values": result.entity_columns[key], "statuses": present, "event_timestamps": epoch}
        )
    values = result.values
    for names, statuses, times in result.groups:
        if n == 1:  # the hot path: no comprehension needed
            t = times[0]
            feast = [FEAST_STATUS.get(statuses[0], "NOT_FOUND")]
            stamps = [EPOCH if t is None else _STAMPS.get(t) or iso_utc(t)]
        else:
            feast = [FEAST_STATUS.get(s, "NOT_FOUND") for s in statuses]
            stamps = [EPOCH if t is None else _STAMPS.get(t) or iso_utc(t) for t in times]
        for name in names:
            vectors.append({"values": values[name], "statuses": feast, "event_timestamps": stamps})
    return dumps(
        {
            "metadata": {"feature_names": [*result.join_keys, *result.feature_names]},
            "results": vectors,
        }
    )
