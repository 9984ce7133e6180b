"""The ``/feast`` model and prediction routes of the Feast-based ML platform Quiver replaces.

Bodies and answers are the platform's documented ones (``tests/fixtures/feast_platform``), so
existing clients work unchanged:

- ``GET /feast/models`` (a bare array) / ``POST /feast/models`` (train: the body is a training
  spec). ``version`` is a string, ``f1`` is ``f1_score`` as the platform names it.
- ``POST /feast/predictions/batch``: ``input_table`` and ``output_table`` (+ ``output_schema``)
  are table names resolved by :mod:`quiver.server.compat._tables` (``name``, ``schema.name`` or
  ``catalog.schema.name``, defaults ``iceberg.gold``). The output is an Iceberg table, created
  with its namespace if missing (without pyiceberg ``<write root>/<schema>/<table>.parquet``).
- ``POST /feast/predictions/online``: ``prediction`` is what the platform's ``model.predict``
  gave: the predicted class for a classifier (``probabilities`` per class next to it), the value
  for a regressor.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field, RootModel, StringConstraints
from starlette.concurrency import run_in_threadpool

from quiver.errors import InvalidError
from quiver.server._jobs import run_job
from quiver.server.compat import _tables as tables
from quiver.server.deps import SettingsDep, StoreDep
from quiver.server.routers.predictions import run_online
from quiver.server.schemas import (
    ERROR_RESPONSES,
    JOB_RESPONSES,
    IsoDate,
    IsoDateTime,
    JsonScalar,
    MLIn,
    MLOut,
    StrictJSONRoute,
)

__all__ = ["router"]

router = APIRouter(
    prefix="/feast",
    tags=["feast-platform"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)


class PlatformTrainingData(MLIn):
    """The labelled entity rows."""

    entity_df_source: str = Field(
        max_length=1024,
        description="a data source, a table ('name', 'schema.name' or 'catalog.schema.name'; "
        "default catalog and schema: feast_compat) or a path, holding join keys, a timestamp "
        "and the label",
    )
    label_column: str = Field(max_length=63)
    event_timestamp_column: str = Field(default="event_timestamp", max_length=63)
    start_date: IsoDateTime | IsoDate | None = None
    end_date: IsoDateTime | IsoDate | None = None
    feature_service: str | None = Field(
        default=None, max_length=63, description="train on this feature service's features"
    )
    feature_views: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, max_length=200, description="or on every feature of these views"
    )


class PlatformHyperparameters(MLIn):
    """Estimator parameters."""

    params: dict[str, Any] = Field(default_factory=dict)


class PlatformModelIn(MLIn):
    """``POST /feast/models``: train a model."""

    name: str
    framework: Literal["sklearn", "xgboost", "lightgbm"]
    model_type: Literal["classification", "regression"]
    training_data: PlatformTrainingData
    hyperparameters: PlatformHyperparameters = Field(default_factory=PlatformHyperparameters)
    test_size: float = Field(default=0.2, gt=0.0, lt=1.0)
    description: str = ""
    algorithm: str | None = Field(default=None, description="scikit-learn only")
    features: list[str] | str | None = Field(
        default=None,
        description="a feature service or references (default: training_data.feature_service "
        "or feature_views, else the views whose source is the label table, else every view "
        "keyed on the label table's entities)",
    )
    split: Literal["time", "random"] = "time"


class PlatformModelOut(MLOut):
    """A trained model version, as the platform answers it."""

    model_id: str
    model_name: str
    version: str
    framework: str
    model_type: str
    training_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    feature_importance: dict[str, float]
    created_at: datetime
    training_duration_seconds: float
    status: Literal["completed"] = "completed"


class PlatformModelItem(PlatformModelOut):
    """A model version in ``GET /feast/models`` (``name`` for ``jq 'select(.name==...)'``)."""

    name: str
    stage: str | None = None


class PlatformModelList(RootModel[list[PlatformModelItem]]):
    """Every model version (a bare array)."""


class PlatformBatchIn(MLIn):
    """``POST /feast/predictions/batch``."""

    model_id: str = Field(max_length=200, examples=["churn_model:1"])
    input_table: str = Field(max_length=1024)
    entity_columns: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, max_length=64
    )
    feature_service: str | None = Field(
        default=None, max_length=63, description="accepted; the model's own features are used"
    )
    feature_views: list[Annotated[str, StringConstraints(max_length=63)]] | None = Field(
        default=None, max_length=200
    )
    output_table: str = Field(max_length=1024)
    output_schema: str | None = Field(
        default=None, max_length=63, description="default: feast_compat.default_schema ('gold')"
    )
    prediction_column_name: str = Field(default="prediction", max_length=63)
    event_timestamp_column: str = Field(default="event_timestamp", max_length=63)
    overwrite: bool = Field(
        default=False,
        description="replace a Parquet output that exists (otherwise a 409); Iceberg tables "
        "are appended to",
    )


class PlatformBatchOut(MLOut):
    """The finished batch prediction."""

    prediction_id: str
    model_id: str
    model_version: str
    mode: Literal["batch"] = "batch"
    input_table: str = Field(description="catalog.schema.table, a data source or a path")
    output_table: str = Field(description="catalog.schema.table, or the Parquet path")
    num_predictions: int
    created_at: datetime
    execution_time_seconds: float
    status: str


class PlatformOnlineIn(MLIn):
    """``POST /feast/predictions/online``: feature values (or entity keys) for one model."""

    model_id: str = Field(max_length=200)
    features: dict[str, JsonScalar] | None = None
    entities: dict[str, list[JsonScalar]] | None = Field(
        default=None, description="instead of features: join keys, read from the online store"
    )
    include_feature_values: bool = Field(
        default=False, description="answer the values used in features_used"
    )
    use_defaults: bool = False


class PlatformOnlineOut(MLOut):
    """One prediction, as the platform answers it."""

    prediction_id: str
    model_id: str
    model_version: str
    mode: Literal["online"] = "online"
    prediction: JsonScalar = Field(description="the class (classifier) or the value (regressor)")
    probabilities: dict[str, float] | None = None
    features_used: dict[str, Any] | None = Field(
        default=None, description="with include_feature_values: the values the model saw"
    )
    used_defaults: list[str] | None = Field(
        default=None, description="with use_defaults: the features filled with their default"
    )
    predictions: list[dict[str, Any]] | None = Field(
        default=None, description="one entry per row when several entity keys were given"
    )
    created_at: datetime
    execution_time_seconds: float
    status: Literal["completed"] = "completed"


def _metrics(values: dict[str, Any]) -> dict[str, Any]:
    """The platform's metric names (``f1_score``)."""
    return {("f1_score" if k == "f1" else k): v for k, v in values.items()}


