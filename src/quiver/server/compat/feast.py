"""Feast's Python feature server routes, so Feast clients and scripts work unchanged.

``POST /get-online-features`` answers Feast's JSON: ``metadata.feature_names`` lists the entity
key columns first, then the features; ``results`` holds one vector per name, each with
``values``, ``statuses`` (``PRESENT``, ``NOT_FOUND``, ``OUTSIDE_MAX_AGE``) and
``event_timestamps`` over the requested entities. ``POST /push`` takes
``{"push_source_name", "df", "to"}``: the name is a feature view, or a data source whose views
all receive the rows (a Feast push source becomes such a data source). Like Feast,
``/push`` answers an empty body and the other write routes ``null``.

Errors on these routes answer in Feast's format (Feast's client raises its typed exceptions from
them, see :mod:`quiver.server.compat._feast_wire`); entity values are coerced to the join key's
type where nothing is lost, and an entity's name stands for its single join key. The coercion is
tried only when a request fails as given, so the hot path is unchanged. With
``feast_compat.serve_stale`` a value past its view's TTL answers ``PRESENT`` with its value, as
Feast's server does, instead of ``OUTSIDE_MAX_AGE``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Request, Response

from quiver.definitions import did_you_mean
from quiver.errors import InvalidError, QuiverError
from quiver.server._convert import as_utc, check_columns, push_table
from quiver.server._online_json import feast_online_json
from quiver.server.access import check_online
from quiver.server.compat._feast_wire import (
    FeastRoute,
    PushSourceNotFound,
    normalize_entities,
    with_versions,
)
from quiver.server.deps import SettingsDep, StoreDep
from quiver.server.routers.serving import call_online
from quiver.server.schemas import ERROR_RESPONSES
from quiver.server.schemas_feast import (
    FeastMaterializeIncrementalRequest,
    FeastMaterializeRequest,
    FeastNull,
    FeastOnlineRequest,
    FeastOnlineResponse,
    FeastPushRequest,
    FeastWriteRequest,
)

__all__ = ["router"]

router = APIRouter(tags=["feast"], responses=ERROR_RESPONSES, route_class=FeastRoute)

_MODES: dict[str, Literal["online", "offline", "both"]] = {
    "online": "online",
    "offline": "offline",
    "online_and_offline": "both",
    "both": "both",
}


@router.post(
    "/get-online-features",
    response_model=FeastOnlineResponse,
    operation_id="feast_get_online_features",
    summary="Feast: online features",
)
async def get_online_features(body: FeastOnlineRequest, request: Request) -> Response:
    """Feast-compatible online lookup (request and response as Feast's feature server)."""
    state = request.app.state  # not dependencies: this is the hot path
    store, settings = state.store, state.settings
    check_online(request, body.features, body.feature_service)
    n = check_columns(body.entities, settings.max_inline_rows)
    entities = body.entities
    while True:
        try:
            result = await call_online(
                store,
                features=body.features,
                entity_rows=entities,
                feature_service=body.feature_service,
                full_feature_names=body.full_feature_names,
                serve_stale=store.config.feast_compat.serve_stale,
            )
            break
        except QuiverError:
            fixed = None if entities is not body.entities else normalize_entities(store, entities)
            if fixed is None:
                raise
            entities = fixed
    if not body.include_feature_view_version_metadata:
        return Response(feast_online_json(result, n), media_type="application/json")
    body_bytes = with_versions(store, result, n, body.features, body.feature_service)
    return Response(body_bytes, media_type="application/json")


def _views_for(store: Any, name: str) -> list[str]:
    if store.registry.find_record("feature_view", name) is not None:
        return [name]
    views = [v.name for v in store.list_feature_views() if v.source_name == name]
    if not views:
        options = store.registry.names("feature_view") + store.registry.names("data_source")
        raise PushSourceNotFound(
            f"push source '{name}' is neither a feature view nor the data source of one"
            + did_you_mean(name, options)
        )
    return views


def _null(headers: dict[str, str] | None = None) -> Response:
    return Response(b"null", media_type="application/json", headers=headers)


@router.post(
    "/push",
    response_model=FeastNull,
    operation_id="feast_push",
    summary="Feast: push rows",
)
def push(body: FeastPushRequest, store: StoreDep, settings: SettingsDep) -> Response:
    """Feast-compatible push: ``df`` is columnar; ``to`` is online, offline or online_and_offline.

    The response body is empty as in Feast; the header ``X-Quiver-Rows`` says how many rows
    were written, ``X-Quiver-Rows-Invalid`` and ``X-Quiver-Rows-Dropped`` what the views'
    validation rules found (a ``reject`` policy answers 422 and writes nothing).
    """
    from quiver.online.serving import push_many

    check_columns(body.df, settings.max_inline_rows, what="df")
    total = invalid = dropped = 0
    pushes = [
        (view, push_table(store, view, body.df, view_columns_only=True))
        for view in _views_for(store, body.push_source_name)
    ]
    # every view's rows checked before any is written: a refusal writes nothing
    for written in push_many(store, pushes, to=_MODES[body.to]):
        total += int(written)
        counts = getattr(written, "validation", None)
        if counts is not None:
            invalid += counts.rows_invalid
            dropped += counts.rows_dropped
    return Response(
        b"",
        headers={
            "X-Quiver-Rows": str(total),
            "X-Quiver-Rows-Invalid": str(invalid),
            "X-Quiver-Rows-Dropped": str(dropped),
        },
    )


@router.post(
    "/write-to-online-store",
    response_model=FeastNull,
    operation_id="feast_write_to_online_store",
    summary="Feast: write rows to the online store",
)
def write_to_online_store(
    body: FeastWriteRequest, store: StoreDep, settings: SettingsDep
) -> Response:
    """Feast-compatible write of a feature view's rows to the online store."""
    check_columns(body.df, settings.max_inline_rows, what="df")
    store.get_feature_view(body.feature_view_name)
    table = push_table(store, body.feature_view_name, body.df, view_columns_only=True)
    written = int(store.push(body.feature_view_name, table, to="online"))
    return _null({"X-Quiver-Rows": str(written)})


def _parse_ts(value: str, what: str) -> datetime:
    try:
        return as_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError as exc:
        raise InvalidError(f"{what} {value!r} is not an ISO 8601 timestamp") from exc


@router.post(
    "/materialize",
    response_model=FeastNull,
    operation_id="feast_materialize",
    summary="Feast: materialize a range",
)
def materialize(body: FeastMaterializeRequest, store: StoreDep) -> Response:
    """Feast-compatible materialization of ``[start_ts, end_ts)``."""
    start = _parse_ts(body.start_ts, "start_ts")
    end = _parse_ts(body.end_ts, "end_ts")
    if start >= end:
        raise InvalidError(f"start_ts ({body.start_ts}) must be before end_ts ({body.end_ts})")
    store.materialize(start, end, body.feature_views)
    return _null()


@router.post(
    "/materialize-incremental",
    response_model=FeastNull,
    operation_id="feast_materialize_incremental",
    summary="Feast: materialize incrementally",
)
def materialize_incremental(body: FeastMaterializeIncrementalRequest, store: StoreDep) -> Response:
    """Feast-compatible incremental materialization up to ``end_ts``."""
    store.materialize_incremental(_parse_ts(body.end_ts, "end_ts"), body.feature_views)
    return _null()
