"""``/api/v1/jobs``: background jobs (materializations, trainings, batch predictions).

Jobs are made by the ``"async": true`` requests of the materialization, model and batch
prediction routes and by the scheduler; they are kept in the registry, so every replica sees
every job, and a cancel sent to any replica reaches the one that runs the job.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from quiver.server._jobs import JobOut
from quiver.server.deps import StoreDep
from quiver.server.schemas import ERROR_RESPONSES, StrictJSONRoute

__all__ = ["JobListOut", "router"]

router = APIRouter(
    prefix="/api/v1/jobs",
    tags=["jobs"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)

JobId = Annotated[str, Path(max_length=64, pattern="^[A-Za-z0-9]+$", description="a job id")]
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
Kind = Literal["materialize", "train", "predict_batch"]


class JobListOut(BaseModel):
    """Background jobs, newest first."""

    items: list[JobOut]
    count: int


@router.get(
    "",
    response_model=JobListOut,
    operation_id="list_jobs",
    summary="Background jobs, newest first",
)
def list_jobs(
    store: StoreDep,
    status: Annotated[list[Status] | None, Query(description="only these statuses")] = None,
    kind: Annotated[Kind | None, Query(description="only this kind")] = None,
    view: Annotated[
        str | None, Query(max_length=63, description="only the scheduled runs of this view")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Jobs with their status, progress, timings, result or error."""
    from quiver.jobs.records import list_jobs as list_records

    found = list_records(store.registry, status=status, kind=kind, schedule=view, limit=limit)
    items = [j.to_dict() for j in found]
    return {"items": items, "count": len(items)}


@router.get(
    "/{job_id}",
    response_model=JobOut,
    operation_id="get_job",
    summary="One background job",
)
def get_job(job_id: JobId, store: StoreDep) -> dict[str, Any]:
    """A job's status (``queued``, ``running``, ``succeeded``, ``failed``, ``cancelled``),
    progress, timings, and its result or error."""
    from quiver.jobs.records import get_job as get_record

    return get_record(store.registry, job_id).to_dict()


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    operation_id="cancel_job",
    summary="Cancel a background job",
)
async def cancel_job(job_id: JobId, request: Request, store: StoreDep) -> dict[str, Any]:
    """Stop a job: a queued one at once, a running one at its next safe point (a
    materialization between two views, so no view is left half-written; a training or batch
    prediction outside its final step). The answer is the job after the request (``cancelled``,
    or still ``running`` with ``cancel_requested``); 409 if the job already ended."""
    from quiver.jobs.records import request_cancel

    def cancel() -> dict[str, Any]:
        pool = getattr(request.app.state, "job_pool", None)
        record = pool.cancel(job_id) if pool is not None else request_cancel(store.registry, job_id)
        return record.to_dict()

    return await run_in_threadpool(cancel)
