"""The training/serving skew check: online values against point-in-time offline values.

For a sample of a view's entity keys, :func:`validate_consistency` compares what the online
store holds with what a point-in-time join (the training path,
:meth:`~quiver.store.FeatureStore.get_historical_features`) returns as of the view's
materialization watermark. Materialization covers ``[start, watermark)``, so "as of the
watermark" means the last microsecond before it; an online value whose event time is at least
the view's TTL before that instant counts as expired (null), exactly as the join treats it.

Keys are sampled uniformly (reservoir sampling, seeded) from the keys that have offline rows
before the watermark. A key whose online row is at or after the watermark (pushed since) is
not compared; it is counted as ``newer_online``. Neither is a key the store has already
reclaimed (Redis key expiry, see ``retention_us``) although its value was fresh at the
watermark: it is counted as ``reclaimed`` (this happens when the watermark lags far behind).
NaN and null compare equal (online stores keep NaN as null).

A view with aggregations is compared the same way: its tiles, combined as serving combines them
at the instant just before the watermark, against the aggregates the point-in-time join gives
at that instant (materialization writes the events before the watermark, so both cover the
same events). A key whose tiles hold an event at or after the watermark counts as
``newer_online``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from quiver.definitions import did_you_mean
from quiver.errors import InvalidError, NotFoundError

if TYPE_CHECKING:
    from quiver.store import FeatureStore

__all__ = ["ConsistencyReport", "Mismatch", "validate_consistency"]


@dataclass(frozen=True)
class Mismatch:
    """One feature value that differs between the online store and the offline store."""

    key: dict[str, Any]
    feature: str
    online: Any
    offline: Any
    online_status: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "key": {k: _jsonable(v) for k, v in self.key.items()},
            "feature": self.feature,
            "online": _jsonable(self.online),
            "offline": _jsonable(self.offline),
            "online_status": self.online_status,
        }


@dataclass
class ConsistencyReport:
    """The result of :func:`validate_consistency`.

    Attributes:
        view: The feature view.
        watermark: The view's materialization watermark.
        as_of: The instant the offline values are taken at (just before the watermark).
        keys_total: Keys with offline rows before the watermark.
        keys_sampled: Keys checked.
        keys_mismatched: Sampled keys with at least one differing value.
        values_compared: Feature values compared.
        mismatch_count: Values that differ.
        newer_online: Sampled keys skipped because their online row is newer than the watermark.
        reclaimed: Sampled keys skipped because the store already dropped their (stale) row.
        by_feature: Feature -> number of differing values.
        mismatches: The first differing values (up to ``max_reported``).
    """

    view: str
    watermark: datetime
    as_of: datetime
    keys_total: int = 0
    keys_sampled: int = 0
    keys_mismatched: int = 0
    values_compared: int = 0
    mismatch_count: int = 0
    newer_online: int = 0
    reclaimed: int = 0
    by_feature: dict[str, int] = field(default_factory=dict)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every compared value matched."""
        return self.mismatch_count == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "view": self.view,
            "watermark": self.watermark.isoformat(),
            "as_of": self.as_of.isoformat(),
            "keys_total": self.keys_total,
            "keys_sampled": self.keys_sampled,
            "keys_mismatched": self.keys_mismatched,
            "values_compared": self.values_compared,
            "mismatch_count": self.mismatch_count,
            "newer_online": self.newer_online,
            "reclaimed": self.reclaimed,
            "by_feature": dict(self.by_feature),
            "mismatches": [m.to_dict() for m in self.mismatches],
            "ok": self.ok,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _offline_values(column: Any, dtype: str | None) -> list[Any]:
    """Offline values as serving gives them: maps as dicts, ``json`` text parsed."""
    if dtype == "json":
        return [None if v is None else json.loads(v) for v in column.to_pylist()]
    return list(column.to_pylist(maps_as_pydicts="lossy"))


