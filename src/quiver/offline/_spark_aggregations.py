"""Windowed aggregations on the Spark offline engine: per entity row (training sets) and per
tile (materialization).

:class:`~quiver.offline.spark.SparkOfflineEngine` calls these with the view's events already read
by :func:`quiver.offline._spark_sources.source_frame` (the join keys named as the view's join
keys and cast to their dtypes, the aggregated columns cast to their features' dtypes, then
``__ts`` and ``__created``, both ``TIMESTAMP`` in UTC), restricted to the time window the
aggregates need.

One implementation of the semantics: the SQL of :mod:`quiver.features.aggregation_sql`, the
same that DuckDB runs in process, runs here per *bucket* of join keys inside Spark's Python
workers. Entity rows and events are hash-partitioned on their join keys into
``spark.sql.shuffle.partitions`` buckets (``pmod(xxhash64(keys), n)``, computed on typed keys
on both sides, so a key's rows meet in one bucket); each bucket's rows are handed to a Python
function as Arrow (``cogroup(...).applyInArrow`` for the entity rows and their events,
``groupBy(...).applyInArrow`` for tiles), which runs the aggregate SQL in an in-memory DuckDB
(one thread: Spark already runs one worker per core) and returns Arrow. So:

* the data stays in Spark: nothing is collected to the driver, which only builds SQL text and
  reads the result as a stream of Arrow batches, one partition at a time;
* the plan scales with the cluster: the work is key-partitioned, and a bucket holds about
  ``1 / n`` of the rows (raise ``spark.sql.shuffle.partitions`` when a bucket would not fit in
  an executor's Python worker);
* the values are DuckDB's: the same SQL over the same rows (float sums may differ in the last
  bits, as the rows are added in another order);
* executors need ``duckdb`` and ``pyarrow`` in their Python (the functions shipped to them are
  self-contained closures and import nothing else; installing quiver brings both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from quiver.config import RepoConfig
    from quiver.features.tiles import TileSpec
    from quiver.selection import ViewSelection

__all__ = ["historical_aggregates", "pull_tiles"]

ROW = "__row_id"
TS = "__ts"
"""The entity rows' and the events' time column (as :mod:`quiver.offline._spark_sources` names
it); the events' created time is ``__created``."""
CREATED = "__created"
_SQL_TS = "__qv_ts"  # the names aggregation_sql's SQL reads
_SQL_CREATED = "__qv_created"
_BUCKET = "__qv_bucket"
_ENTITY = "__qv_e"
_EVENTS = "__qv_ev"


# -- the functions Spark runs per bucket ---------------------------------------------------------


def _duckdb_runner(sql: str, schema: pa.Schema, cogroup: bool) -> Callable[..., pa.Table]:
    """A function of a bucket's Arrow tables (the entity rows, then the events; or the events
    alone) running ``sql`` over them in DuckDB and returning ``schema``.

    A closure: Spark pickles it by value, so executors need only ``duckdb`` and ``pyarrow``.
    """

    def compute(tables: tuple[pa.Table, ...]) -> pa.Table:
        import duckdb
        import pyarrow as pa

        def naive(table: pa.Table) -> pa.Table:
            # Spark hands timestamps as UTC-zoned Arrow; the SQL compares naive UTC.
            for i, field in enumerate(table.schema):
                if pa.types.is_timestamp(field.type) and field.type.tz is not None:
                    col = table.column(i).cast(pa.int64()).cast(pa.timestamp("us"))
                    table = table.set_column(i, field.name, col)
            return table

        if tables[0].num_rows == 0:
            return schema.empty_table()
        names = ("__qv_e", "__qv_ev") if len(tables) == 2 else ("__qv_ev",)
        con = duckdb.connect(":memory:", config={"threads": 1})
        try:
            con.execute("SET TimeZone = 'UTC'")
            for name, table in zip(names, tables, strict=True):
                con.register(name, naive(table))
            out = con.sql(sql).to_arrow_table()
        finally:
            con.close()
        arrays = []
        for i, field in enumerate(schema):
            col = out.column(i)
            if pa.types.is_timestamp(field.type) and col.type != field.type:
                col = col.cast(pa.int64()).cast(field.type)
            elif col.type != field.type:
                col = col.cast(field.type)
            arrays.append(col)
        return pa.Table.from_arrays(arrays, schema=schema)

    # Spark checks the arity: (left, right) for a cogroup, (table) for a group.
    def run_cogroup(left: pa.Table, right: pa.Table) -> pa.Table:
        return compute((left, right))

    def run_group(table: pa.Table) -> pa.Table:
        return compute((table,))

    return run_cogroup if cogroup else run_group


