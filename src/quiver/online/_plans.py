"""Serving's resolved plans: what a request reads (views, keys, outputs), built once per
(features, service, naming) and cached per :class:`~quiver.store.FeatureStore` until the
registry changes (see :mod:`quiver.online.serving`)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from quiver.errors import InvalidError
from quiver.online import OnlineStore, Reader, ViewRead
from quiver.online.encoding import ViewLayout

if TYPE_CHECKING:
    from quiver.definitions import FeatureView, FileSource, IcebergSource
    from quiver.quality import ValidationPlan
    from quiver.registry import Registry
    from quiver.store import FeatureStore

REVISION_CHECK_SECONDS = 1.0
"""How often (at most) serving checks the registry for changes made by other processes."""

_INT_RANGES = {"int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}


# -- resolved plans, cached per store ----------------------------------------------------------


class _ViewPlan(NamedTuple):
    """One view of a plan (a tuple: the hot path unpacks it)."""

    layout: ViewLayout
    features: tuple[int, ...]
    """Positions of the requested features in ``layout.feature_names``."""
    outputs: tuple[str, ...]
    """The output names of those features."""
    key_pos: tuple[int, ...] | None
    """Positions of the view's join keys among the plan's (``None``: all of them, in order)."""
    ttl_us: int | None
    stop: int
    """Where the values end in a stored row: ``(event_us, created_us, *values)``."""


@dataclass
class _Plan:
    join_keys: list[str]
    key_dtypes: list[str]
    views: list[_ViewPlan]
    feature_names: list[str]
    dtypes: dict[str, str]
    key_users: dict[str, str]
    int_key: tuple[str, int, int] | None
    """``(name, min, max)`` when the only join key is an integer (the common case)."""
    online_reader: tuple[OnlineStore, Reader] | None = field(default=None, compare=False)
    """The online store and its prepared read of the plan's views (see :meth:`reader`)."""
    aggregated: list[Any] = field(default_factory=list)
    """:class:`~quiver.features.tile_store.AggregatedRead` per view with aggregations (read
    from their tiles, not among ``views``)."""
    on_demand: Any = None
    """:class:`~quiver.features.computed.ComputedRefs` when on-demand views are requested:
    the plan then reads their inputs (under full names) and they compute the response."""

    def reader(self, online: OnlineStore) -> Reader:
        """``online``'s prepared read of the plan's views (kept for the plan's life)."""
        found = self.online_reader
        if found is None or found[0] is not online:
            views = [ViewRead(v.layout, v.features, v.key_pos) for v in self.views]
            found = self.online_reader = (online, online.reader(views))
        return found[1]

    def stale(self) -> _Plan:
        """This plan with its views' TTLs left out: an expired value is served as ``present``
        (Feast's answer, ``feast_compat.serve_stale``). Built once and kept with the plan."""
        found: _Plan | None = self.__dict__.get("_stale")
        if found is None:
            if all(v.ttl_us is None for v in self.views):
                found = self
            else:
                found = replace(self, views=[v._replace(ttl_us=None) for v in self.views])
            self.__dict__["_stale"] = found
        return found

    @cached_property
    def key_dtype_map(self) -> dict[str, str]:
        return dict(zip(self.join_keys, self.key_dtypes, strict=True))

    @cached_property
    def has_timestamp_key(self) -> bool:
        return "timestamp" in self.key_dtypes


@dataclass(frozen=True)
class _PushTarget:
    view: FeatureView
    layout: ViewLayout
    source: FileSource | IcebergSource
    validation: ValidationPlan | None = None


class _Cache:
    """Resolved plans of one FeatureStore, invalidated when the registry changes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.plans: dict[Any, _Plan] = {}
        self.targets: dict[str, _PushTarget] = {}
        self.generation = 0
        self.revision = registry.revision()
        self.checked = time.monotonic()
        ref = weakref.ref(self)

        def _on_commit(_conn: Any) -> None:
            cache = ref()
            if cache is not None:
                cache.clear()

        from sqlalchemy import event

        event.listen(registry.engine, "commit", _on_commit)

    def clear(self) -> None:
        self.generation += 1
        self.plans = {}
        self.targets = {}

    def fresh(self) -> _Cache:
        """This cache, after checking the registry if the last check is old enough."""
        if time.monotonic() - self.checked >= REVISION_CHECK_SECONDS:
            self.check()
        return self

    def check(self) -> None:
        """Drop the plans if the registry's revision moved (another process wrote to it)."""
        self.checked = time.monotonic()
        try:
            revision = self.registry.revision()
        except Exception:  # the registry is unreachable: keep serving the cached plans
            return
        if revision != self.revision:
            self.revision = revision
            self.clear()


_CACHE_ATTR = "_quiver_serving_cache"
_new_tuple = tuple.__new__
_caches_lock = threading.Lock()


def _cache(store: FeatureStore) -> _Cache:
    """The store's plan cache, after a registry check if the last one is old enough."""
    return _store_cache(store).fresh()


