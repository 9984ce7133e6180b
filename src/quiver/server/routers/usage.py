"""``/monitoring/usage``: reads per feature, view, feature service and model (see
:mod:`quiver.monitoring.usage`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from quiver.server.deps import StoreDep
from quiver.server.schemas import ERROR_RESPONSES

__all__ = ["UsageItem", "UsageResponse", "router"]

router = APIRouter(prefix="/monitoring", tags=["monitoring"], responses=ERROR_RESPONSES)


class UsageItem(BaseModel):
    """Reads of one object in the range."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["feature", "feature_view", "feature_service", "model"]
    name: str
    requests: int
    rows: int


class UsageResponse(BaseModel):
    """Reads per object between two UTC days (both included), most read first per kind."""

    model_config = ConfigDict(extra="ignore")

    project: str
    start_date: date | None
    end_date: date | None
    items: list[UsageItem]
    count: int


@router.get(
    "/usage",
    response_model=UsageResponse,
    operation_id="monitoring_usage",
    summary="Usage counts",
)
async def usage(
    store: StoreDep,
    start_date: Annotated[date | None, Query(description="first UTC day (YYYY-MM-DD)")] = None,
    end_date: Annotated[date | None, Query(description="last UTC day, included")] = None,
    kind: Annotated[
        Literal["feature", "feature_view", "feature_service", "model"] | None,
        Query(description="only this kind"),
    ] = None,
) -> dict[str, Any]:
    """Online reads counted by the server(s) of this project, flushed to the registry every
    ``monitoring.usage_flush_seconds`` (counts of the last seconds may not be in yet)."""
    from quiver.monitoring.usage import usage_report

    rows = await run_in_threadpool(usage_report, store.registry, start_date, end_date, kind)
    return {
        "project": store.project,
        "start_date": start_date,
        "end_date": end_date,
        "items": [r.to_dict() for r in rows],
        "count": len(rows),
    }
