"""The jobs a worker process runs, and what the server removes when it kills one.

Each kind has a ``run`` (in the worker: the same facade call the CLI and the SDK make, on the
store the request's handler had, returning something small to send back) and a ``cleanup`` (in
the server, after the worker was killed: the files the job had begun, named after its token,
and its record marked ``cancelled``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quiver.store import FeatureStore

__all__ = ["KINDS", "JobKind", "queue_predict_batch", "settle_predict_batch"]


@dataclass(frozen=True)
class JobKind:
    """One kind of job.

    Attributes:
        run: ``run(store, payload)`` in the worker; returns a small picklable result.
        cleanup: ``cleanup(store, payload, token, reason, seconds)`` in the server after the
            worker running the job was killed.
    """

    run: Callable[[FeatureStore, dict[str, Any]], Any]
    cleanup: Callable[[FeatureStore, dict[str, Any], str, str, float], None]


def _train(store: FeatureStore, payload: dict[str, Any]) -> str:
    """Train a model version (the facade's call); the new version's id."""
    return str(store.train(payload["spec"]).model_id)


def _train_cleanup(
    store: FeatureStore, payload: dict[str, Any], token: str, reason: str, seconds: float
) -> None:
    """Remove the version's staging folder (nothing was registered: that step is critical)."""
    from quiver.ml.artifacts import staging_path

    folder = staging_path(store.config.model_path, payload["spec"]["name"], token)
    shutil.rmtree(folder, ignore_errors=True)


def _predict_batch(store: FeatureStore, payload: dict[str, Any]) -> str:
    """Score a batch and write it (the facade's call); the prediction job's id."""
    job = store.predict_batch(
        payload["model"], payload["input"], payload["output"], **payload["options"]
    )
    return str(job.prediction_id)


def _predict_batch_cleanup(
    store: FeatureStore, payload: dict[str, Any], token: str, reason: str, seconds: float
) -> None:
    """Remove the output's temporary file and mark the job record ``cancelled``.

    An Iceberg output had nothing committed (one commit at the end, a critical step); data
    files the job had uploaded stay unreferenced in the warehouse until the table's orphan
    files are expired.
    """
    from quiver._paths import temp_path
    from quiver.ml.registry import ModelRegistry

    output = str(payload["output"])
    if "://" not in output and not output.startswith("iceberg:"):
        temp_path(store.config.resolve(output), token).unlink(missing_ok=True)
    ModelRegistry(store.registry).cancel_job(token, reason, seconds)


def queue_predict_batch(
    store: FeatureStore, payload: dict[str, Any], job_id: str, author: str | None
) -> None:
    """Record a background batch prediction ``queued`` under its job's id, so that the
    prediction job list shows it from the start (it becomes ``running`` when it starts)."""
    from quiver.ml import io
    from quiver.ml.registry import ModelRegistry
    from quiver.ml.service import get_model

    options = payload["options"]
    version = get_model(
        store, payload["model"], version=options.get("version"), stage=options.get("stage")
    )
    ModelRegistry(store.registry).start_job(
        version,
        mode="batch",
        input=io.describe_input(payload["input"]),
        output=str(payload["output"]),
        author=author,
        job_id=job_id,
        status="queued",
    )


def settle_predict_batch(store: FeatureStore, job_id: str, record: Any) -> None:
    """After a background batch prediction ended: a record still ``queued`` or ``running``
    (cancelled before it started, failed before it began, refused) gets the job's end."""
    from quiver.ml.registry import ModelRegistry

    registry = ModelRegistry(store.registry)
    if record is None:  # the job was never recorded (refused): nothing to show
        registry.forget_queued(job_id)
        return
    status = "cancelled" if record.status == "cancelled" else "failed"
    registry.settle_jobs([job_id], status, record.error or f"the job {record.status}")


KINDS: dict[str, JobKind] = {
    "train": JobKind(_train, _train_cleanup),
    "predict_batch": JobKind(_predict_batch, _predict_batch_cleanup),
}
"""The job kinds by name."""
