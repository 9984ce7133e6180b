"""Fixtures shared by the unit tests: a model registry and versions with empty metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from quiver.ml.registry import ModelRegistry, ModelVersion
from quiver.registry import Registry

Publish = Callable[[int], tuple[str, dict[str, str]]]
"""``create_version``'s ``publish``: version number -> ``(artifact_dir, {file: sha256})``."""


@pytest.fixture
def registry_url(tmp_path: Path) -> str:
    """The registry database behind ``models``: SQLite in the test's folder.

    A test module overrides this fixture to run its ``models`` tests on other databases too.
    """
    return f"sqlite:///{tmp_path / 'registry.db'}"


@pytest.fixture
def models(registry_url: str) -> Iterator[ModelRegistry]:
    """An empty model registry of project ``proj`` in the ``registry_url`` database."""
    registry = Registry(registry_url, "proj")
    yield ModelRegistry(registry)
    registry.close()


@pytest.fixture
def add_bare_version() -> Callable[..., ModelVersion]:
    """A function that registers a version of ``name`` with empty metadata and no metrics.

    Its default ``publish`` places the version at ``<name>/<version>`` with no artifact files.
    """

    def add(
        models: ModelRegistry, name: str = "churn", publish: Publish | None = None
    ) -> ModelVersion:
        def no_files(version: int) -> tuple[str, dict[str, str]]:
            return f"{name}/{version}", {}

        return models.create_version(
            name,
            publish=publish or no_files,
            framework="lightgbm",
            model_type="classification",
            algorithm=None,
            description="",
            spec={},
            lineage={},
            metrics={},
            feature_importance={},
            training_duration_seconds=0.0,
            author=None,
        )

    return add
