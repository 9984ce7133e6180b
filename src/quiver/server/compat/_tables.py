"""Table names of the ``/feast`` platform routes, resolved against the configured catalogs.

The platform names a table ``name``, ``schema.name`` or ``catalog.schema.name``; a missing
catalog or schema is ``feast_compat.default_catalog`` / ``default_schema`` of ``quiver.yaml``
(``iceberg`` and ``gold`` unless set). A catalog name is one of ``iceberg.catalogs``; the default
catalog's name, when no catalog has it, stands for the ``default`` catalog (the platform calls its
Iceberg catalog ``iceberg``, Quiver calls its first one ``default``).

An input table is looked up in this order: a registered data source of that name (a bare name
only), an Iceberg table, a Parquet dataset ``<data_dir>/<schema>/<name>[.parquet]`` (for a bare
name also ``<data_dir>/<name>[.parquet]``). ``iceberg:...`` references and paths work as on the
native routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quiver.definitions import NAME_RE
from quiver.errors import InvalidError, MissingExtraError, NotFoundError, QuiverError
from quiver.server._convert import (
    check_path_text,
    iceberg_ref,
    looks_like_path,
    readable_path,
    writable_path,
    writable_table,
)

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa

__all__ = ["TableName", "catalog_for", "iceberg_arrow_schema", "input_ref", "output_ref", "parse"]


def _shown(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class TableName:
    """A platform table name with its catalog and schema filled in.

    Attributes:
        catalog: The catalog as the request (or ``feast_compat``) names it.
        schema: The schema: an Iceberg namespace, or a folder under ``data_dir``.
        table: The table.
        bare: Whether the request gave the table alone (no schema, in the name or beside it).
    """

    catalog: str
    schema: str
    table: str
    bare: bool = False

    @property
    def qualified(self) -> str:
        """``catalog.schema.table``, as the platform echoes table names."""
        return f"{self.catalog}.{self.schema}.{self.table}"


def parse(
    store: Any, text: str, what: str, *, catalog: str | None = None, schema: str | None = None
) -> TableName:
    """``name``, ``schema.name`` or ``catalog.schema.name``, with the defaults filled in.

    ``catalog`` and ``schema`` (separate request fields) apply where ``text`` names none.

    Raises:
        InvalidError: not one to three plain identifiers of at most 63 characters.
    """
    for field, value in (("catalog", catalog), ("schema", schema)):
        if value is not None and not NAME_RE.match(value):
            raise InvalidError(
                f"the {field} of {what}, {_shown(value)!r}, is not a plain identifier: use "
                "letters, digits and '_' (at most 63 characters)"
            )
    parts = text.strip().split(".")
    if not 1 <= len(parts) <= 3 or not all(NAME_RE.match(p) for p in parts):
        raise InvalidError(
            f"{what} {_shown(text)!r} is not a table name: write 'name', 'schema.name' or "
            "'catalog.schema.name' with plain identifiers (letters, digits and '_', at most 63 "
            "characters each)"
        )
    defaults = store.config.feast_compat
    if len(parts) == 3:
        return TableName(parts[0], parts[1], parts[2])
    if len(parts) == 2:
        return TableName(catalog or defaults.default_catalog, parts[0], parts[1])
    return TableName(
        catalog or defaults.default_catalog,
        schema or defaults.default_schema,
        parts[0],
        bare=schema is None,
    )


def catalog_for(store: Any, requested: str) -> str | None:
    """The configured Iceberg catalog a requested catalog name means, or ``None``."""
    catalogs = store.config.iceberg.catalogs
    if requested in catalogs:
        return str(requested)
    if requested == store.config.feast_compat.default_catalog and "default" in catalogs:
        return "default"
    return None


def iceberg_arrow_schema(
    store: Any, name: TableName, tried: list[str]
) -> tuple[str, pa.Schema] | None:
    """(configured catalog, Arrow schema) of an existing Iceberg table, else ``None``.

    Each miss is added to ``tried`` for the 404 message.

    Raises:
        BackendError: the catalog fails for another reason than a missing table.
    """
    configured = catalog_for(store, name.catalog)
    if configured is None:
        catalogs = store.config.iceberg.catalogs
        tried.append(
            f"Iceberg catalog '{name.catalog}' is not configured in quiver.yaml "
            f"(configured: {', '.join(sorted(catalogs)) or 'none'})"
        )
        return None
    identifier = f"{name.schema}.{name.table}"
    try:
        from quiver.offline.sources import iceberg_catalog

        catalog = iceberg_catalog(store.config, configured)
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
    except (MissingExtraError, ImportError) as exc:
        tried.append(f"Iceberg is not available ({exc})")
        return None
    try:
        return configured, catalog.load_table(identifier).schema().as_arrow()
    except (NoSuchTableError, NoSuchNamespaceError):
        tried.append(f"no Iceberg table '{identifier}' in catalog '{configured}'")
        return None
    except QuiverError:
        raise
    except Exception as exc:
        from quiver.errors import BackendError

        raise BackendError(
            f"cannot read Iceberg table '{identifier}' of catalog '{configured}': {exc}"
        ) from exc


def parquet_candidates(store: Any, name: TableName) -> list[Path]:
    """Where a table may be a Parquet dataset (a folder or a file) under ``data_dir``."""
    data = store.config.data_path
    rels = [f"{name.schema}/{name.table}"] + ([name.table] if name.bare else [])
    return [p for rel in rels for p in (data / rel, data / f"{rel}.parquet")]


def exists(path: Path) -> bool:
    """Whether a path exists; a name no file system takes does not."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def input_ref(store: Any, text: str, what: str) -> tuple[str, str]:
    """(reference for the ML services, the name echoed back) of a platform input table.

    Raises:
        InvalidError: an empty or malformed name.
        NotFoundError: no source, Iceberg table or Parquet dataset has that name (``tried``
            lists where it was looked for).
        ForbiddenError: a path outside the server's read roots.
    """
    value = text.strip()
    if not value:
        raise InvalidError(f"{what} is empty")
    check_path_text(value, what)
    if NAME_RE.match(value) and store.registry.find("data_source", value) is not None:
        return value, value
    if value.lower().startswith("iceberg:"):
        ref = iceberg_ref(value, what)
        return ref, ref
    if looks_like_path(value):
        path = readable_path(store, value, what)
        return path, value
    name = parse(store, value, what)
    tried = [] if not name.bare else [f"no data source '{value}'"]
    found = iceberg_arrow_schema(store, name, tried)
    if found is not None:
        return f"iceberg:{found[0]}/{name.schema}.{name.table}", name.qualified
    for candidate in parquet_candidates(store, name):
        if exists(candidate):
            return readable_path(store, str(candidate), what), name.qualified
        tried.append(f"no Parquet dataset at {candidate}")
    raise NotFoundError(
        f"{what} '{_shown(value)}' not found: " + "; ".join(tried), details={"tried": tried}
    )