# -- helpers -------------------------------------------------------------------------------------


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _plain(dtype: pa.DataType) -> pa.DataType:
    """The Arrow type Spark exchanges for ``dtype`` (UTC timestamps, plain strings and lists)."""
    import pyarrow as pa

    if pa.types.is_timestamp(dtype):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
        return pa.string()
    if pa.types.is_large_list(dtype) or pa.types.is_list_view(dtype):
        return pa.list_(_plain(dtype.value_type))
    if pa.types.is_list(dtype):
        return pa.list_(_plain(dtype.value_type))
    return dtype


def _result_schema(sql: str, inputs: Sequence[tuple[str, pa.Schema]]) -> pa.Schema:
    """The schema of ``sql`` over empty tables of ``inputs``, as Spark exchanges it."""
    import duckdb
    import pyarrow as pa

    con = duckdb.connect(":memory:", config={"threads": 1})
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, schema in inputs:
            naive = pa.schema(
                [
                    pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f
                    for f in schema
                ]
            )
            con.register(name, naive.empty_table())
        out = con.sql(sql).to_arrow_table().schema
    finally:
        con.close()
    return pa.schema([pa.field(f.name, _plain(f.type)) for f in out])


def _arrow_schema(df: DataFrame) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema, timezone="UTC")


def _buckets(session: SparkSession) -> int:
    """How many buckets the keys are hashed into: ``spark.sql.shuffle.partitions``."""
    try:
        return max(1, int(session.conf.get("spark.sql.shuffle.partitions") or 200))
    except (TypeError, ValueError):
        return 200


def _bucket(keys: Sequence[str], n: int) -> Any:
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(*[F.col(k) for k in keys]), F.lit(n))


def _spark_type(dtype: str) -> Any:
    from pyspark.sql.pandas.types import from_arrow_type

    from quiver.types import arrow_type

    return from_arrow_type(arrow_type(dtype))


def _us(col: Any) -> Any:
    from pyspark.sql import functions as F

    return F.unix_micros(col)


def _events(events: DataFrame, sel: ViewSelection, columns: Sequence[str], n: int) -> DataFrame:
    """The events as the aggregate SQL reads them: the join keys (typed, never null), the
    aggregated ``columns``, ``__qv_ts``, ``__qv_created``, and the key's bucket."""
    from pyspark.sql import functions as F

    keys = sel.join_keys
    valid = F.col(TS).isNotNull()
    for k in keys:
        valid &= F.col(k).isNotNull()
    created = F.col(CREATED) if CREATED in events.columns else F.lit(None).cast("timestamp")
    return (
        events.where(valid)
        .select(
            *[F.col(k).cast(_spark_type(sel.key_types[k])).alias(k) for k in keys],
            *[F.col(c) for c in columns],
            F.col(TS).alias(_SQL_TS),
            created.alias(_SQL_CREATED),
        )
        .withColumn(_BUCKET, _bucket(keys, n))
    )


# -- per entity row ------------------------------------------------------------------------------


