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
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from numbers import Integral
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from quiver.definitions import did_you_mean
from quiver.errors import InvalidError, NotFoundError
from quiver.online import OnlineStore, Reader, ViewRead
from quiver.online.encoding import (
    CREATED_TS,
    EVENT_TS,
    ViewLayout,
    datetime_to_us,
    us_to_datetime,
)
from quiver.types import arrow_type, is_list

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

    from quiver.definitions import FeatureView, FileSource, IcebergSource
    from quiver.registry import Registry
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
]

PRESENT = "present"
NOT_FOUND = "not_found"
EXPIRED = "expired"

REVISION_CHECK_SECONDS = 1.0
"""How often (at most) serving checks the registry for changes made by other processes."""

_INT_RANGES = {"int32": (-(1 << 31), (1 << 31) - 1), "int64": (-(1 << 63), (1 << 63) - 1)}
_INT_ONLY = frozenset({int})
_STR_ONLY = frozenset({str})


# -- the response ------------------------------------------------------------------------------


class OnlineGroup(NamedTuple):
    """The features of one view in an :class:`OnlineResponse`, which share their statuses and
    event times (the lists are shared: treat them as read-only)."""

    names: tuple[str, ...]
    """Their output names, in request order."""
    statuses: list[str]
    """``present``, ``not_found`` or ``expired`` per row."""
    event_us: list[int | None]
    """Event time of the stored row per row, in microseconds since the epoch (UTC)."""
    rows: list[tuple[Any, ...] | None]
    """The values of ``names`` per row, in that order (``None`` where not ``present``)."""


