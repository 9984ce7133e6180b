"""The model registry: models, immutable versions, stages, lineage and prediction jobs.

Everything lives in the registry database next to the definitions (tables in
:mod:`quiver.ml.tables`). A version is written once, in the project's write transaction, together
with the move of its artifact directory into place; afterwards only its stage changes. At most one
version per model is in ``production`` (a partial unique index backs this up): promoting a version
to production archives the previous production version in the same transaction.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.definitions import did_you_mean
from quiver.errors import BackendError, InvalidError, NotFoundError
from quiver.ml.tables import model_versions, models, prediction_jobs

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from quiver.registry import Registry

__all__ = [
    "MAX_VERSION",
    "STAGES",
    "ModelRecord",
    "ModelRegistry",
    "ModelVersion",
    "PredictionJob",
    "format_model_id",
    "parse_model_id",
    "storable_version",
]

STAGES: tuple[str, ...] = ("none", "staging", "production", "archived")
MAX_VERSION = 2**31 - 1
"""The largest version number: versions are 32-bit INTEGER columns (SQLite and PostgreSQL)."""
_MAX_LIMIT = 2**31 - 1  # a LIMIT every database accepts
_ID_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,62}):([0-9]{1,30})$")


def format_model_id(name: str, version: int) -> str:
    """The model id ``name:version``."""
    return f"{name}:{version}"


def parse_model_id(model: str) -> tuple[str, int | None]:
    """Split ``name:version`` into its parts; a bare name gives ``(name, None)``.

    Raises:
        InvalidError: neither a model id nor a plain model name.
    """
    if not isinstance(model, str) or not model.strip():
        raise InvalidError("a model is named by its id 'name:version' or by its name")
    text = model.strip()
    match = _ID_RE.match(text)
    if match:
        return match.group(1), int(match.group(2))
    if re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", text):
        return text, None
    raise InvalidError(
        f"{model!r} is not a model id ('name:version', e.g. 'churn_model:3') nor a model name"
    )


def storable_version(version: int) -> bool:
    """Whether ``version`` can exist at all (1..:data:`MAX_VERSION`).

    A number outside that range is never sent to the database, where it would not fit the column
    (SQLite refuses Python ints above 64 bits, PostgreSQL's ``integer`` is 32 bits): the caller
    answers "not found" instead.
    """
    return 1 <= version <= MAX_VERSION


def check_stage(stage: str) -> str:
    """Return ``stage`` normalized, or raise :class:`InvalidError` listing the stages."""
    value = str(stage).strip().lower()
    if value not in STAGES:
        raise InvalidError(f"unknown stage '{stage}'; use one of {', '.join(STAGES)}")
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class ModelVersion:
    """One immutable trained version of a model (only its stage changes)."""

    name: str
    version: int
    framework: str
    model_type: str
    algorithm: str | None
    stage: str
    description: str
    spec: dict[str, Any]
    lineage: dict[str, Any]
    metrics: dict[str, Any]
    feature_importance: dict[str, float]
    artifact_dir: str
    checksums: dict[str, str]
    training_duration_seconds: float
    created_at: datetime
    created_by: str | None
    stage_updated_at: datetime | None = None

    @property
    def model_id(self) -> str:
        """``name:version``."""
        return format_model_id(self.name, self.version)

    @property
    def training_metrics(self) -> dict[str, Any]:
        """Metrics on the training split."""
        return dict(self.metrics.get("train", {}))

    @property
    def test_metrics(self) -> dict[str, Any]:
        """Metrics on the test split."""
        return dict(self.metrics.get("test", {}))

    @property
    def feature_refs(self) -> list[str]:
        """The feature references the version was trained on, in model column order."""
        return [f["ref"] for f in self.lineage.get("features", [])]

    def to_dict(self, *, full: bool = True) -> dict[str, Any]:
        """A JSON-compatible dict (``full=False`` leaves out the spec and lineage)."""
        out: dict[str, Any] = {
            "model_id": self.model_id,
            "model_name": self.name,
            "version": self.version,
            "framework": self.framework,
            "model_type": self.model_type,
            "algorithm": self.algorithm,
            "stage": self.stage,
            "description": self.description,
            "training_metrics": self.training_metrics,
            "test_metrics": self.test_metrics,
            "feature_importance": self.feature_importance,
            "training_duration_seconds": self.training_duration_seconds,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "stage_updated_at": _iso(self.stage_updated_at),
            "artifact_dir": self.artifact_dir,
        }
        if full:
            out["spec"] = self.spec
            out["lineage"] = self.lineage
            out["checksums"] = self.checksums
        return out


@dataclass(frozen=True)
class ModelRecord:
    """A model and its versions (oldest first)."""

    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    versions: list[ModelVersion] = field(default_factory=list)

    @property
    def latest(self) -> ModelVersion | None:
        """The newest version."""
        return self.versions[-1] if self.versions else None

    @property
    def production(self) -> ModelVersion | None:
        """The version in production, if any."""
        return next((v for v in self.versions if v.stage == "production"), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict with a short entry per version."""
        latest, prod = self.latest, self.production
        return {
            "name": self.name,
            "description": self.description,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "latest_version": latest.version if latest else None,
            "production_version": prod.version if prod else None,
            "framework": latest.framework if latest else None,
            "model_type": latest.model_type if latest else None,
            "versions": [v.to_dict(full=False) for v in self.versions],
        }


@dataclass(frozen=True)
class PredictionJob:
    """The record of one batch (or online) prediction run."""

    prediction_id: str
    model_name: str
    model_version: int
    mode: str
    input: str | None
    output: str | None
    rows: int
    duration_seconds: float
    status: str
    error: str | None
    created_at: datetime
    created_by: str | None
    rows_missing_features: int = 0

    @property
    def model_id(self) -> str:
        """``name:version`` of the model that predicted."""
        return format_model_id(self.model_name, self.model_version)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "prediction_id": self.prediction_id,
            "model_id": self.model_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "mode": self.mode,
            "input": self.input,
            "output": self.output,
            "rows": self.rows,
            "duration_seconds": self.duration_seconds,
            "status": self.status,
            "error": self.error,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "rows_missing_features": self.rows_missing_features,
        }