def _normalize(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def validate_consistency(
    store: FeatureStore,
    view: str,
    *,
    sample: int | None = 1000,
    seed: int = 0,
    max_reported: int = 100,
) -> ConsistencyReport:
    """Compare online values with point-in-time offline values as of the watermark.

    Args:
        store: The feature store.
        view: The feature view to check.
        sample: How many keys to check (``None`` or 0: every key).
        seed: Seed of the key sample.
        max_reported: How many differing values to keep in the report.

    Raises:
        NotFoundError: the view does not exist.
        InvalidError: the view is not online, has not been materialized (under its current
            schema), or ``sample`` is negative.
    """
    import pyarrow as pa

    from quiver.online import ReadRequest
    from quiver.online.encoding import ViewLayout, datetime_to_us, timestamps_us
    from quiver.registry.runs import get_watermark, online_store_key
    from quiver.selection import ViewSelection, query_sources
    from quiver.types import arrow_type

    if sample is not None and sample < 0:
        raise InvalidError(f"sample must be a positive number of keys, got {sample}")
    registry = store.registry
    fv = registry.find("feature_view", view) if isinstance(view, str) else None
    if fv is None:
        raise NotFoundError(
            f"feature view '{view}' does not exist in project '{store.project}'"
            + did_you_mean(str(view), registry.names("feature_view"))
        )
    if not fv.online:
        raise InvalidError(f"feature view '{view}' has online=False; there is nothing to compare")
    entities = tuple(registry.get("entity", e) for e in fv.entities)
    sel = ViewSelection(
        fv,
        tuple(fv.features),
        registry.get("data_source", fv.source_name),
        entities,
        query_sources(registry, fv),
    )
    layout: ViewLayout
    if fv.aggregations:  # tiles (quiver.features.tile_store)
        from quiver.features.tile_store import tile_layout

        layout = tile_layout(store.project, fv, entities)
    else:
        layout = ViewLayout.from_selection(store.project, sel)
    watermark = get_watermark(registry, view, layout.version, online_store_key(store.config))
    if watermark is None:
        raise InvalidError(
            f"feature view '{view}' has not been materialized under its current schema; run "
            "`quiver materialize-incremental now` first"
        )
    as_of = watermark - timedelta(microseconds=1)
    report = ConsistencyReport(view=view, watermark=watermark, as_of=as_of)

    keys = sel.join_keys
    rng = random.Random(seed)
    chosen: list[tuple[Any, ...]] = []  # (*key values, latest event time in microseconds)
    limit = sample or None
    seen = 0
    for batch in store.offline_engine.pull_latest(sel, None, watermark):
        columns = [batch.column(k).to_pylist() for k in keys]
        columns.append(timestamps_us(batch.column("event_timestamp")).to_pylist())
        for row in zip(*columns, strict=True):
            seen += 1
            if limit is None or len(chosen) < limit:
                chosen.append(row)
            else:
                j = rng.randrange(seen)
                if j < limit:
                    chosen[j] = row
    report.keys_total = seen
    report.keys_sampled = len(chosen)
    if not chosen:
        return report

    key_types = sel.key_types
    entity = pa.table(
        {
            **{
                k: pa.array([r[i] for r in chosen], type=arrow_type(key_types[k]))
                for i, k in enumerate(keys)
            },
            "event_timestamp": pa.array([as_of] * len(chosen), type=arrow_type("timestamp")),
        }
    )
    offline = store.get_historical_features(
        entity, [f"{view}:*"], full_feature_names=True
    ).to_arrow()
    names = tuple(fv.feature_names)  # the aggregated features, for a view with aggregations
    dtypes = {f.name: f.dtype for f in fv.features}
    offline_cols = [_offline_values(offline.column(f"{view}__{n}"), dtypes.get(n)) for n in names]
    key_columns = [
        (
            timestamps_us(entity.column(k)) if key_types[k] == "timestamp" else entity.column(k)
        ).to_pylist()
        for k in keys
    ]
    if fv.aggregations:  # the tiles combined as serving does at as_of
        from quiver.features.tile_store import stored_rows_at

        at_us = datetime_to_us(as_of)
        rows: list[Any] = stored_rows_at(store.online_store, layout, fv, key_columns, at_us)
    else:
        request = ReadRequest(layout, tuple(range(len(names))), key_columns)
        (rows,) = store.online_store.read([request])

    watermark_us = datetime_to_us(watermark)
    cutoff = datetime_to_us(as_of) - layout.ttl_us if layout.ttl_us is not None else None
    retention = store.online_store.retention_us(layout)
    now_us = datetime_to_us(datetime.now(UTC))
    for i, row in enumerate(rows):
        if row is None and retention is not None and chosen[i][-1] + retention <= now_us:
            report.reclaimed += 1
            continue
        if row is None:
            status, online_values = "not_found", [None] * len(names)
        elif row[0] >= watermark_us:
            report.newer_online += 1
            continue
        elif cutoff is not None and row[0] <= cutoff:
            status, online_values = "expired", [None] * len(names)
        else:
            status, online_values = "present", list(row[2 : 2 + len(names)])
        bad = False
        for j, name in enumerate(names):
            report.values_compared += 1
            on, off = _normalize(online_values[j]), _normalize(offline_cols[j][i])
            if on == off:
                continue
            bad = True
            report.mismatch_count += 1
            report.by_feature[name] = report.by_feature.get(name, 0) + 1
            if len(report.mismatches) < max_reported:
                report.mismatches.append(
                    Mismatch(
                        key=dict(zip(keys, chosen[i][:-1], strict=True)),
                        feature=name,
                        online=online_values[j],
                        offline=offline_cols[j][i],
                        online_status=status,
                    )
                )
        report.keys_mismatched += bad
    return report