class OnlineResponse:
    """Feature values for a list of entity rows, with a status per value.

    Attributes:
        feature_names: Output names (``feature`` or ``view__feature``), in request order.
        join_keys: The join keys of the requested views, in first-use order.
        entity_columns: Join key -> the requested key values, in request order.
        values: Output name -> values (``None`` where the status is not ``present``).
        groups: The features of each view with the statuses and event times they share and
            their values row by row, in request order (what formats a response convert once
            per view; ``values`` is built from them when first read).
    """

    __slots__ = (
        "_dtypes",
        "_event_us",
        "_key_dtypes",
        "_statuses",
        "_timestamps",
        "_values",
        "entity_columns",
        "feature_names",
        "groups",
        "join_keys",
    )

    def __init__(
        self,
        feature_names: list[str],
        join_keys: list[str],
        entity_columns: dict[str, list[Any]],
        groups: list[OnlineGroup],
        dtypes: dict[str, str],
        key_dtypes: dict[str, str],
    ) -> None:
        self.feature_names = feature_names
        self.join_keys = join_keys
        self.entity_columns = entity_columns
        self.groups = groups
        self._dtypes = dtypes
        self._key_dtypes = key_dtypes
        self._values: dict[str, list[Any]] | None = None
        self._statuses: dict[str, list[str]] | None = None
        self._event_us: dict[str, list[int | None]] | None = None
        self._timestamps: dict[str, list[datetime | None]] | None = None

    @property
    def values(self) -> dict[str, list[Any]]:
        """Output name -> values (``None`` where the status is not ``present``)."""
        if self._values is None:
            out: dict[str, list[Any]] = {}
            for names, _, _, rows in self.groups:
                if len(rows) == 1:  # one entity: no transposing
                    row = rows[0]
                    for i, name in enumerate(names):
                        out[name] = [None if row is None else row[i]]
                    continue
                blank = (None,) * len(names)
                filled = [blank if row is None else row for row in rows]
                if filled:
                    for name, column in zip(names, zip(*filled, strict=True), strict=True):
                        out[name] = list(column)
                else:
                    for name in names:
                        out[name] = []
            self._values = out
        return self._values

    @property
    def statuses(self) -> dict[str, list[str]]:
        """Output name -> ``present``, ``not_found`` or ``expired`` per row (the features of
        one view share one list: treat the lists as read-only)."""
        if self._statuses is None:
            self._statuses = {name: g.statuses for g in self.groups for name in g.names}
        return self._statuses

    @property
    def event_us(self) -> dict[str, list[int | None]]:
        """Output name -> event time of the stored row in microseconds since the epoch, UTC
        (``None`` where not found; the features of one view share one list: read-only)."""
        if self._event_us is None:
            self._event_us = {name: g.event_us for g in self.groups for name in g.names}
        return self._event_us

    @property
    def event_timestamps(self) -> dict[str, list[datetime | None]]:
        """Output name -> event time of the stored row (``None`` where not found)."""
        if self._timestamps is None:
            out: dict[str, list[datetime | None]] = {}
            for names, _, raw, _ in self.groups:
                converted = [None if v is None else us_to_datetime(v) for v in raw]
                for name in names:
                    out[name] = list(converted)
            self._timestamps = out
        return self._timestamps

    def __len__(self) -> int:
        first = next(iter(self.entity_columns.values()), None)
        return len(first) if first is not None else 0

    def __repr__(self) -> str:
        return (
            f"OnlineResponse(rows={len(self)}, join_keys={self.join_keys}, "
            f"features={self.feature_names})"
        )

    def to_dict(self) -> dict[str, list[Any]]:
        """Join keys, then features: column name -> list of values."""
        return {**self.entity_columns, **self.values}

    def to_arrow(self) -> pa.Table:
        """Join keys, then features, as a typed Arrow table."""
        import pyarrow as pa

        arrays = {}
        for key in self.join_keys:
            dtype = self._key_dtypes[key]
            arrays[key] = pa.array(self.entity_columns[key], type=arrow_type(dtype))
        for name in self.feature_names:
            arrays[name] = pa.array(self.values[name], type=arrow_type(self._dtypes[name]))
        return pa.table(arrays)

    def to_pandas(self) -> pandas.DataFrame:
        """Join keys, then features, as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def to_polars(self) -> Any:
        """Join keys, then features, as a polars DataFrame."""
        from quiver.errors import require

        polars = require("polars", "polars", "OnlineResponse.to_polars()")
        return polars.from_arrow(self.to_arrow())


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


# -- entity rows -------------------------------------------------------------------------------


def _key_columns(plan: _Plan, entity_rows: Any) -> list[list[Any]]:
    """Validated physical key values, one list per join key of the plan."""
    if plan.int_key is not None:
        # The most common call, one entity with one integer join key, as a list of one dict
        # or a dict of one list: take a plain int in range as it is. Anything else (and every
        # error) goes through the general checks below.
        key, low, high = plan.int_key
        kind = type(entity_rows)
        if kind is list and len(entity_rows) == 1 and type(entity_rows[0]) is dict:
            value = entity_rows[0].get(key)
        elif kind is dict and type(column := entity_rows.get(key)) is list and len(column) == 1:
            value = column[0]
        else:
            value = None
        if type(value) is int and low <= value <= high:
            return [[value]]
    if type(entity_rows) is list:
        out = []
        for key, dtype in zip(plan.join_keys, plan.key_dtypes, strict=True):
            try:
                column = [row[key] for row in entity_rows]
            except (KeyError, TypeError, IndexError):
                raise _row_error(plan, key, entity_rows) from None
            out.append(_validate_keys(key, dtype, column))
        return out
    raw = _entity_columns(plan, entity_rows)
    return [
        _validate_keys(key, dtype, raw[key])
        for key, dtype in zip(plan.join_keys, plan.key_dtypes, strict=True)
    ]


def _row_error(plan: _Plan, key: str, rows: Sequence[Any]) -> InvalidError:
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            return InvalidError(f"entity row {i} is {type(row).__name__}, not a dict of join keys")
        if key not in row:
            return InvalidError(_missing_key(plan, key, i))
    return InvalidError(f"entity rows cannot be read for join key '{key}'")  # pragma: no cover


def _entity_columns(plan: _Plan, entity_rows: Any) -> dict[str, list[Any]]:
    """Join key -> raw values, from a list of dicts, a dict of lists, or a DataFrame/Table."""
    if entity_rows is None:
        raise InvalidError(
            f"entity_rows is missing; pass a list of dicts such as [{{'{plan.join_keys[0]}': ...}}]"
        )
    if isinstance(entity_rows, Mapping):
        return _columns_from_mapping(plan, entity_rows)
    if not isinstance(entity_rows, (list, tuple)):
        for attr, args in (("to_pydict", ()), ("to_dict", ("list",))):
            method = getattr(entity_rows, attr, None)
            if method is not None:
                try:
                    as_columns = method(*args)
                except TypeError:
                    as_columns = entity_rows.to_dict(as_series=False)  # polars
                return _columns_from_mapping(plan, as_columns)
        raise InvalidError(
            f"entity_rows must be a list of dicts, a dict of lists or a DataFrame, "
            f"not {type(entity_rows).__name__}"
        )
    columns: dict[str, list[Any]] = {}
    for key in plan.join_keys:
        try:
            columns[key] = [row[key] for row in entity_rows]
        except (KeyError, TypeError, IndexError):
            raise _row_error(plan, key, entity_rows) from None
    return columns


def _columns_from_mapping(plan: _Plan, mapping: Mapping[str, Any]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    length = None
    for key in plan.join_keys:
        if key not in mapping:
            raise InvalidError(_missing_key(plan, key, None))
        values = mapping[key]
        if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
            raise InvalidError(f"entity column '{key}' must be a list of values")
        values = list(values)
        if length is not None and len(values) != length:
            raise InvalidError("entity columns have different lengths")
        length = len(values)
        columns[key] = values
    return columns


def _missing_key(plan: _Plan, key: str, row: int | None) -> str:
    where = f"entity row {row}" if row is not None else "entity_rows"
    return (
        f"{where} has no join key '{key}' (needed by feature view '{plan.key_users[key]}'); "
        f"every row needs: {', '.join(plan.join_keys)}"
    )


def _bad_key(key: str, dtype: str, values: list[Any]) -> InvalidError:
    for i, v in enumerate(values):
        try:
            _physical_key(dtype, v)
        except (TypeError, ValueError, OverflowError) as exc:
            shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
            return InvalidError(
                f"entity row {i}: join key '{key}' must be {dtype}, got "
                f"{type(v).__name__} {shown}" + (f" ({exc})" if str(exc) else "")
            )
    return InvalidError(f"join key '{key}' has a value that is not {dtype}")  # pragma: no cover


def _physical_key(dtype: str, v: Any) -> Any:
    """One join key value as its physical form, or raise TypeError / ValueError."""
    if v is None:
        raise ValueError("null")
    if dtype in _INT_RANGES:
        if isinstance(v, bool) or not isinstance(v, Integral):
            raise TypeError("")
        low, high = _INT_RANGES[dtype]
        v = int(v)
        if not low <= v <= high:
            raise OverflowError("out of range")
        return v
    if dtype == "string":
        if not isinstance(v, str):
            raise TypeError("")
        return str(v)
    if dtype == "bool":
        if type(v).__name__ not in ("bool", "bool_"):
            raise TypeError("")
        return bool(v)
    if dtype == "timestamp":
        if isinstance(v, str):
            try:
                v = datetime.fromisoformat(v)
            except ValueError:
                raise TypeError("not an ISO 8601 timestamp") from None
        if not isinstance(v, datetime):
            raise TypeError("")
        return datetime_to_us(v)
    raise TypeError(f"unsupported join key dtype {dtype}")  # pragma: no cover


def _validate_keys(key: str, dtype: str, values: list[Any]) -> list[Any]:
    """Physical values of one join key column, or raise a clear InvalidError."""
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if len(values) == 1:
            v = values[0]
            if type(v) is int and low <= v <= high:
                return values
        elif not values or (
            set(map(type, values)) == _INT_ONLY and low <= min(values) and max(values) <= high
        ):
            return values
        try:
            return [_physical_key(dtype, v) for v in values]
        except (TypeError, ValueError, OverflowError):
            raise _bad_key(key, dtype, values) from None
    if dtype == "string" and set(map(type, values)) <= _STR_ONLY:
        return values
    try:
        return [_physical_key(dtype, v) for v in values]
    except (TypeError, ValueError, OverflowError):
        raise _bad_key(key, dtype, values) from None


# -- get_online_features -------------------------------------------------------------------------


def get_online_features(
    store: FeatureStore,
    *,
    features: Sequence[str] | None = None,
    entity_rows: Any = None,
    feature_service: str | None = None,
    full_feature_names: bool = False,
) -> OnlineResponse:
    """The latest stored values of features for each entity row, with a status per value.

    Args:
        store: The feature store.
        features: References ``view:feature`` or ``view:*``.
        entity_rows: One dict of join keys per row (or a dict of lists, or a DataFrame).
        feature_service: A feature service name (instead of ``features``).
        full_feature_names: Name outputs ``view__feature``.

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
    columns = _key_columns(plan, entity_rows)
    online = store.online_store
    found = plan.online_reader
    reader = found[1] if found is not None and found[0] is online else plan.reader(online)
    now_us = _now_us()
    response = _response(plan, columns, reader(columns) if plan.views else [], now_us)
    if plan.aggregated:
        from quiver.features.tile_store import read_groups

        for at, group in read_groups(online, plan.aggregated, columns, now_us):
            response.groups.insert(at, _new_tuple(OnlineGroup, group))
    if plan.on_demand is not None:
        return plan.on_demand.online(response, entity_rows)
    return response


