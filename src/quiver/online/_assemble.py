"""Serving's value assembly: statuses, event times and values per view from stored rows."""

from __future__ import annotations

from typing import Any

from quiver.online._plans import _new_tuple, _Plan
from quiver.online._response import EXPIRED, NOT_FOUND, PRESENT, OnlineGroup, OnlineResponse
from quiver.online.encoding import us_to_datetime


def _response(
    plan: _Plan, columns: list[list[Any]], results: list[list[Any]], now_us: int
) -> OnlineResponse:
    """Statuses, event times and values per view, from the stored rows.

    A stored row is ``(event_us, created_us, value, ...)`` and may carry extra items after the
    values (only the outputs' positions are read).
    """
    groups: list[OnlineGroup] = []
    if columns and len(columns[0]) == 1:  # the hot path: one entity
        for (_, _, outputs, _, ttl, stop), (row,) in zip(plan.views, results):  # noqa: B905
            if row is None:
                group = (outputs, [NOT_FOUND], [None], [None])
            elif ttl is not None and row[0] <= now_us - ttl:
                group = (outputs, [EXPIRED], [row[0]], [None])
            else:
                group = (outputs, [PRESENT], [row[0]], [row[2:stop]])
            # tuple.__new__ skips the NamedTuple's Python-level constructor.
            groups.append(_new_tuple(OnlineGroup, group))
    else:
        for v, (_, _, outputs, _, ttl, stop) in enumerate(plan.views):
            cutoff = None if ttl is None else now_us - ttl
            groups.append(_group(outputs, stop, results[v], cutoff))
    if plan.has_timestamp_key:
        columns = _output_keys(plan, columns)
    return OnlineResponse(
        plan.feature_names,
        plan.join_keys,
        dict(zip(plan.join_keys, columns)),  # noqa: B905 (a column per join key)
        groups,
        plan.dtypes,
        plan.key_dtype_map,
    )


def _group(outputs: tuple[str, ...], stop: int, rows: list[Any], cutoff: int | None) -> OnlineGroup:
    """One view's statuses, event times and values from its stored rows (``stop``: where the
    values end in a stored row; a row at or before ``cutoff`` is expired)."""
    if rows and None not in rows:
        events: list[Any] = [row[0] for row in rows]
        if cutoff is None or min(events) > cutoff:  # every value present
            return OnlineGroup(
                outputs, [PRESENT] * len(rows), events, [row[2:stop] for row in rows]
            )
    statuses: list[str] = []
    times: list[int | None] = []
    values: list[tuple[Any, ...] | None] = []
    for row in rows:
        if row is None:
            statuses.append(NOT_FOUND)
            times.append(None)
            values.append(None)
        elif cutoff is not None and row[0] <= cutoff:
            statuses.append(EXPIRED)
            times.append(row[0])
            values.append(None)
        else:
            statuses.append(PRESENT)
            times.append(row[0])
            values.append(row[2:stop])
    return OnlineGroup(outputs, statuses, times, values)


def _output_keys(plan: _Plan, columns: list[list[Any]]) -> list[list[Any]]:
    out = []
    for dtype, col in zip(plan.key_dtypes, columns, strict=True):
        out.append([us_to_datetime(v) for v in col] if dtype == "timestamp" else list(col))
    return out
