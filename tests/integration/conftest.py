"""Fixtures shared by the integration tests: a registry on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _registry import open_store
from quiver.store import FeatureStore


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A registry URL: a SQLite file, then a database on the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(registry_url: str, tmp_path: Path) -> Iterator[FeatureStore]:
    """The project 'shop' on ``registry_url`` (test files may define their own ``store``)."""
    with open_store(registry_url, tmp_path) as s:
        yield s
