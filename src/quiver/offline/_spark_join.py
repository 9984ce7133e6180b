"""The Spark engine's point-in-time join: union and window per view (see
:mod:`quiver.offline.spark` for why it scales).

The entity frame holds ``__row_id`` (the input row number), ``__ts`` (the entity timestamp, UTC)
and one column per distinct (join key, dtype), cast on the driver exactly as the DuckDB engine
casts them. Each plain view adds its feature columns to it (under private names) by one window;
each view with windowed aggregations by a left join on ``__row_id`` with
:func:`quiver.offline._spark_aggregations.historical_aggregates`. The result is the feature
columns, ordered by ``__row_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from quiver.errors import QuiverError
from quiver.offline._spark_sources import CREATED, TS, spark_error, spark_type, view_frame
from quiver.offline.sources import TimeWindow

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import Column, DataFrame

    from quiver.offline.spark import SparkOfflineEngine
    from quiver.selection import ViewSelection

__all__ = ["JoinPlan"]

SINGLE_SORT_ROWS = 1_000_000
"""Up to this many entity rows the result is sorted in one partition (no sampling job)."""

_ROW = "__row_id"
_IS_ENTITY = "__is_e"
_MATCH = "__v"
_C = "__c"


def _us(delta: Any) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


class JoinPlan:
    """The Spark plan of one point-in-time join."""

    def __init__(
        self,
        engine: SparkOfflineEngine,
        entity: pa.Table,
        ts: pa.ChunkedArray,
        selections: Sequence[ViewSelection],
        names: Sequence[str],
    ) -> None:
        self.engine = engine
        self.session = engine.session
        self.selections = list(selections)
        self.names = list(names)
        self.what = "feature view(s) " + ", ".join(f"'{s.view.name}'" for s in selections)
        self._entity_arrow(entity, ts)

    def _entity_arrow(self, entity: pa.Table, ts: pa.ChunkedArray) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        from quiver.offline.duckdb import _entity_key

        n = entity.num_rows
        utc = ts.cast(pa.timestamp("us", tz="UTC"))
        arrays: dict[str, Any] = {_ROW: pa.array(np.arange(n, dtype=np.int64)), TS: utc}
        self.key_cols: dict[tuple[str, str], str] = {}
        for sel in self.selections:
            for key in sel.join_keys:
                dtype = sel.key_types[key]
                if (key, dtype) in self.key_cols:
                    continue
                name = f"__k{len(self.key_cols)}"
                self.key_cols[(key, dtype)] = name
                col = _entity_key(entity.column(key), key, dtype, sel)
                if dtype == "timestamp":
                    col = col.cast(pa.timestamp("us", tz="UTC"))
                arrays[name] = col
        self.arrow = pa.table(arrays)
        bounds = pc.min_max(ts.cast(pa.timestamp("us")))
        lo, hi = bounds["min"], bounds["max"]
        self.t_min = None if not lo.is_valid else lo.cast(pa.int64()).as_py()
        self.t_max = None if not hi.is_valid else hi.cast(pa.int64()).as_py()

    def build(self) -> DataFrame:
        """The feature columns in entity-row order (lazy; the sources' schemas are read now).

        Raises:
            QuiverError: a source is missing or a column cannot be read as declared.
        """
        from pyspark.sql import functions as F

        try:
            frame = self.session.createDataFrame(self.arrow)
            outputs: list[Column] = []
            i = 0
            for v, sel in enumerate(self.selections):
                names = self.names[i : i + len(sel.features)]
                i += len(sel.features)
                if self.t_min is None or self.t_max is None:  # no timestamps: nothing matches
                    outputs += [
                        F.lit(None).cast(spark_type(f.dtype)).alias(n)
                        for f, n in zip(sel.features, names, strict=True)
                    ]
                    continue
                private = [f"__f{v}_{j}" for j in range(len(sel.features))]
                if sel.view.aggregations:
                    frame = self._aggregated(frame, sel, private)
                else:
                    frame = self._view(frame, sel, private)
                outputs += [F.col(p).alias(n) for p, n in zip(private, names, strict=True)]
            if self.arrow.num_rows <= SINGLE_SORT_ROWS:  # one sorted partition, no sampling
                ordered = frame.repartition(1).sortWithinPartitions(_ROW)
            else:  # a range partitioning of the row numbers: files in row order
                ordered = frame.orderBy(_ROW)
            return ordered.select(*outputs)
        except QuiverError:
            raise
        except Exception as exc:
            raise spark_error(exc, self.what) from exc

    def _keys(self, sel: ViewSelection) -> list[str]:
        return [self.key_cols[(k, sel.key_types[k])] for k in sel.join_keys]

    def _view(self, entity: DataFrame, sel: ViewSelection, private: Sequence[str]) -> DataFrame:
        """``entity`` with the view's features (as ``private``) of the latest source row at or
        before each row's time, within the TTL."""
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        from quiver.features.transformations import view_transform
        from quiver.offline.spark import _roles, _transform

        assert self.t_min is not None and self.t_max is not None
        ttl = None if sel.view.ttl is None else _us(sel.view.ttl)
        window = TimeWindow(
            lo=None if ttl is None else self.t_min - ttl,
            lo_inclusive=False,
            hi=self.t_max,
            hi_inclusive=True,
        )
        columns: dict[str, str | None] = {k: sel.key_types[k] for k in sel.join_keys}
        for f in sel.features:
            columns[f.name] = f.dtype
        tx = view_transform(sel.view, sel.features, sel.source)
        if tx is not None:
            columns = tx.source_columns({k: sel.key_types[k] for k in sel.join_keys})
        source = view_frame(
            self.session, self.engine.config, sel, columns, window=window, roles=_roles(sel)
        )
        keys = self._keys(sel)
        not_null = F.col(TS).isNotNull()
        for k in sel.join_keys:
            not_null = not_null & F.col(_q(k)).isNotNull()
        source = source.where(not_null)
        # Only the source rows of the entity keys, each within its key's (min(t) - ttl, max(t)].
        bounds = [F.max(TS).alias("__hi")]
        if ttl is not None:
            bounds.append(F.min(TS).alias("__lo"))
        ek = entity.where(F.col(TS).isNotNull()).groupBy(*keys).agg(*bounds)
        ek = ek.select(*[F.col(k).alias(f"__e{k}") for k in keys], *bounds_cols(ttl))
        on = [source[_q(k)] == ek[f"__e{c}"] for k, c in zip(sel.join_keys, keys, strict=True)]
        on.append(source[TS] <= ek["__hi"])
        if ttl is not None:
            on.append(F.unix_micros(source[TS]) > F.unix_micros(ek["__lo"]) - F.lit(ttl))
        source = source.join(ek, on=_and(on), how="left_semi")
        if tx is not None:  # transformations on the window's rows, before the match
            keep = [*sel.join_keys, TS, CREATED, *tx.plain]
            source = _transform(source, tx, keep)
        value = F.struct(
            F.col(TS).alias("t"),
            *[F.col(_q(f.name)).alias(f"f{j}") for j, f in enumerate(sel.features)],
        )
        src = source.select(
            *[F.col(_q(k)).alias(c) for k, c in zip(sel.join_keys, keys, strict=True)],
            F.col(TS),
            value.alias(_MATCH),
            F.col(CREATED).alias(_C),
            F.lit(0).alias(_IS_ENTITY),
        )
        ent = entity.select(
            "*",
            F.lit(None).cast(src.schema[_MATCH].dataType).alias(_MATCH),
            F.lit(None).cast("timestamp").alias(_C),
            F.lit(1).alias(_IS_ENTITY),
        )
        union = ent.unionByName(src, allowMissingColumns=True)
        order = Window.partitionBy(*keys).orderBy(
            F.col(TS).asc_nulls_first(), F.col(_IS_ENTITY).asc(), F.col(_C).asc_nulls_first()
        )
        running = order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
        match = F.last(F.col(_MATCH), ignorenulls=True).over(running)
        rows = union.withColumn(_MATCH, match).where(F.col(_IS_ENTITY) == 1)
        m = F.col(_MATCH)
        feats = []
        for j, name in enumerate(private):
            val = m.getField(f"f{j}")
            if ttl is not None:
                alive = F.unix_micros(m.getField("t")) > F.unix_micros(F.col(TS)) - F.lit(ttl)
                val = F.when(alive, val)
            feats.append(val.alias(name))
        return rows.select(*entity.columns, *feats)

    def _aggregated(
        self, entity: DataFrame, sel: ViewSelection, private: Sequence[str]
    ) -> DataFrame:
        """``entity`` with the view's windowed aggregates (as ``private``), left-joined on the
        row number from :func:`quiver.offline._spark_aggregations.historical_aggregates`."""
        from pyspark.sql import functions as F

        from quiver.offline import _spark_aggregations
        from quiver.offline.spark import _events

        assert self.t_min is not None and self.t_max is not None
        view = sel.view
        assert view.aggregation_interval is not None
        interval = _us(view.aggregation_interval)
        aggs = [view.aggregation(f.name) for f in sel.features]
        widest = max(a.window_us for a in aggs)
        window = TimeWindow(
            lo=(self.t_min // interval) * interval - widest,
            lo_inclusive=False,
            hi=self.t_max,
            hi_inclusive=True,
        )
        columns = sorted({a.column for a in aggs if a.column is not None})
        events = _events(self.engine, sel, columns, window)
        keys = self._keys(sel)
        rows = entity.select(
            F.col(_ROW),
            *[F.col(c).alias(k) for k, c in zip(sel.join_keys, keys, strict=True)],
            F.col(TS),
        )
        result = _spark_aggregations.historical_aggregates(
            self.session, rows, sel, self.engine.config, events
        )
        result = result.select(
            F.col(_ROW).alias("__agg_row"),
            *[F.col(_q(f.name)).alias(p) for f, p in zip(sel.features, private, strict=True)],
        )
        joined = entity.join(result, entity[_ROW] == result["__agg_row"], "left")
        return joined.drop("__agg_row")


def bounds_cols(ttl: int | None) -> list[str]:
    return ["__hi"] if ttl is None else ["__hi", "__lo"]


def _and(conds: Sequence[Column]) -> Column:
    out = conds[0]
    for c in conds[1:]:
        out = out & c
    return out
