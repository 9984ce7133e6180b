"""The ``/feast`` registry routes of the Feast-based ML platform Quiver replaces.

A thin adapter over the registry: teams keep their scripts and Postman collections.

- ``entities`` are join key names: an entity with exactly that join key is used, or one is
  created (named after the key, its type read from the source table).
- ``source.catalog`` / ``schema`` / ``table_name`` name an Iceberg table
  ``<schema>.<table_name>`` in a catalog of ``quiver.yaml``, or else a Parquet dataset (a file or
  a folder) at ``<data_dir>/<schema>/<table_name>``; the view's source is registered as
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
from quiver.errors import InvalidError, MissingExtraError, NotFoundError, QuiverError
from quiver.server.deps import StoreDep
from quiver.server.routers.health import readiness
from quiver.server.schemas import ERROR_RESPONSES, QueryBool, StrictJSONRoute
from quiver.server.schemas_feast import (
    PlatformFeature,
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

_FEAST_LIST = re.compile(r"^\s*(?:array|list)\s*\(\s*(\w+)\s*\)\s*$", re.IGNORECASE)
_FEAST_NAMES = {
    "unixtimestamp": "timestamp",
    "unix_timestamp": "timestamp",
    "map": "map<string, string>",  # Feast's untyped Map, as its template uses it
}


def platform_dtype(value: str) -> str:
    """A Quiver dtype from a platform (Feast-style) type name: ``Int64``, ``Array(String)``...

    Raises:
        InvalidError: an unknown type.
    """
    match = _FEAST_LIST.match(value)
    if match:
        return f"list<{platform_dtype(match.group(1))}>"
    return normalize_dtype(_FEAST_NAMES.get(value.strip().lower(), value))


@router.get(
    "/status", response_model=PlatformStatus, operation_id="platform_status", summary="Status"
)
def status(store: StoreDep) -> PlatformStatus:
    """The platform's status: backends, object counts, healthy or degraded."""
    from quiver import __version__

    checks = readiness(store)
    healthy = all(v == "ok" for v in checks.values())
    registry = store.registry
    count = (lambda kind: registry.count(kind)) if checks["registry"] == "ok" else (lambda _k: 0)
    return PlatformStatus(
        status="healthy" if healthy else "degraded",
        project=store.project,
        registry=registry.dialect,
        online_store=store.config.online_store.type,
        offline_store=store.config.offline_engine.type,
        feature_views=count("feature_view"),
        entities=count("entity"),
        feature_services=count("feature_service"),
        version=__version__,
    )


def _join_keys(store: Any) -> dict[str, list[str]]:
    return {e.name: list(e.join_keys) for e in store.list_entities()}


def _ttl(view: FeatureView) -> int | None:
    return int(view.ttl.total_seconds()) if view.ttl is not None else None


@router.get(
    "/features",
    response_model=PlatformFeatureViewList,
    operation_id="platform_list_feature_views",
    summary="List feature views",
)
def list_feature_views(store: StoreDep) -> PlatformFeatureViewList:
    """Every feature view with its join keys, features, online flag, TTL and creation time."""
    keys = _join_keys(store)
    items = []
    for record in store.registry.records("feature_view"):
        view: FeatureView = record.obj
        items.append(
            PlatformFeatureViewOut(
                name=view.name,
                entities=[k for e in view.entities for k in keys.get(e, [e])],
                features=[
                    PlatformFeature(name=f.name, dtype=f.dtype, description=f.description)
                    for f in view.features
                ],
                online=view.online,
                ttl_seconds=_ttl(view),
                created_at=record.created_at,
                description=view.description,
            )
        )
    return PlatformFeatureViewList(feature_views=items, count=len(items))


def _identifier(value: str, what: str) -> str:
    return validate_name(value, what)


