"""Per-feature statistics of a materialization run and of a training set, and their storage.

**What is computed.** For every feature: ``rows``, ``count`` (non-null values), ``nulls`` and
``null_rate`` (a float NaN counts as null), ``min`` and ``max``; for numbers and booleans also
``mean`` and ``stddev`` (sample standard deviation, ``ddof=1``) and for numbers the
``quantiles`` p1, p5, p25, p50, p75, p95 and p99 (linear interpolation, as pandas and
``numpy.quantile`` do); ``distinct`` (DuckDB's HyperLogLog ``approx_count_distinct``: within a
few percent); for strings and booleans ``top_values``, the 10 most frequent with their exact
counts (the 10 are DuckDB's ``approx_top_k``: exact unless a column holds very many distinct
values of similar frequency); and ``sample``, up to ``monitoring.sample_size`` non-null values
of rows drawn at random (seeded), which the drift tests (:mod:`quiver.monitoring.drift`)
compare. Timestamps get ``min``/``max`` in ISO 8601; lists, maps, structs and ``json`` only the
counts.

**Where.** Materialization (:mod:`quiver.materialize`) hands every record batch it pulled from
the offline engine to a :class:`StatisticsCollector` on its way to the online store, so the
source is read once; the collector keeps references to the batches' feature columns (no copy)
and computes the statistics when the run ends (pyarrow, plus one DuckDB query for the
approximate ones). The statistics are of the rows the run wrote: the latest row per entity key
in the run's range. Beyond ``monitoring.statistics_max_rows`` rows the collector keeps a
systematic sample (every k-th row, k doubling as needed): ``rows``, ``count``, ``nulls``,
``min``, ``max``, ``mean`` and ``stddev`` stay exact (every row is accounted for before it is
dropped), the quantiles, distinct count, top values and drift sample are computed over the kept
rows, and the feature says ``"sampled": true``.

**Storage** (tables of migration 0007, :mod:`quiver.monitoring.tables`): one
``feature_statistics`` row per successful run of a view (:func:`save_view_statistics`,
:func:`list_view_statistics`, :func:`latest_view_statistics`), one ``training_statistics`` row
per model version (:func:`save_training_statistics`, :func:`get_training_statistics`). Other
modules (the freshness and drift scores of the Prometheus metrics) read them through these
functions only.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.errors import BackendError
from quiver.monitoring.tables import feature_statistics, training_statistics
from quiver.types import SCALAR_DTYPES

if TYPE_CHECKING:
    import pyarrow as pa

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
_SEED = 42


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

    pyarrow computes the exact ones (counts, min, max, mean, stddev, quantiles); one DuckDB query
    the approximate distinct counts and the candidates for the top values (``approx_top_k``,
    exact while a column holds fewer distinct values than its sketch keeps), whose counts
    pyarrow then counts exactly. The drift sample is drawn with a fixed seed, so the same rows
    give the same sample. See the module docstring for the fields.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = table.num_rows
    cols: dict[str, Any] = {}
    for name, dtype in dtypes.items():
        col = table.column(name)
        if dtype.startswith("float") and col.null_count < len(col):  # NaN counts as null
            nan = pc.is_nan(col)
            if pc.any(nan).as_py():
                col = pc.if_else(nan, pa.scalar(None, col.type), col)
        cols[name] = col
    approx = _approximate(pa.table(cols) if cols else table, dtypes)
    out: dict[str, dict[str, Any]] = {}
    for name, dtype in dtypes.items():
        col = cols[name]
        count = len(col) - col.null_count
        stats: dict[str, Any] = {
            "dtype": dtype,
            "rows": rows,
            "count": count,
            "nulls": rows - count,
            "null_rate": (rows - count) / rows if rows else 0.0,
        }
        out[name] = stats
        if dtype not in SCALAR_DTYPES:  # lists, maps, structs, json: the counts only
            continue
        lo = hi = None
        if count:
            lo, hi = (v.as_py() for v in pc.min_max(col).values())
        stats["min"], stats["max"] = _json_value(lo), _json_value(hi)
        stats["distinct"] = approx.get((name, "distinct"))
        if dtype in _NUMERIC or dtype == "bool":
            x = col.cast(pa.float64())
            stats["mean"] = _json_value(pc.mean(x).as_py()) if count else None
            stats["stddev"] = _json_value(pc.stddev(x, ddof=1).as_py()) if count > 1 else None
            if dtype in _NUMERIC:
                qs = pc.quantile(x, q=[q for _, q in QUANTILES]).to_pylist() if count else []
                stats["quantiles"] = {
                    k: _json_value(v) for (k, _), v in zip(QUANTILES, qs or [None] * 7, strict=True)
                }
        if dtype in ("string", "bool"):
            stats["top_values"] = _top_values(col, approx.get((name, "top")) or [])
    sampled = [n for n, d in dtypes.items() if d in _NUMERIC or d in ("string", "bool")]
    if sampled and rows:
        rng = np.random.default_rng(_SEED)
        size = min(rows, sample_size)
        picked = np.sort(rng.choice(rows, size=size, replace=False))
        part = pa.table({n: cols[n] for n in sampled}).take(pa.array(picked))
        for name in sampled:
            values = part.column(name).drop_null().to_pylist()
            if dtypes[name].startswith("float"):  # NaN is null already; infinities are not JSON
                values = [v for v in values if math.isfinite(v)]
            out[name]["sample"] = values
    return out


def _approximate(table: pa.Table, dtypes: Mapping[str, str]) -> dict[tuple[str, str], Any]:
    """DuckDB's ``approx_count_distinct`` of every column, ``approx_top_k`` of the string and
    boolean ones, in one query."""
    import duckdb

    aggs: list[str] = []
    slots: list[tuple[str, str]] = []
    for name, dtype in dtypes.items():
        if dtype not in SCALAR_DTYPES:  # lists, maps, structs, json: the counts only
            continue
        aggs.append(f"approx_count_distinct({_q(name)})")
        slots.append((name, "distinct"))
        if dtype in ("string", "bool"):
            aggs.append(f"approx_top_k({_q(name)}, {TOP_VALUES})")
            slots.append((name, "top"))
    if not aggs or table.num_rows == 0:
        return {slot: 0 if slot[1] == "distinct" else [] for slot in slots}
    cur = _duckdb().cursor()
    name = f"__qv_stats_{uuid.uuid4().hex[:12]}"
    try:
        cur.register(name, table)
        values = cur.execute(f"SELECT {', '.join(aggs)} FROM {name}").fetchone()
    except duckdb.Error as exc:
        raise BackendError(f"feature statistics failed in DuckDB: {exc}") from exc
    finally:
        with contextlib.suppress(duckdb.Error):
            cur.unregister(name)
        cur.close()
    return dict(zip(slots, values or (), strict=True))


_DUCKDB: Any = None
_DUCKDB_LOCK = threading.Lock()


def _duckdb() -> Any:
    """One in-memory DuckDB database for the statistics of the process (opening one costs
    some 50 ms; each use takes its own cursor)."""
    global _DUCKDB
    with _DUCKDB_LOCK:
        if _DUCKDB is None:
            import duckdb

            _DUCKDB = duckdb.connect(":memory:")
            _DUCKDB.execute("SET TimeZone = 'UTC'")
        return _DUCKDB


def _top_values(col: Any, candidates: list[Any]) -> list[dict[str, Any]]:
    """The exact counts of the candidate values, most frequent first (ties by value)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    candidates = [v for v in candidates if v is not None]
    if not candidates:
        return []
    hits = pc.filter(col, pc.is_in(col, value_set=pa.array(candidates, col.type)))
    counts = pc.value_counts(hits).to_pylist()
    pairs = sorted(((c["values"], int(c["counts"])) for c in counts), key=lambda p: (-p[1], p[0]))
    return [{"value": _json_value(v), "count": n} for v, n in pairs[:TOP_VALUES]]


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

    While the run fits in ``max_rows``, a batch costs only a reference to its feature columns
    and the maximum of its timestamps; the statistics are computed once, in :meth:`finish`.
    Past it, every row is accounted for (nulls, min, max, moments) before rows are dropped from
    the sample.

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
        # (global index of the first row, rows, whether _exact already counts them)
        self._kept: list[tuple[int, pa.Table, bool]] = []
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
        newest = _utc(pc.max(batch.column(self.timestamp_column)).as_py())
        if newest is not None:
            self.newest = newest if self.newest is None else max(self.newest, newest)
        table = pa.Table.from_batches([batch.select(list(self.dtypes))])
        first = (-self.rows) % self._stride
        accounted = self._stride > 1
        if accounted:  # rows are dropped from now on: count every one first
            self._account(table)
            table = table.take(pa.array(np.arange(first, n, self._stride)))
        if table.num_rows:
            self._kept.append((self.rows + first, table, accounted))
            self._kept_rows += table.num_rows
        self.rows += n
        while self._kept_rows > self.max_rows:
            self._thin()

    def _account(self, table: pa.Table) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = table.num_rows
        for name, dtype in self.dtypes.items():
            col = table.column(name)
            exact = self._exact[name]
            nulls = col.null_count
            if dtype.startswith("float"):
                nulls += int(pc.sum(pc.is_nan(col)).as_py() or 0)
            exact.nulls += nulls
            if dtype not in SCALAR_DTYPES or nulls >= n:
                continue
            lo, hi = (v.as_py() for v in pc.min_max(col).values())
            if lo is not None and not (isinstance(lo, float) and math.isnan(lo)):
                exact.lo = lo if exact.lo is None else min(exact.lo, lo)
            if hi is not None and not (isinstance(hi, float) and math.isnan(hi)):
                exact.hi = hi if exact.hi is None else max(exact.hi, hi)
            if dtype in _NUMERIC or dtype == "bool":
                values = col.cast(pa.float64())
                if dtype.startswith("float"):
                    values = pc.filter(values, pc.invert(pc.is_nan(values)))
                exact.add_moments(values)

    def _thin(self) -> None:
        import numpy as np
        import pyarrow as pa

        stride = self._stride
        kept: list[tuple[int, pa.Table, bool]] = []
        total = 0
        for g0, table, accounted in self._kept:
            if not accounted:
                self._account(table)
            start = (g0 // stride) % 2
            if start < table.num_rows:
                rows = table.take(pa.array(np.arange(start, table.num_rows, 2)))
                kept.append((g0 + start * stride, rows, True))
                total += rows.num_rows
        self._kept, self._kept_rows, self._stride = kept, total, stride * 2

    def finish(self) -> dict[str, dict[str, Any]]:
        """The statistics of every batch added, by feature."""
        import pyarrow as pa

        if self._kept:
            table = pa.concat_tables([t for _, t, _ in self._kept])
        else:
            from quiver.types import arrow_type

            schema = pa.schema([pa.field(n, arrow_type(d)) for n, d in self.dtypes.items()])
            table = schema.empty_table()
        stats = compute_statistics(table, self.dtypes, sample_size=self.sample_size)
        if self._stride > 1:  # the exact figures of every row, not the sample's
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
    with registry.writing("feature statistics") as conn:
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
    with registry.reading("feature statistics") as conn:
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
    with registry.reading("feature statistics") as conn:
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
    with registry.writing("feature statistics") as conn:
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
    with registry.reading("feature statistics") as conn:
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
    with registry.reading("feature statistics") as conn:
        rows = conn.execute(query).all()
    return {view: _utc(ts) for view, ts in rows if ts is not None}  # type: ignore[misc]
