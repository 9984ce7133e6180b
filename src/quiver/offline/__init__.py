"""The offline engine: point-in-time joins and "latest per key" pulls over data sources.

An engine is one module implementing :class:`OfflineEngine`, registered by its short name in
:data:`ENGINES` and chosen by ``offline_engine.type`` in ``quiver.yaml``. The default, ``duckdb``,
runs in process; ``spark`` (extra ``spark``) runs on Apache Spark.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from quiver.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.config import RepoConfig
    from quiver.offline.retrieval import RetrievalJob
    from quiver.selection import ViewSelection

__all__ = ["ENGINES", "OfflineEngine", "create_offline_engine"]


@runtime_checkable
class OfflineEngine(Protocol):
    """What an offline engine does: point-in-time joins and latest-per-key pulls."""

    def get_historical_features(
        self,
        entity_table: pa.Table,
        selections: list[ViewSelection],
        *,
        timestamp_column: str,
        full_feature_names: bool,
    ) -> RetrievalJob:
        """The point-in-time join of ``entity_table`` with each selected view.

        Args:
            entity_table: Join keys, the timestamp column (any Arrow timestamp or date type;
                naive values are UTC) and any extra columns, which are carried through.
            selections: One selection per feature view.
            timestamp_column: The entity table's timestamp column.
            full_feature_names: Name output columns ``view__feature``.

        Returns:
            A lazy :class:`~quiver.offline.retrieval.RetrievalJob`: the entity table's columns
            first, in input order, then the features.
        """
        ...

    def pull_latest(
        self, selection: ViewSelection, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        """One row per entity key: the latest source row with ``start <= event_ts < end``.

        Ties on the event timestamp are broken by the greatest created timestamp. Columns: the
        join keys (named as the entities' join keys, cast to their dtypes), the selected
        features (named as features, cast to their dtypes), then ``event_timestamp`` and
        ``created_timestamp`` (``timestamp[us, UTC]``; created is null when the source has
        none). Streams in record batches (bounded memory).
        """
        ...

    def close(self) -> None:
        """Release the engine's connections."""
        ...


def _duckdb_engine(config: RepoConfig) -> OfflineEngine:
    from quiver.offline.duckdb import DuckDBOfflineEngine

    return DuckDBOfflineEngine(config)


def _spark_engine(config: RepoConfig) -> OfflineEngine:
    from quiver.errors import require

    require("pyspark", "spark", "the Spark offline engine (offline_engine type spark)")
    from quiver.offline.spark import SparkOfflineEngine

    return SparkOfflineEngine(config)


ENGINES: dict[str, Callable[[RepoConfig], OfflineEngine]] = {
    "duckdb": _duckdb_engine,
    "spark": _spark_engine,
}
"""Offline engines by their ``offline_engine.type`` name."""


def create_offline_engine(config: RepoConfig) -> OfflineEngine:
    """The offline engine chosen by ``config.offline_engine.type``.

    Raises:
        ConfigError: the type names no registered engine.
    """
    kind = config.offline_engine.type
    factory = ENGINES.get(kind)
    if factory is None:
        raise ConfigError(
            f"offline_engine.type {kind!r} is not a known engine; use one of {', '.join(ENGINES)}"
        )
    return factory(config)