def _now_us() -> int:
    """The serving clock: microseconds since the epoch (tests replace it to read "as of")."""
    return time.time_ns() // 1000


def _response(
    plan: _Plan, columns: list[list[Any]], results: list[list[Any]], now_us: int
) -> OnlineResponse:
    """Statuses, event times and values per view, from the stored rows.

    A stored row is ``(event_us, created_us, value, ...)`` and may carry extra items after the
    values (only the outputs' positions are read).
    """
    groups: list[OnlineGroup] = []
    if columns and len(columns[0]) == 1:  # the hot path: one entity
        for (_, _, outputs, _, ttl, stop), (row,) in zip(plan.views, results):  # noqa: B905
            if row is None:
                group = (outputs, [NOT_FOUND], [None], [None])
            elif ttl is not None and row[0] <= now_us - ttl:
                group = (outputs, [EXPIRED], [row[0]], [None])
            else:
                group = (outputs, [PRESENT], [row[0]], [row[2:stop]])
            # tuple.__new__ skips the NamedTuple's Python-level constructor.
            groups.append(_new_tuple(OnlineGroup, group))
    else:
        for v, (_, _, outputs, _, ttl, stop) in enumerate(plan.views):
            cutoff = None if ttl is None else now_us - ttl
            groups.append(_group(outputs, stop, results[v], cutoff))
    if plan.has_timestamp_key:
        columns = _output_keys(plan, columns)
    return OnlineResponse(
        plan.feature_names,
        plan.join_keys,
        dict(zip(plan.join_keys, columns)),  # noqa: B905 (a column per join key)
        groups,
        plan.dtypes,
        plan.key_dtype_map,
    )


