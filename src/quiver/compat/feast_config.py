"""``feature_store.yaml`` (Feast's repo config) read as Quiver settings.

A directory with ``feature_store.yaml`` and no ``quiver.yaml`` is a Quiver repo: ``project``
is kept; ``online_store: {type: sqlite, path}`` and ``offline_store: {type: file|duckdb}`` map to
Quiver's; every other option is accepted with one warning naming what is ignored. Quiver's own
registry and online store files get names of their own (``data/quiver_registry.db``,
``data/quiver_online.db``) so they never clobber Feast's files in the same directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import yaml

from quiver.errors import ConfigError

__all__ = ["FEAST_CONFIG_FILE", "FeastConfigWarning", "settings_from_feast"]

FEAST_CONFIG_FILE = "feature_store.yaml"
_USED = {"project", "online_store", "offline_store"}


class FeastConfigWarning(UserWarning):
    """An option of ``feature_store.yaml`` that Quiver does not use."""


def _ignored(what: str, why: str) -> None:
    warnings.warn(f"{FEAST_CONFIG_FILE}: {what} is ignored ({why})", FeastConfigWarning, 3)


def settings_from_feast(file: Path) -> dict[str, Any]:
    """Quiver settings from Feast's ``feature_store.yaml`` (warnings for what is ignored)."""
    try:
        loaded = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: malformed YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{file}: expected a mapping of settings at the top level")
    data: dict[str, Any] = {
        "registry": {"url": "sqlite:///data/quiver_registry.db"},
        "online_store": {"type": "sqlite", "path": "data/quiver_online.db"},
    }
    if "project" in loaded:
        data["project"] = loaded["project"]
    online = loaded.get("online_store")
    if isinstance(online, dict) and online.get("type", "sqlite") == "sqlite":
        if online.get("path"):
            _ignored(
                "online_store.path",
                "Quiver keeps its own SQLite online store in data/quiver_online.db",
            )
    elif online is not None:
        kind = online.get("type") if isinstance(online, dict) else online
        _ignored(f"online_store type {kind!r}", "Quiver serves from its SQLite online store")
    offline = loaded.get("offline_store")
    if offline is not None:
        kind = offline.get("type") if isinstance(offline, dict) else offline
        if kind not in ("file", "duckdb", "dask"):
            _ignored(f"offline_store type {kind!r}", "Quiver's offline engine is DuckDB")
    for key in sorted(set(loaded) - _USED):
        why = {
            "registry": "Quiver keeps its own registry in data/quiver_registry.db",
            "provider": "Quiver has no providers",
            "entity_key_serialization_version": "Quiver's online keys have one encoding",
            "auth": "Quiver's API keys are configured with quiver.yaml's auth",
        }.get(key, "Quiver does not use it")
        _ignored(repr(key), why)
    return data
