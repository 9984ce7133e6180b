"""``/api/v1/models``: train models and browse the model registry (versions, stages, lineage).

Training runs inside the request (in the threadpool) and answers the new version; a training
spec is the same JSON as a spec file (:class:`~quiver.ml.spec.TrainingSpec`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field

from quiver.ml.spec import TrainingSpec
from quiver.server._convert import check_path_text, looks_like_path, repo_input_path
from quiver.server.deps import StoreDep
from quiver.server.schemas import ERROR_RESPONSES, MLIn, MLOut, StrictJSONRoute, VersionPath

__all__ = [
    "ModelListOut",
    "ModelOut",
    "ModelVersionOut",
    "StageRequest",
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
def list_models(store: StoreDep) -> dict[str, Any]:
    """Every model with a short entry per version (metrics, stage)."""
    records = store.list_models()
    return {"models": [r.to_dict() for r in records], "count": len(records)}


@router.post(
    "",
    response_model=ModelVersionOut,
    status_code=201,
    operation_id="train_model",
    summary="Train a model version",
)
def train_model(body: TrainingSpec, store: StoreDep) -> dict[str, Any]:
    """Train a model from a training spec and register the new version (stage ``none``).

    The training set is built with the point-in-time join; the answer carries the metrics on the
    train and test splits, feature importance and the lineage. A local ``entity_df_source``
    path must lie inside the repository.
    """
    _check_training_input(store, body.training_data.entity_df_source)
    return store.train(body).to_dict()


def _check_training_input(store: Any, source: str, what: str = "entity_df_source") -> None:
    """Refuse a labels reference the API must not read: a local path outside the repository.

    Data source names and Iceberg tables pass (the core resolves them); a path (file, directory
    or glob) must be inside the repo, like every file the API reads.

    Raises:
        InvalidError: a path outside the repository, or one no file system accepts.
        NotFoundError: a local file or directory that does not exist.
    """
    value = source.strip()
    check_path_text(value, what)
    if not value.lower().startswith("iceberg:") and looks_like_path(value):
        repo_input_path(store, value, what)


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
