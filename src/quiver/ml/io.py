"""Reading training and prediction inputs, and writing prediction outputs.

An input or output "table reference" is one of:

- the name of a registered data source (read with the source's own settings);
- a Parquet or CSV path: a file, a directory or a glob, local or ``s3://``;
- an Iceberg table: ``iceberg:namespace.table`` or ``iceberg:catalog/namespace.table`` (a bare
  ``namespace.table`` that is neither a source nor an existing path is taken as an Iceberg table
  of the ``default`` catalog).

Inputs are read through :func:`quiver.offline.sources.scan_source`, which streams record batches
and normalizes timestamps to ``timestamp[us, UTC]``; in-memory pandas / polars / Arrow tables are
accepted too. Outputs are written to Parquet (a temporary file renamed into place when the job
succeeds) or appended to an Iceberg table in one transaction.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver._paths import publish_file, temp_path
from quiver.definitions import FileSource, IcebergSource, did_you_mean
from quiver.errors import BackendError, ConflictError, InvalidError, NotFoundError
from quiver.jobs.context import current_token

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.store import FeatureStore

__all__ = [
    "OutputTarget",
    "TableRef",
    "describe_input",
    "iter_input",
    "open_output",
    "read_input",
    "resolve_ref",
    "to_arrow",
]

_ICEBERG_RE = re.compile(
    r"^iceberg:(?://)?(?:(?P<catalog>[A-Za-z_][A-Za-z0-9_]*)/)?"
    r"(?P<table>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)$"
)
_DOTTED_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+$")
_FILE_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")


@dataclass(frozen=True)
class TableRef:
    """A resolved table reference."""

    kind: str  # "source", "file" or "iceberg"
    text: str
    source: FileSource | IcebergSource

    def __str__(self) -> str:
        return self.text


def _looks_like_path(text: str) -> bool:
    lowered = text.lower()
    return (
        "/" in text
        or "\\" in text
        or lowered.endswith(_FILE_SUFFIXES)
        or lowered.startswith(("s3://", "s3a://"))
        or any(ch in text for ch in "*?[")
    )


def resolve_ref(
    store: FeatureStore, ref: str, *, timestamp_column: str, what: str = "input"
) -> TableRef:
    """Resolve a table reference (see the module docstring) to a readable source.

    Args:
        store: The feature store.
        ref: The reference text.
        timestamp_column: The timestamp column the caller reads (output name).
        what: How to name the reference in errors.

    Raises:
        NotFoundError: nothing exists under that reference.
        InvalidError: a malformed reference.
    """
    text = str(ref).strip()
    if not text:
        raise InvalidError(f"{what} is empty; give a data source name, a path or an Iceberg table")
    match = _ICEBERG_RE.match(text)
    if match:
        return _iceberg_ref(text, match.group("table"), match.group("catalog"), timestamp_column)
    if text.lower().startswith("iceberg:"):
        raise InvalidError(
            f"{what} {text!r}: write an Iceberg table as 'iceberg:namespace.table' or "
            "'iceberg:catalog/namespace.table'"
        )
    if not _looks_like_path(text):
        registered = store.registry.find("data_source", text)
        if registered is not None:
            return TableRef("source", text, _with_timestamp(registered, timestamp_column))
    if _looks_like_path(text) or store.config.resolve(text).exists():
        fmt = "csv" if text.lower().rstrip("/").endswith((".csv", ".csv.gz")) else "parquet"
        source = FileSource(
            name="ml_input", path=text, format=fmt, timestamp_field=_plain(timestamp_column)
        )
        return TableRef("file", text, source)
    if _DOTTED_RE.match(text):
        return _iceberg_ref(text, text, None, timestamp_column)
    raise NotFoundError(
        f"{what} '{text}' is neither a registered data source nor an existing file"
        + did_you_mean(text, store.registry.names("data_source"))
        + "; give a data source name, a Parquet/CSV path or 'iceberg:namespace.table'"
    )


def _plain(column: str) -> str:
    from quiver.definitions import validate_name

    return validate_name(column, "timestamp column")


def _iceberg_ref(text: str, table: str, catalog: str | None, ts: str) -> TableRef:
    source = IcebergSource(
        name="ml_input", table=table, catalog=catalog or "default", timestamp_field=_plain(ts)
    )
    return TableRef("iceberg", text, source)


def _with_timestamp(
    source: FileSource | IcebergSource, timestamp_column: str
) -> FileSource | IcebergSource:
    mapped_ts = source.field_mapping.get(source.timestamp_field, source.timestamp_field)
    if mapped_ts == timestamp_column:
        return source
    raw = source.column_for(timestamp_column)
    return source.model_copy(update={"timestamp_field": raw, "created_timestamp_field": None})


def to_arrow(data: Any, what: str = "input") -> pa.Table | None:
    """An in-memory pandas / polars / Arrow table as a ``pyarrow.Table`` (``None`` otherwise)."""
    import pyarrow as pa

    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__
    if module.startswith("pandas"):
        return pa.Table.from_pandas(data, preserve_index=False)
    if module.startswith("polars"):
        return data.to_arrow()
    if isinstance(data, (str, Path)):
        return None
    raise InvalidError(
        f"{what} must be a table reference (source name, path, Iceberg table) or a pandas, "
        f"polars or Arrow table, not {type(data).__name__}"
    )


def describe_input(data: Any) -> str:
    """A short text naming an input, for job records."""
    if isinstance(data, (str, Path)):
        return str(data)
    rows = getattr(data, "num_rows", None) or getattr(data, "shape", (None,))[0]
    return f"<{type(data).__name__} with {rows} rows>"


def read_input(
    store: FeatureStore,
    ref: TableRef,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Read a whole table reference (time-filtered to ``[start, end)``)."""
    return _reader(store, ref, start=start, end=end, columns=columns).read_all()