def historical_aggregates(
    session: SparkSession,
    entity: DataFrame,
    sel: ViewSelection,
    config: RepoConfig,
    events: DataFrame,
) -> DataFrame:
    """The selected aggregated features of ``sel`` per entity row.

    Args:
        session: The Spark session.
        entity: ``__row_id`` (long), the view's join keys (typed) and ``__ts`` (timestamp).
        sel: A selection of aggregated features of one view.
        config: The repo config (unused; part of the engine's contract).
        events: The view's events: the join keys (typed), the aggregated columns, ``__ts``
            (event time) and ``__created`` (created time, null or absent without one).

    Returns:
        ``__row_id`` and one column per selected feature (named as the feature), one row per
        entity row with every join key and a timestamp (the caller's left join gives the
        others nulls), with the values of
        :func:`~quiver.features.aggregation_sql.entity_aggregates_sql`.
    """
    import pyarrow as pa
    from pyspark.sql import functions as F

    from quiver.features.aggregation_sql import entity_aggregates_sql
    from quiver.types import arrow_type

    del config
    view = sel.view
    assert view.aggregation_interval is not None
    keys = sel.join_keys
    names = [f.name for f in sel.features]
    aggs = [view.aggregation(n) for n in names]
    columns = sorted({a.column for a in aggs if a.column is not None})
    n = _buckets(session)
    typed = {k: F.col(k).cast(_spark_type(sel.key_types[k])) for k in keys}
    valid = F.col(TS).isNotNull()
    for k in keys:
        valid &= F.col(k).isNotNull()
    left = (
        entity.where(valid)
        .select(F.col(ROW).cast("long").alias(ROW), *[typed[k].alias(k) for k in keys], TS)
        .withColumn(_BUCKET, _bucket(keys, n))
    )
    out_schema = pa.schema(
        [pa.field(ROW, pa.int64())] + [pa.field(f.name, arrow_type(f.dtype)) for f in sel.features]
    )
    right = _events(events, sel, columns, n)
    sql = entity_aggregates_sql(
        view,
        names,
        f'"{_ENTITY}"',
        [(k, k) for k in keys],
        ROW,
        TS,
        f'SELECT * FROM "{_EVENTS}"',
    )
    run = _duckdb_runner(sql, out_schema, cogroup=True)
    return (
        left.groupBy(_BUCKET)
        .cogroup(right.groupBy(_BUCKET))
        .applyInArrow(run, _spark_schema(out_schema))
    )


# -- per tile ------------------------------------------------------------------------------------


def pull_tiles(
    session: SparkSession,
    events: DataFrame,
    sel: ViewSelection,
    spec: TileSpec,
    lo_us: int | None,
    end_us: int,
    config: RepoConfig,
) -> pa.RecordBatchReader:
    """The partial aggregates per key and tile of the events with ``lo_us < event_ts <
    end_us``: the same columns as :meth:`quiver.offline.duckdb.DuckDBOfflineEngine.pull_tiles`,
    each key's tiles together and in tile order (keys in no global order).

    Args:
        session: The Spark session.
        events: The view's events (see :func:`historical_aggregates`).
        sel: The selection (the view's join keys).
        spec: The view's tile spec.
        lo_us: Exclusive lower bound of the event time in microseconds (``None``: none).
        end_us: Exclusive upper bound.
        config: The repo config (unused).
    """
    import pyarrow as pa
    from pyspark.sql import functions as F

    from quiver.features.aggregation_sql import tile_partials_sql

    del config
    keys = sel.join_keys
    columns = sorted({p.column for p in spec.parts if p.column is not None})
    n = _buckets(session)
    right = _events(events, sel, columns, n)
    ts = _us(F.col(_SQL_TS))
    right = right.where(ts < F.lit(int(end_us)))
    if lo_us is not None:
        right = right.where(ts > F.lit(int(lo_us)))
    sql = tile_partials_sql(spec, keys, f'SELECT * FROM "{_EVENTS}"')
    schema = _result_schema(sql, [(_EVENTS, _arrow_schema(right))])
    run = _duckdb_runner(sql, schema, cogroup=False)
    tiles = right.groupBy(_BUCKET).applyInArrow(run, _spark_schema(schema))
    what = f"feature view '{sel.view.name}'"
    return pa.RecordBatchReader.from_batches(schema, _stream(tiles, schema, what))


def _stream(df: DataFrame, schema: pa.Schema, what: str) -> Iterator[pa.RecordBatch]:
    """``df``'s rows as Arrow batches cast to ``schema``, one partition at a time.

    Each partition's Arrow batches travel as Arrow IPC bytes through ``toLocalIterator`` (what
    pyspark's own ``__arrow_c_stream__`` does; it works on Spark Connect too and needs no
    storage shared with the driver): the driver holds one partition at most.
    """
    import pyarrow as pa

    from quiver.offline._spark_sources import spark_error

    def to_ipc(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow as pa

        for batch in batches:
            if batch.num_rows == 0:
                continue
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            yield pa.RecordBatch.from_arrays(
                [pa.array([sink.getvalue().to_pybytes()], pa.binary())], names=["ipc"]
            )

    try:
        for row in df.mapInArrow(to_ipc, "ipc binary").toLocalIterator():
            with pa.ipc.open_stream(row[0]) as reader:
                for batch in reader:
                    if batch.num_rows == 0:
                        continue
                    arrays = [
                        col if col.type == f.type else col.cast(f.type)
                        for col, f in zip(batch.columns, schema, strict=True)
                    ]
                    yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    except Exception as exc:
        raise spark_error(exc, what) from exc
