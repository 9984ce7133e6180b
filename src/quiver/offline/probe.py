"""Probes of a view's rows in its source, for ``quiver validate`` and the freshness lag.

:func:`probe_view` reads the view's rows as materialization would (the same
:func:`~quiver.features.transformations.view_select`: ``field_mapping``, casts to the declared
dtypes, pushed rows, a ``source_query``) but only aggregates them: the newest event timestamp
and, with ``check_types``, one ``count`` per column, which makes DuckDB cast every value (a
value the declared dtype cannot hold fails there, as it would fail materialization).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quiver.errors import QuiverError
from quiver.offline.sources import TimeWindow, quote

if TYPE_CHECKING:
    from quiver.offline.duckdb import DuckDBOfflineEngine
    from quiver.offline.spark import SparkOfflineEngine
    from quiver.selection import ViewSelection

__all__ = ["SourceProbe", "probe_view"]


@dataclass(frozen=True)
class SourceProbe:
    """What :func:`probe_view` found.

    Attributes:
        rows: Rows of the view in its source (pushed rows included).
        newest_event_timestamp: The newest event timestamp (``None`` when there are no rows).
    """

    rows: int
    newest_event_timestamp: datetime | None


def probe_view(
    engine: DuckDBOfflineEngine | SparkOfflineEngine,
    selection: ViewSelection,
    *,
    check_types: bool = False,
) -> SourceProbe:
    """The row count and newest event timestamp of a view's source rows.

    Raises:
        NotFoundError: the source's files or table do not exist.
        InvalidError: a declared column is missing, or (``check_types``) a value cannot be cast
            to its declared dtype.
        BackendError: DuckDB (or Spark) failed otherwise.
    """
    from quiver.offline.spark import SparkOfflineEngine

    if isinstance(engine, SparkOfflineEngine):  # probed in Spark
        rows, newest = engine.probe(selection, check_types=check_types)
        return SourceProbe(rows=rows, newest_event_timestamp=newest)
    from quiver.features.transformations import view_select, view_transform
    from quiver.offline.duckdb import _engine_error, _roles

    keys = selection.join_keys
    columns: dict[str, str | None] = {k: selection.key_types[k] for k in keys}
    for f in selection.features:
        columns[f.name] = f.dtype
    tx = view_transform(selection.view, selection.features, selection.source)
    if tx is not None:
        columns = tx.source_columns({k: selection.key_types[k] for k in keys})
    what = f"feature view '{selection.view.name}'"
    cur = engine._cursor()
    try:
        select = view_select(
            cur,
            engine.config,
            selection.view,
            selection.source,
            columns,
            window=TimeWindow(),
            roles=_roles(selection),
            query_sources=selection.query_sources,
        )
        aggs = ["count(*)", f"max({quote('__qv_ts')})"]
        if check_types:
            aggs += [f"count({quote(c)})" for c in columns]
        row: Any = cur.execute(
            f"SELECT {', '.join(aggs)} FROM ({select.sql}) AS s", select.params
        ).fetchone()
    except QuiverError:
        raise
    except Exception as exc:
        raise _engine_error(exc, what) from exc
    finally:
        cur.close()
    newest = row[1]
    if isinstance(newest, datetime):
        newest = newest.replace(tzinfo=UTC) if newest.tzinfo is None else newest.astimezone(UTC)
    return SourceProbe(rows=int(row[0]), newest_event_timestamp=newest)
