"""Windowed aggregations on the Spark engine: per entity row (training sets) and per tile
(materialization). The Spark twin of :mod:`quiver.features.aggregation_sql`.

:class:`~quiver.offline.spark.SparkOfflineEngine` calls these with the view's events already read
by :func:`quiver.offline._spark_sources.source_frame` (the join keys named as the view's join
keys and cast to their dtypes, the aggregated columns cast to their features' dtypes, then
``__ts`` and ``__created``, both ``TIMESTAMP`` in UTC), restricted to the time window the
aggregates need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from quiver.config import RepoConfig
    from quiver.selection import ViewSelection

__all__ = ["historical_aggregates", "pull_tiles"]


def historical_aggregates(
    session: Any,
    entity: DataFrame,
    sel: ViewSelection,
    config: RepoConfig,
    events: DataFrame,
) -> DataFrame:
    """The selected aggregated features of ``sel`` per entity row.

    Args:
        session: The Spark session.
        entity: The entity rows: ``__row_id`` (bigint), the view's join keys (named as the join
            keys, typed), ``__ts`` (``TIMESTAMP``, UTC). Keys or ``__ts`` may be null.
        sel: The selection (of aggregated features).
        config: The repo config.
        events: The view's events, as the module docstring says, with
            ``floor(min(t), interval) - widest window < __ts <= max(t)``.

    Returns:
        ``__row_id`` and one column per selected feature (named as the feature, cast to its
        dtype); at most one row per entity row (rows left out get nulls from the caller's left
        join).
    """
    raise InvalidError(
        f"feature view '{sel.view.name}' has windowed aggregations, which the Spark offline "
        "engine does not compute yet; use offline_engine type duckdb for it"
    )


def pull_tiles(
    session: Any,
    events: DataFrame,
    sel: ViewSelection,
    spec: Any,
    lo_us: int | None,
    end_us: int,
    config: RepoConfig,
) -> pa.RecordBatchReader:
    """The partial aggregates per key and tile of ``events`` (``lo_us < __ts < end_us``), with
    the same columns, types and order as
    :meth:`quiver.offline.duckdb.DuckDBOfflineEngine.pull_tiles`, streamed in bounded batches.
    """
    raise InvalidError(
        f"feature view '{sel.view.name}' has windowed aggregations, whose tiles the Spark "
        "offline engine does not compute yet; use offline_engine type duckdb to materialize it"
    )
