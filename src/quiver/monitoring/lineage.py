"""Lineage lookups: which feature services and model versions use a feature view or a feature.

A service uses a feature when it lists ``view:feature`` or ``view:*``. A model version uses it
when its lineage lists it among the features it was trained on (a version trained from a
service lists the service's features as they were then, so a later change of the service does
not rewrite what a trained version used).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from quiver.definitions import did_you_mean
from quiver.errors import NotFoundError

if TYPE_CHECKING:
    from quiver.ml.registry import ModelVersion
    from quiver.registry import Registry

__all__ = ["feature_lineage", "model_versions_using", "parse_target", "services_using"]

_VIEW_KINDS = ("feature_view", "on_demand_feature_view")


def parse_target(text: str) -> tuple[str, str | None]:
    """``VIEW`` or ``VIEW:FEATURE`` -> ``(view, feature or None)``."""
    view, _, feature = text.partition(":")
    return view, (feature or None) if feature != "*" else None


def _uses(refs: Iterable[str], view: str, feature: str | None) -> list[str]:
    """The features of ``view`` (or just ``feature``) that ``refs`` name."""
    out = []
    for ref in refs:
        v, _, f = ref.partition(":")
        if v != view:
            continue
        if feature is None or f in (feature, "*"):
            out.append(f if feature is None else feature)
    return list(dict.fromkeys(out))


def services_using(
    registry: Registry, view: str, feature: str | None = None
) -> list[dict[str, Any]]:
    """The feature services that use the view (or its feature), with the features they use."""
    out = []
    for service in registry.list("feature_service"):
        used = _uses(service.features, view, feature)
        if used:
            out.append({"name": service.name, "owner": service.owner, "features": used})
    return out


def model_versions_using(
    versions: Iterable[ModelVersion], view: str, feature: str | None = None
) -> list[dict[str, Any]]:
    """The model versions trained on the view (or its feature), with the features they used."""
    out = []
    for v in versions:
        used = _uses(v.feature_refs, view, feature)
        if used:
            out.append(
                {
                    "model_id": v.model_id,
                    "model_name": v.name,
                    "version": v.version,
                    "stage": v.stage,
                    "features": used,
                }
            )
    return out


def _find_view(registry: Registry, view: str) -> Any:
    for kind in _VIEW_KINDS:
        found = registry.find(kind, view)
        if found is not None:
            return found
    names = [n for kind in _VIEW_KINDS for n in registry.names(kind)]
    raise NotFoundError(
        f"feature view '{view}' does not exist in project '{registry.project}'"
        + did_you_mean(view, names)
    )


def feature_lineage(
    registry: Registry,
    versions: Sequence[ModelVersion],
    view: str,
    feature: str | None = None,
) -> dict[str, Any]:
    """Who uses a feature view or one of its features.

    Args:
        registry: The registry (views, services).
        versions: Every model version to consider (e.g. all of the project's).
        view: A feature view or on-demand feature view.
        feature: One of its features (``None``: the whole view).

    Returns:
        ``{"feature_view", "feature", "dtype", "feature_services", "model_versions"}``.

    Raises:
        NotFoundError: no such view or feature.
    """
    found = _find_view(registry, view)
    dtype = None
    if feature is not None:
        names = [f.name for f in found.features]
        if feature not in names:
            raise NotFoundError(
                f"feature view '{view}' has no feature '{feature}'"
                + did_you_mean(feature, names)
                + f"; its features are: {', '.join(names)}"
            )
        dtype = next(f.dtype for f in found.features if f.name == feature)
    return {
        "feature_view": view,
        "feature": feature,
        "dtype": dtype,
        "feature_services": services_using(registry, view, feature),
        "model_versions": model_versions_using(versions, view, feature),
    }