def _platform_model(version: Any) -> dict[str, Any]:
    return {
        "model_id": version.model_id,
        "model_name": version.name,
        "version": str(version.version),
        "framework": version.framework,
        "model_type": version.model_type,
        "training_metrics": _metrics(version.training_metrics),
        "test_metrics": _metrics(version.test_metrics),
        "feature_importance": version.feature_importance,
        "created_at": version.created_at,
        "training_duration_seconds": version.training_duration_seconds,
        "status": "completed",
    }


@router.get(
    "/models",
    response_model=PlatformModelList,
    operation_id="platform_list_models",
    summary="List models",
)
def list_models(store: StoreDep) -> list[dict[str, Any]]:
    """Every model version with its metrics (a bare array), in the platform's shape."""
    return [
        {**_platform_model(v), "name": v.name, "stage": v.stage}
        for record in store.list_models()
        for v in record.versions
    ]


@router.post(
    "/models",
    response_model=PlatformModelOut,
    status_code=201,
    operation_id="platform_train_model",
    summary="Train a model",
    responses=JOB_RESPONSES,
)
async def train_model(
    body: PlatformModelIn, request: Request, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    """Train a model on point-in-time correct features and register it as a new version.

    Bounded as ``POST /api/v1/models`` is: a model larger than the server's bounds is refused
    (422), and the job runs in a worker process within ``server.job_timeout_seconds``.
    """

    def prepare() -> dict[str, Any]:
        from quiver.ml.spec import TrainingSpec
        from quiver.server.routers.models import training_payload

        spec = body.model_dump(exclude_none=True)
        data = spec["training_data"]
        service = data.pop("feature_service", None)
        views = data.pop("feature_views", None)
        if "features" not in spec and (service or views):
            if service and views:
                raise InvalidError("training_data: give feature_service or feature_views, not both")
            spec["features"] = service or [f"{v}:*" for v in views]
        data["entity_df_source"], _ = tables.input_ref(
            store, body.training_data.entity_df_source, "entity_df_source"
        )
        if "features" not in spec:
            # the platform trains on the views over the label table when there are such
            over = tables.views_over(store, data["entity_df_source"])
            if over:
                spec["features"] = [f"{v}:*" for v in over]
        for key in ("start_date", "end_date"):
            value = data.get(key)
            if isinstance(value, date) and not isinstance(value, datetime):
                data[key] = datetime(value.year, value.month, value.day, tzinfo=UTC)
        return {"spec": training_payload(store, TrainingSpec.parse(spec), settings)}

    model_id = await run_job(request, store, "train", prepare)
    return await run_in_threadpool(lambda: _platform_model(store.get_model(model_id)))


@router.post(
    "/predictions/batch",
    response_model=PlatformBatchOut,
    operation_id="platform_predict_batch",
    summary="Batch predictions",
    responses=JOB_RESPONSES,
)
async def predict_batch(body: PlatformBatchIn, request: Request, store: StoreDep) -> dict[str, Any]:
    """Score the input table with features as of each row's timestamp; write the output table.

    The output table is created (with its namespace) in the schema the request names. The job
    runs in a worker process within ``server.job_timeout_seconds``.
    """
    shown_in = shown_out = ""

    def prepare() -> dict[str, Any]:
        nonlocal shown_in, shown_out
        source, shown_in = tables.input_ref(store, body.input_table, "input_table")
        target, shown_out = tables.output_ref(
            store, body.output_table, body.output_schema, overwrite=body.overwrite
        )
        store.get_model(body.model_id)  # 404 before the job
        options = {
            "entity_columns": body.entity_columns,
            "feature_views": body.feature_views,
            "prediction_column": body.prediction_column_name,
            "timestamp_column": body.event_timestamp_column,
            "overwrite": body.overwrite,
        }
        return {"model": body.model_id, "input": source, "output": target, "options": options}

    prediction_id = await run_job(request, store, "predict_batch", prepare)
    job = await run_in_threadpool(lambda: _prediction_job(store, prediction_id))
    return {
        "prediction_id": job.prediction_id,
        "model_id": job.model_id,
        "model_version": str(job.model_version),
        "mode": "batch",
        "input_table": shown_in,
        "output_table": shown_out,
        "num_predictions": job.rows,
        "created_at": job.created_at,
        "execution_time_seconds": round(job.duration_seconds, 6),
        "status": job.status,
    }


def _prediction_job(store: Any, prediction_id: str) -> Any:
    from quiver.ml.service import get_prediction_job

    return get_prediction_job(store, prediction_id)


@router.post(
    "/predictions/online",
    response_model=PlatformOnlineOut,
    response_model_exclude_none=True,
    operation_id="platform_predict_online",
    summary="Online prediction",
)
def predict_online(
    body: PlatformOnlineIn, store: StoreDep, settings: SettingsDep
) -> dict[str, Any]:
    """Score one row of feature values (or entity keys read from the online store)."""
    start = time.perf_counter()
    if (body.features is None) == (body.entities is None):
        raise InvalidError("give either features (values) or entities (keys), not both or neither")
    answer = run_online(
        store,
        body.model_id,
        limit=settings.max_inline_rows,
        entities=body.entities,
        features=body.features,
        use_defaults=body.use_defaults,
    )
    rows = answer["predictions"]
    first = rows[0]
    out: dict[str, Any] = {
        "prediction_id": f"pred_{uuid.uuid4().hex[:12]}",
        "model_id": answer["model_id"],
        "model_version": str(answer["model_version"]),
        "mode": "online",
        "prediction": (
            first["prediction"]
            if first.get("prediction_class") is None
            else first["prediction_class"]
        ),
        "probabilities": first.get("probabilities"),
        "created_at": datetime.now(UTC),
        "status": "completed",
    }
    if body.include_feature_values:
        out["features_used"] = first.get("features", body.features)
    if body.use_defaults:
        out["used_defaults"] = first.get("used_defaults", [])
    if len(rows) > 1:
        out["predictions"] = rows
    out["execution_time_seconds"] = round(time.perf_counter() - start, 6)
    return out
