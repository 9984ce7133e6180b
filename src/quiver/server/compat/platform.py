"""The ``/feast`` registry routes of the Feast-based ML platform Quiver replaces.

A thin adapter over the registry: teams keep their scripts and Postman collections. Bodies and
answers are the platform's documented ones (``tests/fixtures/feast_platform``).

- ``entities`` are join key names: an entity with exactly that join key is used, or one is
  created (named after the key, its type read from the source table).
- ``source.catalog`` / ``schema`` / ``table_name`` name a table as
  :mod:`quiver.server.compat._tables` resolves it (defaults ``feast_compat.default_catalog`` /
  ``default_schema``: ``iceberg.gold``): an Iceberg table of a configured catalog, or else a
  Parquet dataset at ``<data_dir>/<schema>/<table_name>``; the view's source is registered as
  ``<view>_source``.
- Posting an existing view or service again updates it (plan/apply rules: a breaking change
  needs ``?allow_breaking=true``).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

from quiver.definitions import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    IcebergSource,
    validate_name,
)
from quiver.errors import InvalidError, NotFoundError
from quiver.server.compat import _tables as tables
from quiver.server.deps import StoreDep
from quiver.server.routers.health import readiness
from quiver.server.schemas import ERROR_RESPONSES, QueryBool, StrictJSONRoute
from quiver.server.schemas_feast import (
    PlatformFeatureOut,
    PlatformFeatureViewCreated,
    PlatformFeatureViewIn,
    PlatformFeatureViewList,
    PlatformFeatureViewOut,
    PlatformServiceCreated,
    PlatformServiceIn,
    PlatformSource,
    PlatformStatus,
)
from quiver.types import dtype_from_arrow, normalize_dtype

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["platform_dtype", "router"]

router = APIRouter(
    prefix="/feast",
    tags=["feast-platform"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)

AllowBreaking = Annotated[
    QueryBool, Query(description="accept breaking changes to an existing view: true or false")
]

_FEAST_LIST = re.compile(r"^\s*(?:(?:array|list)\s*\(\s*(\w+)\s*\)|array_(\w+))\s*$", re.IGNORECASE)
_FEAST_NAMES = {
    "unixtimestamp": "timestamp",
    "unix_timestamp": "timestamp",
    "map": "map<string, string>",  # Feast's untyped Map, as its template uses it
}


def platform_dtype(value: str) -> str:
    """A Quiver dtype from a platform (Feast-style) type name: ``int64``, ``Array(String)``,
    ``array_float64``, ``unix_timestamp``...

    Raises:
        InvalidError: an unknown type.
    """
    match = _FEAST_LIST.match(value)
    if match:
        return f"list<{platform_dtype(match.group(1) or match.group(2))}>"
    return normalize_dtype(_FEAST_NAMES.get(value.strip().lower(), value))


@router.get(
    "/status", response_model=PlatformStatus, operation_id="platform_status", summary="Status"
)
def status(store: StoreDep) -> PlatformStatus:
    """The platform's status: backends, object counts and names, healthy or degraded."""
    checks = readiness(store)
    healthy = all(v == "ok" for v in checks.values())
    registry = store.registry
    up = checks["registry"] == "ok"
    views = [r.name for r in registry.records("feature_view")] if up else []
    entities = [e.name for e in store.list_entities()] if up else []
    return PlatformStatus(
        status="healthy" if healthy else "degraded",
        registry_type=registry.dialect,
        online_store_type=store.config.online_store.type,
        offline_store_type=store.config.offline_engine.type,
        num_feature_views=len(views),
        num_entities=len(entities),
        num_feature_services=registry.count("feature_service") if up else 0,
        feature_views=views,
        entities=entities,
    )


def _join_keys(store: Any) -> dict[str, list[str]]:
    return {e.name: list(e.join_keys) for e in store.list_entities()}


@router.get(
    "/features",
    response_model=PlatformFeatureViewList,
    response_model_exclude_none=True,
    operation_id="platform_list_feature_views",
    summary="List feature views",
)
def list_feature_views(store: StoreDep) -> PlatformFeatureViewList:
    """Every feature view (a bare array): join keys, features, online flag, TTL, creation time.

    ``ttl_seconds`` is 0 for a view whose values never expire.
    """
    keys = _join_keys(store)
    items = []
    for record in store.registry.records("feature_view"):
        view: FeatureView = record.obj
        items.append(
            PlatformFeatureViewOut(
                name=view.name,
                entities=[k for e in view.entities for k in keys.get(e, [e])],
                features=[
                    PlatformFeatureOut(
                        name=f.name, dtype=f.dtype, description=f.description or None
                    )
                    for f in view.features
                ],
                online_enabled=view.online,
                ttl_seconds=int(view.ttl.total_seconds()) if view.ttl is not None else 0,
                created_at=record.created_at,
            )
        )
    return PlatformFeatureViewList(items)


def _identifier(value: str, what: str) -> str:
    return validate_name(value, what)


