"""Online serving and push: the paths between callers and the online store.

:func:`get_online_features` is the hot path. It resolves the requested features once per
(features, service, naming) and caches the result per :class:`~quiver.store.FeatureStore`;
the cache is dropped when this process writes to the registry and, for changes made by other
processes, when the project's registry revision moves (checked at most every
:data:`REVISION_CHECK_SECONDS` by the call that finds the last check that old, or by
:func:`check_registry`, which the REST server runs in the background). A call then
validates the entity rows, encodes the keys, reads every view from the store in one round trip
and builds an :class:`OnlineResponse`.

:func:`push` validates fresh rows against a view's schema and writes them to the online store
(newer wins, as with materialization) and/or appends them to the view's offline source.

The parts live in private modules: ``_response`` (:class:`OnlineResponse`), ``_plans`` (the
resolved plans and their cache), ``_keys`` (entity rows to key columns), ``_assemble`` (stored
rows to response groups) and ``_push``; this module keeps the entry points and the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from quiver.monitoring.cache import _ATTR as _RESULT_CACHE
from quiver.monitoring.cache import ServingCache, serving_cache
from quiver.monitoring.usage import ATTR as _USAGE
from quiver.online._assemble import _response
from quiver.online._keys import _key_columns
from quiver.online._plans import (
    REVISION_CHECK_SECONDS,
    _new_tuple,
    _Plan,
    _plan,
    check_registry,
)
from quiver.online._plans import _Cache as _Cache  # re-exported: tests reach it here
from quiver.online._plans import _cache as _cache
from quiver.online._push import push, push_many
from quiver.online._response import EXPIRED, NOT_FOUND, PRESENT, OnlineGroup, OnlineResponse

if TYPE_CHECKING:
    from quiver.store import FeatureStore

__all__ = [
    "EXPIRED",
    "NOT_FOUND",
    "PRESENT",
    "REVISION_CHECK_SECONDS",
    "OnlineGroup",
    "OnlineResponse",
    "check_registry",
    "get_online_features",
    "push",
    "push_many",
]

# -- get_online_features -------------------------------------------------------------------------


def get_online_features(
    store: FeatureStore,
    *,
    features: Sequence[str] | None = None,
    entity_rows: Any = None,
    feature_service: str | None = None,
    full_feature_names: bool = False,
    use_defaults: bool = False,
    serve_stale: bool = False,
) -> OnlineResponse:
    """The latest stored values of features for each entity row, with a status per value.

    Args:
        store: The feature store.
        features: References ``view:feature`` or ``view:*``.
        entity_rows: One dict of join keys per row (or a dict of lists, or a DataFrame).
        feature_service: A feature service name (instead of ``features``).
        full_feature_names: Name outputs ``view__feature``.
        use_defaults: Serve a feature's ``default_value`` (when it declares one) instead of
            ``None`` where its value is missing or expired; the status still says which.
        serve_stale: Serve a value past its view's TTL as ``present``, with its value (Feast's
            answer; the Feast routes ask for it under ``feast_compat.serve_stale``).

    Returns:
        An :class:`OnlineResponse`, rows in request order. A value is ``present``,
        ``not_found`` (no row for the key) or ``expired`` (its event time is at least the
        view's TTL before now); values that are not ``present`` are ``None``.

    Raises:
        InvalidError: bad references, an entity row missing a join key, or a key value of
            the wrong type.
        NotFoundError: an unknown view, feature or service.
        BackendError: the online store failed.
    """
    plan = _plan(store, features, feature_service, full_feature_names)
    if serve_stale:
        plan = plan.stale()
    columns = _key_columns(plan, entity_rows)
    usage = store.__dict__.get(_USAGE)
    if usage is not None:  # served with usage counts on (quiver.monitoring.usage)
        usage.record_online(
            store, plan, features, feature_service, len(columns[0]) if columns else 0
        )
    online = store.online_store
    found = plan.online_reader
    reader = found[1] if found is not None and found[0] is online else plan.reader(online)
    cache = store.__dict__.get(_RESULT_CACHE, False)
    if cache is False:
        cache = serving_cache(store)
    now_us: int
    if cache is None or not plan.views or plan.aggregated:
        now_us = _now_us()
        response = _response(plan, columns, reader(columns) if plan.views else [], now_us)
        hit = False
    else:
        response, now_us = _through_cache(cache, plan, columns, reader)
        hit = response.cache_hit
    if plan.aggregated:
        from quiver.features.tile_store import read_groups

        for at, group in read_groups(online, plan.aggregated, columns, now_us):
            response.groups.insert(at, _new_tuple(OnlineGroup, group))
    if use_defaults:
        response = _with_defaults(store, plan, response)
    if plan.on_demand is not None:
        response = plan.on_demand.online(response, entity_rows)
        response.cache_hit = hit
    return response


def _through_cache(
    cache: ServingCache, plan: _Plan, columns: list[list[Any]], reader: Any
) -> tuple[OnlineResponse, int]:
    """The response from the serving cache (:mod:`quiver.monitoring.cache`), or from the store
    (then cached), and the serving clock it was built at.

    An entry is ``[stored rows, (response, valid until), entry's end (the cache's clock, taken
    before the read)]``: the stored rows are what the cache
    keeps; the response built from them is reused until the first of its present values would
    expire (its statuses are the same until then), then built again with the clock.
    """
    key = tuple(map(tuple, columns))
    slot, token = cache.lookup(plan, key)
    now_us = _now_us()
    if slot is None:
        slot = [reader(columns), None, cache.clock() + cache.ttl]
        cache.put(plan, key, token, slot)
        response = _response(plan, columns, slot[0], now_us)
        slot[1] = (response, _valid_until(plan, slot[0], now_us))
        response.valid_until = slot[1][1]
        response.cache_expires = slot[2]
        return response, now_us
    built = slot[1]
    if built is None or now_us >= built[1]:
        fresh = _response(plan, columns, slot[0], now_us)
        built = slot[1] = (fresh, _valid_until(plan, slot[0], now_us))
    first = built[0]
    response = OnlineResponse(  # a response of its own (the caller may keep it), same groups
        first.feature_names,
        first.join_keys,
        first.entity_columns,
        first.groups,
        first._dtypes,
        first._key_dtypes,
    )
    response.cache_hit = True
    response.valid_until = built[1]
    response.cache_expires = slot[2] if len(slot) > 2 else None
    return response, now_us


def _valid_until(plan: _Plan, results: list[list[Any]], now_us: int) -> int | float:
    """Until when (serving clock) the statuses computed at ``now_us`` stay the same: the first
    expiry of a value present now (a value without a TTL, missing or expired stays so)."""
    until: int | float = math.inf
    for view, rows in zip(plan.views, results):  # noqa: B905 (a result per view)
        ttl = view.ttl_us
        if ttl is None:
            continue
        for row in rows:
            if row is not None:
                end = row[0] + ttl
                if now_us < end < until:
                    until = end
    return until


def _with_defaults(store: FeatureStore, plan: Any, response: OnlineResponse) -> OnlineResponse:
    """The response with each feature's ``default_value`` where its value is not ``present``
    (a new response: the groups of a cached one are shared)."""
    defaults: dict[str, Any] = {}
    for view in plan.views:
        fields = {f.name: f for f in store.registry.get("feature_view", view.layout.view).features}
        for pos, out in zip(view.features, view.outputs, strict=True):
            field = fields.get(view.layout.feature_names[pos])
            if field is not None and field.default_value is not None:
                defaults[out] = field.default_value
    if not defaults:
        return response
    groups = list(response.groups)
    for i, group in enumerate(groups):
        if not any(n in defaults for n in group.names) or all(r is not None for r in group.rows):
            continue
        blank = tuple(defaults.get(n) for n in group.names)
        rows: list[tuple[Any, ...] | None] = [blank if row is None else row for row in group.rows]
        groups[i] = group._replace(rows=rows)
    filled = OnlineResponse(
        response.feature_names,
        response.join_keys,
        response.entity_columns,
        groups,
        response._dtypes,
        response._key_dtypes,
    )
    filled.cache_hit = response.cache_hit
    filled.valid_until = response.valid_until
    filled.cache_expires = response.cache_expires
    return filled


def _now_us() -> int:
    """The serving clock: microseconds since the epoch (tests replace it to read "as of")."""
    return time.time_ns() // 1000
