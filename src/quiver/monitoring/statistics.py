"""Per-feature statistics of a materialization run and of a training set, and their storage.

**What is computed.** For every feature: ``rows``, ``count`` (non-null values), ``nulls`` and
``null_rate`` (a float NaN counts as null), ``min`` and ``max``; for numbers and booleans also
``mean`` and ``stddev`` (sample standard deviation, ``ddof=1``) and for numbers the
``quantiles`` p1, p5, p25, p50, p75, p95 and p99 (linear interpolation, as pandas and
``numpy.quantile`` do); ``distinct`` (DuckDB's HyperLogLog ``approx_count_distinct``: within a
few percent); ``top_values`` (the 10 most frequent, with counts) for strings and booleans; and
``sample``, up to ``monitoring.sample_size`` non-null values drawn at random (seeded), which the
drift tests (:mod:`quiver.monitoring.drift`) compare. Timestamps get ``min``/``max`` in ISO 8601;
lists only the counts.

**Where.** Materialization (:mod:`quiver.materialize`) hands every record batch it pulled from
the offline engine to a :class:`StatisticsCollector` on its way to the online store, so the
source is read once; the collector keeps references to the batches' feature columns (no copy)
and one DuckDB query over them computes the statistics when the run ends. The statistics are of
the rows the run wrote: the latest row per entity key in the run's range. Beyond
``monitoring.statistics_max_rows`` rows the collector keeps a systematic sample (every k-th row,
k doubling as needed): ``rows``, ``count``, ``nulls``, ``min``, ``max``, ``mean`` and ``stddev``
stay exact (kept batch by batch), the quantiles, distinct count, top values and drift sample are
computed over the kept rows, and the feature says ``"sampled": true``.

**Storage** (tables of migration 0007, :mod:`quiver.monitoring.tables`): one
``feature_statistics`` row per successful run of a view (:func:`save_view_statistics`,
:func:`list_view_statistics`, :func:`latest_view_statistics`), one ``training_statistics`` row
per model version (:func:`save_training_statistics`, :func:`get_training_statistics`). Other
modules (the freshness and drift scores of the Prometheus metrics) read them through these
functions only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.errors import BackendError
from quiver.monitoring.tables import feature_statistics, training_statistics

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Connection

    from quiver.registry import Registry

__all__ = [
    "QUANTILES",
    "StatisticsCollector",
    "TrainingStatistics",
    "ViewStatistics",
    "compute_statistics",
    "get_training_statistics",
    "latest_view_statistics",
    "list_view_statistics",
    "newest_event_per_view",
    "save_training_statistics",
    "save_view_statistics",
]

QUANTILES: tuple[tuple[str, float], ...] = (
    ("p1", 0.01),
    ("p5", 0.05),
    ("p25", 0.25),
    ("p50", 0.5),
    ("p75", 0.75),
    ("p95", 0.95),
    ("p99", 0.99),
)
"""The quantiles computed for numeric features, by name."""

TOP_VALUES = 10
"""How many of the most frequent values are kept for strings and booleans."""

_NUMERIC = ("int32", "int64", "float32", "float64")
_SEED = 0.42  # DuckDB's setseed takes a number in [-1, 1]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_value(value: Any) -> Any:
    """A JSON-safe value: non-finite floats become ``None``, times ISO 8601."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, datetime):
        return (_utc(value) or value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "__float__") and not isinstance(value, (int, bool)):  # Decimal
        return _json_value(float(value))
    return value


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def compute_statistics(
    table: pa.Table,
    dtypes: Mapping[str, str],
    *,
    sample_size: int = 1_000,
) -> dict[str, dict[str, Any]]:
    """Statistics of the columns ``dtypes`` names (column -> dtype) of ``table``, by column.

    One DuckDB query computes the aggregates of every column, one more per string or boolean
    column the top values, and one draws the sample (seeded, so the same rows give the same
    sample). See the module docstring for the fields.
    """
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("__qv_rows", table)
        return _compute(con, table.num_rows, dtypes, sample_size)
    finally:
        con.close()