def _group(outputs: tuple[str, ...], stop: int, rows: list[Any], cutoff: int | None) -> OnlineGroup:
    """One view's statuses, event times and values from its stored rows (``stop``: where the
    values end in a stored row; a row at or before ``cutoff`` is expired)."""
    if rows and None not in rows:
        events: list[Any] = [row[0] for row in rows]
        if cutoff is None or min(events) > cutoff:  # every value present
            return OnlineGroup(
                outputs, [PRESENT] * len(rows), events, [row[2:stop] for row in rows]
            )
    statuses: list[str] = []
    times: list[int | None] = []
    values: list[tuple[Any, ...] | None] = []
    for row in rows:
        if row is None:
            statuses.append(NOT_FOUND)
            times.append(None)
            values.append(None)
        elif cutoff is not None and row[0] <= cutoff:
            statuses.append(EXPIRED)
            times.append(row[0])
            values.append(None)
        else:
            statuses.append(PRESENT)
            times.append(row[0])
            values.append(row[2:stop])
    return OnlineGroup(outputs, statuses, times, values)


def _output_keys(plan: _Plan, columns: list[list[Any]]) -> list[list[Any]]:
    out = []
    for dtype, col in zip(plan.key_dtypes, columns, strict=True):
        out.append([us_to_datetime(v) for v in col] if dtype == "timestamp" else list(col))
    return out


# -- push --------------------------------------------------------------------------------------


def _push_target(store: FeatureStore, view: str) -> _PushTarget:
    cache = _cache(store)
    target = cache.targets.get(view)
    if target is not None:
        return target
    registry = store.registry
    if not isinstance(view, str):
        raise InvalidError(f"push needs a feature view name, got {type(view).__name__}")
    generation = cache.generation
    fv = registry.find("feature_view", view)
    if fv is None:
        raise NotFoundError(
            f"feature view '{view}' does not exist in project '{store.project}'"
            + did_you_mean(view, registry.names("feature_view"))
        )
    entities = [registry.get("entity", e) for e in fv.entities]
    source = registry.get("data_source", fv.source_name)
    target = _PushTarget(fv, ViewLayout.from_view(store.project, fv, entities), source)
    if cache.generation == generation:
        cache.targets[view] = target
    return target


