"""Opening a feature store on a given registry URL, for the registry tests."""

from __future__ import annotations

from pathlib import Path

from quiver.config import build_config
from quiver.store import FeatureStore


def open_store(url: str, repo_path: Path, project: str = "shop") -> FeatureStore:
    """A feature store of ``project`` on the registry at ``url``, its repo at ``repo_path``."""
    return FeatureStore(
        config=build_config({"project": project, "registry": url, "repo_path": repo_path})
    )
