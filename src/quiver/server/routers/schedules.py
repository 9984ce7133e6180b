"""``/api/v1/schedules``: the views' materialization schedules, with their next and last run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from quiver.server.access import visible
from quiver.server.deps import StoreDep
from quiver.server.schemas import ERROR_RESPONSES, StrictJSONRoute

__all__ = ["ScheduleListOut", "ScheduleOut", "router"]

router = APIRouter(
    prefix="/api/v1/schedules",
    tags=["schedules"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)


class ScheduleOut(BaseModel):
    """A view's schedule."""

    view: str
    cron: str = Field(description="the view's materialization_schedule")
    timezone: str
    next_run: datetime
    last_fire: datetime | None = Field(
        default=None, description="the last fire time a scheduler ran"
    )
    last_job: dict[str, Any] | None = Field(
        default=None, description="the last scheduled job: job_id, status, times, error"
    )
    holder: str | None = Field(default=None, description="the scheduler running it now")


class ScheduleListOut(BaseModel):
    """Every scheduled view."""

    items: list[ScheduleOut]
    count: int


@router.get(
    "",
    response_model=ScheduleListOut,
    operation_id="list_schedules",
    summary="Materialization schedules",
)
def list_schedules(store: StoreDep) -> dict[str, Any]:
    """Every view with a ``materialization_schedule``: its next and last run."""
    from quiver.jobs.scheduler import list_schedules as schedules

    found = visible(store, "feature_view", schedules(store), lambda s: str(s.view))
    items = [s.to_dict() for s in found]
    return {"items": items, "count": len(items)}
