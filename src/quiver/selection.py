"""Resolving feature references into views, features, sources and join keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quiver.definitions import (
    Entity,
    FeatureView,
    Field,
    FileSource,
    IcebergSource,
    did_you_mean,
    parse_feature_ref,
)
from quiver.errors import InvalidError, NotFoundError

if TYPE_CHECKING:
    from quiver.registry import Registry

__all__ = ["ViewSelection", "output_names", "query_sources", "resolve_features"]


@dataclass(frozen=True)
class ViewSelection:
    """The features selected from one feature view, with what is needed to read them."""

    view: FeatureView
    features: tuple[Field, ...]
    source: FileSource | IcebergSource
    entities: tuple[Entity, ...]
    query_sources: tuple[FileSource | IcebergSource, ...] = ()
    """The other data sources the view's ``source_query`` reads (joins)."""

    @property
    def join_keys(self) -> list[str]:
        """The join keys of the view's entities, in order."""
        return [k for e in self.entities for k in e.join_keys]

    @property
    def key_types(self) -> dict[str, str]:
        """The dtype of each join key."""
        return {k: e.value_type for e in self.entities for k in e.join_keys}

    @property
    def feature_names(self) -> list[str]:
        """The selected feature names."""
        return [f.name for f in self.features]


def resolve_features(
    registry: Registry,
    features: Sequence[str] | None = None,
    feature_service: str | None = None,
) -> list[ViewSelection]:
    """Resolve references (``view:feature``, ``view:*``) or a feature service to selections.

    Exactly one of ``features`` and ``feature_service`` must be given.

    Raises:
        InvalidError: both or neither given, or a malformed reference.
        NotFoundError: an unknown view, feature or service (with the nearest name suggested).
    """
    if (features is None) == (feature_service is None):
        raise InvalidError("give either features=[...] or feature_service=..., not both or neither")
    if feature_service is not None:
        service = registry.get("feature_service", feature_service)
        refs = list(service.features)
    else:
        if isinstance(features, str):
            features = [features]
        refs = list(features or [])
        if not refs:
            raise InvalidError("features=[...] is empty; name at least one 'view:feature'")
    order: list[str] = []
    wanted: dict[str, list[str]] = {}
    views: dict[str, FeatureView] = {}
    for ref in refs:
        vname, fname = parse_feature_ref(ref)
        if vname not in views:
            found = registry.find("feature_view", vname)
            if found is None:
                raise NotFoundError(
                    f"feature view '{vname}' (in reference '{ref}') does not exist"
                    + did_you_mean(vname, registry.names("feature_view"))
                )
            views[vname] = found
            order.append(vname)
            wanted[vname] = []
        view = views[vname]
        names = view.feature_names if fname == "*" else [view.feature(fname).name]
        for n in names:
            if n not in wanted[vname]:
                wanted[vname].append(n)
    result = []
    for vname in order:
        view = views[vname]
        source = registry.get("data_source", view.source_name)
        entities = tuple(registry.get("entity", e) for e in view.entities)
        fields = tuple(view.feature(n) for n in wanted[vname])
        result.append(ViewSelection(view, fields, source, entities, query_sources(registry, view)))
    return result


def query_sources(registry: Registry, view: FeatureView) -> tuple[FileSource | IcebergSource, ...]:
    """The data sources other than its own that the view's ``source_query`` reads."""
    if view.source_query is None:
        return ()
    from quiver.features.sql import parse_query

    tables = parse_query(view.source_query, None, f"source query of feature view '{view.name}'")
    return tuple(
        registry.get("data_source", name) for name in tables.tables if name != view.source_name
    )


def output_names(selections: Sequence[ViewSelection], full_feature_names: bool) -> list[str]:
    """The output column names, checking for clashes when short names are used.

    Raises:
        InvalidError: two views share a feature name and ``full_feature_names`` is false.
    """
    names: list[str] = []
    owner: dict[str, str] = {}
    for sel in selections:
        for f in sel.feature_names:
            name = f"{sel.view.name}__{f}" if full_feature_names else f
            if name in owner:
                raise InvalidError(
                    f"feature '{f}' is selected from both '{owner[name]}' and '{sel.view.name}'; "
                    "pass full_feature_names=True to get 'view__feature' column names"
                )
            owner[name] = sel.view.name
            names.append(name)
    return names
