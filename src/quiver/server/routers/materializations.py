"""``/api/v1/materializations``: start materialization runs and list them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from quiver.errors import InvalidError
from quiver.server._convert import as_utc
from quiver.server._runs import run_dict
from quiver.server.access import visible
from quiver.server.deps import StoreDep
from quiver.server.schemas import (
    ERROR_RESPONSES,
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
)
def start_materialization(body: MaterializeRequest, store: StoreDep) -> RunListOut:
    """Copy the latest value per key into the online store; one run per view.

    With ``incremental=true`` each view resumes from its watermark up to ``end`` (default now);
    otherwise ``start`` is required and the range is ``[start, end)``. The call returns when the
    runs have finished.
    """
    end = as_utc(body.end) if body.end is not None else datetime.now(UTC)
    if body.incremental:
        if body.start is not None:
            raise InvalidError("incremental runs start at each view's watermark; drop 'start'")
        runs = store.materialize_incremental(end, body.views)
    else:
        if body.start is None:
            raise InvalidError("give 'start' (and 'end'), or set incremental=true")
        start = as_utc(body.start)
        if start >= end:
            raise InvalidError(
                f"start ({start.isoformat()}) must be before end ({end.isoformat()})"
            )
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
