"""Seed helpers: the functions the churn team's code calls, as thin wrappers over
:class:`~quiver.store.FeatureStore`.

Each takes an optional ``store``; without one they use the repo at ``$QUIVER_REPO`` (or the
current directory), opened once per process::

    from quiver.client import get_features_for_prediction
    features = get_features_for_prediction(customer_id=42)
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quiver.store import FeatureStore

__all__ = [
    "DEFAULT_SERVICE",
    "default_store",
    "get_feature_service_features",
    "get_features_for_prediction",
    "get_training_features",
    "validate_features",
]

DEFAULT_SERVICE = "churn_prediction_v1"
"""The feature service the helpers use when none is named."""

_STORE: FeatureStore | None = None
_LOCK = threading.Lock()


def default_store() -> FeatureStore:
    """The store of ``$QUIVER_REPO`` (default: the current directory), opened once."""
    global _STORE
    with _LOCK:
        if _STORE is None:
            from quiver.store import FeatureStore

            _STORE = FeatureStore(repo_path=os.environ.get("QUIVER_REPO") or ".")
        return _STORE


def get_features_for_prediction(
    customer_id: Any,
    *,
    feature_service: str = DEFAULT_SERVICE,
    request_data: dict[str, Any] | None = None,
    store: FeatureStore | None = None,
) -> dict[str, Any]:
    """The online features of one customer as ``{feature: value}`` (``None`` where missing).

    Args:
        customer_id: The ``customer_id`` join key.
        feature_service: The service whose features are read.
        request_data: Values of request fields that on-demand features need.
        store: The store (default: :func:`default_store`).
    """
    store = store or default_store()
    row = {"customer_id": customer_id, **(request_data or {})}
    result = store.get_online_features(feature_service=feature_service, entity_rows=[row])
    return {name: values[0] for name, values in result.to_dict().items()}


def get_training_features(
    entity_df: Any,
    *,
    feature_service: str = DEFAULT_SERVICE,
    store: FeatureStore | None = None,
) -> Any:
    """Point-in-time correct training features for ``entity_df`` (a pandas DataFrame)."""
    store = store or default_store()
    return store.get_historical_features(entity_df, feature_service=feature_service).to_pandas()


def validate_features(
    entity_rows: list[dict[str, Any]],
    *,
    feature_service: str = DEFAULT_SERVICE,
    store: FeatureStore | None = None,
) -> list[dict[str, Any]]:
    """Which features each entity row lacks online: one report per row, in order.

    Returns:
        ``[{"row": i, "valid": bool, "missing": [...], "expired": [...]}, ...]``: ``missing``
        are features with no value (``not_found``), ``expired`` those older than their TTL.
    """
    store = store or default_store()
    result = store.get_online_features(feature_service=feature_service, entity_rows=entity_rows)
    statuses = result.statuses
    reports = []
    for i in range(len(entity_rows)):
        missing = [n for n, s in statuses.items() if s[i] == "not_found"]
        expired = [n for n, s in statuses.items() if s[i] == "expired"]
        reports.append(
            {"row": i, "valid": not missing and not expired, "missing": missing, "expired": expired}
        )
    return reports


def get_feature_service_features(name: str, *, store: FeatureStore | None = None) -> list[str]:
    """The ``view:feature`` references of a feature service, with ``view:*`` expanded."""
    store = store or default_store()
    refs: list[str] = []
    for ref in store.get_feature_service(name).features:
        view, feature = ref.split(":", 1)
        if feature != "*":
            refs.append(ref)
            continue
        found = store.registry.find("feature_view", view) or store.registry.get(
            "on_demand_feature_view", view
        )
        refs.extend(f"{view}:{f}" for f in found.feature_names)
    return refs
