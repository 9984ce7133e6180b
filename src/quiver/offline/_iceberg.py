"""Iceberg sources: catalogs (cached per settings), tables, scan filters and appends."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quiver.definitions import IcebergSource, did_you_mean
from quiver.errors import BackendError, ConfigError, InvalidError, NotFoundError, require

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.config import RepoConfig
    from quiver.offline.sources import TimeWindow


_CATALOGS: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
_CATALOG_LOCK = threading.Lock()


def _utc_datetime(micros: int) -> datetime:
    from datetime import timedelta

    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)


def _catalog_properties(config: RepoConfig, name: str) -> dict[str, str]:
    catalogs = config.iceberg.catalogs
    if name not in catalogs:
        raise ConfigError(
            f"Iceberg catalog '{name}' is not configured; add it under iceberg.catalogs in "
            f"quiver.yaml (configured: {', '.join(sorted(catalogs)) or 'none'})"
            + did_you_mean(name, list(catalogs))
        )
    cfg = catalogs[name]
    props: dict[str, str] = {"type": cfg.type}
    uri = cfg.uri
    if cfg.type == "sql":
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/") and ":memory:" not in uri:
            db = config.resolve(uri[len(prefix) :])
            db.parent.mkdir(parents=True, exist_ok=True)
            uri = prefix + str(db)
    props["uri"] = uri
    warehouse = cfg.warehouse
    if cfg.type == "rest":  # the server names its warehouse: pass only what the user set
        warehouse = warehouse if "warehouse" in cfg.model_fields_set else ""
    elif warehouse and "://" not in warehouse:
        folder = config.resolve(warehouse)
        folder.mkdir(parents=True, exist_ok=True)
        warehouse = folder.as_uri()
    if warehouse:
        props["warehouse"] = warehouse
    s3 = config.s3
    endpoint = (
        s3.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    for key, value in (
        ("s3.endpoint", endpoint),
        ("s3.region", s3.region),
        ("s3.access-key-id", s3.access_key_id),
        ("s3.secret-access-key", s3.secret_access_key),
        ("s3.session-token", s3.session_token),
    ):
        if value:
            props[key] = value
    props.update(cfg.properties)
    return props


def iceberg_catalog(config: RepoConfig, name: str = "default") -> Any:
    """The pyiceberg catalog ``name`` from ``config.iceberg.catalogs`` (cached per settings).

    A ``sql`` catalog with a relative SQLite URI or warehouse is resolved against the repo, so
    the default is an embedded catalog under ``data/``.

    Raises:
        ConfigError: the catalog is not configured.
        BackendError: the catalog cannot be opened.
    """
    props = _catalog_properties(config, name)
    key = (name, tuple(sorted(props.items())))
    with _CATALOG_LOCK:
        catalog = _CATALOGS.get(key)
        if catalog is None:
            require("pyiceberg", "iceberg", "Iceberg sources")
            from pyiceberg.catalog import load_catalog

            try:
                catalog = load_catalog(name, **props)
            except Exception as exc:
                raise BackendError(f"cannot open Iceberg catalog '{name}': {exc}") from exc
            _CATALOGS[key] = catalog
    return catalog


def load_iceberg_table(config: RepoConfig, source: IcebergSource) -> Any:
    """The pyiceberg table of an Iceberg source.

    Raises:
        NotFoundError: the table does not exist in the catalog.
    """
    catalog = iceberg_catalog(config, source.catalog)
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    try:
        return catalog.load_table(source.table)
    except (NoSuchTableError, NoSuchNamespaceError) as exc:
        raise NotFoundError(
            f"data source '{source.name}': Iceberg table '{source.table}' does not exist in "
            f"catalog '{source.catalog}'"
        ) from exc
    except Exception as exc:
        raise BackendError(
            f"data source '{source.name}': cannot load Iceberg table '{source.table}': {exc}"
        ) from exc


def _iceberg_filter(table: Any, column: str, window: TimeWindow) -> Any:
    """A conservative pyiceberg row filter for the window (exact filtering happens in DuckDB)."""
    from pyiceberg.expressions import AlwaysTrue, And, GreaterThanOrEqual, LessThanOrEqual
    from pyiceberg.types import DateType, TimestampType, TimestamptzType

    try:
        ftype = table.schema().find_field(column).field_type
    except ValueError:
        return AlwaysTrue()
    expr: Any = AlwaysTrue()
    makers: tuple[tuple[int | None, Any], ...] = (
        (window.lo, GreaterThanOrEqual),
        (window.hi, LessThanOrEqual),
    )
    for bound, make in makers:
        if bound is None:
            continue
        when = _utc_datetime(bound)
        if isinstance(ftype, TimestamptzType):
            literal = when.isoformat()
        elif isinstance(ftype, TimestampType):
            literal = when.replace(tzinfo=None).isoformat()
        elif isinstance(ftype, DateType):
            literal = when.date().isoformat()
        else:
            continue
        expr = And(expr, make(column, literal))
    return expr


def _append_iceberg(config: RepoConfig, source: IcebergSource, table: pa.Table) -> None:
    import pyarrow as pa

    ice = load_iceberg_table(config, source)
    schema = ice.schema().as_arrow()
    out_of = {f.name: source.field_mapping.get(f.name, f.name) for f in schema}
    unknown = sorted(set(table.column_names) - set(out_of.values()))
    if unknown:
        raise InvalidError(
            f"Iceberg table '{source.table}' (data source '{source.name}') has no column for "
            f"{', '.join(repr(u) for u in unknown)}; its columns are: {', '.join(out_of.values())}"
        )
    arrays = []
    for f in schema:
        out = out_of[f.name]
        if out in table.column_names:
            col = table.column(out)
            try:
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidError(
                    f"column '{out}' pushed to Iceberg table '{source.table}' has type {col.type}, "
                    f"which cannot be cast to {f.type}: {exc}"
                ) from exc
        else:
            if not f.nullable:
                raise InvalidError(
                    f"rows pushed to Iceberg table '{source.table}' lack required column '{out}'"
                )
            col = pa.nulls(table.num_rows, f.type)
        arrays.append(col)
    data = pa.Table.from_arrays(arrays, schema=schema)
    try:
        ice.append(data)
    except Exception as exc:
        raise BackendError(
            f"cannot append to Iceberg table '{source.table}' (data source '{source.name}'): {exc}"
        ) from exc