def _clean(name: str, dtype: str) -> str:
    col = _q(name)
    if dtype.startswith("float"):
        return f"CASE WHEN isnan({col}) THEN NULL ELSE {col} END"
    return col


def _compute(
    con: Any, rows: int, dtypes: Mapping[str, str], sample_size: int
) -> dict[str, dict[str, Any]]:
    names = list(dtypes)
    cleaned = ", ".join(f"{_clean(n, dtypes[n])} AS {_q(n)}" for n in names)
    base = f"(SELECT {cleaned} FROM __qv_rows)" if names else "(SELECT 1 FROM __qv_rows)"
    aggs: list[str] = []
    slots: list[tuple[str, str]] = []  # (column, stat) per aggregate
    qs = ", ".join(str(q) for _, q in QUANTILES)
    for name in names:
        dtype, col = dtypes[name], _q(name)
        aggs.append(f"count({col})")
        slots.append((name, "count"))
        if dtype.startswith("list<"):
            continue
        aggs += [f"min({col})", f"max({col})", f"approx_count_distinct({col})"]
        slots += [(name, "min"), (name, "max"), (name, "distinct")]
        if dtype in _NUMERIC or dtype == "bool":
            x = f"{col}::DOUBLE" if dtype == "bool" else col
            aggs += [f"avg({x})", f"stddev_samp({x})"]
            slots += [(name, "mean"), (name, "stddev")]
        if dtype in _NUMERIC:
            aggs.append(f"quantile_cont({col}, [{qs}])")
            slots.append((name, "quantiles"))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        out[name] = {"dtype": dtypes[name], "rows": rows}
    if aggs:
        values = con.execute(f"SELECT {', '.join(aggs)} FROM {base}").fetchone()
        for (name, stat), value in zip(slots, values, strict=True):
            if stat == "quantiles":
                value = {
                    k: _json_value(v) for (k, _), v in zip(QUANTILES, value or (), strict=False)
                }
            else:
                value = _json_value(value)
            out[name][stat] = value
    for name in names:
        stats = out[name]
        count = int(stats.get("count") or 0)
        stats["count"] = count
        stats["nulls"] = rows - count
        stats["null_rate"] = (rows - count) / rows if rows else 0.0
        if dtypes[name] in ("string", "bool"):
            top = con.execute(
                f"SELECT {_q(name)} AS v, count(*) AS n FROM {base} WHERE {_q(name)} IS NOT NULL "
                f"GROUP BY v ORDER BY n DESC, v LIMIT {TOP_VALUES}"
            ).fetchall()
            stats["top_values"] = [{"value": _json_value(v), "count": int(n)} for v, n in top]
    sampled = [n for n in names if dtypes[n] in _NUMERIC or dtypes[n] in ("string", "bool")]
    if sampled and rows:
        con.execute(f"SELECT setseed({_SEED})")
        cols = ", ".join(_q(n) for n in sampled)
        picked = con.execute(
            f"SELECT {cols} FROM {base} USING SAMPLE reservoir({int(sample_size)} ROWS) "
            "REPEATABLE (42)"
        ).fetchall()
        for i, name in enumerate(sampled):
            out[name]["sample"] = [_json_value(r[i]) for r in picked if r[i] is not None]
    return out


@dataclass
class _Exact:
    """What the collector keeps exact over every row: nulls, min, max and the moments (count,
    mean, sum of squared deviations; merged batch by batch as Chan et al. do)."""

    nulls: int = 0
    lo: Any = None
    hi: Any = None
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add_moments(self, values: Any) -> None:
        import pyarrow.compute as pc

        n_b = len(values) - values.null_count
        if n_b == 0:
            return
        mean_b = float(pc.mean(values).as_py())
        m2_b = float(pc.variance(values, ddof=0).as_py()) * n_b
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n


