"""``get_historical_features``: entity tables in every form, and the lazy :class:`RetrievalJob`.

The entity table (pandas, polars, Arrow, a Parquet/CSV path, or a registered label source) is
turned into one Arrow table whose timestamp column is ``timestamp[us, UTC]``; its other columns
are carried through untouched. The engine returns the feature columns in entity-row order and
the job puts the two side by side, so the output keeps every entity row, in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.definitions import NAME_RE, FileSource, IcebergSource, did_you_mean
from quiver.errors import InvalidError, NotFoundError, QuiverError

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl
    import pyarrow as pa

    from quiver.selection import ViewSelection
    from quiver.store import FeatureStore

__all__ = [
    "JoinInput",
    "RetrievalJob",
    "TrainingSetSummary",
    "count_entity_rows",
    "entity_source",
    "get_historical_features",
    "load_entity_table",
]

DEFAULT_BATCH_ROWS = 131_072


@dataclass
class TrainingSetSummary:
    """What :meth:`RetrievalJob.to_parquet` wrote."""

    path: Path
    rows: int
    columns: list[str]
    feature_columns: list[str]
    null_counts: dict[str, int] = field(default_factory=dict)

    def null_rate(self, column: str) -> float:
        """The fraction of null values in ``column`` (0 for an empty result)."""
        return self.null_counts.get(column, 0) / self.rows if self.rows else 0.0


class RetrievalJob:
    """The lazy result of :meth:`FeatureStore.get_historical_features`.

    Nothing runs until a ``to_*`` method is called; each call runs the join again.

    Attributes:
        entity_table: The entity table as output (timestamp column normalized to UTC).
        feature_schema: Names and Arrow types of the feature columns.
        feature_columns: The feature column names, in output order.
    """

    def __init__(
        self,
        entity_table: pa.Table,
        feature_schema: pa.Schema,
        run: Callable[[int], pa.RecordBatchReader] | None,
        *,
        selections: Sequence[ViewSelection] = (),
        full_feature_names: bool = False,
    ) -> None:
        """Create a job.

        Args:
            entity_table: The entity columns of the output, one row per output row.
            feature_schema: The feature columns' names and types.
            run: Called with a batch size; returns the feature columns in entity-row order,
                exactly ``entity_table.num_rows`` rows. ``None`` when there is nothing to join
                (every feature is null).
            selections: The resolved selections (for introspection).
            full_feature_names: Whether the columns are named ``view__feature``.
        """
        self.entity_table = entity_table
        self.feature_schema = feature_schema
        self._run = run
        self.selections = list(selections)
        self.full_feature_names = full_feature_names

    @property
    def feature_columns(self) -> list[str]:
        """The feature column names, in output order."""
        return list(self.feature_schema.names)

    @property
    def schema(self) -> pa.Schema:
        """The output schema: the entity table's columns, then the features."""
        import pyarrow as pa

        return pa.schema(list(self.entity_table.schema) + list(self.feature_schema))

    @property
    def num_rows(self) -> int:
        """The number of output rows (always the number of entity rows)."""
        return self.entity_table.num_rows

    def _feature_batches(self, batch_size: int) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        n = self.entity_table.num_rows
        if self._run is None or n == 0:
            for start in range(0, n, batch_size):
                size = min(batch_size, n - start)
                arrays = [pa.nulls(size, f.type) for f in self.feature_schema]
                yield pa.RecordBatch.from_arrays(arrays, schema=self.feature_schema)
            return
        seen = 0
        for batch in self._run(batch_size):
            if batch.num_rows == 0:
                continue
            seen += batch.num_rows
            yield _conform(batch, self.feature_schema)
        if seen != n:  # pragma: no cover - an engine bug, never bad input
            raise QuiverError(f"internal error: the join returned {seen} rows for {n} entity rows")

    def to_batches(self, batch_size: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """Stream the result as record batches (entity columns, then features)."""
        import pyarrow as pa

        schema = self.schema
        offset = 0
        for fb in self._feature_batches(batch_size):
            entity = self.entity_table.slice(offset, fb.num_rows)
            offset += fb.num_rows
            columns = [c.combine_chunks() for c in entity.columns] + list(fb.columns)
            yield pa.RecordBatch.from_arrays(columns, schema=schema)

    def to_reader(self, batch_size: int = DEFAULT_BATCH_ROWS) -> pa.RecordBatchReader:
        """The result as a ``RecordBatchReader``."""
        import pyarrow as pa

        return pa.RecordBatchReader.from_batches(self.schema, self.to_batches(batch_size))

    def to_arrow(self) -> pa.Table:
        """The whole result as a ``pyarrow.Table``."""
        import pyarrow as pa

        if self._run is None or self.entity_table.num_rows == 0:
            features = pa.Table.from_batches(
                list(self._feature_batches(max(self.entity_table.num_rows, 1))),
                schema=self.feature_schema,
            )
        else:
            features = pa.Table.from_batches(
                list(self._feature_batches(DEFAULT_BATCH_ROWS * 8)), schema=self.feature_schema
            )
        return pa.Table.from_arrays(
            list(self.entity_table.columns) + list(features.columns), schema=self.schema
        )

    def to_pandas(self) -> pd.DataFrame:
        """The result as a pandas DataFrame (timestamps stay UTC-aware).

        One pandas block per column (no consolidation into 2-D blocks, which copies every
        column once more), zero-copy where Arrow allows (a single chunk without nulls), and
        each column's Arrow memory released as soon as it is converted.
        """
        table = self.to_arrow()
        return table.to_pandas(split_blocks=True, self_destruct=True)

    def to_df(self) -> Any:
        """Feast's name for :meth:`to_pandas`."""
        return self.to_pandas()

    def to_polars(self) -> pl.DataFrame:
        """The result as a polars DataFrame."""
        from quiver.errors import require

        pl = require("polars", "polars", "to_polars()")
        return pl.from_arrow(self.to_arrow())

    def to_parquet(
        self,
        path: str | Path,
        *,
        compression: str = "zstd",
        batch_size: int = DEFAULT_BATCH_ROWS,
        progress: Callable[[int], None] | None = None,
        overwrite: bool = True,
    ) -> TrainingSetSummary:
        """Stream the result into a Parquet file without building it whole in memory.

        The join runs in DuckDB (which may spill to disk); record batches are written as they
        arrive. The file appears only when complete (written under a temporary name, then
        renamed).

        Args:
            path: The output file.
            compression: The Parquet compression codec.
            batch_size: Rows per batch (and row-group granularity).
            progress: Called with the number of rows written so far, after each batch.
            overwrite: Replace an existing file (otherwise it is refused before the join runs).

        Returns:
            A summary: rows, columns and null counts per feature.

        Raises:
            ConflictError: the file exists and ``overwrite`` is false.
        """
        import pyarrow.parquet as pq

        from quiver._paths import publish_file, temp_path
        from quiver.errors import ConflictError

        out = Path(path).expanduser()
        if out.exists() and out.is_dir():
            raise InvalidError(f"output path '{out}' is a directory; give a file name")
        if out.exists() and not overwrite:
            raise ConflictError(
                f"output path '{out}' already exists; ask to overwrite it, or choose another",
                details={"path": str(out)},
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(out)
        rows = 0
        nulls = dict.fromkeys(self.feature_columns, 0)
        try:
            with pq.ParquetWriter(tmp, self.schema, compression=compression) as writer:
                for batch in self.to_batches(batch_size):
                    writer.write_batch(batch)
                    rows += batch.num_rows
                    for name in nulls:
                        nulls[name] += batch.column(name).null_count
                    if progress is not None:
                        progress(rows)
            publish_file(tmp, out, overwrite=overwrite)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return TrainingSetSummary(
            path=out,
            rows=rows,
            columns=list(self.schema.names),
            feature_columns=self.feature_columns,
            null_counts=nulls,
        )

    def __repr__(self) -> str:
        return (
            f"RetrievalJob(rows={self.num_rows}, entity_columns={self.entity_table.column_names}, "
            f"features={self.feature_columns})"
        )


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    import pyarrow as pa

    if batch.schema.equals(schema):
        return batch
    arrays = []
    for i, f in enumerate(schema):
        col = batch.column(i)
        if col.type != f.type:
            col = col.cast(f.type)
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------------------------
# entity tables
# --------------------------------------------------------------------------------------------


def load_entity_table(
    store: FeatureStore,
    entity_df: Any,
    *,
    timestamp_column: str,
    key_types: dict[str, str] | None = None,
) -> tuple[pa.Table, str]:
    """Turn ``entity_df`` into an Arrow table; return it and its timestamp column's name.

    Args:
        store: The feature store (for paths and registered label sources).
        entity_df: pandas / polars DataFrame, Arrow Table / RecordBatch / reader, a Parquet or
            CSV path (local or ``s3://``), or the name of a registered data source.
        timestamp_column: The timestamp column asked for.
        key_types: Join key dtypes, used to read keys from CSV files with the right type.

    Raises:
        NotFoundError: the path or source does not exist.
        InvalidError: an unsupported object.
    """
    import pyarrow as pa

    if isinstance(entity_df, pa.Table):
        return entity_df, timestamp_column
    if isinstance(entity_df, pa.RecordBatch):
        return pa.Table.from_batches([entity_df]), timestamp_column
    if isinstance(entity_df, pa.RecordBatchReader):
        return entity_df.read_all(), timestamp_column
    if isinstance(entity_df, (str, Path)):
        return _entity_from_name(store, entity_df, timestamp_column, key_types or {})
    module = type(entity_df).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(entity_df, pd.DataFrame):
            try:
                return pa.Table.from_pandas(entity_df, preserve_index=False), timestamp_column
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise InvalidError(f"entity_df cannot be converted to Arrow: {exc}") from exc
    if module == "polars" and hasattr(entity_df, "to_arrow"):
        if type(entity_df).__name__ == "LazyFrame":
            entity_df = entity_df.collect()
        return entity_df.to_arrow(), timestamp_column
    if hasattr(entity_df, "__arrow_c_stream__"):
        return pa.table(entity_df), timestamp_column
    raise InvalidError(
        f"entity_df of type {type(entity_df).__name__} is not supported; pass a pandas or polars "
        "DataFrame, a pyarrow Table, a Parquet/CSV path or the name of a registered data source"
    )


def entity_source(
    store: FeatureStore, entity_df: str | Path, timestamp_column: str
) -> tuple[FileSource | IcebergSource, str]:
    """The source an entity table named by text is read from, and how to name it in errors.

    A plain name of a registered data source is that source; anything else is a Parquet or CSV
    path (relative to the repo or the working directory), a folder, a glob or ``s3://``.

    Raises:
        NotFoundError: neither an existing path nor a registered source.
        InvalidError: empty text.
    """
    from quiver.offline.sources import is_s3

    text = str(entity_df)
    source: Any = None
    if isinstance(entity_df, str) and NAME_RE.match(text):
        source = store.registry.find("data_source", text)
    if source is None:
        if not text.strip():
            raise InvalidError("entity_df is an empty string; give a path or a data source name")
        path = text
        if not is_s3(text):
            local = Path(text).expanduser()
            if not local.is_absolute() and not local.exists():
                candidate = store.config.resolve(local)
                local = candidate if candidate.exists() else local.resolve()
            path = str(local.resolve())
            if not Path(path).exists() and not any(ch in text for ch in "*?["):
                names = store.registry.names("data_source")
                hint = did_you_mean(text, names) if NAME_RE.match(text) else ""
                raise NotFoundError(
                    f"entity_df '{text}' is neither an existing file nor a registered data "
                    f"source{hint}"
                )
        lowered = path.lower().rstrip("/")
        fmt = "csv" if lowered.endswith((".csv", ".csv.gz", ".tsv")) else "parquet"
        source = FileSource(
            name="entity_df", path=path, format=fmt, timestamp_field=timestamp_column
        )
        return source, f"entity_df '{text}'"
    return source, f"entity_df (data source '{text}')"


def count_entity_rows(
    store: FeatureStore, entity_df: str | Path, *, limit: int | None = None
) -> int:
    """The rows of an entity table named by text (a source or a path), without reading it.

    Args:
        store: The feature store.
        entity_df: A registered data source's name or a path, as
            :meth:`~quiver.store.FeatureStore.get_historical_features` takes it.
        limit: Stop counting past ``limit`` (see :func:`quiver.offline.counting.count_rows`).

    Raises:
        NotFoundError: no such source or file.
    """
    from quiver.offline.counting import count_rows

    source, _ = entity_source(store, entity_df, "event_timestamp")
    return count_rows(store.config, source, limit)


def _entity_from_name(
    store: FeatureStore, entity_df: str | Path, timestamp_column: str, key_types: dict[str, str]
) -> tuple[pa.Table, str]:
    from quiver.offline.sources import read_table

    source, what = entity_source(store, entity_df, timestamp_column)
    ts = source.field_mapping.get(source.timestamp_field, source.timestamp_field)
    try:
        table = read_table(store.config, source, dtypes=key_types)
    except NotFoundError:
        raise
    except InvalidError as exc:
        raise type(exc)(f"{what}: {exc.message}") from exc
    if timestamp_column not in table.column_names and ts in table.column_names:
        timestamp_column = ts
    return table, timestamp_column


# --------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------


def get_historical_features(
    store: FeatureStore,
    entity_df: Any,
    *,
    features: Sequence[str] | None = None,
    feature_service: str | None = None,
    full_feature_names: bool = False,
    timestamp_column: str = "event_timestamp",
) -> RetrievalJob:
    """Point-in-time correct feature values for each row of ``entity_df``.

    See :meth:`quiver.store.FeatureStore.get_historical_features`; this is its implementation.

    Raises:
        NotFoundError: an unknown view, feature, service, file or source.
        InvalidError: a missing join key or timestamp column, a wrong column type, a name clash.
    """
    from quiver.selection import output_names

    if isinstance(features, str):
        features = [features]
    selections = store.resolve_features(features, feature_service)
    names = output_names(selections, full_feature_names)
    key_types: dict[str, str] = {}
    for sel in selections:
        key_types.update(sel.key_types)
    table, ts_col = load_entity_table(
        store, entity_df, timestamp_column=timestamp_column, key_types=key_types
    )
    _check_entity_table(table, ts_col, selections, names)
    return store.offline_engine.get_historical_features(
        table, selections, timestamp_column=ts_col, full_feature_names=full_feature_names
    )


def _check_entity_table(
    table: pa.Table, ts_col: str, selections: Sequence[ViewSelection], names: Sequence[str]
) -> None:
    cols = table.column_names
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise InvalidError(f"entity_df has duplicate column names: {', '.join(dup)}")
    if ts_col not in cols:
        raise InvalidError(
            f"entity_df has no timestamp column '{ts_col}'{did_you_mean(ts_col, cols)}; "
            "pass timestamp_column=... to name it"
        )
    for sel in selections:
        for key in sel.join_keys:
            if key not in cols:
                raise InvalidError(
                    f"entity_df has no column '{key}', a join key of feature view "
                    f"'{sel.view.name}'{did_you_mean(key, cols)}; its columns are: "
                    + ", ".join(cols)
                )
    clash = [n for n in names if n in cols]
    if clash:
        raise InvalidError(
            f"entity_df already has column(s) {', '.join(repr(c) for c in clash)}, which are also "
            "feature columns of the output; rename them or pass full_feature_names=True"
        )


@dataclass(frozen=True)
class JoinInput:
    """What every engine's point-in-time join starts from (:meth:`of`): the entity table with
    its timestamp normalized, that timestamp, the output names and the features' schema.

    Attributes:
        entity: The entity table, its timestamp column ``timestamp[us, UTC]``.
        ts: That timestamp column.
        names: The output name of each selected feature, in order.
        feature_schema: The feature columns the engine returns.
        selections: The selections joined.
        full_feature_names: Whether names are ``view__feature``.
    """

    entity: pa.Table
    ts: pa.ChunkedArray
    names: list[str]
    feature_schema: pa.Schema
    selections: list[ViewSelection]
    full_feature_names: bool

    @classmethod
    def of(
        cls,
        entity_table: pa.Table,
        selections: list[ViewSelection],
        *,
        timestamp_column: str,
        full_feature_names: bool,
    ) -> JoinInput:
        """Check and normalize an engine's ``get_historical_features`` arguments.

        Raises:
            InvalidError: the timestamp column is missing or not a timestamp.
        """
        import pyarrow as pa

        from quiver.offline.timestamps import normalize_timestamp
        from quiver.selection import output_names
        from quiver.types import arrow_type

        names = output_names(selections, full_feature_names)
        if timestamp_column not in entity_table.column_names:
            raise InvalidError(f"entity_df has no timestamp column '{timestamp_column}'")
        ts = normalize_timestamp(
            entity_table.column(timestamp_column),
            what=f"entity_df timestamp column '{timestamp_column}'",
        )
        entity = entity_table.set_column(
            entity_table.column_names.index(timestamp_column), timestamp_column, ts
        )
        dtypes = [f.dtype for sel in selections for f in sel.features]
        schema = pa.schema(
            [pa.field(name, arrow_type(dtype)) for name, dtype in zip(names, dtypes, strict=True)]
        )
        return cls(entity, ts, names, schema, list(selections), full_feature_names)

    def job(self, run: Callable[[int], pa.RecordBatchReader] | None) -> RetrievalJob:
        """The lazy job over ``run`` (``None``: no entity rows, no features to compute)."""
        return RetrievalJob(
            self.entity,
            self.feature_schema,
            run,
            selections=self.selections,
            full_feature_names=self.full_feature_names,
        )
