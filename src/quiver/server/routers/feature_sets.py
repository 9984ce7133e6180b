"""``/api/v1/feature-sets``: the specification's feature sets (feature views by another name).

A feature set's id is its view's name; every write is a new version in the view's history
(``GET /api/v1/feature-views/{id}/history``). See :mod:`quiver.server.feature_sets`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path

from quiver.errors import InvalidError
from quiver.server._convert import as_utc
from quiver.server._runs import run_dict
from quiver.server.access import visible
from quiver.server.deps import StoreDep
from quiver.server.feature_sets import create_feature_set as build_feature_set
from quiver.server.feature_sets import feature_set_out
from quiver.server.schemas import ERROR_RESPONSES, RunOut, StrictJSONRoute
from quiver.server.schemas_spec import (
    FeatureSetIn,
    FeatureSetListOut,
    FeatureSetMaterializeIn,
    FeatureSetOut,
    FeatureSetRunsOut,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1/feature-sets",
    tags=["feature-sets"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)

SetId = Annotated[str, Path(max_length=63, description="the feature set's id (its view's name)")]

_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: ERROR_RESPONSES[422] | {"description": "a source path outside the file roots"}
}


@router.get(
    "",
    response_model=FeatureSetListOut,
    operation_id="list_feature_sets",
    summary="List feature sets",
)
def list_feature_sets(store: StoreDep) -> FeatureSetListOut:
    """Every feature set (every feature view) the caller may see, by id."""
    records = visible(
        store, "feature_view", store.registry.records("feature_view"), lambda r: r.name
    )
    items = [feature_set_out(r) for r in records]
    return FeatureSetListOut(items=items, count=len(items))


@router.post(
    "",
    response_model=FeatureSetOut,
    status_code=201,
    operation_id="create_feature_set",
    summary="Create a feature set",
    responses=_FORBIDDEN,
)
def create_feature_set(body: FeatureSetIn, store: StoreDep) -> FeatureSetOut:
    """Register a feature set: a feature view with no features yet (add them with
    ``POST /api/v1/features``). Its id is its name."""
    view = build_feature_set(store, body)
    if not isinstance(view.source, str):
        from quiver.security.paths import FileBoundary

        FileBoundary.of(store).check_source(view.source, f"feature set '{view.name}': path")
    store.apply(store.plan([view]))
    return feature_set_out(store.registry.get_record("feature_view", view.name))


@router.get(
    "/{set_id}", response_model=FeatureSetOut, operation_id="get_feature_set", summary="Get a set"
)
def get_feature_set(set_id: SetId, store: StoreDep) -> FeatureSetOut:
    """One feature set with its features."""
    store.get_feature_view(set_id)  # the usual 404 (with "did you mean")
    return feature_set_out(store.registry.get_record("feature_view", set_id))


@router.delete(
    "/{set_id}",
    response_model=FeatureSetOut,
    operation_id="delete_feature_set",
    summary="Delete a feature set",
)
def delete_feature_set(set_id: SetId, store: StoreDep) -> FeatureSetOut:
    """Delete the set's feature view (a 409 names a feature service that uses it); answers the
    set as it was."""
    store.get_feature_view(set_id)
    before = feature_set_out(store.registry.get_record("feature_view", set_id))
    store.delete("feature_view", set_id)
    return before


@router.post(
    "/{set_id}/materialize",
    response_model=FeatureSetRunsOut,
    status_code=201,
    operation_id="materialize_feature_set",
    summary="Materialize a feature set over a range",
)
def materialize_feature_set(
    set_id: SetId, body: FeatureSetMaterializeIn, store: StoreDep
) -> FeatureSetRunsOut:
    """Copy the latest value per key with ``start_date <= event time < end_date`` into the
    online store (the materialization service; the call returns when the run has finished)."""
    start = as_utc(body.start_date)
    end = as_utc(body.end_date) if body.end_date is not None else datetime.now(UTC)
    if start >= end:
        raise InvalidError(
            f"start_date ({start.isoformat()}) must be before end_date ({end.isoformat()})"
        )
    store.get_feature_view(set_id)
    runs = store.materialize(start, end, [set_id])
    items = [RunOut(**run_dict(r)) for r in runs]
    return FeatureSetRunsOut(feature_set_id=set_id, items=items, count=len(items))
