"""``quiver docs``: a Markdown catalogue of the project's entities, feature views and features.

Per feature: dtype, description, tags, validation rules (``validation_rules``, ``allowed_values``
and ``default_value`` when the field declares them), a statistics summary of the last
materialization (null rate, mean, min, max, distinct), and which feature services and model
versions use it. Per view: owner, tags, entities, source, TTL and freshness.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quiver.ml.registry import ModelVersion
    from quiver.monitoring.freshness import ViewFreshness
    from quiver.monitoring.statistics import ViewStatistics
    from quiver.registry import Registry

__all__ = ["render_catalog"]

_RULE_FIELDS = ("validation_rules", "allowed_values", "default_value")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _tags(tags: Mapping[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted((tags or {}).items()))


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _rules(field: Any) -> str:
    parts = []
    for name in _RULE_FIELDS:
        value = getattr(field, name, None)
        if value in (None, [], {}, ()):
            continue
        if hasattr(value, "model_dump"):
            value = value.model_dump(exclude_none=True)
        elif isinstance(value, list):
            value = [
                v.model_dump(exclude_none=True) if hasattr(v, "model_dump") else v for v in value
            ]
        parts.append(f"{name}: {value}")
    return "; ".join(parts)


def _summary(stats: Mapping[str, Any] | None) -> str:
    if not stats:
        return ""
    parts = [f"null {100 * (stats.get('null_rate') or 0):.1f}%"]
    if stats.get("mean") is not None:
        parts.append(f"mean {_number(stats['mean'])}")
    if stats.get("min") is not None:
        parts.append(f"min {_number(stats['min'])}")
    if stats.get("max") is not None:
        parts.append(f"max {_number(stats['max'])}")
    if stats.get("distinct") is not None:
        parts.append(f"~{stats['distinct']} distinct")
    top = stats.get("top_values") or []
    if top:
        parts.append("top " + ", ".join(str(t["value"]) for t in top[:3]))
    return ", ".join(parts)


def render_catalog(
    registry: Registry,
    versions: Sequence[ModelVersion],
    *,
    freshness: Mapping[str, ViewFreshness] | None = None,
    statistics: Mapping[str, ViewStatistics] | None = None,
) -> str:
    """The catalogue as Markdown text.

    Args:
        registry: The registry (entities, views, services).
        versions: Every model version (for "used by").
        freshness: Per view, its freshness (optional).
        statistics: Per view, its latest statistics (optional).
    """
    from quiver.monitoring.lineage import model_versions_using, services_using

    freshness = freshness or {}
    statistics = statistics or {}
    out = [f"# Feature catalogue: project `{registry.project}`", ""]
    entities = registry.list("entity")
    views = registry.list("feature_view") + registry.list("on_demand_feature_view")
    services = registry.list("feature_service")
    out += [
        f"{len(entities)} entities, {len(views)} feature views, "
        f"{sum(len(v.features) for v in views)} features, {len(services)} feature services, "
        f"{len(versions)} model versions.",
        "",
        "## Entities",
        "",
        "| entity | join keys | type | description | owner | tags |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for e in entities:
        out.append(
            f"| `{e.name}` | {', '.join(e.join_keys)} | {e.value_type} | {_cell(e.description)} "
            f"| {_cell(getattr(e, 'owner', ''))} | {_cell(_tags(e.tags))} |"
        )
    out += ["", "## Feature views", ""]
    for view in views:
        out += [f"### `{view.name}`", ""]
        if view.description:
            out += [view.description, ""]
        facts = [
            ("kind", view.kind.replace("_", " ")),
            ("owner", getattr(view, "owner", "")),
            ("tags", _tags(view.tags)),
            ("entities", ", ".join(getattr(view, "entities", []) or [])),
            ("source", getattr(view, "source_name", None) or ", ".join(map(str, view.sources))),
            ("ttl", str(view.ttl) if getattr(view, "ttl", None) else ""),
            ("online", str(getattr(view, "online", ""))),
        ]
        fresh = freshness.get(view.name)
        if fresh is not None:
            facts.append(("watermark", fresh.watermark.isoformat() if fresh.watermark else "never"))
            if fresh.newest_event_timestamp is not None:
                facts.append(("newest value", fresh.newest_event_timestamp.isoformat()))
            if fresh.age_seconds is not None:
                facts.append(("age", f"{fresh.age_seconds / 3600:.1f} h"))
        stats = statistics.get(view.name)
        if stats is not None:
            facts.append(("statistics", f"{stats.rows} rows, {stats.computed_at.isoformat()}"))
        out += [f"- {k}: {_cell(v)}" for k, v in facts if v not in ("", None)]
        out += [
            "",
            "| feature | type | description | tags | validation | statistics | used by |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for f in view.features:
            used = [f"service `{s['name']}`" for s in services_using(registry, view.name, f.name)]
            used += [
                f"model `{m['model_id']}`"
                for m in model_versions_using(versions, view.name, f.name)
            ]
            summary = _summary(stats.features.get(f.name) if stats is not None else None)
            out.append(
                f"| `{f.name}` | {f.dtype} | {_cell(f.description)} | {_cell(_tags(f.tags))} "
                f"| {_cell(_rules(f))} | {_cell(summary)} | {', '.join(used)} |"
            )
        out.append("")
    out += ["## Feature services", ""]
    if services:
        out += ["| service | features | owner | description |", "| --- | --- | --- | --- |"]
        for s in services:
            out.append(
                f"| `{s.name}` | {_cell(', '.join(s.features))} | {_cell(s.owner)} "
                f"| {_cell(s.description)} |"
            )
    else:
        out.append("None.")
    out.append("")
    return "\n".join(out)