def iter_input(
    store: FeatureStore,
    ref: TableRef,
    *,
    rows: int,
    columns: list[str] | None = None,
) -> Iterator[pa.Table]:
    """Stream a table reference in tables of ``rows`` rows (the last may be shorter)."""
    yield from rechunk(_reader(store, ref, columns=columns, batch_size=min(rows, 65_536)), rows)


def rechunk(batches: Any, rows: int) -> Iterator[pa.Table]:
    """Regroup an iterable of record batches into tables of exactly ``rows`` rows."""
    import pyarrow as pa

    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending)


def _reader(
    store: FeatureStore,
    ref: TableRef,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    columns: list[str] | None = None,
    batch_size: int = 65_536,
) -> pa.RecordBatchReader:
    from quiver.offline.sources import scan_source

    try:
        return scan_source(store.config, ref.source, columns, start, end, batch_size=batch_size)
    except NotFoundError as exc:
        if ref.kind == "source":
            raise
        raise NotFoundError(f"input '{ref.text}': {exc.message}") from exc


# -- outputs ------------------------------------------------------------------------------


class OutputTarget:
    """Where predictions go: a Parquet file, or an Iceberg table (appended in one commit).

    Use :meth:`write` per chunk, then :meth:`commit` on success or :meth:`abort` on failure; an
    aborted job leaves any previous output untouched.
    """

    def __init__(
        self,
        store: FeatureStore,
        output: str | Path,
        *,
        what: str = "output",
        overwrite: bool = True,
    ) -> None:
        self.store = store
        self.overwrite = overwrite
        self.text = str(output).strip()
        if not self.text:
            raise InvalidError(f"{what} is empty; give a Parquet path or an Iceberg table")
        match = _ICEBERG_RE.match(self.text)
        if match:
            self.kind = "iceberg"
            self.table_name = match.group("table")
            self.catalog = match.group("catalog") or "default"
        elif _looks_like_path(self.text):
            self.kind = "parquet"
        elif _DOTTED_RE.match(self.text):
            self.kind = "iceberg"
            self.table_name = self.text
            self.catalog = "default"
        else:
            raise InvalidError(
                f"{what} '{self.text}' is neither a Parquet path (ending in .parquet, or with a "
                "'/') nor an Iceberg table ('iceberg:namespace.table')"
            )
        self._writer: Any = None
        self._tmp: str | None = None
        self._fs: Any = None
        self._iceberg: Any = None
        self._tx: Any = None
        self.rows = 0
        if self.kind == "parquet" and not overwrite and not _is_s3_text(self.text):
            final = store.config.resolve(self.text)
            if final.exists():  # refused before any work (checked again when committing)
                raise ConflictError(
                    f"{what} '{self.text}' already exists; ask to overwrite it, or choose "
                    "another path",
                    details={"path": str(final)},
                )

    def __str__(self) -> str:
        return self.text

    # -- parquet --

    def _open_parquet(self, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        from quiver.offline.sources import is_s3, s3_filesystem

        if is_s3(self.text):
            self._fs = s3_filesystem(self.store.config)
            self._final = self.text.split("://", 1)[1]
            self._tmp = self._final  # an S3 object appears only when the upload completes
        else:
            final = self.store.config.resolve(self.text)
            if final.is_dir():
                raise InvalidError(
                    f"output '{self.text}' is a directory; give a .parquet file path"
                )
            final.parent.mkdir(parents=True, exist_ok=True)
            self._final = str(final)
            self._tmp = str(temp_path(final, current_token()))
        try:
            self._writer = pq.ParquetWriter(
                self._tmp, schema, compression="zstd", filesystem=self._fs
            )
        except OSError as exc:
            raise BackendError(f"cannot write output '{self.text}': {exc}") from exc

    # -- iceberg --

    def _open_iceberg(self, schema: pa.Schema) -> None:
        from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError

        from quiver.offline.sources import iceberg_catalog

        catalog = iceberg_catalog(self.store.config, self.catalog)
        namespace = self.table_name.rsplit(".", 1)[0]
        try:
            table = catalog.load_table(self.table_name)
        except NoSuchTableError:
            with contextlib.suppress(NamespaceAlreadyExistsError):
                catalog.create_namespace(namespace)
            try:
                table = catalog.create_table(self.table_name, schema=schema)
            except Exception as exc:
                raise BackendError(
                    f"cannot create Iceberg table '{self.table_name}' in catalog "
                    f"'{self.catalog}': {exc}"
                ) from exc
        self._iceberg = table
        self._ice_schema = table.schema().as_arrow()
        self._tx = table.transaction()

    def write(self, table: pa.Table) -> None:
        """Append one chunk of predictions."""
        if self.kind == "parquet":
            if self._writer is None:
                self._open_parquet(table.schema)
            self._writer.write_table(table)
        else:
            if self._tx is None:
                self._open_iceberg(table.schema)
            self._tx.append(self._conform(table))
        self.rows += table.num_rows

    def _conform(self, table: pa.Table) -> pa.Table:
        import pyarrow as pa

        names = [f.name for f in self._ice_schema]
        missing = [n for n in table.column_names if n not in names]
        if missing:
            raise InvalidError(
                f"Iceberg table '{self.table_name}' has no column(s) {', '.join(missing)}; "
                "write to a new table or add the columns"
            )
        arrays = []
        for f in self._ice_schema:
            col = table[f.name] if f.name in table.column_names else pa.nulls(table.num_rows)
            arrays.append(col.cast(f.type))
        return pa.Table.from_arrays(arrays, schema=self._ice_schema)

    def commit(self, schema: pa.Schema) -> None:
        """Make the output visible (an empty input still writes an empty table)."""
        if self.kind == "parquet":
            if self._writer is None:
                self._open_parquet(schema)
            self._writer.close()
            if self._fs is None:
                publish_file(self._tmp, self._final, overwrite=self.overwrite)  # type: ignore[arg-type]
        else:
            if self._tx is None:
                self._open_iceberg(schema)
            try:
                self._tx.commit_transaction()
            except Exception as exc:
                raise BackendError(
                    f"cannot commit predictions to Iceberg table '{self.table_name}': {exc}"
                ) from exc

    def abort(self) -> None:
        """Drop whatever was written."""
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the job already failed; keep its error
                self._writer.close()
            if self._fs is None and self._tmp:
                Path(self._tmp).unlink(missing_ok=True)
            elif self._fs is not None:
                with contextlib.suppress(OSError):
                    self._fs.delete_file(self._final)
        self._tx = None


def open_output(store: FeatureStore, output: str | Path, *, overwrite: bool = True) -> OutputTarget:
    """An :class:`OutputTarget` for ``output`` (``overwrite``: replace an existing file)."""
    return OutputTarget(store, output, overwrite=overwrite)


def _is_s3_text(text: str) -> bool:
    return text.lower().startswith(("s3://", "s3a://"))