def _version_from_row(row: Any) -> ModelVersion:
    return ModelVersion(
        name=row.model_name,
        version=int(row.version),
        framework=row.framework,
        model_type=row.model_type,
        algorithm=row.algorithm,
        stage=row.stage,
        description=row.description or "",
        spec=json.loads(row.spec),
        lineage=json.loads(row.lineage),
        metrics=json.loads(row.metrics),
        feature_importance=json.loads(row.feature_importance),
        artifact_dir=row.artifact_dir,
        checksums=json.loads(row.checksums),
        training_duration_seconds=float(row.training_duration_seconds),
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        created_by=row.created_by,
        stage_updated_at=_utc(row.stage_updated_at),
    )


def _job_from_row(row: Any) -> PredictionJob:
    return PredictionJob(
        prediction_id=row.prediction_id,
        model_name=row.model_name,
        model_version=int(row.model_version),
        mode=row.mode,
        input=row.input,
        output=row.output,
        rows=int(row.rows or 0),
        duration_seconds=float(row.duration_seconds or 0.0),
        status=row.status,
        error=row.error,
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        created_by=row.created_by,
        rows_missing_features=int(row.rows_missing_features or 0),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class ModelRegistry:
    """Model versions, stages and prediction jobs of one project's registry.

    Args:
        registry: The project's :class:`~quiver.registry.Registry` (its engine and lock).
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.project = registry.project

    # -- connections ------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.registry.engine.connect() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise BackendError(f"model registry read failed: {exc.orig}") from exc

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.registry.engine.connect() as conn:
                conn.execution_options(quiver_write=True)
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            raise BackendError(f"model registry write failed: {exc.orig}") from exc

    # -- versions ---------------------------------------------------------------------------

    def create_version(
        self,
        name: str,
        *,
        publish: Callable[[int], tuple[str, dict[str, str]]],
        framework: str,
        model_type: str,
        algorithm: str | None,
        description: str,
        spec: dict[str, Any],
        lineage: dict[str, Any],
        metrics: dict[str, Any],
        feature_importance: dict[str, float],
        training_duration_seconds: float,
        author: str | None,
    ) -> ModelVersion:
        """Register a new version of ``name`` (creating the model if needed).

        Args:
            publish: Called inside the transaction with the new version number; moves the
                artifacts into place and returns ``(artifact_dir, {file: sha256})``. If the
                insert then fails, the transaction rolls back (the caller removes the files).

        Returns:
            The new version (stage ``none``).
        """
        now = datetime.now(UTC)
        with self.registry.transaction() as conn:
            exists = conn.execute(
                sa.select(models.c.name).where(
                    models.c.project == self.project, models.c.name == name
                )
            ).first()
            if exists is None:
                conn.execute(
                    models.insert().values(
                        project=self.project,
                        name=name,
                        description=description,
                        created_at=now,
                        updated_at=now,
                    )
                )
            else:
                values: dict[str, Any] = {"updated_at": now}
                if description:
                    values["description"] = description
                conn.execute(
                    models.update()
                    .where(models.c.project == self.project, models.c.name == name)
                    .values(**values)
                )
            last = conn.execute(
                sa.select(sa.func.max(model_versions.c.version)).where(
                    model_versions.c.project == self.project,
                    model_versions.c.model_name == name,
                )
            ).scalar()
            version = int(last or 0) + 1
            artifact_dir, checksums = publish(version)
            conn.execute(
                model_versions.insert().values(
                    project=self.project,
                    model_name=name,
                    version=version,
                    framework=framework,
                    model_type=model_type,
                    algorithm=algorithm,
                    stage="none",
                    description=description,
                    spec=_dumps(spec),
                    lineage=_dumps(lineage),
                    metrics=_dumps(metrics),
                    feature_importance=json.dumps(feature_importance),
                    artifact_dir=artifact_dir,
                    checksums=_dumps(checksums),
                    training_duration_seconds=training_duration_seconds,
                    created_at=now,
                    created_by=author,
                    stage_updated_at=now,
                )
            )
        return self.get_version(name, version)

    def model_names(self) -> list[str]:
        """The names of every model of the project."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(models.c.name)
                .where(models.c.project == self.project)
                .order_by(models.c.name)
            ).all()
        return [r.name for r in rows]

    def list_models(self) -> list[ModelRecord]:
        """Every model with its versions, by name."""
        with self._read() as conn:
            model_rows = conn.execute(
                sa.select(models).where(models.c.project == self.project).order_by(models.c.name)
            ).all()
            version_rows = conn.execute(
                sa.select(model_versions)
                .where(model_versions.c.project == self.project)
                .order_by(model_versions.c.model_name, model_versions.c.version)
            ).all()
        by_model: dict[str, list[ModelVersion]] = {}
        for row in version_rows:
            by_model.setdefault(row.model_name, []).append(_version_from_row(row))
        return [
            ModelRecord(
                name=r.name,
                description=r.description or "",
                created_at=_utc(r.created_at),  # type: ignore[arg-type]
                updated_at=_utc(r.updated_at),  # type: ignore[arg-type]
                versions=by_model.get(r.name, []),
            )
            for r in model_rows
        ]

    def get_model(self, name: str) -> ModelRecord:
        """One model with its versions, or raise :class:`NotFoundError`."""
        for record in self.list_models():
            if record.name == name:
                return record
        raise self._unknown_model(name)

    def _unknown_model(self, name: str) -> NotFoundError:
        return NotFoundError(
            f"model '{name}' does not exist in project '{self.project}'"
            + did_you_mean(name, self.model_names())
        )

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of ``name``, oldest first, or raise :class:`NotFoundError`."""
        with self._read() as conn:
            rows = conn.execute(
                sa.select(model_versions)
                .where(
                    model_versions.c.project == self.project, model_versions.c.model_name == name
                )
                .order_by(model_versions.c.version)
            ).all()
        if not rows:
            raise self._unknown_model(name)
        return [_version_from_row(r) for r in rows]

    def get_version(
        self, model: str, version: int | None = None, stage: str | None = None
    ) -> ModelVersion:
        """One version: by id ``name:version``, or by name with a version or a stage.

        With a bare name and neither ``version`` nor ``stage``: the production version, else
        the latest.

        Raises:
            InvalidError: a malformed id, an unknown stage, or an id together with a version
                or stage that disagrees with it.
            NotFoundError: no such model, version, or no version in that stage.
        """
        name, id_version = parse_model_id(model)
        if id_version is not None:
            if version is not None and version != id_version:
                raise InvalidError(
                    f"model id '{model}' names version {id_version} but version={version} was "
                    "also given; give one of them"
                )
            version = id_version
        if version is not None and stage is not None:
            raise InvalidError("give a model version or a stage, not both")
        every = self.versions(name)
        if version is not None:
            for v in every:
                if v.version == version:
                    return v
            raise NotFoundError(
                f"model '{name}' has no version {version}; versions are "
                f"{', '.join(str(v.version) for v in every)}"
            )
        if stage is not None:
            stage = check_stage(stage)
            in_stage = [v for v in every if v.stage == stage]
            if not in_stage:
                raise NotFoundError(
                    f"model '{name}' has no version in stage '{stage}'; promote one with "
                    f"'quiver models promote {name} VERSION {stage}'"
                )
            return in_stage[-1]
        production = [v for v in every if v.stage == "production"]
        return production[-1] if production else every[-1]

    def set_stage(self, name: str, version: int, stage: str) -> ModelVersion:
        """Move a version to ``stage``; promoting to production archives the previous one.

        Raises:
            InvalidError: an unknown stage.
            NotFoundError: no such model or version.
        """
        stage = check_stage(stage)
        if not storable_version(version):
            self.get_version(name, version)  # raises the NotFoundError listing the versions
        now = datetime.now(UTC)
        with self.registry.transaction() as conn:
            key = (model_versions.c.project == self.project) & (model_versions.c.model_name == name)
            found = conn.execute(
                sa.select(model_versions.c.version).where(
                    key & (model_versions.c.version == version)
                )
            ).first()
            if found is None:
                self.get_version(name, version)  # raises the right NotFoundError
            if stage == "production":
                conn.execute(
                    model_versions.update()
                    .where(
                        key
                        & (model_versions.c.stage == "production")
                        & (model_versions.c.version != version)
                    )
                    .values(stage="archived", stage_updated_at=now)
                )
            conn.execute(
                model_versions.update()
                .where(key & (model_versions.c.version == version))
                .values(stage=stage, stage_updated_at=now)
            )
            conn.execute(
                models.update()
                .where(models.c.project == self.project, models.c.name == name)
                .values(updated_at=now)
            )
        return self.get_version(name, version)

    # -- prediction jobs --------------------------------------------------------------------

    def start_job(
        self,
        version: ModelVersion,
        *,
        mode: str,
        input: str | None,
        output: str | None,
        author: str | None,
        job_id: str | None = None,
        status: str = "running",
    ) -> str:
        """Record a prediction job as ``running``; returns its ``prediction_id``.

        A background job's record is made ``queued`` when the job is accepted (``status``);
        when the job starts, the same record becomes ``running``.

        Args:
            job_id: The id to give it (a worker's job token); default: a new random one.
            status: ``running``, or ``queued`` for a background job not started yet.
        """
        job_id = job_id or uuid.uuid4().hex
        values = {
            "model_name": version.name,
            "model_version": version.version,
            "mode": mode,
            "input": input,
            "output": output,
            "status": status,
        }
        with self._write() as conn:
            if status == "running":
                started = conn.execute(
                    prediction_jobs.update()
                    .where(
                        prediction_jobs.c.project == self.project,
                        prediction_jobs.c.prediction_id == job_id,
                        prediction_jobs.c.status == "queued",
                    )
                    .values(**values)
                )
                if started.rowcount:
                    return job_id
            conn.execute(
                prediction_jobs.insert().values(
                    prediction_id=job_id,
                    project=self.project,
                    rows=0,
                    duration_seconds=0.0,
                    error=None,
                    created_at=datetime.now(UTC),
                    created_by=author,
                    **values,
                )
            )
        return job_id

    def settle_jobs(self, job_ids: Sequence[str], status: str, error: str | None) -> int:
        """Give the records of these jobs that are still ``queued`` or ``running`` their end
        (the background job ended without the prediction doing it: cancelled while queued,
        failed before it began, or its process died); how many changed."""
        if not job_ids:
            return 0
        with self._write() as conn:
            result = conn.execute(
                prediction_jobs.update()
                .where(
                    prediction_jobs.c.project == self.project,
                    prediction_jobs.c.prediction_id.in_(list(job_ids)),
                    prediction_jobs.c.status.in_(("queued", "running")),
                )
                .values(status=status, error=error)
            )
        return int(result.rowcount)

    def forget_queued(self, job_id: str) -> None:
        """Delete a ``queued`` record whose job was refused (it never existed)."""
        with self._write() as conn:
            conn.execute(
                prediction_jobs.delete().where(
                    prediction_jobs.c.project == self.project,
                    prediction_jobs.c.prediction_id == job_id,
                    prediction_jobs.c.status == "queued",
                )
            )

    def finish_job(
        self,
        job_id: str,
        *,
        status: str,
        rows: int,
        duration_seconds: float,
        error: str | None = None,
        rows_missing_features: int = 0,
    ) -> PredictionJob:
        """Record the outcome of a job (``completed``, ``failed`` or ``cancelled``).

        ``rows_missing_features``: rows of a batch prediction whose features were missing.
        """
        with self._write() as conn:
            conn.execute(
                prediction_jobs.update()
                .where(prediction_jobs.c.prediction_id == job_id)
                .values(
                    status=status,
                    rows=rows,
                    duration_seconds=duration_seconds,
                    error=error,
                    rows_missing_features=rows_missing_features,
                )
            )
        return self.get_job(job_id)

    def cancel_job(self, job_id: str, error: str, duration_seconds: float | None = None) -> bool:
        """Mark a job that is still ``queued`` or ``running`` as ``cancelled`` (its process was
        stopped).

        Args:
            job_id: The job's ``prediction_id``.
            error: Why it was cancelled.
            duration_seconds: How long it ran, when known.

        Returns:
            Whether a running job with that id was found.
        """
        with self._write() as conn:
            result = conn.execute(
                prediction_jobs.update()
                .where(
                    prediction_jobs.c.prediction_id == job_id,
                    prediction_jobs.c.status.in_(("queued", "running")),
                )
                .values(
                    status="cancelled",
                    error=error,
                    **({} if duration_seconds is None else {"duration_seconds": duration_seconds}),
                )
            )
        return bool(result.rowcount)

    def get_job(self, job_id: str) -> PredictionJob:
        """One prediction job, or raise :class:`NotFoundError`."""
        if "\x00" in job_id:  # ids are hex; PostgreSQL refuses NUL in any text
            raise NotFoundError(f"prediction job {job_id!r} does not exist")
        with self._read() as conn:
            row = conn.execute(
                sa.select(prediction_jobs).where(
                    prediction_jobs.c.project == self.project,
                    prediction_jobs.c.prediction_id == job_id,
                )
            ).first()
        if row is None:
            raise NotFoundError(f"prediction job '{job_id}' does not exist")
        return _job_from_row(row)

    def list_jobs(self, model: str | None = None, limit: int = 100) -> list[PredictionJob]:
        """Prediction jobs, newest first, optionally of one model (name or id).

        Raises:
            InvalidError: a malformed model id, or a ``limit`` below 1.
        """
        if limit < 1:
            raise InvalidError(f"limit must be at least 1, got {limit}")
        query = sa.select(prediction_jobs).where(prediction_jobs.c.project == self.project)
        if model is not None:
            name, version = parse_model_id(model)
            query = query.where(prediction_jobs.c.model_name == name)
            if version is not None:
                if not storable_version(version):
                    return []  # no such version, so no jobs of it
                query = query.where(prediction_jobs.c.model_version == version)
        query = query.order_by(prediction_jobs.c.created_at.desc()).limit(min(limit, _MAX_LIMIT))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [_job_from_row(r) for r in rows]


def artifact_path(model_root: Path, name: str, version: int) -> Path:
    """Where a version's artifacts live: ``<model_dir>/<name>/<version>``."""
    return model_root / name / str(version)
