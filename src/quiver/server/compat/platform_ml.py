"""The ``/feast`` model and prediction routes of the Feast-based ML platform Quiver replaces.

Bodies and answers keep the platform's shape so existing clients work unchanged:

- ``GET/POST /feast/models``: list model versions / train one (the body is a training spec).
- ``POST /feast/predictions/batch``: ``input_table`` and ``output_table`` + ``output_schema``
  name tables as the platform did: an Iceberg table ``<schema>.<table>`` of the ``default``
  catalog, else a Parquet dataset under ``<data_dir>/<schema>/<table>``; a registered data source
  name or a path inside the repo work too. Outputs go to Iceberg (``<output_schema or
  'predictions'>.<output_table>``) when pyiceberg is installed, else to
  ``<data_dir>/<schema>/<table>.parquet``.
- ``POST /feast/predictions/online``: ``prediction`` is what the platform's ``model.predict``
  gave: the predicted class for a classifier (``probabilities`` per class and the
  ``prediction_score`` of the native API next to it), the value for a regressor.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from quiver.errors import InvalidError, NotFoundError
from quiver.server._convert import (
    check_path_text,
    iceberg_ref,
    looks_like_path,
    readable_path,
    writable_path,
    writable_table,
)
from quiver.server._jobs import run_job
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

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class PlatformTrainingData(MLIn):
    """The labelled entity rows."""

    entity_df_source: str = Field(
        description="a data source, a table '<schema>.<table>' or a path holding join keys, "
        "a timestamp and the label"
    )
    label_column: str
    event_timestamp_column: str = "event_timestamp"
    start_date: IsoDateTime | IsoDate | None = None
    end_date: IsoDateTime | IsoDate | None = None


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
        description="a feature service or references (default: every view keyed "
        "on the label table's entities)",
    )
    split: Literal["time", "random"] = "time"


class PlatformModelOut(MLOut):
    """A trained model version, as the platform answers it."""

    model_id: str
    model_name: str
    version: int
    framework: str
    model_type: str
    training_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    feature_importance: dict[str, float]
    created_at: datetime
    training_duration_seconds: float
    status: Literal["completed"] = "completed"
    stage: str | None = None


class PlatformModelList(MLOut):
    """Every model version."""

    models: list[PlatformModelOut]
    count: int


class PlatformBatchIn(MLIn):
    """``POST /feast/predictions/batch``."""

    model_id: str = Field(examples=["churn_model:1"])
    input_table: str
    entity_columns: list[str] | None = None
    feature_views: list[str] | None = None
    output_table: str
    output_schema: str | None = None
    prediction_column_name: str = "prediction"
    event_timestamp_column: str = "event_timestamp"
    overwrite: bool = Field(
        default=False,
        description="replace a Parquet output that exists (otherwise a 409); Iceberg tables "
        "are appended to",
    )


class PlatformBatchOut(MLOut):
    """The finished batch prediction."""

    prediction_id: str
    model_id: str
    model_version: int
    mode: Literal["batch"] = "batch"
    input_table: str
    output_table: str
    num_predictions: int
    created_at: datetime
    execution_time_seconds: float
    status: str


class PlatformOnlineIn(MLIn):
    """``POST /feast/predictions/online``: feature values (or entity keys) for one model."""

    model_id: str
    features: dict[str, JsonScalar] | None = None
    entities: dict[str, list[JsonScalar]] | None = Field(
        default=None, description="instead of features: join keys, read from the online store"
    )
    use_defaults: bool = False


class PlatformOnlineOut(MLOut):
    """One prediction."""

    model_id: str
    model_version: int
    prediction: JsonScalar = Field(description="the class (classifier) or the value (regressor)")
    probabilities: dict[str, float] | None = None
    prediction_score: float = Field(
        description="the positive-class probability (binary), the top class's probability "
        "(multiclass) or the value (regressor)"
    )
    used_defaults: list[str] = Field(default_factory=list)
    predictions: list[dict[str, Any]] | None = Field(
        default=None, description="one entry per row when several entity keys were given"
    )
    created_at: datetime
    execution_time_ms: float


def _platform_model(version: Any) -> dict[str, Any]:
    return {
        "model_id": version.model_id,
        "model_name": version.name,
        "version": version.version,
        "framework": version.framework,
        "model_type": version.model_type,
        "training_metrics": version.training_metrics,
        "test_metrics": version.test_metrics,
        "feature_importance": version.feature_importance,
        "created_at": version.created_at,
        "training_duration_seconds": version.training_duration_seconds,
        "status": "completed",
        "stage": version.stage,
    }


def _input_ref(store: Any, text: str, what: str) -> str:
    """A platform table name as an input reference for the ML services."""
    value = text.strip()
    if not value:
        raise InvalidError(f"{what} is empty")
    check_path_text(value, what)
    if _NAME.match(value) and store.registry.find("data_source", value) is not None:
        return value
    if value.startswith("iceberg:"):
        return iceberg_ref(value, what)
    if looks_like_path(value):
        return readable_path(store, value, what)
    tried: list[str] = []
    if _DOTTED.match(value):
        if _iceberg_exists(store, value, tried):
            return f"iceberg:{value}"
        rel = value.replace(".", "/")
    else:
        rel = value
        tried.append(f"no data source '{value}'")
    data = store.config.data_path
    for candidate in (data / rel, data / f"{rel}.parquet"):
        try:
            found = candidate.exists()
        except OSError:  # e.g. a name one byte too long once '.parquet' is added
            found = False
        if found:
            return readable_path(store, str(candidate), what)
        tried.append(f"no Parquet dataset at {candidate}")
    shown = value if len(value) <= 80 else value[:77] + "..."
    raise NotFoundError(
        f"{what} '{shown}' not found: " + "; ".join(tried), details={"tried": tried}
    )


def _iceberg_exists(store: Any, identifier: str, tried: list[str]) -> bool:
    if not all(_NAME.match(part) and len(part) <= 63 for part in identifier.split(".")):
        tried.append(f"'{identifier}' is not an Iceberg table name (identifiers of 1-63 chars)")
        return False
    try:
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        from quiver.offline.sources import iceberg_catalog

        catalog = iceberg_catalog(store.config)
    except Exception as exc:  # no pyiceberg, or no usable default catalog
        tried.append(f"Iceberg is not available ({exc})")
        return False
    try:
        catalog.load_table(identifier)
        return True
    except (NoSuchTableError, NoSuchNamespaceError):
        tried.append(f"no Iceberg table '{identifier}' in catalog 'default'")
        return False


def _output_ref(
    store: Any, table: str, schema: str | None, *, overwrite: bool = False
) -> tuple[str, str]:
    """(reference for predict_batch, the name echoed back as ``output_table``).

    A path is a Parquet file in the server's write root; a table name is an Iceberg table (not a
    data source's), or without pyiceberg ``<write root>/<schema>/<table>.parquet``.
    """
    value = table.strip()
    if "/" in value or value.lower().endswith(".parquet"):
        path = writable_path(store, value, "predictions", "output_table", overwrite=overwrite)
        return path, path
    identifier = value if _DOTTED.match(value) else f"{schema or 'predictions'}.{value}"
    reference = writable_table(store, identifier, "output table")
    try:
        import pyiceberg  # noqa: F401
    except ImportError:
        from quiver.security.paths import FileBoundary

        rel = FileBoundary.of(store).write_root / (identifier.replace(".", "/") + ".parquet")
        path = writable_path(store, str(rel), "predictions", "output_table", overwrite=overwrite)
        return path, path
    return reference, identifier


@router.get(
    "/models",
    response_model=PlatformModelList,
    operation_id="platform_list_models",
    summary="List models",
)
def list_models(store: StoreDep) -> dict[str, Any]:
    """Every model version with its metrics, in the platform's shape."""
    items = [_platform_model(v) for record in store.list_models() for v in record.versions]
    return {"models": items, "count": len(items)}


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
        data["entity_df_source"] = _input_ref(
            store, body.training_data.entity_df_source, "entity_df_source"
        )
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

    The job runs in a worker process within ``server.job_timeout_seconds``.
    """
    shown = ""

    def prepare() -> dict[str, Any]:
        nonlocal shown
        source = _input_ref(store, body.input_table, "input_table")
        target, shown = _output_ref(
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
        "model_version": job.model_version,
        "mode": "batch",
        "input_table": body.input_table,
        "output_table": shown,
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
        "model_id": answer["model_id"],
        "model_version": answer["model_version"],
        "prediction": first.get("prediction_class", first["prediction"]),
        "probabilities": first.get("probabilities"),
        "prediction_score": first["prediction"],
        "used_defaults": first.get("used_defaults", []),
        "created_at": datetime.now(UTC),
        "execution_time_ms": round((time.perf_counter() - start) * 1000, 3),
    }
    if len(rows) > 1:
        out["predictions"] = rows
    return out
