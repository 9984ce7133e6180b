"""The specification's feature sets and features, over feature views.

Decisions (``docs/architecture.md``, REST API):

- A **feature set is a feature view**: the same registry object, so every change is a new
  version in the view's history. Its **id is the view's name** (stable: a view cannot be
  renamed, only deleted and created again). Every feature view is a feature set.
- What a view has no field for is kept in tags under ``quiver.`` (hidden from the set's
  ``tags``): ``source_type``, ``offline_enabled`` (``false`` only) and a composite feature's
  ``source_features``. ``materialization_schedule``/``schedule_timezone`` are the view's own
  fields (the scheduler runs them), ``online_enabled`` its ``online``.
- A **feature** is one field of the view; its id is its reference ``set:feature``. A feature
  with ``transformation`` is a SQL transformation; with ``window_size`` a windowed aggregation
  (``transformation`` names the function: ``SUM(amount)``, ``COUNT(*)``, ``AVG(x)``); with
  ``source_features`` a composite feature, which is a SQL transformation over those features
  (plain features of the same set, i.e. source columns: the same value offline and online).
  A view's aggregations replace its plain features (see ``Windowed aggregations``), so a set
  holds either plain and transformed features or windowed ones.

Writes go through the facade's plan/apply (the same checks as ``quiver apply``); the REST
routers are thin layers over these functions.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pydantic import ValidationError

from quiver.definitions import FeatureView, Field, invalid_from_pydantic, validate_name
from quiver.errors import ConflictError, InvalidError, NotFoundError
from quiver.server.schemas_spec import (
    MAX_SET_FEATURES,
    FeatureIn,
    FeatureOut,
    FeatureSetIn,
    FeatureSetOut,
)

__all__ = [
    "add_feature",
    "create_feature_set",
    "feature_out",
    "feature_set_out",
    "remove_feature",
    "resolve_feature_sets",
]

TAG_PREFIX = "quiver."
_SOURCE_TYPE = "quiver.source_type"
_OFFLINE = "quiver.offline_enabled"
_SOURCE_FEATURES = "quiver.source_features"

QUALITY_KEYS = ("validation_rules", "default_value", "allowed_values")
"""Keys of the specification's feature body that a windowed feature cannot take (refused by
name): data quality rules apply to a view's plain and computed features (quiver.quality)."""

_AGGREGATE = re.compile(
    r"^\s*(?P<func>[A-Za-z_]+)\s*\(\s*(?P<distinct>DISTINCT\s+)?(?P<col>\*|[A-Za-z_][A-Za-z0-9_]*)"
    r"\s*\)\s*$",
    re.IGNORECASE,
)
_FUNCTIONS = {
    "count": "count",
    "sum": "sum",
    "avg": "mean",
    "mean": "mean",
    "min": "min",
    "max": "max",
    "stddev": "stddev",
    "stddev_samp": "stddev",
    "last": "last",
}


# -- feature sets -----------------------------------------------------------------------------


def create_feature_set(store: Any, body: FeatureSetIn) -> FeatureView:
    """The feature view of a new feature set (not applied yet).

    Raises:
        InvalidError: a bad name, or no source.
        ConflictError: a feature view (or on-demand view) of that name exists.
    """
    name = validate_name(body.name, "feature set name")
    for kind in ("feature_view", "on_demand_feature_view"):
        if store.registry.find_record(kind, name) is not None:
            raise ConflictError(
                f"feature set '{name}' already exists; add features with POST /api/v1/features "
                f"or delete it first (DELETE /api/v1/feature-sets/{name})",
                details={"kind": "feature_view", "name": name},
            )
    source: Any = body.source
    if source is None:
        if store.registry.find_record("data_source", name) is None:
            raise InvalidError(
                f"feature set '{name}' needs the source it reads: give 'source' (a registered "
                "data source's name, or an inline file or Iceberg source), or register a data "
                f"source named '{name}' first"
            )
        source = name
    elif not isinstance(source, str):
        source = source.model_dump(by_alias=True)
        if source.get("name") is None:
            source["name"] = name
        if source.get("type") == "file" and source.get("format") is None:
            source.pop("format", None)
    tags = {k: v for k, v in body.tags.items() if not k.startswith(TAG_PREFIX)}
    tags[_SOURCE_TYPE] = body.source_type
    if not body.offline_enabled:
        tags[_OFFLINE] = "false"
    return FeatureView(
        name=name,
        entities=body.entities,
        features=[],
        source=source,
        ttl=body.ttl_seconds,
        online=body.online_enabled,
        materialization_schedule=body.materialization_schedule,
        schedule_timezone=body.schedule_timezone or "UTC",
        description=body.description,
        owner=body.owner,
        tags=tags,
    )


