"""``/api/v1/models``: train models and browse the model registry (versions, stages, lineage).

Training runs in a worker process with a time limit (:mod:`quiver.server._jobs`) and answers the
new version. A training spec is the same JSON as a spec file
(:class:`~quiver.ml.spec.TrainingSpec`); the model it asks for is bounded by
``server.max_estimators``, ``max_depth`` and ``max_leaves`` (:mod:`quiver.ml.bounds`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field, StrictBool
from starlette.concurrency import run_in_threadpool

from quiver.ml.spec import TrainingSpec
from quiver.server._convert import table_ref
from quiver.server._jobs import (
    ASYNC_DESCRIPTION,
    ASYNC_RESPONSES,
    job_pool,
    run_job,
    submit_job,
    wants_async,
)
from quiver.server.deps import SettingsDep, StoreDep
from quiver.server.schemas import (
    ERROR_RESPONSES,
    JOB_RESPONSES,
    IsoDateTime,
    MLIn,
    MLOut,
    StrictJSONRoute,
    VersionPath,
)

__all__ = [
    "ModelListOut",
    "ModelOut",
    "ModelVersionOut",
    "StageRequest",
    "TrainingRequest",
    "VersionListOut",
    "router",
]

router = APIRouter(
    prefix="/api/v1/models",
    tags=["models"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)


class ModelVersionOut(MLOut):
    """One trained model version."""

    model_id: str = Field(examples=["churn_model:3"])
    model_name: str
    version: int
    framework: str
    model_type: str
    algorithm: str | None = None
    stage: Literal["none", "staging", "production", "archived"]
    description: str = ""
    training_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    feature_importance: dict[str, float]
    training_duration_seconds: float
    created_at: datetime
    created_by: str | None = None
    stage_updated_at: datetime | None = None
    artifact_dir: str
    spec: dict[str, Any] | None = Field(default=None, description="the training spec")
    lineage: dict[str, Any] | None = Field(
        default=None,
        description="features with their feature view versions, label source, time range, row "
        "counts, label distribution, hyperparameters, library versions, metrics",
    )
    checksums: dict[str, str] | None = Field(default=None, description="sha256 per artifact file")


class ModelOut(MLOut):
    """A model and its versions."""

    name: str
    description: str = ""
    created_at: datetime
    updated_at: datetime
    latest_version: int | None = None
    production_version: int | None = None
    framework: str | None = None
    model_type: str | None = None
    versions: list[ModelVersionOut]


class ModelListOut(MLOut):
    """Every model of the project."""

    models: list[ModelOut]
    count: int


class VersionListOut(MLOut):
    """Every version of one model, oldest first."""

    model_name: str
    versions: list[ModelVersionOut]
    count: int


class StageRequest(MLIn):
    """Move a version to a stage; ``production`` archives the previous production version."""

    stage: Literal["none", "staging", "production", "archived"]


@router.get(
    "",
    response_model=ModelListOut,
    operation_id="list_models",
    summary="List models",
)
def list_models(
    store: StoreDep,
    feature_view: Annotated[
        str | None,
        Query(max_length=63, description="only models with a version trained on this view"),
    ] = None,
) -> dict[str, Any]:
    """Every model with a short entry per version (metrics, stage); ``feature_view`` keeps the
    models with a version trained on a feature of that view."""
    records = store.list_models()
    if feature_view is not None:
        from quiver.monitoring.lineage import model_versions_using

        records = [r for r in records if model_versions_using(r.versions, feature_view)]
    return {"models": [r.to_dict() for r in records], "count": len(records)}


class TrainingRequest(TrainingSpec):
    """A training spec, and whether to train in the background."""

    run_async: StrictBool = Field(default=False, alias="async", description=ASYNC_DESCRIPTION)


@router.post(
    "",
    response_model=ModelVersionOut,
    status_code=201,
    operation_id="train_model",
    summary="Train a model version",
    responses={**JOB_RESPONSES, **ASYNC_RESPONSES},
)
async def train_model(
    body: TrainingRequest, request: Request, store: StoreDep, settings: SettingsDep
) -> Any:
    """Train a model from a training spec and register the new version (stage ``none``).

    The training set is built with the point-in-time join; the answer carries the metrics on the
    train and test splits, feature importance and the lineage. A path as ``entity_df_source``
    must lie under the server's read roots. A model larger than the server's bounds is refused
    before any work (422); training runs in a worker process and is cancelled past
    ``server.job_timeout_seconds`` (a 422 ``job_timeout``). With ``"async": true`` (or
    ``Prefer: respond-async``) the answer is a 202 with a background job; its result is the
    model id.
    """

    def prepare() -> dict[str, Any]:
        return {"spec": training_payload(store, body, settings)}

    if wants_async(request, body.run_async):
        from quiver.jobs.pool import runner_work

        def background() -> Any:
            payload = prepare()
            return runner_work(job_pool(request.app), store, "train", payload)

        params = {"name": body.name, "framework": body.framework, "model_type": body.model_type}
        return await submit_job(request, store, "train", params, background)
    model_id = await run_job(request, store, "train", prepare)
    return await run_in_threadpool(lambda: store.get_model(model_id).to_dict())


def training_payload(store: Any, spec: TrainingSpec, settings: Any) -> dict[str, Any]:
    """A training spec checked for the REST API, as its job's payload (a dict).

    The model's size is checked against the server's bounds, and the labels reference through
    :func:`~quiver.server._convert.table_ref` (a path must be readable; it is replaced by its
    resolved path).

    Raises:
        InvalidError: a model above the bounds.
        ForbiddenError: a labels path the caller may not read.
    """
    from quiver.ml.bounds import ModelBounds, check_model_size

    check_model_size(spec, ModelBounds.of(settings))
    data = spec.training_data
    out = spec.to_dict()
    out.pop("run_async", None)  # the REST request's own field (TrainingRequest)
    out["training_data"]["entity_df_source"] = table_ref(
        store, data.entity_df_source, "entity_df_source"
    )
    return out


@router.get(
    "/{name}",
    response_model=ModelOut,
    operation_id="get_model",
    summary="One model with its versions",
)
def get_model(name: str, store: StoreDep) -> dict[str, Any]:
    """A model, its latest and production versions and every version's summary."""
    from quiver.ml.registry import ModelRegistry, parse_model_id

    model_name, _ = parse_model_id(name)
    return ModelRegistry(store.registry).get_model(model_name).to_dict()


