"""``/api/v1/predictions``: batch and online predictions, and the record of batch jobs.

A batch job runs in a worker process with a time limit (:mod:`quiver.server._jobs`) and streams
its input in chunks; the answer is the finished job record. Inputs are a registered data source,
a Parquet/CSV file under the server's read roots (or an allowed ``s3://`` location), an Iceberg
table, or a small inline table; outputs are a Parquet file in the write root (or ``s3://``) or an
Iceberg table that is no data source's.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from quiver.errors import InvalidError
from quiver.ml.registry import MAX_VERSION
from quiver.monitoring.usage import record_model
from quiver.server._convert import (
    check_columns,
    iceberg_ref,
    inline_table,
    readable_path,
    writable_path,
    writable_table,
)
from quiver.server._jobs import (
    ASYNC_DESCRIPTION,
    ASYNC_RESPONSES,
    job_pool,
    run_job,
    submit_job,
    wants_async,
)
from quiver.server.access import require, visible
from quiver.server.deps import SettingsDep, StoreDep
from quiver.server.schemas import (
    ERROR_RESPONSES,
    JOB_RESPONSES,
    MAX_CHUNK_ROWS,
    InlineTable,
    JsonScalar,
    MLIn,
    MLOut,
    StrictJSONRoute,
)

__all__ = [
    "BatchPredictionRequest",
    "OnlinePredictionOut",
    "OnlinePredictionRequest",
    "PredictionJobOut",
    "router",
    "run_online",
]

router = APIRouter(
    prefix="/api/v1/predictions",
    tags=["predictions"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)


class _ModelChoice(MLIn):
    model: str = Field(
        description="a model id 'name:version', or a model name (then version or stage; "
        "default: the production version, else the latest)",
        examples=["churn_model:3"],
    )
    version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    stage: str | None = Field(default=None, examples=["production"])


class BatchPredictionRequest(_ModelChoice):
    """Score a table of entity rows; give exactly one input and at most one output."""

    input_source: str | None = Field(default=None, description="a registered data source")
    input_path: str | None = Field(
        default=None,
        description="a Parquet/CSV file, folder or glob under the server's read roots (relative "
        "to the repository root), or an allowed s3:// location",
    )
    input_table: str | None = Field(
        default=None, description="an Iceberg table 'namespace.table' or 'catalog/namespace.table'"
    )
    entity_rows: InlineTable | None = Field(
        default=None, description="a small inline table (at most server.max_inline_rows rows)"
    )
    output_path: str | None = Field(
        default=None,
        description="a Parquet file under the server's write root (relative to the repository "
        "root, e.g. outputs/scores.parquet) or an allowed s3:// location (default: "
        "<write root>/predictions-<time>-<id>.parquet)",
    )
    overwrite: bool = Field(
        default=False, description="replace output_path if it exists (otherwise a 409)"
    )
    output_table: str | None = Field(
        default=None, description="an Iceberg table to append to (not a data source's table)"
    )
    entity_columns: list[str] | None = Field(
        default=None, description="input columns copied to the output (default: the join keys)"
    )
    timestamp_column: str = "event_timestamp"
    prediction_column: str = "prediction"
    feature_views: list[str] | None = Field(
        default=None, description="optional check: the feature views the model must use"
    )
    chunk_rows: int | None = Field(
        default=None, ge=1, le=MAX_CHUNK_ROWS, description="rows per chunk"
    )
    run_async: bool = Field(default=False, alias="async", description=ASYNC_DESCRIPTION)
    missing: Literal["flag", "refuse", "defaults"] = Field(
        default="flag",
        description="rows whose features are missing (no row in the TTL window): flag (score "
        "them, features_missing=true), refuse (the job fails) or defaults (the features' "
        "default values)",
    )


class PredictionJobOut(MLOut):
    """A prediction job record."""

    prediction_id: str
    model_id: str
    model_name: str
    model_version: int
    mode: str
    input: str | None = None
    output: str | None = None
    rows: int
    duration_seconds: float
    status: str = Field(
        description="queued, running, completed, failed or cancelled (a background job's "
        "record is listed from the moment it is accepted)"
    )
    error: str | None = None
    created_at: datetime
    created_by: str | None = None
    rows_missing_features: int = Field(
        default=0, description="rows whose features were missing (flagged, defaulted or refused)"
    )


class JobListOut(MLOut):
    """Prediction jobs, newest first."""

    jobs: list[PredictionJobOut]
    count: int


class OnlinePredictionRequest(_ModelChoice):
    """Entity keys (features from the online store) or feature values; give one of them."""

    entities: dict[str, list[JsonScalar]] | None = Field(
        default=None, description="join keys, columnar", examples=[{"customer_id": [1, 2]}]
    )
    features: dict[str, JsonScalar] | list[dict[str, JsonScalar]] | None = Field(
        default=None,
        description="feature values: one object, or one per row",
        examples=[{"tenure_months": 12, "contract_type": "one_year"}],
    )
    use_defaults: bool = Field(
        default=False,
        description="fill missing or expired features with the training-time defaults",
    )


class OnlinePrediction(MLOut):
    """The prediction for one row."""

    prediction: float = Field(
        description="binary classifier: the positive-class probability; multiclass: the top "
        "class's probability; regressor: the value"
    )
    prediction_class: JsonScalar = None
    probabilities: dict[str, float] | None = None
    entity: dict[str, Any] | None = None
    used_defaults: list[str] = Field(default_factory=list)


class PredictionMetadata(MLOut):
    """About the call."""

    latency_ms: float


class OnlinePredictionOut(MLOut):
    """Predictions in request order."""

    model_id: str
    model_name: str
    model_version: int
    model_type: str
    predictions: list[OnlinePrediction]
    metadata: PredictionMetadata


def run_online(
    store: Any,
    model: str,
    *,
    limit: int,
    version: int | None = None,
    stage: str | None = None,
    entities: dict[str, list[Any]] | None = None,
    features: Any = None,
    use_defaults: bool = False,
) -> dict[str, Any]:
    """``store.predict_online`` for a REST body (columnar keys, bounded row count)."""
    rows = None
    if entities is not None:
        n = check_columns(entities, limit)
        rows = [{k: v[i] for k, v in entities.items()} for i in range(n)]
    elif isinstance(features, list):
        check_columns({"features": features}, limit, "features")
    answer = store.predict_online(
        model,
        version=version,
        stage=stage,
        entity_rows=rows,
        features=features,
        use_defaults=use_defaults,
    )
    record_model(store, model, len(answer.get("predictions") or ()))
    return answer


@router.post(
    "/online",
    response_model=OnlinePredictionOut,
    operation_id="predict_online",
    summary="Online predictions",
)
def online(body: OnlinePredictionRequest, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """Score entity keys (their features read from the online store) or given feature values.

    Missing or expired features are a 422 listing them, unless ``use_defaults`` is set.
    """
    start = time.perf_counter()
    answer = run_online(
        store,
        body.model,
        limit=settings.max_inline_rows,
        version=body.version,
        stage=body.stage,
        entities=body.entities,
        features=body.features,
        use_defaults=body.use_defaults,
    )
    answer["metadata"] = {"latency_ms": round((time.perf_counter() - start) * 1000, 3)}
    return answer


@router.post(
    "/batch",
    response_model=PredictionJobOut,
    operation_id="predict_batch",
    summary="Batch predictions",
    responses={**JOB_RESPONSES, **ASYNC_RESPONSES},
)
async def batch(
    body: BatchPredictionRequest, request: Request, store: StoreDep, settings: SettingsDep
) -> Any:
    """Score every input row with features as of its timestamp and write the predictions.

    The job runs in a worker process, within ``server.job_timeout_seconds`` (past it the job is
    cancelled: a 422 ``job_timeout``). The answer is the finished job; failures (and cancelled
    jobs) are also recorded in the job list. With ``"async": true`` (or ``Prefer:
    respond-async``) the answer is a 202 with a background job, whose id is also the
    prediction job's id.
    """

    def prepare() -> dict[str, Any]:
        return _batch_job(body, store, settings)

    if wants_async(request, body.run_async):
        import uuid

        from quiver.jobs.kinds import queue_predict_batch, settle_predict_batch
        from quiver.jobs.pool import runner_work
        from quiver.security.principal import current_principal

        job_id = uuid.uuid4().hex  # also the prediction job's id, listed from the start
        pool = job_pool(request.app)
        author = getattr(current_principal(), "name", None)

        def background() -> Any:
            payload = prepare()
            queue_predict_batch(pool.store, payload, job_id, author)
            return runner_work(pool, store, "predict_batch", payload)

        def settle(record: Any) -> None:
            settle_predict_batch(pool.store, job_id, record)

        params = {"model": body.model, "version": body.version, "stage": body.stage}
        return await submit_job(
            request, store, "predict_batch", params, background, job_id=job_id, on_done=settle
        )
    prediction_id = await run_job(request, store, "predict_batch", prepare)
    return await run_in_threadpool(lambda: _job_record(store, prediction_id))


def _job_record(store: Any, prediction_id: str) -> dict[str, Any]:
    from quiver.ml.service import get_prediction_job

    return get_prediction_job(store, prediction_id).to_dict()


def _batch_job(body: BatchPredictionRequest, store: Any, settings: Any) -> dict[str, Any]:
    """Check a batch request (inputs, outputs, the model) and build its job's payload."""
    given = [
        n
        for n in ("input_source", "input_path", "input_table", "entity_rows")
        if getattr(body, n) is not None
    ]
    if len(given) != 1:
        raise InvalidError(
            "give exactly one of input_source, input_path, input_table and entity_rows"
            + (f" (got {', '.join(given)})" if given else "")
        )
    source: Any
    if body.entity_rows is not None:
        source = inline_table(
            body.entity_rows.columns,
            body.entity_rows.data,
            settings.max_inline_rows,
            body.timestamp_column,
        )
    elif body.input_source is not None:
        source = store.get_data_source(body.input_source).name
    elif body.input_path is not None:
        source = readable_path(store, body.input_path, "input_path")
    else:
        source = iceberg_ref(body.input_table or "", "input_table")
    if body.output_path is not None and body.output_table is not None:
        raise InvalidError("give output_path or output_table, not both")
    target = (
        writable_table(store, body.output_table, "output_table")
        if body.output_table is not None
        else writable_path(store, body.output_path, "predictions", overwrite=body.overwrite)
    )
    store.get_model(body.model, version=body.version, stage=body.stage)  # 404 before the job
    options = {
        "version": body.version,
        "stage": body.stage,
        "entity_columns": body.entity_columns,
        "timestamp_column": body.timestamp_column,
        "prediction_column": body.prediction_column,
        "feature_views": body.feature_views,
        "chunk_rows": body.chunk_rows,
        "overwrite": body.overwrite,
        "missing": body.missing,
    }
    return {"model": body.model, "input": source, "output": target, "options": options}


@router.get(
    "/jobs",
    response_model=JobListOut,
    operation_id="list_prediction_jobs",
    summary="List prediction jobs",
)
def list_jobs(
    store: StoreDep,
    model: Annotated[str | None, Query(description="a model name or id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Recent prediction jobs, newest first."""
    from quiver.ml.service import list_prediction_jobs

    jobs = visible(store, "model", list_prediction_jobs(store, model, limit=limit), _model_of)
    return {"jobs": [j.to_dict() for j in jobs], "count": len(jobs)}


@router.get(
    "/jobs/{prediction_id}",
    response_model=PredictionJobOut,
    operation_id="get_prediction_job",
    summary="One prediction job",
)
def get_job(prediction_id: str, store: StoreDep) -> dict[str, Any]:
    """One prediction job record (model version, input, output, rows, duration, status)."""
    from quiver.ml.service import get_prediction_job

    job = get_prediction_job(store, prediction_id)
    require(store, "describe", "model", job.model_name)
    return job.to_dict()


def _model_of(job: Any) -> str:
    return str(job.model_name)