def push(
    store: FeatureStore,
    view: str,
    rows: Any,
    *,
    to: Literal["online", "offline", "both"] = "online",
) -> int:
    """Validate fresh rows of ``view`` and write them to the online and/or offline store.

    Args:
        store: The feature store.
        view: The feature view's name.
        rows: A pandas or polars DataFrame, an Arrow table or batch, a list of dicts, or a
            dict of lists. Columns: every join key, every feature of the view, and optionally
            the event timestamp (the source's ``timestamp_field`` or ``event_timestamp``;
            default: now) and the created timestamp (default: now). A view with SQL
            transformations takes the columns they read instead of the computed features.
        to: ``online`` (default), ``offline`` (append to the view's source) or ``both``.

    Returns:
        The number of rows pushed.

    Raises:
        NotFoundError: the view does not exist.
        InvalidError: ``to`` is not one of the three, the view is not online, or the rows do
            not match the view's schema (nothing is written then).
    """
    if to not in ("online", "offline", "both"):
        raise InvalidError(f"push: to={to!r} must be 'online', 'offline' or 'both'")
    target = _push_target(store, view)
    if target.view.source_query is not None:
        raise InvalidError(
            f"feature view '{view}' reads a source query, which pushed rows would bypass; push "
            f"them to its source '{target.source.name}' (through a view of it, to='offline') "
            "and materialize"
        )
    if isinstance(rows, (list, tuple)) and not rows:
        return 0
    if to != "offline" and not target.view.online:
        raise InvalidError(
            f"feature view '{view}' has online=False, so it has no online data; set "
            "online=True and apply, or push with to='offline'"
        )
    source_rows = None
    if any(f.transformation is not None for f in target.view.features):
        from quiver.features.transformations import push_tables

        table, source_rows = push_tables(target, rows, store.config)
    else:
        table = _push_table(target, rows)
    if table.num_rows == 0:
        return 0
    if to in ("offline", "both"):
        from quiver.offline.sources import append_to_source

        if source_rows is None:
            source_rows = _source_table(target, table)
        append_to_source(store.config, target.source, source_rows)
    if to in ("online", "both") and target.view.aggregations:  # events into their tiles
        from quiver.features.tile_store import push_tiles, tile_layout

        entities = [store.registry.get("entity", e) for e in target.view.entities]
        layout = tile_layout(store.project, target.view, entities)
        created = target.source.created_timestamp_field is not None
        push_tiles(store.online_store, layout, target.view, table, created=created)
    elif to in ("online", "both"):
        store.online_store.write(target.layout, table)
    return table.num_rows


def _as_arrow(rows: Any, view: str) -> pa.Table:
    import pyarrow as pa

    try:
        if isinstance(rows, pa.Table):
            return rows
        if isinstance(rows, pa.RecordBatch):
            return pa.Table.from_batches([rows])
        if isinstance(rows, Mapping):
            return pa.table({k: _py_array(v, k, view) for k, v in rows.items()})
        if isinstance(rows, (list, tuple)):
            names: list[str] = []
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    raise InvalidError(
                        f"push to feature view '{view}': row {i} is {type(row).__name__}, "
                        "not a dict"
                    )
                for k in row:
                    if k not in names:
                        names.append(k)
            for i, row in enumerate(rows):
                if len(row) != len(names):
                    missing = [k for k in names if k not in row]
                    raise InvalidError(
                        f"push to feature view '{view}': row {i} lacks {', '.join(missing)}"
                    )
            return pa.table({k: _py_array([r[k] for r in rows], k, view) for k in names})
        module = type(rows).__module__.split(".")[0]
        if module == "pandas":
            return pa.Table.from_pandas(rows, preserve_index=False)
        if module == "polars":
            return rows.to_arrow()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidError(f"push to feature view '{view}': cannot read the rows: {exc}") from exc
    raise InvalidError(
        f"push to feature view '{view}': rows must be a pandas or polars DataFrame, an Arrow "
        f"table, a list of dicts or a dict of lists, not {type(rows).__name__}"
    )