@router.get(
    "/{name}/versions",
    response_model=VersionListOut,
    operation_id="list_model_versions",
    summary="List a model's versions",
)
def list_versions(name: str, store: StoreDep) -> dict[str, Any]:
    """Every version of a model, oldest first, with its spec and lineage."""
    from quiver.ml.service import model_versions

    versions = model_versions(store, name)
    return {
        "model_name": versions[0].name,
        "versions": [v.to_dict() for v in versions],
        "count": len(versions),
    }


@router.get(
    "/{name}/versions/{version}",
    response_model=ModelVersionOut,
    operation_id="get_model_version",
    summary="One model version",
)
def get_version(name: str, version: VersionPath, store: StoreDep) -> dict[str, Any]:
    """One version with its metrics, spec, lineage and artifact checksums."""
    return store.get_model(name, version=version).to_dict()


@router.post(
    "/{name}/versions/{version}/stage",
    response_model=ModelVersionOut,
    operation_id="set_model_stage",
    summary="Move a version to a stage",
)
def set_stage(
    name: str, version: VersionPath, body: StageRequest, store: StoreDep
) -> dict[str, Any]:
    """Promote (or demote) a version; one version per model is in production at a time."""
    return store.promote(name, version, body.stage).to_dict()


class FeatureDriftOut(MLOut):
    """The drift of one feature."""

    feature: str
    dtype: str
    status: Literal["ok", "drift", "no_data", "not_tested"]
    psi: float | None = Field(default=None, description="population stability index")
    test: Literal["ks", "chi2"] | None = None
    statistic: float | None = None
    p_value: float | None = None
    significant: bool = False
    drifted: bool = Field(default=False, description="the PSI is over the threshold")
    training_count: int = 0
    current_count: int = 0
    training_mean: float | None = None
    current_mean: float | None = None


class DriftOut(MLOut):
    """A model version's training features against the features materialized since."""

    model_id: str
    model_name: str
    version: int
    since: datetime
    psi_threshold: float
    p_value_threshold: float
    runs_compared: int
    drifted: list[str]
    most_drifted: str | None = None
    features: list[FeatureDriftOut]


@router.get(
    "/{name}/drift",
    response_model=DriftOut,
    operation_id="get_model_drift",
    summary="Feature drift of a model",
)
def get_drift(
    name: str,
    store: StoreDep,
    since: Annotated[
        IsoDateTime | None,
        Query(description="compare runs since this time (default: when the version was trained)"),
    ] = None,
) -> dict[str, Any]:
    """Per feature of the version (``name``: production, else latest; or ``name:version``): PSI
    and a two-sample test (KS or chi-square) of the training values against the values
    materialized since; flags the features whose PSI is over ``monitoring.drift_psi_threshold``
    and names the one that moved most."""
    from quiver.monitoring.service import drift
    from quiver.server._convert import as_utc

    return drift(store, name, since=as_utc(since) if since is not None else None).to_dict()