def _resolve_source(
    store: Any, view_name: str, src: PlatformSource
) -> tuple[FileSource | IcebergSource, pa.Schema, str]:
    """The data source (not yet registered), the table's Arrow schema, its shown name."""
    name = tables.parse(
        store, src.table_name, "source.table_name", catalog=src.catalog, schema=src.schema_
    )
    common: dict[str, Any] = {
        "name": f"{view_name}_source",
        "timestamp_field": _identifier(src.timestamp_field, "source.timestamp_field"),
        "created_timestamp_field": src.created_timestamp_column,
        "description": f"registered through POST /feast/features for '{view_name}'",
    }
    tried: list[str] = []
    found = tables.iceberg_arrow_schema(store, name, tried)
    if found is not None:
        catalog, schema = found
        table = f"{name.schema}.{name.table}"
        return IcebergSource(table=table, catalog=catalog, **common), schema, name.qualified
    for candidate in tables.parquet_candidates(store, name):
        if tables.exists(candidate):
            import pyarrow as pa
            import pyarrow.dataset as ds

            from quiver.security.paths import FileBoundary

            # Under the read roots, after links: the source is read by every later query.
            FileBoundary.of(store).readable(str(candidate), "source table")
            try:
                arrow_schema = ds.dataset(str(candidate), format="parquet").schema
            except (pa.ArrowInvalid, OSError) as exc:
                raise InvalidError(
                    f"source '{candidate}' is not a readable Parquet dataset: {exc}"
                ) from exc
            root = store.repo_path.resolve()
            resolved = candidate.resolve()
            path = (
                os.path.relpath(resolved, root) if resolved.is_relative_to(root) else str(resolved)
            )
            return FileSource(path=path, format="parquet", **common), arrow_schema, path
        tried.append(f"no Parquet dataset at {candidate}")
    raise NotFoundError(
        f"source table '{name.qualified}' not found: " + "; ".join(tried),
        details={"tried": tried},
    )


def _check_columns(body: PlatformFeatureViewIn, schema: pa.Schema, source: Any) -> None:
    present = set(schema.names)
    needed = [
        *body.entities,
        body.source.timestamp_field,
        *([body.source.created_timestamp_column] if body.source.created_timestamp_column else []),
        *(f.name for f in body.features),
    ]
    missing = [c for c in needed if c not in present]
    if missing:
        where = source.table if source.type == "iceberg" else source.path
        raise InvalidError(
            f"feature view '{body.name}': the source table {where} has no column "
            + ", ".join(f"'{c}'" for c in missing)
            + f"; its columns are {', '.join(schema.names)}",
            details={"missing": missing, "columns": list(schema.names)},
        )


def _entities_for(store: Any, view_name: str, keys: list[str], schema: pa.Schema) -> list[Entity]:
    """The entity to use for each join key: an existing one, or a new one."""
    existing = store.list_entities()
    names = {e.name for e in existing}
    out: list[Entity] = []
    for key in keys:
        _identifier(key, "entity join key")
        matches = sorted(
            (e for e in existing if list(e.join_keys) == [key]),
            key=lambda e: (e.name != key, e.name),
        )
        if matches:
            out.append(matches[0])
            continue
        value_type = dtype_from_arrow(schema.field(key).type)
        name = key if key not in names else f"{key}_entity"
        out.append(
            Entity(
                name=name,
                join_keys=[key],
                value_type=value_type,
                description=f"created through POST /feast/features for '{view_name}'",
            )
        )
    return out


@router.post(
    "/features",
    response_model=PlatformFeatureViewCreated,
    status_code=201,
    operation_id="platform_register_feature_view",
    summary="Register a feature view",
)
def register_feature_view(
    body: PlatformFeatureViewIn, store: StoreDep, allow_breaking: AllowBreaking = False
) -> PlatformFeatureViewCreated:
    """Register (or update) a feature view over an Iceberg table or a Parquet dataset."""
    view_name = _identifier(body.name, "feature view name")
    if len(set(body.entities)) != len(body.entities):
        raise InvalidError(f"feature view '{view_name}' lists a join key twice: {body.entities}")
    fields = [
        Field(
            name=_identifier(f.name, "feature name"),
            dtype=platform_dtype(f.dtype),
            description=f.description or "",
            tags=f.tags,
        )
        for f in body.features
    ]
    source, schema, shown = _resolve_source(store, view_name, body.source)
    _check_columns(body, schema, source)
    entities = _entities_for(store, view_name, body.entities, schema)
    view = FeatureView(
        name=view_name,
        entities=[e.name for e in entities],
        features=fields,
        source=source.name,
        ttl=body.ttl_seconds,
        online=body.online,
        description=body.description or "",
        tags=body.tags,
    )
    store.apply(store.plan([*entities, source, view]), allow_breaking=allow_breaking)
    record = store.registry.get_record("feature_view", view_name)
    where = "an Iceberg table" if source.type == "iceberg" else "a Parquet dataset"
    store_kind = "online and offline stores" if body.online else "offline store only"
    return PlatformFeatureViewCreated(
        name=view_name,
        entities=list(body.entities),
        features=[f.name for f in fields],
        source_table=shown,
        online_enabled=body.online,
        created_at=record.created_at,
        message=f"Feature view '{view_name}' registered from {where} ({shown}) with "
        f"{len(fields)} feature{'s' if len(fields) != 1 else ''} ({store_kind})",
    )


@router.post(
    "/features/service",
    response_model=PlatformServiceCreated,
    status_code=201,
    operation_id="platform_create_feature_service",
    summary="Create a feature service",
)
def create_feature_service(
    body: PlatformServiceIn, store: StoreDep, allow_breaking: AllowBreaking = False
) -> PlatformServiceCreated:
    """Create (or update) a feature service selecting every feature of the given views."""
    name = _identifier(body.name, "feature service name")
    for view in body.feature_views:
        _identifier(view, "feature view name")
    service = FeatureService(
        name=name,
        features=[f"{v}:*" for v in body.feature_views],
        description=body.description or "",
        tags=body.tags,
    )
    store.apply(store.plan([service]), allow_breaking=allow_breaking)
    return PlatformServiceCreated(name=service.name, feature_views=list(body.feature_views))
