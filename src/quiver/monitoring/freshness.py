"""Freshness per feature view: how old the newest materialized value is, and how far the
online store lags behind the source.

- ``newest_event_timestamp``: the newest event timestamp any materialization run wrote (from the
  stored statistics, so it needs ``monitoring.statistics`` on); ``age_seconds`` is ``now`` minus it.
- ``source_newest_event_timestamp`` (only with a probe, which reads the source's timestamp
  column): the newest event timestamp in the source; ``lag_seconds`` is it minus the newest
  materialized one (0 when the online store is up to date).
- ``watermark`` and ``last_success_at``: the end of the materialized range and when the last
  successful run ended; ``stale`` is true when the age exceeds the view's TTL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.errors import BackendError, QuiverError
from quiver.registry.runs import list_watermarks
from quiver.registry.tables import materialization_runs

if TYPE_CHECKING:
    from quiver.definitions import FeatureView
    from quiver.offline.probe import SourceProbe
    from quiver.registry import Registry

__all__ = ["ViewFreshness", "last_success_per_view", "view_freshness"]


@dataclass(frozen=True)
class ViewFreshness:
    """The freshness of one feature view (see the module docstring)."""

    view: str
    online: bool
    ttl_seconds: float | None
    watermark: datetime | None
    last_success_at: datetime | None
    newest_event_timestamp: datetime | None
    age_seconds: float | None
    stale: bool | None
    source_newest_event_timestamp: datetime | None = None
    lag_seconds: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (timestamps in ISO 8601)."""

        def iso(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "view": self.view,
            "online": self.online,
            "ttl_seconds": self.ttl_seconds,
            "watermark": iso(self.watermark),
            "last_success_at": iso(self.last_success_at),
            "newest_event_timestamp": iso(self.newest_event_timestamp),
            "age_seconds": self.age_seconds,
            "stale": self.stale,
            "source_newest_event_timestamp": iso(self.source_newest_event_timestamp),
            "lag_seconds": self.lag_seconds,
            "error": self.error,
        }


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def last_success_per_view(registry: Registry) -> dict[str, datetime]:
    """When the last successful materialization run of each view ended, by view."""
    t = materialization_runs
    query = (
        sa.select(t.c.view, sa.func.max(t.c.finished_at))
        .where(t.c.project == registry.project, t.c.status == "succeeded")
        .group_by(t.c.view)
    )
    try:
        with registry.engine.connect() as conn:
            rows = conn.execute(query).all()
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(f"registry read (materialization runs) failed: {exc}") from exc
    return {view: _utc(ts) for view, ts in rows if ts is not None}  # type: ignore[misc]


def view_freshness(
    registry: Registry,
    views: Sequence[FeatureView],
    *,
    now: datetime | None = None,
    probe: Callable[[FeatureView], SourceProbe] | None = None,
    online_store: str | None = None,
) -> list[ViewFreshness]:
    """The freshness of ``views``, in their order.

    Args:
        registry: The registry (runs, watermarks, statistics).
        views: The feature views.
        now: The time ages are measured at (default: now).
        probe: Reads a view's newest source timestamp (e.g. :func:`quiver.offline.probe.probe_view`
            bound to an engine); without it the lag is not computed. A probe that fails puts its
            message in ``error`` and leaves the lag unknown.
        online_store: The watermarks of this online store
            (:func:`~quiver.registry.runs.online_store_key`; default: the latest in any).
    """
    from quiver.monitoring.statistics import newest_event_per_view

    now = _utc(now) or datetime.now(UTC)
    marks = list_watermarks(registry, online_store)
    success = last_success_per_view(registry)
    newest = newest_event_per_view(registry)
    out = []
    for view in views:
        ttl = view.ttl.total_seconds() if view.ttl else None
        latest = newest.get(view.name)
        age = max((now - latest).total_seconds(), 0.0) if latest is not None else None
        source_newest = lag = error = None
        if probe is not None:
            try:
                source_newest = probe(view).newest_event_timestamp
            except QuiverError as exc:
                error = exc.message
            if source_newest is not None:
                behind = latest if latest is not None else None
                lag = (
                    max((source_newest - behind).total_seconds(), 0.0)
                    if behind is not None
                    else None
                )
        out.append(
            ViewFreshness(
                view=view.name,
                online=view.online,
                ttl_seconds=ttl,
                watermark=marks.get(view.name),
                last_success_at=success.get(view.name),
                newest_event_timestamp=latest,
                age_seconds=age,
                stale=(age > ttl) if age is not None and ttl is not None else None,
                source_newest_event_timestamp=source_newest,
                lag_seconds=lag,
                error=error,
            )
        )
    return out