def feature_set_out(record: Any) -> FeatureSetOut:
    """The API model of a feature view's registry record."""
    view: FeatureView = record.obj
    tags = view.tags
    ttl = view.ttl.total_seconds() if view.ttl is not None else None
    return FeatureSetOut(
        id=view.name,
        name=view.name,
        description=view.description,
        owner=view.owner,
        entities=list(view.entities),
        source=view.source_name,
        source_type=tags.get(_SOURCE_TYPE, "batch"),
        offline_enabled=tags.get(_OFFLINE) != "false",
        online_enabled=view.online,
        materialization_schedule=view.materialization_schedule,
        schedule_timezone=view.schedule_timezone,
        ttl_seconds=ttl,
        tags={k: v for k, v in tags.items() if not k.startswith(TAG_PREFIX)},
        features=[feature_out(view, f.name) for f in view.output_fields],
        version=record.version,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def offline_enabled(view: FeatureView) -> bool:
    """Whether the set may be read offline (``offline_enabled``)."""
    return view.tags.get(_OFFLINE) != "false"


# -- features ---------------------------------------------------------------------------------


def feature_out(view: FeatureView, name: str) -> FeatureOut:
    """The API model of feature ``name`` of ``view``."""
    field = view.feature(name)
    window = function = None
    if view.aggregations:
        from quiver.features.aggregations import format_duration

        agg = view.aggregation(name)
        window = format_duration(agg.time_window)
        function = agg.function
    sources = field.tags.get(_SOURCE_FEATURES)
    return FeatureOut(
        id=f"{view.name}:{field.name}",
        name=field.name,
        feature_set_id=view.name,
        description=field.description,
        data_type=field.dtype,
        transformation=field.transformation,
        window_size=window,
        aggregation=function,
        source_features=sources.split(",") if sources else None,
    )


def add_feature(store: Any, body: FeatureIn) -> FeatureView:
    """The feature set's view with the feature added (not applied yet).

    Raises:
        InvalidError: a key Quiver cannot honour yet, a bad name, type, transformation,
            window or source feature.
        NotFoundError: no such feature set.
        ConflictError: the set has a feature of that name, or mixes windowed and plain
            features.
    """
    given = [k for k in QUALITY_KEYS if _given(getattr(body, k))]
    if given and body.window_size is not None:
        raise InvalidError(
            f"feature '{body.name}': {', '.join(given)} cannot be given to a windowed feature "
            "(validation rules and defaults apply to plain and computed features); leave "
            + ("them" if len(given) > 1 else "it")
            + " out",
            details={"unsupported": given},
        )
    name = validate_name(body.name, "feature name")
    view: FeatureView = store.get_feature_view(validate_name(body.feature_set_id, "feature set"))
    if name in view.feature_names:
        raise ConflictError(
            f"feature set '{view.name}' already has a feature '{name}'; delete it first "
            f"(DELETE /api/v1/features/{view.name}:{name})",
            details={"kind": "feature", "name": f"{view.name}:{name}"},
        )
    if len(view.output_fields) >= MAX_SET_FEATURES:
        raise InvalidError(f"feature set '{view.name}' has {MAX_SET_FEATURES} features already")
    from quiver.types import normalize_dtype

    dtype = normalize_dtype(body.data_type)
    tags = dict(body.tags)
    if body.window_size is not None:
        return _add_window(store, view, body, name, dtype)
    if view.aggregations:
        raise ConflictError(
            f"feature set '{view.name}' holds windowed aggregations, which replace a view's "
            f"plain features; put '{name}' in a set of its own",
            details={"kind": "feature_view", "name": view.name},
        )
    transformation = body.transformation
    if body.source_features is not None:
        transformation = _composite(view, name, body.source_features, transformation)
        tags[_SOURCE_FEATURES] = ",".join(body.source_features)
    if transformation is None and view.source_query is None:
        _check_column(store, view, name)
    rules = body.validation_rules
    field = Field(
        name=name,
        dtype=dtype,
        description=body.description,
        tags=tags,
        transformation=transformation,
        validation_rules=rules.model_dump() if rules is not None else None,
        default_value=body.default_value,
        allowed_values=body.allowed_values,
    )
    return _rebuilt(view, features=[*view.features, field])


def _given(value: Any) -> bool:
    if value is None:
        return False
    if hasattr(value, "model_dump"):
        return any(v is not None for v in value.model_dump().values())
    return True


def _composite(view: FeatureView, name: str, sources: list[str], transformation: str | None) -> str:
    """The SQL transformation of a composite feature over ``sources`` (plain features)."""
    from quiver.features.sql import parse_expression

    what = f"composite feature '{name}'"
    if not sources:
        raise InvalidError(f"{what}: source_features is empty")
    if transformation is None:
        raise InvalidError(
            f"{what}: give the 'transformation' that combines {', '.join(sources)} "
            "(a SQL expression, e.g. a / NULLIF(b, 0))"
        )
    fields = {f.name: f for f in view.features}
    for source in sources:
        field = fields.get(source)
        if field is None:
            raise InvalidError(
                f"{what}: feature set '{view.name}' has no feature '{source}'",
                details={"feature_set_id": view.name, "feature": source},
            )
        if field.transformation is not None:
            raise InvalidError(
                f"{what}: source feature '{source}' is computed itself; a composite feature "
                "reads plain features of its set (or use an on-demand feature view, "
                "/api/v1/on-demand-feature-views)"
            )
    parsed = parse_expression(transformation, f"transformation of {what}")
    extra = [c for c in parsed.columns if c not in sources]
    if extra:
        raise InvalidError(
            f"{what}: the transformation reads {', '.join(extra)}, which "
            f"{'is' if len(extra) == 1 else 'are'} not in source_features"
        )
    return transformation


def _add_window(
    store: Any, view: FeatureView, body: FeatureIn, name: str, dtype: str
) -> FeatureView:
    """``view`` with the windowed aggregation of ``body`` added."""
    from quiver.definitions import Aggregation

    what = f"windowed feature '{name}'"
    if body.source_features is not None:
        raise InvalidError(f"{what}: give window_size or source_features, not both")
    if view.features and not view.aggregations:
        raise ConflictError(
            f"feature set '{view.name}' holds plain features; a windowed aggregation replaces "
            f"a view's plain features, so put '{name}' in a set of its own",
            details={"kind": "feature_view", "name": view.name},
        )
    match = _AGGREGATE.match(body.transformation or "")
    if match is None:
        raise InvalidError(
            f"{what}: 'transformation' must name the aggregate, e.g. SUM(amount), COUNT(*), "
            f"AVG(amount), COUNT(DISTINCT product_id) (functions: {', '.join(_FUNCTIONS)})"
        )
    func = _FUNCTIONS.get(match["func"].lower())
    column = None if match["col"] == "*" else match["col"]
    if match["distinct"]:
        func = "count_distinct" if func == "count" else None
    if func is None:
        raise InvalidError(
            f"{what}: unknown aggregate {match['func']!r}; use one of {', '.join(_FUNCTIONS)}"
        )
    if column is None and func != "count":
        raise InvalidError(f"{what}: {match['func']}(*) needs a column")
    try:
        aggregation = Aggregation(
            column=column, function=func, time_window=body.window_size, name=name
        )
    except ValidationError as exc:
        raise invalid_from_pydantic("windowed feature", name, exc) from None
    features = list(view.features)
    if column is not None and column not in {f.name for f in features}:
        features.append(Field(name=column, dtype=_column_dtype(store, view, column, dtype)))
    try:
        made = aggregation.dtype(next((f.dtype for f in features if f.name == column), None))
    except ValueError as exc:
        raise InvalidError(f"{what}: {exc}") from None
    if made != dtype:
        raise InvalidError(
            f"{what}: {func} over {column or 'events'} gives {made}, not {dtype}; "
            f"declare data_type {made!r}"
        )
    return _rebuilt(view, features=features, aggregations=[*view.aggregations, aggregation])


def _rebuilt(
    view: FeatureView,
    *,
    features: list[Field] | None = None,
    aggregations: list[Any] | None = None,
) -> FeatureView:
    """``view`` with new features or aggregations, validated again as a whole."""
    spec = view.to_spec()
    if features is not None:
        spec["features"] = [f.model_dump(mode="json") for f in features]
    if aggregations is not None:
        spec.pop("aggregation_interval", None)
        spec.pop("aggregations", None)
        if aggregations:
            spec["aggregations"] = [a.to_spec() for a in aggregations]
            if view.aggregation_interval is not None:
                from quiver.features.aggregations import format_duration

                spec["aggregation_interval"] = format_duration(view.aggregation_interval)
    return FeatureView.from_spec(spec)


def _check_column(store: Any, view: FeatureView, name: str) -> None:
    """Refuse a plain feature that is not a column of the set's source (when it is readable:
    a source with no files yet is checked when first read)."""
    from quiver.features.transformations import _source_types

    source = store.registry.find("data_source", view.source_name)
    columns = _source_types(store.config, source) if source is not None else {}
    if columns and name not in columns:
        raise InvalidError(
            f"feature '{name}': source '{view.source_name}' of feature set '{view.name}' has no "
            f"column '{name}' (it has {', '.join(sorted(columns))}); a plain feature is a source "
            "column: give a transformation to compute it",
            details={"feature": name, "source": view.source_name},
        )


def _column_dtype(store: Any, view: FeatureView, column: str, fallback: str) -> str:
    """The dtype of a source column (``fallback`` when the source cannot be read yet)."""
    from quiver.features.transformations import _source_types
    from quiver.types import dtype_from_arrow

    source = store.registry.find("data_source", view.source_name)
    arrow = _source_types(store.config, source).get(column) if source is not None else None
    if arrow is None:
        return fallback
    try:
        return dtype_from_arrow(arrow)
    except InvalidError:
        return fallback


def remove_feature(store: Any, feature_id: str) -> tuple[FeatureView, str]:
    """The feature set's view without feature ``set:feature`` (not applied yet), and the name.

    Raises:
        InvalidError: the id is not ``set:feature``.
        NotFoundError: no such set or feature.
    """
    view, name = split_feature_id(store, feature_id)
    if view.aggregations:
        aggs = [a for a in view.aggregations if a.name != name]
        used = {a.column for a in aggs}
        features = [f for f in view.features if f.name in used]
        return _rebuilt(view, features=features, aggregations=aggs), name
    return _rebuilt(view, features=[f for f in view.features if f.name != name]), name


def split_feature_id(store: Any, feature_id: str) -> tuple[FeatureView, str]:
    """The view and feature name of a feature id ``set:feature`` (both checked)."""
    set_id, sep, name = feature_id.partition(":")
    if not sep:
        raise InvalidError(f"feature id {feature_id!r} is not 'feature_set_id:feature'")
    view: FeatureView = store.get_feature_view(validate_name(set_id, "feature set"))
    view.feature(validate_name(name, "feature name"))
    return view, name


# -- serving ----------------------------------------------------------------------------------


class ResolvedSets:
    """Feature sets and the references of the features a request names in them.

    Attributes:
        views: The sets' views, in request order.
        refs: ``set:feature`` per requested feature, in request order.
        names: The bare feature names, in the same order.
    """

    def __init__(self, views: list[FeatureView], refs: list[str], names: list[str]) -> None:
        self.views = views
        self.refs = refs
        self.names = names


def resolve_feature_sets(
    store: Any, feature_sets: list[str], features: list[str] | None
) -> ResolvedSets:
    """Resolve bare feature names within the named sets (all their features when ``features``
    is ``None``).

    Raises:
        InvalidError: no sets, a set named twice, a name found in two sets (naming both), a
            feature in none of them, or nothing to read.
        NotFoundError: an unknown set.
    """
    if not feature_sets:
        raise InvalidError("feature_sets is empty: name at least one feature set")
    if len(set(feature_sets)) != len(feature_sets):
        raise InvalidError("feature_sets names a set twice")
    views: list[FeatureView] = []
    owner: dict[str, str] = {}
    for set_id in feature_sets:
        if not isinstance(set_id, str) or validate_name_or_none(set_id) is None:
            raise NotFoundError(f"feature set {set_id!r} does not exist")
        view: FeatureView = store.get_feature_view(set_id)
        views.append(view)
        for fname in view.feature_names:
            if fname in owner and features is None:
                raise InvalidError(
                    f"feature '{fname}' is in feature sets '{owner[fname]}' and '{view.name}'; "
                    "name the features to read in 'features' (set:feature for this one)",
                    details={"feature": fname, "feature_sets": [owner[fname], view.name]},
                )
            owner.setdefault(fname, view.name)
    if features is not None and len(features) > MAX_SET_FEATURES * len(feature_sets):
        raise InvalidError(
            f"'features' names {len(features)} features, more than the sets can hold "
            f"({MAX_SET_FEATURES} each)"
        )
    wanted = features if features is not None else list(owner)
    held = [(v.name, set(v.feature_names)) for v in views]
    if not wanted:
        raise InvalidError(
            f"feature sets {', '.join(feature_sets)} have no features yet; add some with "
            "POST /api/v1/features"
        )
    refs: list[str] = []
    names: list[str] = []
    for fname in wanted:
        if ":" in fname:  # an explicit set:feature
            set_id, _, bare = fname.partition(":")
            if set_id not in feature_sets:
                raise InvalidError(
                    f"feature '{fname}' is not in the requested feature sets "
                    f"({', '.join(feature_sets)})"
                )
            store_view = views[feature_sets.index(set_id)]
            store_view.feature(bare)
            refs.append(fname)
            names.append(bare)
            continue
        found = [vname for vname, fnames in held if fname in fnames]
        if len(found) > 1:
            raise InvalidError(
                f"feature '{fname}' is in feature sets '{found[0]}' and '{found[1]}'; name it "
                f"as '{found[0]}:{fname}' or '{found[1]}:{fname}'",
                details={"feature": fname, "feature_sets": found},
            )
        if not found:
            raise InvalidError(
                f"no feature '{fname}' in feature sets {', '.join(feature_sets)}",
                details={"feature": fname, "feature_sets": list(feature_sets)},
            )
        refs.append(f"{found[0]}:{fname}")
        names.append(fname)
    if len(set(names)) != len(names):
        dup = next(n for n, count in Counter(names).items() if count > 1)
        raise InvalidError(f"feature '{dup}' is named twice; the answer keys features by name")
    return ResolvedSets(views, refs, names)


def validate_name_or_none(value: str) -> str | None:
    """``value`` if it is a plain identifier, else ``None``."""
    try:
        return validate_name(value)
    except InvalidError:
        return None


def entity_columns(
    store: Any, views: list[FeatureView], given: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The request's entity columns keyed by join key (an entity's name stands for its single
    join key), and the join keys in request order (they make the entity id).

    Raises:
        InvalidError: an unknown column, an entity with several join keys given by name, or
            a key given twice.
    """
    entities: dict[str, Any] = {}
    for view in views:
        for ename in view.entities:
            if ename not in entities:
                entities[ename] = store.get_entity(ename)
    keys = {k for e in entities.values() for k in e.join_keys}
    out: dict[str, Any] = {}
    order: list[str] = []
    for column, values in given.items():
        if column in keys:
            key = column
        elif column in entities:
            joins = entities[column].join_keys
            if len(joins) != 1:
                raise InvalidError(
                    f"entity '{column}' has join keys {', '.join(joins)}; send each of them"
                )
            key = joins[0]
        else:
            known = sorted({*entities, *keys})
            raise InvalidError(
                f"'{column}' is neither an entity nor a join key of the requested feature sets "
                f"(they take {', '.join(known)})",
                details={"column": column, "entities": known},
            )
        if key in out:
            raise InvalidError(f"join key '{key}' is given twice (as '{column}' and by its name)")
        out[key] = values
        order.append(key)
    return out, order


def entity_id(values: list[Any]) -> str:
    """The text id of one entity row (its key values joined with ``:``)."""
    return ":".join(_text(v) for v in values)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