def _resolve_source(
    store: Any, view_name: str, src: PlatformSource
) -> tuple[FileSource | IcebergSource, pa.Schema]:
    """The data source (not yet registered) and the table's Arrow schema."""
    table_name = _identifier(src.table_name, "source.table_name")
    schema = _identifier(src.schema_, "source.schema") if src.schema_ else None
    name = f"{view_name}_source"
    common: dict[str, Any] = {
        "name": name,
        "timestamp_field": src.timestamp_field,
        "created_timestamp_field": src.created_timestamp_field,
        "description": f"registered through POST /feast/features for '{view_name}'",
    }
    tried: list[str] = []
    catalogs = store.config.iceberg.catalogs
    catalog_name = src.catalog or "default"
    if catalog_name in catalogs:
        identifier = f"{schema or 'default'}.{table_name}"
        found = _iceberg_schema(store, catalog_name, identifier, tried)
        if found is not None:
            return IcebergSource(table=identifier, catalog=catalog_name, **common), found
    elif src.catalog is not None:
        tried.append(
            f"Iceberg catalog '{src.catalog}' is not configured in quiver.yaml "
            f"(configured: {', '.join(sorted(catalogs)) or 'none'})"
        )
    data = store.config.data_path
    rel = f"{schema}/{table_name}" if schema else table_name
    for candidate in (data / rel, data / f"{rel}.parquet"):
        if candidate.exists():
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
            return FileSource(path=path, format="parquet", **common), arrow_schema
        tried.append(f"no Parquet dataset at {candidate}")
    raise NotFoundError(
        f"source table '{rel}' not found: " + "; ".join(tried),
        details={"tried": tried},
    )


def _iceberg_schema(store: Any, catalog_name: str, identifier: str, tried: list[str]) -> Any:
    from quiver.offline.sources import iceberg_catalog

    try:
        catalog = iceberg_catalog(store.config, catalog_name)
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
    except (MissingExtraError, ImportError) as exc:
        tried.append(f"Iceberg is not available ({exc})")
        return None
    try:
        return catalog.load_table(identifier).schema().as_arrow()
    except (NoSuchTableError, NoSuchNamespaceError):
        tried.append(f"no Iceberg table '{identifier}' in catalog '{catalog_name}'")
        return None
    except QuiverError:
        raise
    except Exception as exc:
        from quiver.errors import BackendError

        raise BackendError(
            f"cannot read Iceberg table '{identifier}' of catalog '{catalog_name}': {exc}"
        ) from exc


def _check_columns(body: PlatformFeatureViewIn, schema: pa.Schema, source: Any) -> None:
    present = set(schema.names)
    needed = [
        *body.entities,
        body.source.timestamp_field,
        *([body.source.created_timestamp_field] if body.source.created_timestamp_field else []),
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
        Field(name=f.name, dtype=platform_dtype(f.dtype), description=f.description)
        for f in body.features
    ]
    source, schema = _resolve_source(store, view_name, body.source)
    _check_columns(body, schema, source)
    entities = _entities_for(store, view_name, body.entities, schema)
    view = FeatureView(
        name=view_name,
        entities=[e.name for e in entities],
        features=fields,
        source=source.name,
        ttl=body.ttl_seconds,
        online=body.online,
        description=body.description,
    )
    store.apply(store.plan([*entities, source, view]), allow_breaking=allow_breaking)
    record = store.registry.get_record("feature_view", view_name)
    return PlatformFeatureViewCreated(
        name=view_name,
        entities=list(body.entities),
        features=[
            PlatformFeature(name=f.name, dtype=f.dtype, description=f.description) for f in fields
        ],
        created_at=record.created_at,
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
    for name in body.feature_views:
        _identifier(name, "feature view name")
    service = FeatureService(
        name=body.name,
        features=[f"{v}:*" for v in body.feature_views],
        description=body.description,
    )
    store.apply(store.plan([service]), allow_breaking=allow_breaking)
    return PlatformServiceCreated(name=service.name, feature_views=list(body.feature_views))
