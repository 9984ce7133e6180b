"""``/api/v1/materializations``: start materialization runs and list them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from quiver.errors import InvalidError
from quiver.server._convert import as_utc
from quiver.server._jobs import ASYNC_RESPONSES, submit_job, wants_async
from quiver.server._runs import run_dict
from quiver.server.access import visible
from quiver.server.deps import StoreDep
from quiver.server.schemas import (
    ERROR_RESPONSES,
    JOB_RESPONSES,
    MaterializeRequest,
    RunListOut,
    RunOut,
    StrictJSONRoute,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/materializations",
    tags=["materializations"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)


@router.post(
    "",
    response_model=RunListOut,
    status_code=201,
    operation_id="start_materialization",
    summary="Materialize a range, or incrementally",
    responses={**JOB_RESPONSES, **ASYNC_RESPONSES},
)
async def start_materialization(
    body: MaterializeRequest, request: Request, store: StoreDep
) -> RunListOut | JSONResponse:
    """Copy the latest value per key into the online store; one run per view.

    With ``incremental=true`` each view resumes from its watermark (in the configured online
    store) up to ``end`` (default now); otherwise ``start`` is required and the range is
    ``[start, end)``. The call returns when the runs have finished; with ``"async": true`` (or
    ``Prefer: respond-async``) it returns a 202 with a background job at once. A job cancelled
    stops between two views: each view is either fully materialized or untouched.
    """
    end = as_utc(body.end) if body.end is not None else datetime.now(UTC)
    start = None
    if body.incremental:
        if body.start is not None:
            raise InvalidError("incremental runs start at each view's watermark; drop 'start'")
    else:
        if body.start is None:
            raise InvalidError("give 'start' (and 'end'), or set incremental=true")
        start = as_utc(body.start)
        if start >= end:
            raise InvalidError(
                f"start ({start.isoformat()}) must be before end ({end.isoformat()})"
            )
    if wants_async(request, body.run_async):
        from quiver.jobs.pool import materialize_work

        views = list(dict.fromkeys(body.views)) if body.views is not None else None
        params = {
            "views": views,
            "start": start.isoformat() if start else None,
            "end": end.isoformat(),
            "incremental": body.incremental,
        }

        def prepare() -> Any:
            for name in views or ():  # unknown views are a 404 now, not a failed job
                store.get_feature_view(name)
            return materialize_work(
                store, views=views, start=start, end=end, incremental=body.incremental
            )

        return await submit_job(request, store, "materialize", params, prepare)
    return await run_in_threadpool(_materialize, store, body, start, end)


def _materialize(store: Any, body: MaterializeRequest, start: Any, end: datetime) -> RunListOut:
    if body.incremental:
        runs = store.materialize_incremental(end, body.views)
    else:
        runs = store.materialize(start, end, body.views)
    items = [RunOut(**run_dict(r)) for r in runs]
    return RunListOut(items=items, count=len(items))


@router.get(
    "",
    response_model=RunListOut,
    operation_id="list_materializations",
    summary="Materialization runs, newest first",
)
def list_materializations(
    store: StoreDep,
    view: Annotated[str | None, Query(description="only this feature view")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> RunListOut:
    """Runs with their status, row count and duration."""
    from quiver.registry.runs import list_runs

    if view is not None:
        store.get_feature_view(view)
    runs = visible(store, "feature_view", list_runs(store.registry, view=view, limit=limit), _view)
    items = [RunOut(**run_dict(r)) for r in runs]
    return RunListOut(items=items, count=len(items))


def _view(run: Any) -> str:
    return str(run.view)
