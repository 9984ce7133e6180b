"""``/api/v1/serving``: online feature values and point-in-time correct training data."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from quiver.errors import InvalidError, PayloadTooLargeError
from quiver.monitoring.metrics import observe_retrieval
from quiver.server._convert import (
    check_columns,
    inline_table,
    readable_path,
    table_rows,
    writable_path,
)
from quiver.server._online_json import online_json
from quiver.server.access import check_online
from quiver.server.deps import SettingsDep, StoreDep
from quiver.server.schemas import (
    ERROR_RESPONSES,
    HistoricalRequest,
    HistoricalResponse,
    OnlineMetadata,
    OnlineRequest,
    OnlineResponseOut,
    StrictJSONRoute,
)
from quiver.server.schemas_spec import SpecHistoricalOut, SpecOnlineOut

__all__ = ["call_online", "json_response", "router"]

router = APIRouter(
    prefix="/api/v1/serving",
    tags=["serving"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,  # lone surrogates are invalid JSON (as on the fast path)
)

INLINE_ONLINE_STORES = frozenset({"sqlite"})
"""Online stores read on the event loop: an embedded lookup is shorter than a thread hop.

Network stores (Redis) are read in the threadpool so one slow call does not stall the loop.
"""


async def call_online(store: Any, **kwargs: Any) -> Any:
    """``store.get_online_features(**kwargs)``, inline or in the threadpool (see above), timed
    for the metrics when they are on."""
    began = time.perf_counter()
    if store.config.online_store.type in INLINE_ONLINE_STORES:
        result = store.get_online_features(**kwargs)
    else:
        result = await run_in_threadpool(lambda: store.get_online_features(**kwargs))
    observe_retrieval(time.perf_counter() - began)
    return result


def json_response(content: Any, status_code: int = 200) -> Response:
    """A JSON response serialized in one pass (datetimes as ISO 8601, NaN as null)."""
    from pydantic_core import to_json

    return Response(
        to_json(content, inf_nan_mode="null", fallback=str),
        status_code=status_code,
        media_type="application/json",
    )


@router.post(
    "/online",
    response_model=OnlineResponseOut | SpecOnlineOut,
    operation_id="get_online_features",
    summary="Online feature values per entity key",
    responses={413: ERROR_RESPONSES[422] | {"description": "too many entity keys"}},
)
async def online(body: OnlineRequest, request: Request) -> Response:
    """The latest value of each feature for each entity key, with a status per value.

    Statuses: ``present``, ``not_found`` (no value for the key), ``expired`` (older than the
    view's TTL). With ``use_defaults`` a feature's ``default_value`` is served instead of
    ``null`` where it is not present (the status still says why).

    With ``feature_sets`` (the specification's shape) the answer is ``SpecOnlineOut``: values
    keyed by entity id (``null`` where not present) with ``metadata.latency_ms`` and
    ``metadata.cache_hit``.
    """
    start = time.perf_counter_ns()
    state = request.app.state  # not dependencies: this is the hot path
    store, settings = state.store, state.settings
    if body.feature_sets is not None:  # the specification's shape
        from quiver.server._spec_serving import spec_online

        def check(refs: list[str]) -> None:
            check_online(request, refs, None)

        content = await spec_online(
            store, settings.max_inline_rows, body, check, call_online, start
        )
        return Response(content, media_type="application/json")
    check_online(request, body.features, body.feature_service)
    n = check_columns(body.entities, settings.max_inline_rows)
    result = await call_online(
        store,
        features=body.features,
        entity_rows=body.entities,
        feature_service=body.feature_service,
        full_feature_names=body.full_feature_names,
        use_defaults=body.use_defaults,
    )
    return Response(
        online_json(result, n, body.feature_service, start), media_type="application/json"
    )


@router.post(
    "/historical",
    response_model=HistoricalResponse | SpecHistoricalOut,
    operation_id="get_historical_features",
    summary="Point-in-time correct features for an entity table",
    responses={
        403: ERROR_RESPONSES[422] | {"description": "a path outside the file roots"},
        413: ERROR_RESPONSES[422] | {"description": "too many inline rows or entity rows"},
    },
)
def historical(body: HistoricalRequest, store: StoreDep, settings: SettingsDep) -> Any:
    """Join features to an entity table as of each row's timestamp.

    The entity table is inline (``entity_rows``, at most ``server.max_inline_rows`` rows), a
    registered data source (``entity_source``) or a file (``entity_path``, under the server's
    read roots). The output is inline JSON (bounded the same way: a larger entity table is
    refused before the join) or a Parquet file in the write root whose path is returned.

    With ``feature_sets`` (the specification's shape): bare feature names resolved within the
    sets, the inline table as ``entity_df``, and the answer ``SpecHistoricalOut`` (each entity
    id's rows in request order).
    """
    start = time.perf_counter()
    if body.feature_sets is not None:  # the specification's shape
        from quiver.server._spec_serving import spec_historical

        return json_response(spec_historical(store, body, settings.max_inline_rows, start))
    if body.entity_df is not None:
        raise InvalidError("entity_df goes with feature_sets; otherwise give entity_rows")
    given = [
        n for n in ("entity_rows", "entity_source", "entity_path") if getattr(body, n) is not None
    ]
    if len(given) != 1:
        raise InvalidError(
            "give exactly one of entity_rows, entity_source and entity_path"
            + (f" (got {', '.join(given)})" if given else "")
        )
    if body.output == "json" and body.output_path is not None:
        raise InvalidError("output_path is only used with output='parquet'")
    limit = settings.max_inline_rows
    entity_df: Any
    if body.entity_rows is not None:
        entity_df = inline_table(
            body.entity_rows.columns, body.entity_rows.data, limit, body.timestamp_column
        )
    else:
        if body.entity_source is not None:
            entity_df = store.get_data_source(body.entity_source).name
        else:
            entity_df = readable_path(store, body.entity_path or "", "entity_path")
        _bound_entity_rows(store, entity_df, body.output == "json", settings)
    target = None
    if body.output == "parquet":  # checked before the join: refused writes cost nothing
        target = writable_path(store, body.output_path, "historical", overwrite=body.overwrite)
    job = store.get_historical_features(
        entity_df,
        features=body.features,
        feature_service=body.feature_service,
        full_feature_names=body.full_feature_names,
        timestamp_column=body.timestamp_column,
    )
    meta = OnlineMetadata(latency_ms=0.0, feature_service=body.feature_service)
    if target is not None:
        columns, rows = _write_parquet(store, job, target, overwrite=body.overwrite)
        meta.latency_ms = round((time.perf_counter() - start) * 1000, 3)
        return {"columns": columns, "row_count": rows, "output_path": target, "metadata": meta}
    table = job.to_arrow()
    if table.num_rows > limit:
        raise PayloadTooLargeError(
            f"the result has {table.num_rows} rows, more than the inline limit of {limit} "
            "(server.max_inline_rows); ask for output='parquet'",
            details={"rows": table.num_rows, "limit": limit},
        )
    meta.latency_ms = round((time.perf_counter() - start) * 1000, 3)
    content = {
        "columns": table.column_names,
        "data": table_rows(table),
        "row_count": table.num_rows,
        "output_path": None,
        "metadata": meta.model_dump(),
    }
    return json_response(content)


def _bound_entity_rows(store: Any, entity_df: str, inline: bool, settings: Any) -> None:
    """Refuse (413) an entity table named by source or path that is larger than the request
    may be, before the join reads it: counted from Parquet metadata, or by a scan that keeps
    no rows and stops past the limit."""
    from quiver.offline.retrieval import count_entity_rows

    setting = "max_inline_rows" if inline else "max_entity_rows"
    limit = getattr(settings, setting)
    hint = "ask for output='parquet'" if inline else "split the entity table"
    if count_entity_rows(store, entity_df, limit=limit) > limit:
        raise PayloadTooLargeError(
            f"the entity table has more than {limit} rows, the limit of this request "
            f"(server.{setting}); {hint}",
            details={"limit": limit, "setting": f"server.{setting}"},
        )


def _write_parquet(
    store: Any, job: Any, target: str, *, overwrite: bool = False
) -> tuple[list[str], int]:
    """Write a historical result to a local file or to S3; returns (columns, rows).

    The file appears only when complete (a local temporary file renamed, or an S3 object
    uploaded at the end), so a failure leaves any previous file in place.
    """
    from quiver.offline.sources import is_s3

    if not is_s3(target):
        summary = job.to_parquet(target, overwrite=overwrite)
        return list(summary.columns), int(summary.rows)

    import pyarrow as pa

    from quiver.errors import BackendError
    from quiver.ml.io import open_output

    out = open_output(store, target)
    try:
        for batch in job.to_batches():
            out.write(pa.Table.from_batches([batch]))
        out.commit(job.schema)
    except OSError as exc:
        out.abort()
        raise BackendError(f"cannot write output_path {target!r}: {exc}") from exc
    except BaseException:
        out.abort()
        raise
    return list(job.schema.names), out.rows