def output_ref(
    store: Any, table: str, schema: str | None, what: str = "output_table", *, overwrite: bool
) -> tuple[str, str]:
    """(reference for ``predict_batch``, the name echoed back) of a platform output table.

    A path is a Parquet file under the server's write root. A table name is an Iceberg table
    ``<schema>.<table>`` (``schema`` from the name, else ``output_schema``, else
    ``feast_compat.default_schema``) of its catalog, created with its namespace if missing; without
    pyiceberg, ``<write root>/<schema>/<table>.parquet``.

    Raises:
        InvalidError: a malformed name, or a catalog that is not configured.
        ForbiddenError: a registered data source's table, or a path outside the write root.
        ConflictError: a Parquet output exists and ``overwrite`` is false.
    """
    value = table.strip()
    if "/" in value or "\\" in value or value.lower().endswith(".parquet"):
        path = writable_path(store, value, "predictions", what, overwrite=overwrite)
        return path, path
    name = parse(store, value, what, schema=schema)
    configured = catalog_for(store, name.catalog)
    if configured is None:
        catalogs = store.config.iceberg.catalogs
        raise InvalidError(
            f"{what} '{_shown(value)}': Iceberg catalog '{name.catalog}' is not configured in "
            f"quiver.yaml (configured: {', '.join(sorted(catalogs)) or 'none'})"
        )
    reference = writable_table(store, f"{configured}/{name.schema}.{name.table}", what)
    try:
        import pyiceberg  # noqa: F401
    except ImportError:
        from quiver.security.paths import FileBoundary

        rel = FileBoundary.of(store).write_root / name.schema / f"{name.table}.parquet"
        path = writable_path(store, str(rel), "predictions", what, overwrite=overwrite)
        return path, path
    return reference, name.qualified


def views_over(store: Any, ref: str) -> list[str]:
    """The feature views whose source reads the table ``ref`` (as :func:`input_ref` gives it).

    ``ref`` is a data source name, ``iceberg:catalog/namespace.table`` or an absolute path.
    """
    from pathlib import Path

    sources: set[str] = set()
    for record in store.registry.records("data_source"):
        source = record.obj
        if source.name == ref:
            sources.add(source.name)
        elif source.type == "iceberg":
            if ref == f"iceberg:{source.catalog or 'default'}/{source.table}":
                sources.add(source.name)
        elif source.type == "file" and not ref.startswith("iceberg:"):
            path = Path(source.path)
            full = path if path.is_absolute() else store.repo_path / path
            if exists(full) and exists(Path(ref)) and full.resolve() == Path(ref).resolve():
                sources.add(source.name)
    return [r.name for r in store.registry.records("feature_view") if r.obj.source in sources]
