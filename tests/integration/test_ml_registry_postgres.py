"""The model registry on a real PostgreSQL registry: migrations, versions, one production."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from quiver.ml.registry import ModelRegistry
from quiver.ml.tables import model_versions
from quiver.registry import Registry


@pytest.fixture
def models(postgres_url: str) -> Iterator[ModelRegistry]:
    registry = Registry(postgres_url, "proj")
    yield ModelRegistry(registry)
    registry.close()


def _add(models: ModelRegistry, name: str = "churn") -> Any:
    return models.create_version(
        name,
        publish=lambda v: (f"{name}/{v}", {"model.txt": "0" * 64}),
        framework="xgboost",
        model_type="regression",
        algorithm=None,
        description="",
        spec={"name": name},
        lineage={"features": []},
        metrics={"train": {"r2": 0.5}, "test": {"r2": 0.4}},
        feature_importance={},
        training_duration_seconds=1.0,
        author="pg",
    )


def test_versions_and_stages_on_postgres(models: ModelRegistry) -> None:
    assert [_add(models).version for _ in range(3)] == [1, 2, 3]
    models.set_stage("churn", 1, "production")
    models.set_stage("churn", 3, "production")
    assert {v.version: v.stage for v in models.versions("churn")} == {
        1: "archived",
        2: "none",
        3: "production",
    }
    assert models.get_version("churn").version == 3
    assert models.get_version("churn:2").test_metrics == {"r2": 0.4}
    with pytest.raises(sa.exc.IntegrityError), models.registry.engine.begin() as conn:
        conn.execute(
            model_versions.update().where(model_versions.c.version == 2).values(stage="production")
        )
    job = models.start_job(
        models.get_version("churn:3"), mode="batch", input="a", output="b", author=None
    )
    assert models.finish_job(job, status="completed", rows=5, duration_seconds=0.1).rows == 5


def test_concurrent_trainings_get_distinct_versions(models: ModelRegistry) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        versions = list(pool.map(lambda _: _add(models, "parallel").version, range(8)))
    assert sorted(versions) == list(range(1, 9))
