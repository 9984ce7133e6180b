"""``/monitoring/statistics`` and ``/monitoring/data-freshness``: feature statistics of the
materializations and the freshness of every view (:mod:`quiver.monitoring`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import Field

from quiver.server.deps import StoreDep
from quiver.server.schemas import ERROR_RESPONSES, QueryBool, _Out

__all__ = ["FreshnessListOut", "StatisticsOut", "router"]

router = APIRouter(prefix="/monitoring", tags=["monitoring"], responses=ERROR_RESPONSES)


class RunStatisticsOut(_Out):
    """The statistics of one materialization run."""

    run_id: str
    view: str
    computed_at: datetime
    start: datetime | None = None
    end: datetime
    rows: int
    newest_event_timestamp: datetime | None = None
    features: dict[str, dict[str, Any]] = Field(
        description="per feature: dtype, rows, count, nulls, null_rate, min, max, distinct "
        "(approximate); numbers: mean, stddev, quantiles p1..p99; strings and booleans: "
        "top_values; sampled: true when computed over a sample of the rows"
    )


class ViewStatisticsOut(_Out):
    """A view's statistics: the latest run and the runs of the period, newest first."""

    latest: RunStatisticsOut | None = None
    runs: list[RunStatisticsOut]


class StatisticsOut(_Out):
    """The statistics of every feature view (or one)."""

    project: str
    days: float | None = None
    views: dict[str, ViewStatisticsOut]


class ViewFreshnessOut(_Out):
    """How fresh a view's online values are."""

    view: str
    online: bool
    ttl_seconds: float | None = None
    watermark: datetime | None = Field(default=None, description="end of the materialized range")
    last_success_at: datetime | None = None
    newest_event_timestamp: datetime | None = Field(
        default=None, description="the newest event timestamp materialized"
    )
    age_seconds: float | None = Field(default=None, description="now minus the newest value")
    stale: bool | None = Field(default=None, description="the age exceeds the view's TTL")
    source_newest_event_timestamp: datetime | None = None
    lag_seconds: float | None = Field(
        default=None, description="the source's newest event timestamp minus the newest value"
    )
    error: str | None = Field(default=None, description="why the source could not be probed")


class FreshnessListOut(_Out):
    """The freshness of every feature view."""

    views: list[ViewFreshnessOut]
    count: int


@router.get(
    "/statistics",
    response_model=StatisticsOut,
    operation_id="get_feature_statistics",
    summary="Feature statistics",
)
def get_statistics(
    store: StoreDep,
    days: Annotated[
        float | None, Query(ge=0, le=36_500, description="only runs of the last N days")
    ] = None,
    view: Annotated[str | None, Query(max_length=63, description="only this feature view")] = None,
    limit: Annotated[int, Query(ge=1, le=1_000, description="runs per view")] = 20,
) -> dict[str, Any]:
    """Per view, the statistics each materialization run computed over the rows it wrote."""
    from quiver.monitoring.service import statistics

    return statistics(store, view, days=days, limit=limit)


@router.get(
    "/data-freshness",
    response_model=FreshnessListOut,
    operation_id="get_data_freshness",
    summary="Data freshness per view",
)
def get_data_freshness(
    store: StoreDep,
    probe_source: Annotated[
        QueryBool, Query(description="read each source's newest timestamp for the lag")
    ] = True,
) -> dict[str, Any]:
    """Per view: watermark, last success, newest value and its age, lag behind the source."""
    from quiver.monitoring.service import data_freshness

    views = [f.to_dict() for f in data_freshness(store, probe_source=probe_source)]
    return {"views": views, "count": len(views)}