class StatisticsCollector:
    """Collects the record batches of one materialization run and computes their statistics.

    Args:
        dtypes: The features to describe (column -> dtype).
        timestamp_column: The event timestamp column (its maximum is the newest value).
        max_rows: Rows kept at most (beyond, a systematic sample; see the module docstring).
        sample_size: Values kept per feature for the drift tests.
    """

    def __init__(
        self,
        dtypes: Mapping[str, str],
        *,
        timestamp_column: str = "event_timestamp",
        max_rows: int = 250_000,
        sample_size: int = 1_000,
    ) -> None:
        self.dtypes = dict(dtypes)
        self.timestamp_column = timestamp_column
        self.max_rows = max_rows
        self.sample_size = sample_size
        self.rows = 0
        self.newest: datetime | None = None
        self._stride = 1
        self._kept: list[tuple[int, pa.Table]] = []  # (global index of the first row, rows)
        self._kept_rows = 0
        self._exact = {n: _Exact() for n in self.dtypes}

    def add(self, batch: pa.RecordBatch) -> None:
        """Account for one batch (it must hold the features and the timestamp column)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        if n == 0:
            return
        ts = batch.column(self.timestamp_column)
        newest = _utc(pc.max(ts).as_py())
        if newest is not None:
            self.newest = newest if self.newest is None else max(self.newest, newest)
        for name, dtype in self.dtypes.items():
            col = batch.column(name)
            exact = self._exact[name]
            nulls = col.null_count
            if dtype.startswith("float"):
                nulls += int(pc.sum(pc.is_nan(col)).as_py() or 0)
            exact.nulls += nulls
            if not dtype.startswith("list<") and nulls < n:
                lo, hi = pc.min_max(col).values()
                lo, hi = lo.as_py(), hi.as_py()
                if lo is not None and not (isinstance(lo, float) and math.isnan(lo)):
                    exact.lo = lo if exact.lo is None else min(exact.lo, lo)
                if hi is not None and not (isinstance(hi, float) and math.isnan(hi)):
                    exact.hi = hi if exact.hi is None else max(exact.hi, hi)
                if dtype in _NUMERIC or dtype == "bool":
                    values = col.cast(pa.float64())
                    if dtype.startswith("float"):
                        values = pc.filter(values, pc.invert(pc.is_nan(values)))
                    exact.add_moments(values)
        table = pa.Table.from_batches([batch.select(list(self.dtypes))])
        first = (-self.rows) % self._stride
        if self._stride > 1:
            table = table.take(pa.array(np.arange(first, n, self._stride)))
        if table.num_rows:
            self._kept.append((self.rows + first, table))
            self._kept_rows += table.num_rows
        self.rows += n
        while self._kept_rows > self.max_rows:
            self._thin()

    def _thin(self) -> None:
        import numpy as np
        import pyarrow as pa

        stride = self._stride
        kept: list[tuple[int, pa.Table]] = []
        total = 0
        for g0, table in self._kept:
            start = (g0 // stride) % 2
            if start < table.num_rows:
                rows = table.take(pa.array(np.arange(start, table.num_rows, 2)))
                kept.append((g0 + start * stride, rows))
                total += rows.num_rows
        self._kept, self._kept_rows, self._stride = kept, total, stride * 2

    def finish(self) -> dict[str, dict[str, Any]]:
        """The statistics of every batch added, by feature."""
        import pyarrow as pa

        schema = pa.schema([])
        if self._kept:
            table = pa.concat_tables([t for _, t in self._kept])
        else:
            from quiver.types import arrow_type

            schema = pa.schema([pa.field(n, arrow_type(d)) for n, d in self.dtypes.items()])
            table = schema.empty_table()
        stats = compute_statistics(table, self.dtypes, sample_size=self.sample_size)
        if self._stride > 1:  # the counts, min and max of every row, not the sample's
            for name, s in stats.items():
                exact = self._exact[name]
                s["sampled"] = True
                s["rows"] = self.rows
                s["nulls"] = exact.nulls
                s["count"] = self.rows - exact.nulls
                s["null_rate"] = exact.nulls / self.rows
                if "min" in s:
                    s["min"], s["max"] = _json_value(exact.lo), _json_value(exact.hi)
                if "mean" in s:
                    s["mean"] = _json_value(exact.mean) if exact.n else None
                    s["stddev"] = (
                        _json_value(math.sqrt(exact.m2 / (exact.n - 1))) if exact.n > 1 else None
                    )
        return stats


# -- storage -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewStatistics:
    """The statistics of one materialization run of a view.

    Attributes:
        run_id: The run (see :mod:`quiver.registry.runs`).
        view: The feature view.
        computed_at: When the run ended (UTC).
        start: The run's range start (``None``: from the beginning).
        end: The run's range end (exclusive).
        rows: Rows the run wrote (entity keys).
        newest_event_timestamp: The newest event timestamp among them.
        features: Per-feature statistics, by feature name.
    """

    run_id: str
    view: str
    computed_at: datetime
    start: datetime | None
    end: datetime
    rows: int
    newest_event_timestamp: datetime | None
    features: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self, *, samples: bool = False) -> dict[str, Any]:
        """A JSON-compatible dict (``samples=False`` leaves the drift samples out)."""
        return {
            "run_id": self.run_id,
            "view": self.view,
            "computed_at": self.computed_at.isoformat(),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat(),
            "rows": self.rows,
            "newest_event_timestamp": (
                self.newest_event_timestamp.isoformat() if self.newest_event_timestamp else None
            ),
            "features": {
                name: s if samples else {k: v for k, v in s.items() if k != "sample"}
                for name, s in self.features.items()
            },
        }


@dataclass(frozen=True)
class TrainingStatistics:
    """The statistics of a model version's training split.

    Attributes:
        model_name: The model.
        version: The version.
        computed_at: When it was trained (UTC).
        rows: Rows of the training split.
        features: Per-feature statistics, by feature reference (``view:feature``).
    """

    model_name: str
    version: int
    computed_at: datetime
    rows: int
    features: dict[str, dict[str, Any]] = field(default_factory=dict)


@contextmanager
def _conn(registry: Registry, *, write: bool) -> Iterator[Connection]:
    what = "write" if write else "read"
    try:
        with registry.engine.connect() as conn:
            if write:
                conn.execution_options(quiver_write=True)
                with conn.begin():
                    yield conn
            else:
                yield conn
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(f"registry {what} (feature statistics) failed: {exc}") from exc


def save_view_statistics(
    registry: Registry,
    run: Any,
    *,
    rows: int,
    newest_event_timestamp: datetime | None,
    features: Mapping[str, Mapping[str, Any]],
) -> ViewStatistics:
    """Store the statistics of a materialization run (a :class:`MaterializationRun`)."""
    now = datetime.now(UTC)
    stats = ViewStatistics(
        run_id=run.run_id,
        view=run.view,
        computed_at=now,
        start=_utc(run.start),
        end=_utc(run.end) or now,
        rows=rows,
        newest_event_timestamp=_utc(newest_event_timestamp),
        features={k: dict(v) for k, v in features.items()},
    )
    with _conn(registry, write=True) as conn:
        conn.execute(
            feature_statistics.insert().values(
                run_id=stats.run_id,
                project=registry.project,
                view=stats.view,
                computed_at=now,
                start_ts=stats.start,
                end_ts=stats.end,
                rows=rows,
                newest_event_ts=stats.newest_event_timestamp,
                statistics=json.dumps(stats.features, allow_nan=False, default=str),
            )
        )
    return stats


def _view_from_row(row: Any) -> ViewStatistics:
    return ViewStatistics(
        run_id=row.run_id,
        view=row.view,
        computed_at=_utc(row.computed_at),  # type: ignore[arg-type]
        start=_utc(row.start_ts),
        end=_utc(row.end_ts),  # type: ignore[arg-type]
        rows=int(row.rows),
        newest_event_timestamp=_utc(row.newest_event_ts),
        features=json.loads(row.statistics),
    )


def list_view_statistics(
    registry: Registry,
    view: str | None = None,
    *,
    since: datetime | None = None,
    views: Sequence[str] | None = None,
    limit: int = 1_000,
) -> list[ViewStatistics]:
    """Stored statistics, newest first: of one view (or ``views``, or all), computed since
    ``since`` (inclusive), at most ``limit`` rows."""
    t = feature_statistics
    query = sa.select(t).where(t.c.project == registry.project)
    if view is not None:
        query = query.where(t.c.view == view)
    if views is not None:
        query = query.where(t.c.view.in_(list(views)))
    if since is not None:
        query = query.where(t.c.computed_at >= since)
    query = query.order_by(t.c.computed_at.desc(), t.c.run_id).limit(max(limit, 0))
    with _conn(registry, write=False) as conn:
        rows = conn.execute(query).all()
    return [_view_from_row(r) for r in rows]


def latest_view_statistics(registry: Registry) -> dict[str, ViewStatistics]:
    """The most recent statistics of every view that has some, by view name."""
    t = feature_statistics
    latest = (
        sa.select(t.c.view, sa.func.max(t.c.computed_at).label("computed_at"))
        .where(t.c.project == registry.project)
        .group_by(t.c.view)
        .subquery()
    )
    query = (
        sa.select(t)
        .join(latest, (t.c.view == latest.c.view) & (t.c.computed_at == latest.c.computed_at))
        .where(t.c.project == registry.project)
    )
    with _conn(registry, write=False) as conn:
        rows = conn.execute(query).all()
    return {r.view: _view_from_row(r) for r in rows}


def save_training_statistics(
    registry: Registry,
    model_name: str,
    version: int,
    *,
    rows: int,
    features: Mapping[str, Mapping[str, Any]],
) -> TrainingStatistics:
    """Store the statistics of a model version's training split (by feature reference)."""
    now = datetime.now(UTC)
    stats = TrainingStatistics(
        model_name, version, now, rows, {k: dict(v) for k, v in features.items()}
    )
    with _conn(registry, write=True) as conn:
        conn.execute(
            training_statistics.insert().values(
                project=registry.project,
                model_name=model_name,
                version=version,
                computed_at=now,
                rows=rows,
                statistics=json.dumps(stats.features, allow_nan=False, default=str),
            )
        )
    return stats


def get_training_statistics(
    registry: Registry, model_name: str, version: int
) -> TrainingStatistics | None:
    """The training statistics of a model version, or ``None`` (trained before 0007)."""
    t = training_statistics
    with _conn(registry, write=False) as conn:
        row = conn.execute(
            sa.select(t).where(
                t.c.project == registry.project,
                t.c.model_name == model_name,
                t.c.version == version,
            )
        ).first()
    if row is None:
        return None
    return TrainingStatistics(
        model_name=row.model_name,
        version=int(row.version),
        computed_at=_utc(row.computed_at),  # type: ignore[arg-type]
        rows=int(row.rows),
        features=json.loads(row.statistics),
    )


def newest_event_per_view(registry: Registry) -> dict[str, datetime]:
    """The newest event timestamp any stored run wrote, by view (views without one left out)."""
    t = feature_statistics
    query = (
        sa.select(t.c.view, sa.func.max(t.c.newest_event_ts))
        .where(t.c.project == registry.project)
        .group_by(t.c.view)
    )
    with _conn(registry, write=False) as conn:
        rows = conn.execute(query).all()
    return {view: _utc(ts) for view, ts in rows if ts is not None}  # type: ignore[misc]
