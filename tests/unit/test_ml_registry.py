"""The model registry: versions, ids, stages (one production), prediction jobs, artifacts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from quiver.errors import InvalidError, NotFoundError
from quiver.ml import artifacts
from quiver.ml.encoding import Encoding, LabelEncoding
from quiver.ml.registry import ModelRegistry, ModelVersion, artifact_path, parse_model_id
from quiver.ml.tables import model_versions
from quiver.ml.trainers import get_trainer


def _add(models: ModelRegistry, name: str = "churn", **extra: Any) -> Any:
    def publish(version: int) -> tuple[str, dict[str, str]]:
        return f"{name}/{version}", {"model.txt": "0" * 64}

    values: dict[str, Any] = {
        "framework": "lightgbm",
        "model_type": "classification",
        "algorithm": None,
        "description": "d",
        "spec": {"name": name},
        "lineage": {"features": [{"ref": "v:a"}], "join_keys": ["k"]},
        "metrics": {"train": {"accuracy": 1.0}, "test": {"accuracy": 0.9}},
        "feature_importance": {"a": 1.0},
        "training_duration_seconds": 0.5,
        "author": "me",
    }
    values.update(extra)
    return models.create_version(name, publish=publish, **values)


def test_versions_are_numbered_per_model(models: ModelRegistry) -> None:
    v1, v2 = _add(models), _add(models)
    other = _add(models, "ltv")
    assert (v1.model_id, v2.model_id, other.model_id) == ("churn:1", "churn:2", "ltv:1")
    assert v1.stage == "none"
    assert v2.test_metrics == {"accuracy": 0.9}
    assert v2.feature_refs == ["v:a"]
    assert [m.name for m in models.list_models()] == ["churn", "ltv"]
    record = models.get_model("churn")
    assert record.latest.version == 2 and record.production is None
    assert record.to_dict()["latest_version"] == 2


def test_get_version_by_id_name_version_stage(models: ModelRegistry) -> None:
    for _ in range(3):
        _add(models)
    assert models.get_version("churn:2").version == 2
    assert models.get_version("churn", version=1).version == 1
    assert models.get_version("churn").version == 3  # no production: the latest
    models.set_stage("churn", 2, "production")
    assert models.get_version("churn").version == 2  # production wins
    assert models.get_version("churn", stage="production").version == 2
    with pytest.raises(NotFoundError, match=r"no version in stage 'staging'"):
        models.get_version("churn", stage="staging")
    with pytest.raises(NotFoundError, match=r"has no version 9"):
        models.get_version("churn:9")
    with pytest.raises(NotFoundError, match=r"model 'chrn' does not exist.*did you mean 'churn'"):
        models.get_version("chrn")
    with pytest.raises(InvalidError, match=r"not both"):
        models.get_version("churn", version=1, stage="production")
    with pytest.raises(InvalidError, match=r"names version 2"):
        models.get_version("churn:2", version=3)
    with pytest.raises(InvalidError, match=r"unknown stage"):
        models.get_version("churn", stage="prod")


def test_one_production_version(models: ModelRegistry) -> None:
    for _ in range(3):
        _add(models)
    models.set_stage("churn", 1, "production")
    models.set_stage("churn", 2, "staging")
    models.set_stage("churn", 3, "production")
    stages = {v.version: v.stage for v in models.versions("churn")}
    assert stages == {1: "archived", 2: "staging", 3: "production"}
    models.set_stage("churn", 3, "production")  # idempotent
    assert [v.version for v in models.versions("churn") if v.stage == "production"] == [3]
    with pytest.raises(NotFoundError):
        models.set_stage("churn", 7, "staging")
    with pytest.raises(InvalidError, match=r"unknown stage"):
        models.set_stage("churn", 1, "gold")


def test_database_refuses_two_production_versions(models: ModelRegistry) -> None:
    _add(models)
    _add(models)
    models.set_stage("churn", 1, "production")
    with pytest.raises(sa.exc.IntegrityError), models.registry.engine.begin() as conn:
        conn.execute(
            model_versions.update().where(model_versions.c.version == 2).values(stage="production")
        )


def test_failed_publish_leaves_nothing(
    models: ModelRegistry, add_bare_version: Callable[..., ModelVersion]
) -> None:
    def publish(version: int) -> tuple[str, dict[str, str]]:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        add_bare_version(models, "churn", publish)
    assert models.list_models() == []


def test_prediction_jobs(models: ModelRegistry) -> None:
    version = _add(models)
    job_id = models.start_job(
        version, mode="batch", input="in.parquet", output="out.parquet", author="me"
    )
    assert models.get_job(job_id).status == "running"
    job = models.finish_job(job_id, status="completed", rows=10, duration_seconds=1.5)
    assert (job.status, job.rows, job.model_id) == ("completed", 10, "churn:1")
    assert job.to_dict()["prediction_id"] == job_id
    failed = models.start_job(version, mode="batch", input="x", output="y", author=None)
    models.finish_job(failed, status="failed", rows=0, duration_seconds=0.1, error="boom")
    jobs = models.list_jobs("churn")
    assert {j.prediction_id for j in jobs} == {job_id, failed}
    assert models.list_jobs("churn:2") == []
    with pytest.raises(NotFoundError):
        models.get_job("nope")


def test_parse_model_id() -> None:
    assert parse_model_id("churn:3") == ("churn", 3)
    assert parse_model_id("churn") == ("churn", None)
    for bad in ("", "a:b", "x:1:2", "bad name"):
        with pytest.raises(InvalidError):
            parse_model_id(bad)


# -- artifacts ------------------------------------------------------------------------------


def _trained(tmp_path: Path) -> tuple[Path, dict[str, str], np.ndarray]:
    trainer = get_trainer("lightgbm")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    model = trainer.fit(
        trainer.build("classification", None, {"n_estimators": 5}, 0), x, y, ["a", "b"], []
    )
    table = pa.table({"a": x[:, 0], "b": x[:, 1]})
    enc = Encoding.fit(
        table,
        [("a", "v:a", "float64"), ("b", "v:b", "float64")],
        label=LabelEncoding("y", "int64", [0, 1]),
    )
    root = tmp_path / "models"
    staging = artifacts.staging_dir(root, "m")
    sums = artifacts.write_artifacts(staging, "lightgbm", model, enc)
    final = artifact_path(root, "m", 1)
    sums[artifacts.METADATA_FILE] = artifacts.publish_dir(staging, final, {"version": 1})
    return final, sums, x


def _load(final: Path, sums: dict[str, str]) -> artifacts.LoadedModel:
    return artifacts.load_artifacts(
        final, sums, model_id="m:1", framework="lightgbm", model_type="classification"
    )


def test_artifact_round_trip(tmp_path: Path) -> None:
    final, sums, x = _trained(tmp_path)
    assert sorted(p.name for p in final.iterdir()) == [
        "encoding.json",
        "metadata.json",
        "model.txt",
    ]
    assert json.loads((final / "metadata.json").read_text()) == {"version": 1}
    loaded = _load(final, sums)
    proba = loaded.predict_matrix(loaded.encoding.encode(pa.table({"a": x[:, 0], "b": x[:, 1]})))
    assert proba.shape == (200, 2)
    assert _load(final, sums) is loaded  # cached after the checksum check


@pytest.mark.parametrize("file", ["model.txt", "encoding.json", "metadata.json"])
def test_tampered_artifact_is_refused(tmp_path: Path, file: str) -> None:
    final, sums, _ = _trained(tmp_path)
    _load(final, sums)  # warm the cache: a later change must still be caught
    path = final / file
    path.write_bytes(path.read_bytes().replace(b"1", b"2", 1))
    with pytest.raises(artifacts.ArtifactIntegrityError, match=f"{file}.*does not match"):
        _load(final, sums)


def test_missing_artifact_is_refused(tmp_path: Path) -> None:
    final, sums, _ = _trained(tmp_path)
    (final / "model.txt").unlink()
    with pytest.raises(NotFoundError, match=r"model.txt.*is missing"):
        _load(final, sums)


def test_publish_replaces_a_stale_directory(tmp_path: Path) -> None:
    root = tmp_path / "models"
    stale = artifact_path(root, "m", 1)
    stale.mkdir(parents=True)
    (stale / "old").write_text("x")
    staging = artifacts.staging_dir(root, "m")
    artifacts.publish_dir(staging, stale, {"v": 1})
    assert sorted(p.name for p in stale.iterdir()) == ["metadata.json"]
