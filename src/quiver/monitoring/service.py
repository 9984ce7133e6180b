"""The monitoring operations the CLI and the REST API call (thin layers over this module).

Each function takes the :class:`~quiver.store.FeatureStore` and passes on only what the worker
module uses (the registry, the offline engine, the online store, the monitoring settings).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quiver.definitions import did_you_mean
from quiver.errors import NotFoundError, QuiverError

if TYPE_CHECKING:
    from quiver.ml.registry import ModelVersion
    from quiver.monitoring.drift import DriftReport
    from quiver.monitoring.freshness import ViewFreshness
    from quiver.monitoring.validate import ValidationReport
    from quiver.store import FeatureStore

logger = logging.getLogger(__name__)

__all__ = [
    "catalog",
    "data_freshness",
    "drift",
    "lineage",
    "model_versions",
    "models_using_view",
    "refresh_drift",
    "statistics",
    "validate",
]


def _view_names(store: FeatureStore, view: str | None) -> list[str]:
    names = store.registry.names("feature_view")
    if view is None:
        return names
    if view not in names:
        raise NotFoundError(
            f"feature view '{view}' does not exist in project '{store.project}'"
            + did_you_mean(view, names)
        )
    return [view]


def statistics(
    store: FeatureStore, view: str | None = None, *, days: float | None = None, limit: int = 100
) -> dict[str, Any]:
    """The stored statistics of each view (or one), newest run first, over the last ``days``.

    Returns:
        ``{"project", "days", "views": {view: {"latest": {...} | None, "runs": [...]}}}``, at
        most ``limit`` runs per view, drift samples left out.
    """
    from quiver.monitoring.statistics import list_view_statistics

    names = _view_names(store, view)
    since = datetime.now(UTC) - timedelta(days=days) if days is not None else None
    runs = list_view_statistics(
        store.registry, views=names, since=since, limit=limit * max(len(names), 1)
    )
    out: dict[str, Any] = {name: {"latest": None, "runs": []} for name in names}
    for run in runs:
        entry = out[run.view]
        if len(entry["runs"]) < limit:
            entry["runs"].append(run.to_dict())
    for entry in out.values():
        entry["latest"] = entry["runs"][0] if entry["runs"] else None
    return {"project": store.project, "days": days, "views": out}


def _probe(store: FeatureStore, *, check_types: bool) -> Any:
    from quiver.offline.probe import probe_view
    from quiver.selection import ViewSelection, query_sources

    def probe(view: Any) -> Any:
        if not isinstance(view, ViewSelection):
            registry = store.registry
            source = registry.get("data_source", view.source_name)
            entities = tuple(registry.get("entity", e) for e in view.entities)
            features = () if view.aggregations else tuple(view.features)
            view = ViewSelection(view, features, source, entities, query_sources(registry, view))
        return probe_view(store.offline_engine, view, check_types=check_types)

    return probe


def data_freshness(store: FeatureStore, *, probe_source: bool = True) -> list[ViewFreshness]:
    """The freshness of every feature view; ``probe_source`` reads each source's newest event
    timestamp for the lag (a failure goes in the view's ``error``)."""
    from quiver.monitoring.freshness import view_freshness
    from quiver.registry.runs import online_store_key

    probe = _probe(store, check_types=False) if probe_source else None
    return view_freshness(
        store.registry,
        store.registry.list("feature_view"),
        probe=probe,
        online_store=online_store_key(store.config),
    )


def model_versions(store: FeatureStore) -> list[ModelVersion]:
    """Every version of every model."""
    from quiver.ml.registry import ModelRegistry

    return [v for m in ModelRegistry(store.registry).list_models() for v in m.versions]


def drift(store: FeatureStore, model: str, *, since: datetime | None = None) -> DriftReport:
    """The drift of a model version (``name``: production, else latest; or ``name:version``)."""
    from quiver.ml.registry import ModelRegistry
    from quiver.monitoring.drift import model_drift

    version = ModelRegistry(store.registry).get_version(model)
    report = model_drift(store.registry, version, store.config.monitoring, since=since)
    if since is None:  # the check the metrics serve: since the version was trained
        from quiver.monitoring.drift import save_drift_scores

        try:
            save_drift_scores(store.registry, report)
        except QuiverError:
            logger.exception("storing the drift scores of %s failed", version.model_id)
    return report


def refresh_drift(store: FeatureStore, view: str) -> int:
    """Check again, and store, the drift of each model's serving version (production, else
    latest) trained on ``view`` (after a materialization of it); nothing without models or
    without scipy. Returns how many versions were checked."""
    import importlib.util

    from quiver.ml.registry import ModelRegistry

    if importlib.util.find_spec("scipy") is None:
        return 0
    from quiver.monitoring.drift import refresh_drift as refresh
    from quiver.monitoring.lineage import model_versions_using

    serving = []
    for model in ModelRegistry(store.registry).list_models():
        version = model.production or model.latest
        if version is not None and model_versions_using([version], view):
            serving.append(version)
    if not serving:
        return 0
    return refresh(store.registry, serving, store.config.monitoring)


def validate(store: FeatureStore) -> ValidationReport:
    """``quiver validate`` (see :mod:`quiver.monitoring.validate`)."""
    from sqlalchemy.engine import make_url

    from quiver.monitoring.validate import validate as run

    url = make_url(store.config.registry_url).render_as_string(hide_password=True)
    return run(
        lambda: store.registry,
        lambda: store.online_store,
        _probe(store, check_types=True),
        registry_url=url,
    )


def lineage(store: FeatureStore, view: str, feature: str | None = None) -> dict[str, Any]:
    """Which services and model versions use a view or one of its features."""
    from quiver.monitoring.lineage import feature_lineage

    return feature_lineage(store.registry, model_versions(store), view, feature)


def models_using_view(store: FeatureStore, view: str) -> set[str]:
    """The names of the models with a version trained on a feature of ``view``."""
    from quiver.monitoring.lineage import model_versions_using

    return {m["model_name"] for m in model_versions_using(model_versions(store), view)}


def catalog(store: FeatureStore) -> str:
    """The Markdown catalogue of ``quiver docs``."""
    from quiver.monitoring.catalog import render_catalog
    from quiver.monitoring.statistics import latest_view_statistics

    fresh = {f.view: f for f in data_freshness(store, probe_source=False)}
    return render_catalog(
        store.registry,
        model_versions(store),
        freshness=fresh,
        statistics=latest_view_statistics(store.registry),
    )