def _py_array(values: Any, column: str, view: str) -> pa.Array:
    import pyarrow as pa

    try:
        return pa.array(list(values), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidError(
            f"push to feature view '{view}': column '{column}' mixes value types ({exc})"
        ) from None


def _compatible(src: pa.DataType, dtype: str) -> bool:
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_null(src):
        return True
    if t.is_dictionary(src):
        src = src.value_type
    if is_list(dtype):
        return (t.is_list(src) or t.is_large_list(src)) and _compatible(src.value_type, dtype[5:-1])
    if dtype in ("int32", "int64"):
        return t.is_integer(src)
    if dtype in ("float32", "float64"):
        return t.is_integer(src) or t.is_floating(src) or t.is_decimal(src)
    if dtype == "string":
        return t.is_string(src) or t.is_large_string(src)
    if dtype == "bool":
        return t.is_boolean(src)
    if dtype == "timestamp":
        return t.is_timestamp(src) or t.is_date(src) or t.is_string(src) or src == pa.string()
    return False  # pragma: no cover


def _coerce(arr: Any, dtype: str, column: str, view: str) -> Any:
    import pyarrow as pa

    if not _compatible(arr.type, dtype):
        raise InvalidError(
            f"push to feature view '{view}': column '{column}' is {arr.type}, but it must be "
            f"{dtype}"
        )
    target = arrow_type(dtype)
    try:
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        # Timestamps may lose sub-microsecond digits (pandas writes nanoseconds).
        timestamps = dtype == "timestamp" or dtype == "list<timestamp>"
        return arr.cast(target, safe=not timestamps)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise InvalidError(
            f"push to feature view '{view}': column '{column}' cannot be read as {dtype}: {exc}"
        ) from None


def _push_table(target: _PushTarget, rows: Any) -> pa.Table:
    """The rows as an Arrow table of join keys, features, event and created timestamps."""
    import pyarrow as pa

    layout, source, view = target.layout, target.source, target.view.name
    table = _as_arrow(rows, view)
    names = table.schema.names
    if len(set(names)) != len(names):
        raise InvalidError(f"push to feature view '{view}': a column name appears twice")
    mapping = source.field_mapping
    ts, created = source.timestamp_field, source.created_timestamp_field
    event_names = list(dict.fromkeys([mapping.get(ts, ts), ts, EVENT_TS]))
    created_names = list(
        dict.fromkeys([c for c in (mapping.get(created or "", created), created, CREATED_TS) if c])
    )
    allowed = {*layout.join_keys, *layout.feature_names, *event_names, *created_names}
    unknown = [c for c in names if c not in allowed]
    if unknown:
        raise InvalidError(
            f"push to feature view '{view}': unknown column(s) {', '.join(unknown)}; the view "
            f"takes {', '.join([*layout.join_keys, *layout.feature_names])} and "
            f"'{event_names[0]}'"
        )
    missing = [c for c in (*layout.join_keys, *layout.feature_names) if c not in names]
    if missing:
        raise InvalidError(
            f"push to feature view '{view}': missing column(s) {', '.join(missing)}; rows need "
            "every join key and every feature of the view (use None for a missing value)"
        )
    n = table.num_rows
    out: dict[str, Any] = {}
    for key, dtype in zip(layout.join_keys, layout.key_dtypes, strict=True):
        col = _coerce(table.column(key), dtype, key, view)
        if col.null_count:
            raise InvalidError(f"push to feature view '{view}': join key '{key}' has nulls")
        out[key] = col
    for name, dtype in zip(layout.feature_names, layout.feature_dtypes, strict=True):
        out[name] = _coerce(table.column(name), dtype, name, view)
    now = datetime.now(UTC)
    out[EVENT_TS] = _timestamp_column(table, event_names, n, now, view, "event")
    out[CREATED_TS] = _timestamp_column(table, created_names, n, now, view, "created")
    return pa.table(out)


def _timestamp_column(
    table: pa.Table, candidates: list[str], n: int, now: datetime, view: str, what: str
) -> Any:
    import pyarrow as pa

    found = [c for c in candidates if c in table.schema.names]
    if len(found) > 1:
        raise InvalidError(
            f"push to feature view '{view}': give the {what} timestamp once "
            f"(found {', '.join(found)})"
        )
    if not found:
        return pa.array([now] * n, type=arrow_type("timestamp"))
    col = _coerce(table.column(found[0]), "timestamp", found[0], view)
    if col.null_count:
        raise InvalidError(f"push to feature view '{view}': column '{found[0]}' has nulls")
    return col


def _source_table(target: _PushTarget, table: pa.Table) -> pa.Table:
    """The pushed rows for the offline append: keys and features under their own names, the
    timestamps under the names the source's ``field_mapping`` gives them."""
    import pyarrow as pa

    source = target.source
    columns: dict[str, Any] = {
        name: table.column(name)
        for name in (*target.layout.join_keys, *target.layout.feature_names)
    }
    ts = source.timestamp_field
    columns[source.field_mapping.get(ts, ts)] = table.column(EVENT_TS)
    created = source.created_timestamp_field
    if created:
        columns[source.field_mapping.get(created, created)] = table.column(CREATED_TS)
    return pa.table(columns)
