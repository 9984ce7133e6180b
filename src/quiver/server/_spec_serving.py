"""The specification's serving shape: requests naming ``feature_sets``.

``POST /api/v1/serving/online`` and ``/api/v1/serving/historical`` answer in this shape when the
request has ``feature_sets``: bare feature names are resolved within the named sets
(:func:`~quiver.server.feature_sets.resolve_feature_sets`), entity columns may be keyed by
entity name, and the features come back keyed by entity id with ``metadata.latency_ms`` and
``metadata.cache_hit``. The lookups are the same calls as the ``results`` shape makes (the online
serving core through :func:`~quiver.server.routers.serving.call_online`, the point-in-time join
through the facade): only the request's names and the answer's shape differ.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from quiver.errors import InvalidError, PayloadTooLargeError
from quiver.server._convert import check_columns, inline_table, table_rows
from quiver.server.feature_sets import (
    entity_columns,
    entity_id,
    offline_enabled,
    resolve_feature_sets,
)

__all__ = ["spec_historical", "spec_online"]


async def spec_online(
    store: Any,
    limit: int,
    req: Any,
    check: Callable[[list[str]], None],
    call: Callable[..., Any],
    start_ns: int,
) -> bytes:
    """The JSON body of an online answer in the specification's shape.

    Args:
        store: The (unscoped) store: permissions are checked by ``check``.
        limit: The most entity rows (``server.max_inline_rows``).
        req: The request's fields (``feature_sets``, ``features``, ``entities``,
            ``feature_service``, ``full_feature_names``).
        check: Checks ``read_online`` on the resolved references.
        call: :func:`~quiver.server.routers.serving.call_online`.
        start_ns: When the request started (``time.perf_counter_ns``).
    """
    from pydantic_core import to_json

    if req.feature_service is not None:
        raise InvalidError("give feature_sets or feature_service, not both")
    if req.full_feature_names:
        raise InvalidError(
            "full_feature_names is not used with feature_sets: features are keyed by bare "
            "name (an ambiguous name is refused)"
        )
    n = check_columns(req.entities, limit)
    resolved = resolve_feature_sets(store, list(req.feature_sets), req.features)
    columns, order = entity_columns(store, resolved.views, req.entities)
    check(resolved.refs)
    result = await call(
        store,
        features=resolved.refs,
        entity_rows=columns,
        feature_service=None,
        full_feature_names=False,
        use_defaults=bool(getattr(req, "use_defaults", False)),
    )
    values = result.values
    keyed = [columns[k] for k in order]
    features: dict[str, dict[str, Any]] = {}
    for i in range(n):
        features[entity_id([c[i] for c in keyed])] = {
            name: values[name][i] for name in resolved.names
        }
    content = {
        "features": features,
        "metadata": {
            "latency_ms": round((time.perf_counter_ns() - start_ns) / 1e6, 3),
            "cache_hit": result.cache_hit,
            "feature_sets": list(req.feature_sets),
        },
    }
    return to_json(content, inf_nan_mode="null", fallback=str)


def spec_historical(store: Any, body: Any, limit: int, start: float) -> dict[str, Any]:
    """The historical answer in the specification's shape (inline; see the module)."""
    if body.feature_service is not None:
        raise InvalidError("give feature_sets or feature_service, not both")
    if body.full_feature_names:
        raise InvalidError("full_feature_names is not used with feature_sets")
    if body.entity_source is not None or body.entity_path is not None:
        raise InvalidError(
            "with feature_sets the entity table is given inline as entity_df; for a source or a "
            "file, name the features as set:feature without feature_sets"
        )
    if body.output != "json" or body.output_path is not None:
        raise InvalidError("with feature_sets the answer is inline JSON (output='json')")
    if (body.entity_df is None) == (body.entity_rows is None):
        raise InvalidError("give the entity table as entity_df (or entity_rows), once")
    table_in = body.entity_df if body.entity_df is not None else body.entity_rows
    if len(table_in.data) > limit:  # bounded before any registry read
        inline_table(table_in.columns, table_in.data, limit, body.timestamp_column)
    resolved = resolve_feature_sets(store, list(body.feature_sets), body.features)
    closed = [v.name for v in resolved.views if not offline_enabled(v)]
    if closed:
        raise InvalidError(
            f"feature set '{closed[0]}' has offline_enabled=false: it is not read offline",
            details={"feature_sets": closed},
        )
    key_columns = _key_like(store, resolved.views, table_in.columns, body.timestamp_column)
    _, join_keys = entity_columns(store, resolved.views, dict.fromkeys(key_columns))
    names = dict(zip(key_columns, join_keys, strict=True))
    columns = [names.get(c, c) for c in table_in.columns]
    entity_df = inline_table(columns, table_in.data, limit, body.timestamp_column)
    job = store.get_historical_features(
        entity_df, features=resolved.refs, timestamp_column=body.timestamp_column
    )
    table = job.to_arrow()
    if table.num_rows > limit:
        raise PayloadTooLargeError(
            f"the result has {table.num_rows} rows, more than the inline limit of {limit} "
            "(server.max_inline_rows)",
            details={"rows": table.num_rows, "limit": limit},
        )
    id_columns = [names[c] for c in table_in.columns if c in names]
    out_names = table.column_names
    at = [out_names.index(c) for c in id_columns]
    rest = [(i, c) for i, c in enumerate(out_names) if c not in id_columns]
    features: dict[str, list[dict[str, Any]]] = {}
    for row in table_rows(table):
        key = entity_id([row[i] for i in at])
        features.setdefault(key, []).append({c: row[i] for i, c in rest})
    return {
        "features": features,
        "row_count": table.num_rows,
        "metadata": {
            "latency_ms": round((time.perf_counter() - start) * 1000, 3),
            "cache_hit": False,
            "feature_sets": list(body.feature_sets),
        },
    }


def _key_like(store: Any, views: list[Any], columns: list[str], timestamp: str) -> list[str]:
    """The columns of an entity table that are entity names or join keys of ``views``."""
    known: set[str] = set()
    for view in views:
        for ename in view.entities:
            known.add(ename)
            known.update(store.get_entity(ename).join_keys)
    return [c for c in columns if c in known and c != timestamp]