def _store_cache(store: FeatureStore) -> _Cache:
    """The store's plan cache, kept on the store object itself (a new registry: a new cache)."""
    registry = store.registry
    cache: _Cache | None = store.__dict__.get(_CACHE_ATTR)
    if cache is None or cache.registry is not registry:
        with _caches_lock:
            cache = store.__dict__.get(_CACHE_ATTR)
            if cache is None or cache.registry is not registry:
                cache = store.__dict__[_CACHE_ATTR] = _Cache(registry)
    return cache


def check_registry(store: FeatureStore) -> None:
    """Look for registry changes made by other processes now, and drop the resolved plans
    they make stale.

    Serving does this itself at most every :data:`REVISION_CHECK_SECONDS`, on the call that
    finds the last check that old. A server calls it from a background task more often than
    that, so that no request waits for the registry (a round trip on PostgreSQL).

    Raises:
        BackendError: the registry cannot be opened (an unreachable registry of an open store
            is not an error: the cached plans stay).
    """
    _store_cache(store).check()


def _build_plan(
    store: FeatureStore,
    features: Sequence[str] | None,
    feature_service: str | None,
    full_feature_names: bool,
) -> _Plan:
    from quiver.features.computed import split_references
    from quiver.selection import output_names, resolve_features

    computed = split_references(store.registry, features, feature_service, full_feature_names)
    if computed is not None:
        plan = _build_plan(store, list(computed.base_refs), None, True)
        plan.on_demand = computed
        return plan
    selections = resolve_features(store.registry, features, feature_service)
    names = output_names(selections, full_feature_names)
    join_keys: list[str] = []
    key_dtypes: list[str] = []
    key_users: dict[str, str] = {}
    views: list[tuple[ViewLayout, tuple[int, ...], tuple[str, ...], tuple[int, ...]]] = []
    aggregated: list[Any] = []
    dtypes: dict[str, str] = {}
    pos = 0
    for sel in selections:
        layout = ViewLayout.from_selection(store.project, sel)
        key_pos = []
        for key, dtype in zip(layout.join_keys, layout.key_dtypes, strict=True):
            if key in join_keys:
                i = join_keys.index(key)
                if key_dtypes[i] != dtype:
                    raise InvalidError(
                        f"join key '{key}' is {key_dtypes[i]} in feature view "
                        f"'{key_users[key]}' but {dtype} in '{sel.view.name}'; request them "
                        "in separate calls"
                    )
            else:
                join_keys.append(key)
                key_dtypes.append(dtype)
                key_users[key] = sel.view.name
                i = len(join_keys) - 1
            key_pos.append(i)
        outputs = tuple(names[pos : pos + len(sel.features)])
        pos += len(sel.features)
        for out, spec in zip(outputs, sel.features, strict=True):
            dtypes[out] = spec.dtype
        if sel.view.aggregations:  # read from tiles (quiver.features.tile_store)
            from quiver.features.tile_store import aggregated_read

            at = len(views) + len(aggregated)
            aggregated.append(aggregated_read(store, sel, at, outputs, tuple(key_pos)))
            continue
        views.append((layout, layout.indices(sel.feature_names), outputs, tuple(key_pos)))
    clash = sorted(set(names) & set(join_keys))
    if clash:
        raise InvalidError(
            f"feature '{clash[0]}' has the same name as a join key; pass "
            "full_feature_names=True to get 'view__feature' column names"
        )
    every_key = tuple(range(len(join_keys)))
    view_plans = [
        _ViewPlan(
            layout,
            feats,
            outputs,
            None if key_pos == every_key else key_pos,
            layout.ttl_us,
            2 + len(outputs),
        )
        for layout, feats, outputs, key_pos in views
    ]
    int_key = None
    if len(join_keys) == 1 and key_dtypes[0] in _INT_RANGES:
        low, high = _INT_RANGES[key_dtypes[0]]
        int_key = (join_keys[0], low, high)
    every = tuple(range(len(join_keys)))
    aggregated = [a if a.key_pos != every else a._replace_keys() for a in aggregated]
    plan = _Plan(join_keys, key_dtypes, view_plans, names, dtypes, key_users, int_key)
    plan.aggregated = aggregated
    return plan


def _plan(
    store: FeatureStore,
    features: Sequence[str] | None,
    feature_service: str | None,
    full_feature_names: bool,
) -> _Plan:
    cache: _Cache | None = store.__dict__.get(_CACHE_ATTR)
    if (
        cache is None
        or cache.registry is not store.registry
        or time.monotonic() - cache.checked >= REVISION_CHECK_SECONDS
    ):
        cache = _cache(store)
    if isinstance(features, str):
        features = [features]
    key = (
        tuple(features) if features is not None else None,
        feature_service,
        bool(full_feature_names),
    )
    try:
        plan = cache.plans.get(key)
    except TypeError:
        raise InvalidError("features must be a list of 'view:feature' strings") from None
    if plan is None:
        generation = cache.generation
        plan = _build_plan(store, features, feature_service, full_feature_names)
        if cache.generation == generation:  # no registry write meanwhile: the plan is current
            cache.plans[key] = plan
    return plan
