"""The Spark offline engine: point-in-time joins and latest-per-key pulls on Apache Spark.

Chosen by ``offline_engine: {type: spark, master: ..., conf: {...}}`` (or ``remote: sc://...``,
Spark Connect). Same contract and same results as :mod:`quiver.offline.duckdb`; the data stays
in Spark:

* sources are read by Spark (:mod:`quiver.offline._spark_sources`); only the entity table's join
  keys, timestamps and row numbers go from the driver into Spark (the extra entity columns stay
  on the driver and are put back beside the features);
* the point-in-time join is *union and window*, one per view: the entity rows and the view's
  source rows (only those of the entity keys, in ``(min(t) - ttl, max(t)]``) are unioned,
  partitioned by the join keys and ordered by ``(time, source before entity, created time)``;
  each entity row takes the last source row before it (``last(..., ignorenulls)`` over a
  running frame). That is a shuffle by key and a sort within each key: it scales with the
  data, where a cross join or a range join without keys would not. Views chain: each view's
  window runs over the previous view's output rows, so there is no join back per view;
* results reach Python through Parquet: Spark writes the result, ordered by entity row (or the
  latest rows per key), under ``offline_engine.staging_dir`` (a temp directory by default) and
  Python streams it back in record batches with pyarrow, then removes the files. Nothing is
  collected to the driver.

Feature transformations run in the same SQL sandbox as with DuckDB
(:mod:`quiver.features.sql`), on Arrow batches inside ``mapInArrow``, so they give the same
values. Windowed aggregations are computed by :mod:`quiver.offline._spark_aggregations`.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError, ConfigError, QuiverError
from quiver.offline._spark_sources import (
    CREATED,
    TS,
    open_session,
    spark_error,
    spark_type,
    view_frame,
)
from quiver.offline.sources import TimeWindow, to_utc_micros
from quiver.types import arrow_type

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from quiver.config import RepoConfig, SparkOfflineEngineConfig
    from quiver.definitions import FileSource, IcebergSource
    from quiver.features.transformations import ViewTransform
    from quiver.offline.retrieval import RetrievalJob
    from quiver.selection import ViewSelection

__all__ = ["SparkOfflineEngine"]

_MATCH = "__v"


class SparkOfflineEngine:
    """The Spark offline engine.

    Args:
        config: The repo config (``offline_engine`` of type ``spark``, paths, S3, Iceberg).
        session: A Spark session to use (not stopped on :meth:`close`); by default the active
            one, else a new one from ``offline_engine`` (stopped on :meth:`close`).

    Raises:
        MissingExtraError: pyspark is not installed (extra ``spark``).
        ConfigError: Spark cannot start.
    """

    def __init__(self, config: RepoConfig, *, session: Any = None) -> None:
        from quiver.config import SparkOfflineEngineConfig

        settings = config.offline_engine
        if not isinstance(settings, SparkOfflineEngineConfig):
            settings = SparkOfflineEngineConfig()
        self.config = config
        self.settings = settings
        if settings.staging_dir is None and not _shares_local_disk(settings):
            where = settings.remote or settings.master
            raise ConfigError(
                f"offline_engine.staging_dir must be set for Spark at {where}: results come "
                "back through Parquet files there, so it must be a directory both the cluster "
                "and this machine can read (e.g. a shared mount)"
            )
        self._staging: str | None = None
        if settings.staging_dir is not None:
            if "://" in settings.staging_dir:
                raise ConfigError(
                    "offline_engine.staging_dir must be a directory path (a shared mount), not "
                    f"a URI: {settings.staging_dir!r}"
                )
            staging = config.resolve(settings.staging_dir)
            staging.mkdir(parents=True, exist_ok=True)
            self._staging = str(staging)
        if session is None:
            session, owns = open_session(settings, config)
        else:
            from quiver.offline._spark_sources import SESSION_CONF, quiet_pyspark

            for key, value in SESSION_CONF.items():
                session.conf.set(key, value)
            quiet_pyspark()
            owns = False
        self.session = session
        self._owns = owns
        self._closed = False
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the Spark session if the engine started it."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns:
            self.session.stop()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError("the Spark offline engine is closed")

    # -- estimates ------------------------------------------------------------------------------

    def estimate_rows(self, source: FileSource | IcebergSource) -> int | None:
        """A cheap estimate of a source's row count from metadata (``None`` when unknown;
        :func:`quiver.offline.counting.estimate_rows`)."""
        from quiver.offline.counting import estimate_rows

        return estimate_rows(self.config, source)

    # -- results back to Python -----------------------------------------------------------------

    def _stream(
        self, frame: DataFrame, schema: pa.Schema, what: str, batch_size: int
    ) -> pa.RecordBatchReader:
        """Have Spark write ``frame`` (already in output order) to Parquet under the staging
        directory, then stream the files back in order, cast to ``schema``."""
        import pyarrow as pa

        root = tempfile.mkdtemp(prefix="quiver-spark-", dir=self._staging)
        path = f"{root}/result"
        try:  # a file:// URI: not the cluster's default file system (HDFS on YARN)
            frame.write.mode("overwrite").parquet(Path(path).resolve().as_uri())
        except Exception as exc:
            shutil.rmtree(root, ignore_errors=True)
            raise spark_error(exc, what) from exc
        return pa.RecordBatchReader.from_batches(
            schema, _read_back(root, path, schema, batch_size, what)
        )

    # -- latest per key -------------------------------------------------------------------------

    def pull_latest(
        self, selection: ViewSelection, start: datetime | None, end: datetime
    ) -> pa.RecordBatchReader:
        """One row per entity key: the latest source row with ``start <= event_ts < end``.

        See :meth:`quiver.offline.OfflineEngine.pull_latest`. Rows with a null join key are
        left out. The latest row per key is a hash aggregate in Spark (``max_by`` on the
        ``(event time, created time)`` order; a missing created time loses a tie); the rows
        stream back in record batches, in no particular order.

        Raises:
            NotFoundError: the source's files or table do not exist.
            InvalidError: a declared column is missing or cannot be cast.
            BackendError: Spark failed.
        """
        import pyarrow as pa
        from pyspark.sql import functions as F

        from quiver.features.transformations import view_transform

        self._check_open()
        keys = selection.join_keys
        key_types = selection.key_types
        columns: dict[str, str | None] = {k: key_types[k] for k in keys}
        for f in selection.features:
            columns[f.name] = f.dtype
        tx = view_transform(selection.view, selection.features, selection.source)
        if tx is not None:
            columns = tx.source_columns({k: key_types[k] for k in keys})
        window = TimeWindow(
            lo=None if start is None else to_utc_micros(start),
            lo_inclusive=True,
            hi=to_utc_micros(end),
            hi_inclusive=False,
        )
        schema = pa.schema(
            [pa.field(k, arrow_type(key_types[k])) for k in keys]
            + [pa.field(f.name, arrow_type(f.dtype)) for f in selection.features]
            + [
                pa.field("event_timestamp", pa.timestamp("us", tz="UTC")),
                pa.field("created_timestamp", pa.timestamp("us", tz="UTC")),
            ]
        )
        what = f"feature view '{selection.view.name}'"
        if window.empty:
            return pa.RecordBatchReader.from_batches(schema, iter(()))
        try:
            frame = view_frame(
                self.session,
                self.config,
                selection,
                columns,
                window=window,
                roles=_roles(selection),
            )
            values = [c for c in columns if c not in keys] + [TS, CREATED]
            for k in keys:
                frame = frame.where(F.col(_q(k)).isNotNull())
            latest = frame.groupBy(*[_q(k) for k in keys]).agg(
                F.max_by(
                    F.struct(*[F.col(_q(c)).alias(f"v{i}") for i, c in enumerate(values)]),
                    F.struct(F.col(TS), F.col(CREATED)),
                ).alias(_MATCH)
            )
            latest = latest.select(
                *[_q(k) for k in keys],
                *[F.col(f"{_MATCH}.v{i}").alias(c) for i, c in enumerate(values)],
            )
            if tx is not None:  # transformations run on the latest rows, as with DuckDB
                keep = [*keys, *tx.plain, TS, CREATED]
                latest = _transform(latest, tx, keep)
            out = latest.select(
                *[_q(k) for k in keys],
                *[_q(f.name) for f in selection.features],
                F.col(TS).alias("event_timestamp"),
                F.col(CREATED).alias("created_timestamp"),
            )
        except QuiverError:
            raise
        except Exception as exc:
            raise spark_error(exc, what) from exc
        return self._stream(out, schema, what, 10_000)

    # -- probes ---------------------------------------------------------------------------------

    def probe(self, selection: ViewSelection, *, check_types: bool = False) -> tuple[int, Any]:
        """The row count and newest event timestamp of a view's source rows, read as
        materialization reads them (see :func:`quiver.offline.probe.probe_view`); with
        ``check_types`` every value is cast (a value its dtype cannot hold fails). One
        aggregate row comes back to the driver.

        Raises:
            NotFoundError: the source's files or table do not exist.
            InvalidError: a declared column is missing, or a value cannot be cast.
        """
        from datetime import UTC

        from pyspark.sql import functions as F

        from quiver.features.transformations import view_transform

        self._check_open()
        keys = selection.join_keys
        columns: dict[str, str | None] = {k: selection.key_types[k] for k in keys}
        for f in selection.features:
            columns[f.name] = f.dtype
        tx = view_transform(selection.view, selection.features, selection.source)
        if tx is not None:
            columns = tx.source_columns({k: selection.key_types[k] for k in keys})
        what = f"feature view '{selection.view.name}'"
        try:
            frame = view_frame(
                self.session, self.config, selection, columns, roles=_roles(selection)
            )
            aggs = [F.count(F.lit(1)), F.max(TS)]
            if check_types:
                aggs += [F.count(F.col(_q(c))) for c in columns]
            row = frame.agg(*aggs).collect()[0]
        except QuiverError:
            raise
        except Exception as exc:
            raise spark_error(exc, what) from exc
        newest = row[1]
        if isinstance(newest, datetime):  # the session is UTC; pyspark gives naive local time
            newest = newest.astimezone(UTC) if newest.tzinfo else _utc_from_local(newest)
        return int(row[0]), newest

    # -- tiles of windowed aggregations ----------------------------------------------------------

    def pull_tiles(
        self, selection: ViewSelection, spec: Any, lo_us: int | None, end_us: int
    ) -> pa.RecordBatchReader:
        """The partial aggregates per key and tile of a view's events with
        ``lo_us < event_ts < end_us`` (see
        :meth:`quiver.offline.duckdb.DuckDBOfflineEngine.pull_tiles`), computed by
        :func:`quiver.offline._spark_aggregations.pull_tiles`."""
        from quiver.offline import _spark_aggregations

        self._check_open()
        window = TimeWindow(lo=lo_us, lo_inclusive=False, hi=end_us, hi_inclusive=False)
        columns = sorted({p.column for p in spec.parts if p.column is not None})
        events = _events(self, selection, columns, window)
        return _spark_aggregations.pull_tiles(
            self.session, events, selection, spec, lo_us, end_us, self.config
        )

    # -- point-in-time join ---------------------------------------------------------------------

    def get_historical_features(
        self,
        entity_table: pa.Table,
        selections: list[ViewSelection],
        *,
        timestamp_column: str,
        full_feature_names: bool,
    ) -> RetrievalJob:
        """Build the point-in-time join (planned now, which checks the sources; run lazily by
        the returned job).

        See :meth:`quiver.offline.OfflineEngine.get_historical_features`.

        Raises:
            InvalidError: a bad timestamp column, a join key that cannot be cast to its dtype,
                a missing source column.
            NotFoundError: a source's files or table do not exist.
        """

        from quiver.offline.retrieval import JoinInput

        self._check_open()
        join = JoinInput.of(
            entity_table,
            selections,
            timestamp_column=timestamp_column,
            full_feature_names=full_feature_names,
        )
        if entity_table.num_rows == 0:
            return join.job(None)
        from quiver.offline._spark_join import JoinPlan

        plan = JoinPlan(self, join.entity, join.ts, selections, join.names)
        frame = plan.build()
        what = plan.what
        feature_schema = join.feature_schema

        def run(batch_size: int) -> pa.RecordBatchReader:
            self._check_open()
            return self._stream(frame, feature_schema, what, batch_size)

        return join.job(run)


def _shares_local_disk(settings: SparkOfflineEngineConfig) -> bool:
    """Whether Spark's executors write to this machine's disk: a local master, or Spark
    Connect on this machine."""
    if settings.remote:
        host = settings.remote[len("sc://") :].split("/", 1)[0].rsplit(":", 1)[0]
        return host in ("localhost", "127.0.0.1", "[::1]")
    return settings.master.startswith("local")


def _utc_from_local(value: datetime) -> datetime:
    """A naive datetime PySpark made from a ``TIMESTAMP`` (in the driver's local time zone) as
    an aware UTC datetime."""
    from datetime import UTC

    return value.astimezone(UTC)


def _q(name: str) -> str:
    """A column name as Spark's ``col()`` reads it literally."""
    return "`" + name.replace("`", "``") + "`"


def _roles(sel: ViewSelection) -> dict[str, str]:
    roles = {k: f"join key '{k}' of feature view '{sel.view.name}'" for k in sel.join_keys}
    for f in sel.features:
        roles[f.name] = f"feature '{f.name}' of feature view '{sel.view.name}'"
    return roles


def _events(
    engine: SparkOfflineEngine, sel: ViewSelection, columns: Sequence[str], window: TimeWindow
) -> DataFrame:
    """The view's events for its aggregations: the join keys, ``columns`` (cast to their
    features' dtypes), ``__ts`` and ``__created``, within ``window``."""
    view = sel.view
    wanted: dict[str, str | None] = {k: sel.key_types[k] for k in sel.join_keys}
    dtypes = {f.name: f.dtype for f in view.features}
    roles = {k: f"join key '{k}' of feature view '{view.name}'" for k in sel.join_keys}
    for c in columns:
        wanted[c] = dtypes[c]
        roles[c] = f"column '{c}' of feature view '{view.name}' (aggregated)"
    from quiver.offline._spark_sources import source_frame

    return source_frame(
        engine.session, engine.config, sel.source, wanted, window=window, roles=roles
    )


def _spark_arrow(dtype: str) -> pa.DataType:
    """The Arrow type Spark exchanges for a dtype (timestamps in UTC)."""
    import pyarrow as pa

    t = arrow_type(dtype)
    return pa.timestamp("us", tz="UTC") if pa.types.is_timestamp(t) else t


def _transform(frame: DataFrame, tx: ViewTransform, keep: Sequence[str]) -> DataFrame:
    """``keep``, then the computed features of ``tx``, computed by the SQL sandbox on Arrow
    batches inside ``mapInArrow`` (the same code and values as on DuckDB)."""
    import pyarrow as pa

    computed = [f for f in tx.features if f.name in tx.computed]
    ddl = [f"{_q(c)} {frame.schema[c].dataType.simpleString()}" for c in keep]
    ddl += [f"{_q(f.name)} {spark_type(f.dtype)}" for f in computed]
    keep = list(keep)
    types = {f.name: _spark_arrow(f.dtype) for f in computed}

    def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:

        for batch in batches:
            table = pa.Table.from_batches([batch])
            for i, fld in enumerate(table.schema):  # the sandbox's timestamps are naive UTC
                if pa.types.is_timestamp(fld.type) and fld.type.tz is not None:
                    table = table.set_column(i, fld.name, table.column(i).cast(pa.timestamp("us")))
            out = tx.apply(table, keep, ts=TS, created=CREATED)
            arrays = []
            for name in keep:
                arrays.append(batch.column(batch.schema.get_field_index(name)))
            for name, target in types.items():
                col = out.column(name)
                arrays.append(col.cast(target) if col.type != target else col)
            names = [*keep, *types]
            yield from pa.Table.from_arrays(arrays, names=names).to_batches()

    return frame.mapInArrow(apply, ", ".join(ddl))


def _read_back(
    root: str, path: str, schema: pa.Schema, batch_size: int, what: str
) -> Iterator[pa.RecordBatch]:
    """The Parquet files Spark wrote under ``path``, in part order, in batches cast to
    ``schema``; ``root`` is removed at the end (or when the reader is dropped)."""
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        files = sorted(
            f for f in os.listdir(path) if f.endswith(".parquet") and not f.startswith((".", "_"))
        )
        for name in files:
            pf = pq.ParquetFile(os.path.join(path, name))
            for batch in pf.iter_batches(batch_size=batch_size):
                if batch.num_rows == 0:
                    continue
                arrays = []
                for f in schema:
                    col = batch.column(batch.schema.get_field_index(f.name))
                    arrays.append(col if col.type == f.type else col.cast(f.type))
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except QuiverError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise BackendError(f"{what}: cannot read Spark's result: {exc}") from exc
    finally:
        shutil.rmtree(root, ignore_errors=True)
