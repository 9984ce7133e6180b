"""The SQL of windowed aggregations in DuckDB: per entity row (training sets) and per tile
(materialization).

Per entity row, the aggregates are one range join of the entity rows with the view's events on
the join keys and ``start(t) < event_ts <= t`` for the largest selected window, grouped by entity
row, with a ``FILTER`` per smaller window (:func:`entity_aggregates_sql`). Measured against a
window function over the union of entity rows and events (``RANGE BETWEEN ... PRECEDING``), the
join is about 3x faster with few entity rows per key (the common case: 100k entity rows over
100k keys, 10M events) and about 1.7x slower with a hundred entity rows per key; see
``bench/README.md``.

Per tile, :func:`tile_partials_sql` groups the events by key and tile into the partial
aggregates of :mod:`quiver.features.tiles`, computed by DuckDB's own aggregates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from quiver.offline.sources import quote, sql_type

if TYPE_CHECKING:
    from quiver.config import RepoConfig
    from quiver.definitions import FeatureView
    from quiver.features.aggregations import Aggregation
    from quiver.features.tiles import TileSpec
    from quiver.offline.sources import TimeWindow
    from quiver.selection import ViewSelection

__all__ = [
    "FIRST_CREATED",
    "entity_aggregates_sql",
    "floor_us",
    "historical_cte",
    "tile_partials_sql",
    "tiles_select",
]

_TS = "__qv_ts"
_CREATED = "__qv_created"
FIRST_CREATED = "make_timestamp(-62135596800000000)"
"""Stands for a missing created time when breaking ties of ``last`` (before any real time)."""


def floor_us(expr: str, interval_us: int) -> str:
    """SQL flooring the BIGINT ``expr`` to a multiple of ``interval_us`` (also below zero)."""
    i = int(interval_us)
    return f"({expr} - ((({expr}) % {i}) + {i}) % {i})"


def _aggregate(agg: Aggregation, dtype: str, column_dtype: str | None, lo: str) -> str:
    """One aggregate over the joined events ``ev`` of entity row ``e``, window from ``lo``."""
    col = f"ev.{quote(agg.column)}" if agg.column else None
    window = f"ev.{quote(_TS)} > e.{quote(lo)}"
    where = f"FILTER (WHERE {window})"
    f = agg.function
    if f == "count":
        expr = f"count({col or 'ev.' + quote(_TS)}) {where}"
    elif f == "sum":
        expr = f"sum({col}) {where}"
    elif f == "mean":
        expr = f"avg(CAST({col} AS DOUBLE)) {where}"
    elif f == "stddev":
        expr = f"stddev_samp(CAST({col} AS DOUBLE)) {where}"
    elif f in ("min", "max"):
        expr = f"{f}({col}) {where}"
    elif f == "count_distinct":
        expr = f"count(DISTINCT {col}) {where}"
    else:  # last: the latest event; ties to the greatest created time, then the greatest value
        order = (
            f"struct_pack(a := ev.{quote(_TS)}, b := coalesce(ev.{quote(_CREATED)}, "
            f"{FIRST_CREATED}), c := {col})"
        )
        expr = f"arg_max({col}, {order}) FILTER (WHERE {window} AND {col} IS NOT NULL)"
    return f"CAST({expr} AS {sql_type(dtype)})"


def entity_aggregates_sql(
    view: FeatureView,
    names: Sequence[str],
    entity_sql: str,
    key_pairs: Sequence[tuple[str, str]],
    row: str,
    ts: str,
    events_sql: str,
) -> str:
    """The aggregates ``names`` of ``view`` per entity row, one row per valid entity row.

    Args:
        view: The feature view (with aggregations).
        names: The aggregated features wanted.
        entity_sql: The entity table (a quoted name or a subquery).
        key_pairs: ``(entity column, event column)`` per join key.
        row: The entity table's row number column.
        ts: The entity table's timestamp column (a naive UTC ``TIMESTAMP``).
        events_sql: The view's events: the join keys, the aggregated columns, ``__qv_ts`` and
            ``__qv_created`` (a :func:`~quiver.offline.sources.source_select`).

    Returns:
        ``SELECT <row>, <one column per name> ...`` (entity rows with a null key or
        timestamp are left out: the caller's left join gives them nulls).
    """
    assert view.aggregation_interval is not None
    interval = int(view.aggregation_interval.total_seconds()) * 1_000_000
    aggs = [view.aggregation(n) for n in names]
    dtypes = {f.name: f.dtype for f in view.features}
    windows = sorted({a.window_us for a in aggs})
    t_us = f"epoch_us(e0.{quote(ts)})"
    los = [
        f"make_timestamp({floor_us(t_us, interval)} - {w}) AS {quote(f'__qv_lo{i}')}"
        for i, w in enumerate(windows)
    ]
    keys = [f"e0.{quote(ec)} AS {quote(f'__qv_k{i}')}" for i, (ec, _) in enumerate(key_pairs)]
    not_null = " AND ".join(
        [f"e0.{quote(ec)} IS NOT NULL" for ec, _ in key_pairs] + [f"e0.{quote(ts)} IS NOT NULL"]
    )
    entity = (
        f"SELECT e0.{quote(row)} AS {quote(row)}, e0.{quote(ts)} AS {quote(_TS)}, "
        f"{', '.join(keys + los)} FROM {entity_sql} AS e0 WHERE {not_null}"
    )
    widest = quote(f"__qv_lo{len(windows) - 1}")
    on = [f"ev.{quote(vc)} = e.{quote(f'__qv_k{i}')}" for i, (_, vc) in enumerate(key_pairs)]
    on += [f"ev.{quote(_TS)} > e.{widest}", f"ev.{quote(_TS)} <= e.{quote(_TS)}"]
    outputs = [
        _aggregate(
            a,
            a.dtype(dtypes.get(a.column or "")),
            dtypes.get(a.column or ""),
            f"__qv_lo{windows.index(a.window_us)}",
        )
        + f" AS {quote(n)}"
        for a, n in zip(aggs, names, strict=True)
    ]
    return (
        f"SELECT e.{quote(row)} AS {quote(row)}, {', '.join(outputs)} FROM ({entity}) AS e "
        f"LEFT JOIN ({events_sql}) AS ev ON {' AND '.join(on)} GROUP BY e.{quote(row)}"
    )


def tile_partials_sql(spec: TileSpec, keys: Sequence[str], events_sql: str) -> str:
    """The partial aggregates per key and tile of ``events_sql``, ordered by key and tile.

    Columns: the join keys, ``__qv_tile``, then one column per part of ``spec`` (in its order;
    ``last`` as its event time, created time and value).
    """
    interval = spec.interval_us
    ts_us = f"epoch_us(ev.{quote(_TS)})"
    tile = f"({floor_us(f'({ts_us} - 1)', interval)} // {interval})"
    inner = [f"ev.{quote(k)} AS {quote(k)}" for k in keys] + [f"{tile} AS __qv_tile"]
    outer = [quote(k) for k in keys] + ["__qv_tile"]
    for i, part in enumerate(spec.parts):
        name = f"__qv_p{i}"
        col = f"ev.{quote(part.column)}" if part.column else ""
        kind = part.kind
        if kind == "n":
            inner.append(f"count(*) AS {name}")
        elif kind == "maxts":
            inner.append(f"max({ts_us}) AS {name}")
        elif kind == "cnt":
            inner.append(f"count({col}) AS {name}")
        elif kind == "sum":
            cast = "DOUBLE" if part.code == "d" else "BIGINT"
            inner.append(f"coalesce(CAST(sum({col}) AS {cast}), 0) AS {name}")
        elif kind == "m2":
            inner.append(f"coalesce(var_pop(CAST({col} AS DOUBLE)) * count({col}), 0.0) AS {name}")
        elif kind in ("min", "max"):
            value = _physical(col, spec.dtypes[part.column or ""])
            inner.append(f"{kind}({value}) AS {name}")
        elif kind == "last_ts":
            value = _physical(col, spec.dtypes[part.column or ""])
            inner.append(
                f"max(struct_pack(a := {ts_us}, b := coalesce(epoch_us(ev.{quote(_CREATED)}), "
                f"{-(1 << 63)}), c := {value})) FILTER (WHERE {col} IS NOT NULL) AS __qv_l{i}"
            )
            outer.append(f"coalesce(__qv_l{i}.a, {-(1 << 63)}) AS {name}")
            continue
        elif kind == "last_cts":
            outer.append(f"coalesce(__qv_l{i - 1}.b, {-(1 << 63)}) AS {name}")
            continue
        elif kind == "last":
            outer.append(f"__qv_l{i - 2}.c AS {name}")
            continue
        else:  # dist
            value = _physical(col, spec.dtypes[part.column or ""])
            inner.append(f"list(DISTINCT {value}) FILTER (WHERE {col} IS NOT NULL) AS {name}")
        outer.append(name)
    group = ", ".join([f"ev.{quote(k)}" for k in keys] + ["__qv_tile"])
    order = ", ".join([quote(k) for k in keys] + ["__qv_tile"])
    not_null = " AND ".join(f"ev.{quote(k)} IS NOT NULL" for k in keys)
    return (
        f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM ({events_sql}) AS ev "
        f"WHERE {not_null} GROUP BY {group}) ORDER BY {order}"
    )


def _physical(col: str, dtype: str) -> str:
    """A column as the tiles keep it: timestamps as microseconds, floats as DOUBLE."""
    if dtype == "timestamp":
        return f"epoch_us({col})"
    if dtype == "float32":
        return f"CAST({col} AS DOUBLE)"
    if dtype == "bool":
        return f"CAST({col} AS BIGINT)"
    return col


def _events(
    cur: Any,
    config: RepoConfig,
    sel: ViewSelection,
    columns: Sequence[str],
    window: TimeWindow,
) -> tuple[str, list[Any]]:
    """The view's events (join keys, ``columns``, event and created times) in ``window``."""
    from quiver.offline.sources import source_select

    view = sel.view
    wanted: dict[str, str | None] = {k: sel.key_types[k] for k in sel.join_keys}
    dtypes = {f.name: f.dtype for f in view.features}
    roles = {k: f"join key '{k}' of feature view '{view.name}'" for k in sel.join_keys}
    for c in columns:
        wanted[c] = dtypes[c]
        roles[c] = f"column '{c}' of feature view '{view.name}' (aggregated)"
    select = source_select(cur, config, sel.source, wanted, window=window, roles=roles)
    return select.sql, list(select.params)


def historical_cte(
    cur: Any,
    config: RepoConfig,
    sel: ViewSelection,
    names: Sequence[str],
    entity: tuple[str, Sequence[str], str, str],
    t_range: tuple[int, int],
) -> tuple[str, list[Any]]:
    """The aggregated features ``names`` per entity row, for the point-in-time join.

    Args:
        cur: The DuckDB cursor the entity table is registered on.
        config: The repo config.
        sel: The selection (of aggregated features).
        names: The output name of each selected feature, in order.
        entity: The entity table's name, its key column per join key of the view, its row
            number column and its timestamp column.
        t_range: The smallest and greatest entity timestamp, in microseconds.

    Returns:
        The SQL (one row per entity row with a key and a timestamp: the row number, then one
        column per name) and its parameters.
    """
    from quiver.offline.sources import TimeWindow

    view = sel.view
    assert view.aggregation_interval is not None
    interval = int(view.aggregation_interval.total_seconds()) * 1_000_000
    aggs = [view.aggregation(f.name) for f in sel.features]
    widest = max(a.window_us for a in aggs)
    window = TimeWindow(
        lo=(t_range[0] // interval) * interval - widest,
        lo_inclusive=False,
        hi=t_range[1],
        hi_inclusive=True,
    )
    columns = sorted({a.column for a in aggs if a.column is not None})
    events, params = _events(cur, config, sel, columns, window)
    table, key_cols, row, ts = entity
    sql = entity_aggregates_sql(
        view,
        [f.name for f in sel.features],
        quote(table),
        list(zip(key_cols, sel.join_keys, strict=True)),
        row,
        ts,
        events,
    )
    rename = ", ".join(
        f"{quote(f.name)} AS {quote(n)}" for f, n in zip(sel.features, names, strict=True)
    )
    return f"SELECT {quote(row)}, {rename} FROM ({sql})", params


def tiles_select(
    cur: Any, config: RepoConfig, sel: ViewSelection, spec: TileSpec, lo_us: int | None, end_us: int
) -> tuple[str, list[Any]]:
    """The partial aggregates per key and tile of the events with ``lo_us < event_ts < end_us``
    (see :func:`tile_partials_sql`) and their parameters."""
    from quiver.offline.sources import TimeWindow

    window = TimeWindow(lo=lo_us, lo_inclusive=False, hi=end_us, hi_inclusive=False)
    columns = sorted({p.column for p in spec.parts if p.column is not None})
    events, params = _events(cur, config, sel, columns, window)
    return tile_partials_sql(spec, sel.join_keys, events), params
