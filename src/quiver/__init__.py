"""Quiver: an Arrow-native feature store and ML platform.

The public API is re-exported here. Heavy modules (the store, the engines, the backends) load on
first use, so ``import quiver`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quiver.definitions import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    IcebergSource,
    OnDemandFeatureView,
    RequestSource,
    ValidationRules,
    ViewValidation,
)
from quiver.errors import (
    BackendError,
    BreakingChangeError,
    ConcurrentChangeError,
    ConfigError,
    ConflictError,
    DataValidationError,
    DefinitionError,
    InvalidError,
    MissingExtraError,
    NotFoundError,
    PayloadTooLargeError,
    QuiverError,
    ReferencedError,
)
from quiver.features.on_demand import on_demand_feature_view

if TYPE_CHECKING:
    from quiver.config import RepoConfig, load_config
    from quiver.store import FeatureStore

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "BackendError",
    "BreakingChangeError",
    "ConcurrentChangeError",
    "ConfigError",
    "ConflictError",
    "DataValidationError",
    "DefinitionError",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "FileSource",
    "IcebergSource",
    "InvalidError",
    "MissingExtraError",
    "NotFoundError",
    "OnDemandFeatureView",
    "PayloadTooLargeError",
    "QuiverError",
    "ReferencedError",
    "RepoConfig",
    "RequestSource",
    "ValidationRules",
    "ViewValidation",
    "__version__",
    "load_config",
    "on_demand_feature_view",
]

_LAZY = {
    "FeatureStore": "quiver.store",
    "RepoConfig": "quiver.config",
    "load_config": "quiver.config",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'quiver' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
