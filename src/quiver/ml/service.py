"""The model services the :class:`~quiver.store.FeatureStore` facade delegates to.

The CLI, the SDK and the REST API all come through these functions; they resolve a model (by id
``name:version``, or by name with a version or a stage) and call the training, registry and
prediction modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError

if TYPE_CHECKING:
    from quiver.ml.registry import ModelRecord, ModelVersion, PredictionJob
    from quiver.store import FeatureStore

__all__ = [
    "get_model",
    "get_prediction_job",
    "list_models",
    "list_prediction_jobs",
    "model_versions",
    "predict_batch",
    "predict_online",
    "promote",
    "train",
]


def _models(store: FeatureStore) -> Any:
    from quiver.ml.registry import ModelRegistry

    return ModelRegistry(store.registry)


def train(
    store: FeatureStore, spec: Any, *, progress: Callable[[str], None] | None = None
) -> ModelVersion:
    """Train and register a model version (see :func:`quiver.ml.training.train`)."""
    from quiver.ml.training import train as _train

    return _train(store, spec, progress=progress)


def list_models(store: FeatureStore) -> list[ModelRecord]:
    """Every model of the project with its versions."""
    return _models(store).list_models()


def model_versions(store: FeatureStore, name: str) -> list[ModelVersion]:
    """Every version of one model, oldest first."""
    from quiver.ml.registry import parse_model_id

    model_name, _ = parse_model_id(name)
    return _models(store).versions(model_name)


def get_model(
    store: FeatureStore, model: str, *, version: int | None = None, stage: str | None = None
) -> ModelVersion:
    """One model version: by id ``name:version``, or a name with a version or a stage.

    With a bare name and neither: the production version, else the latest.
    """
    return _models(store).get_version(model, version=version, stage=stage)


def promote(store: FeatureStore, model: str, version: int | None, stage: str) -> ModelVersion:
    """Move a version to a stage; promoting to production archives the previous production one."""
    from quiver.ml.registry import parse_model_id

    name, id_version = parse_model_id(model)
    if id_version is not None and version is not None and id_version != version:
        raise InvalidError(
            f"model id '{model}' names version {id_version} but version {version} was also given"
        )
    chosen = version if version is not None else id_version
    if chosen is None:
        raise InvalidError(f"say which version of model '{name}' to move to stage '{stage}'")
    return _models(store).set_stage(name, int(chosen), stage)


def predict_batch(
    store: FeatureStore,
    model: str,
    input: Any,
    output: str | Path,
    *,
    version: int | None = None,
    stage: str | None = None,
    entity_columns: Sequence[str] | None = None,
    timestamp_column: str = "event_timestamp",
    prediction_column: str = "prediction",
    feature_views: Sequence[str] | None = None,
    chunk_rows: int | None = None,
    progress: Callable[[int], None] | None = None,
    overwrite: bool = True,
    missing: str = "flag",
) -> PredictionJob:
    """Score a table of entity rows point-in-time correctly and write the predictions.

    See :func:`quiver.ml.predict.predict_batch` for the arguments.
    """
    from quiver.ml import predict
    from quiver.registry import current_user

    chosen = get_model(store, model, version=version, stage=stage)
    return predict.predict_batch(
        store,
        chosen,
        input,
        output,
        entity_columns=entity_columns,
        timestamp_column=timestamp_column,
        prediction_column=prediction_column,
        feature_views=feature_views,
        chunk_rows=chunk_rows or predict.DEFAULT_CHUNK_ROWS,
        progress=progress,
        author=current_user(),
        overwrite=overwrite,
        missing=missing,
    )


def predict_online(
    store: FeatureStore,
    model: str,
    *,
    version: int | None = None,
    stage: str | None = None,
    entity_rows: Sequence[Mapping[str, Any]] | None = None,
    features: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    use_defaults: bool = False,
) -> dict[str, Any]:
    """Score entity keys (features from the online store) or given feature values.

    See :func:`quiver.ml.predict.predict_online` for the arguments and the answer.
    """
    from quiver.ml import predict

    chosen = get_model(store, model, version=version, stage=stage)
    return predict.predict_online(
        store, chosen, entity_rows=entity_rows, features=features, use_defaults=use_defaults
    )


def get_prediction_job(store: FeatureStore, prediction_id: str) -> PredictionJob:
    """One prediction job record."""
    return _models(store).get_job(prediction_id)


def list_prediction_jobs(
    store: FeatureStore, model: str | None = None, limit: int = 100
) -> list[PredictionJob]:
    """Prediction jobs, newest first (optionally of one model)."""
    return _models(store).list_jobs(model, limit=limit)
