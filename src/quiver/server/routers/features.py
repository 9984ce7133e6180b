"""``/api/v1/features``: feature discovery across views, and the specification's features
(added to and removed from a feature set: :mod:`quiver.server.feature_sets`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field

from quiver.server._runs import as_datetime, last_runs, pick, watermarks
from quiver.server.deps import StoreDep
from quiver.server.feature_sets import add_feature, feature_out, remove_feature, split_feature_id
from quiver.server.schemas import (
    ERROR_RESPONSES,
    FeatureInfo,
    FeatureListOut,
    Freshness,
    MLOut,
    StrictJSONRoute,
)
from quiver.server.schemas_spec import FeatureIn, FeatureOut

__all__ = ["LineageOut", "router"]

router = APIRouter(
    prefix="/api/v1/features",
    tags=["features"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)

FeatureId = Annotated[
    str,
    Path(max_length=127, description="the feature's id: feature_set_id:feature", examples=["s:f"]),
]


def _tag_filter(tags: list[str]) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for tag in tags:
        key, sep, value = tag.replace(":", "=", 1).partition("=")
        out.append((key.strip(), value.strip() if sep else None))
    return out


@router.get(
    "", response_model=FeatureListOut, operation_id="list_features", summary="Find features"
)
def list_features(
    store: StoreDep,
    q: Annotated[
        str | None, Query(description="text in the name, reference, view or description")
    ] = None,
    tag: Annotated[
        list[str], Query(description="key=value (or key) ; repeat to require several")
    ] = [],  # noqa: B006 - FastAPI copies a parameter's default per request
    owner: Annotated[str | None, Query(description="the view's owner")] = None,
    view: Annotated[str | None, Query(description="only this feature view")] = None,
) -> FeatureListOut:
    """Every feature matching all the filters, with its view, dtype, tags, owner and freshness.

    A feature's tags are its view's tags overlaid with its own.
    """
    text = q.lower().strip() if q else None
    wanted_tags = _tag_filter(tag)
    runs = last_runs(store.registry)
    marks = watermarks(store.registry)
    entities = {e.name: e for e in store.list_entities()}
    now = datetime.now(UTC)
    items: list[FeatureInfo] = []
    for fv in store.list_feature_views():
        if view is not None and fv.name != view:
            continue
        if owner is not None and fv.owner.lower() != owner.lower():
            continue
        run = runs.get(fv.name, {})
        until = marks.get(fv.name)
        finished = as_datetime(pick(run, "finished_at"))
        ttl = fv.ttl.total_seconds() if fv.ttl is not None else None
        freshness = Freshness(
            ttl_seconds=ttl,
            materialized_until=until,
            last_materialized_at=finished,
            last_run_status=pick(run, "status"),
            lag_seconds=round((now - until).total_seconds(), 3) if until else None,
        )
        keys = [k for e in fv.entities if e in entities for k in entities[e].join_keys]
        for field in fv.output_fields:  # a view with aggregations: its aggregated features
            tags = {**fv.tags, **field.tags}
            if any(k not in tags or (v is not None and tags[k] != v) for k, v in wanted_tags):
                continue
            ref = f"{fv.name}:{field.name}"
            if text is not None and not any(
                text in s.lower() for s in (ref, field.description, fv.description)
            ):
                continue
            items.append(
                FeatureInfo(
                    name=field.name,
                    ref=ref,
                    view=fv.name,
                    dtype=field.dtype,
                    description=field.description,
                    tags=tags,
                    owner=fv.owner,
                    entities=list(fv.entities),
                    join_keys=keys,
                    online=fv.online,
                    freshness=freshness,
                )
            )
    return FeatureListOut(items=items, count=len(items))


@router.post(
    "",
    response_model=FeatureOut,
    status_code=201,
    operation_id="create_feature",
    summary="Add a feature to a feature set",
)
def create_feature(body: FeatureIn, store: StoreDep) -> FeatureOut:
    """Add a feature to its feature set: a new version of the set's feature view.

    ``data_type`` takes ``int``, ``float``, ``string``, ``bool`` (int64, float64, string, bool)
    and Quiver's own dtypes. ``transformation`` makes a SQL transformation; with
    ``window_size`` a windowed aggregation (``SUM(amount)``, ``COUNT(*)``, ``AVG(x)``, ...);
    with ``source_features`` a composite feature over plain features of the set.
    """
    view = add_feature(store, body)
    store.apply(store.plan([view]))
    record = store.registry.get_record("feature_view", view.name)
    out = feature_out(record.obj, body.name)
    out.feature_set_version = record.version
    return out


@router.get(
    "/{feature_id}",
    response_model=FeatureOut,
    operation_id="get_feature",
    summary="Get a feature of a feature set",
)
def get_feature(feature_id: FeatureId, store: StoreDep) -> FeatureOut:
    """One feature, by its id ``feature_set_id:feature``."""
    view, name = split_feature_id(store, feature_id)
    out = feature_out(view, name)
    out.feature_set_version = store.registry.get_record("feature_view", view.name).version
    return out


@router.delete(
    "/{feature_id}",
    response_model=FeatureOut,
    operation_id="delete_feature",
    summary="Remove a feature from its feature set",
)
def delete_feature(feature_id: FeatureId, store: StoreDep) -> FeatureOut:
    """Remove the feature (a new version of the set's view; a 409 names a feature service
    that uses it); answers the feature as it was, with the set's new version."""
    view, name = split_feature_id(store, feature_id)
    before = feature_out(view, name)
    changed, _ = remove_feature(store, feature_id)
    store.apply(store.plan([changed]))
    before.feature_set_version = store.registry.get_record("feature_view", view.name).version
    return before


_NamePath = Annotated[str, Path(max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]


class ServiceUseOut(MLOut):
    """A feature service that uses the feature."""

    name: str
    owner: str = ""
    features: list[str]


class ModelUseOut(MLOut):
    """A model version trained on the feature."""

    model_id: str = Field(examples=["churn_model:3"])
    model_name: str
    version: int
    stage: str
    features: list[str]


class LineageOut(MLOut):
    """Who uses a feature: feature services and model versions."""

    feature_view: str
    feature: str | None = None
    dtype: str | None = None
    feature_services: list[ServiceUseOut]
    model_versions: list[ModelUseOut]


@router.get(
    "/{view}/{feature}/lineage",
    response_model=LineageOut,
    operation_id="get_feature_lineage",
    summary="Who uses a feature",
)
def get_feature_lineage(view: _NamePath, feature: _NamePath, store: StoreDep) -> dict[str, Any]:
    """The feature services that list the feature (or its view with ``view:*``) and the model
    versions trained on it."""
    from quiver.monitoring.service import lineage

    return lineage(store, view, feature)
