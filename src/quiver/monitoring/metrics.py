"""Prometheus metrics of ``quiver serve`` (``GET /metrics``, ``GET /monitoring/metrics``).

Two kinds of metric:

- **Observed by the server** as it answers: requests (count and latency per route template,
  method and status), feature retrieval duration, serving cache hits and misses. The request
  count is the latency histogram's count, copied when scraped. In one process an observation is
  a value appended to a list by :class:`_Counts`, added up in bulk and handed to
  prometheus-client's histograms and counters when the page is built; with
  ``--workers N`` they go to prometheus-client at once, since any worker may answer the scrape.
- **Read from the registry at scrape time** by :class:`RegistryCollector`: the last successful
  materialization time, rows and duration of each view's last run, run counts by status,
  freshness (age of each view's newest materialized value, :mod:`quiver.monitoring.freshness`;
  else of its watermark), background job counts by kind and status. They
  are right whoever wrote them (the CLI, another server, a scheduler), and cost nothing between
  scrapes.

With ``quiver serve --workers N`` the observed metrics use prometheus-client's multiprocess mode:
``quiver serve`` points ``PROMETHEUS_MULTIPROC_DIR`` at a temporary directory of its own before
the workers start (removed when it stops), each worker writes its values there, and a scrape
answered by any worker adds them all up. The registry metrics are read once per scrape.

With ``monitoring.metric_prefix: feast`` every ``quiver_*`` family is also exposed under its
``feast_*`` name (``feast_materialization_last_success_timestamp``,
``feast_feature_retrieval_duration_seconds``, ...), the names Feast's dashboards query.

prometheus-client is in the ``server`` extra: imported here only when a server builds its metrics.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quiver.store import FeatureStore

__all__ = [
    "MULTIPROC_ENV",
    "RegistryCollector",
    "ServerMetrics",
    "observe_retrieval",
    "server_metrics",
]

logger = logging.getLogger("quiver.server")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Where prometheus-client's multiprocess mode keeps the workers' values."""

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

RETRIEVAL: Callable[[float], None] | None = None
"""The feature retrieval hook: set while a server's metrics are on (``None``: not observed)."""


def observe_retrieval(seconds: float) -> None:
    """Record one online lookup's duration, if a server's metrics are on."""
    hook = RETRIEVAL
    if hook is not None:
        hook(seconds)


_FOLD_AT = 4096
"""Observations a :class:`_Counts` keeps as values before adding them up (bounded memory)."""


class _Counts:
    """A histogram's (or a counter's) observations in this process since the last page.

    ``observe`` appends the value to a list (one atomic call, no lock); every
    :data:`_FOLD_AT` values, and before a page, they are added up at once into bucket counts and
    a sum (numpy), against prometheus-client's two locked increments and a Python loop over the
    buckets per value. :meth:`flush` adds the counts to the prometheus-client child, whose
    values the page shows.

    Args:
        child: The histogram child (or the counter) the counts are added to.
        buckets: The histogram's upper bounds without ``+Inf`` (empty: a counter).
    """

    __slots__ = ("_lock", "bounds", "child", "counts", "pending", "total")

    def __init__(self, child: Any, buckets: tuple[float, ...] = ()) -> None:
        self.child = child
        self.bounds = buckets
        self.pending: list[float] = []
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self._lock = threading.Lock()

    def observe(self, seconds: float) -> None:
        """Count one value (a bucket's upper bound includes it, as in Prometheus)."""
        pending = self.pending
        pending.append(seconds)
        if len(pending) >= _FOLD_AT:
            self._fold()

    def inc(self) -> None:
        """Count one event (a counter)."""
        self.observe(0.0)

    def _fold(self) -> None:
        """Add the kept values up into the counts (values appended meanwhile stay kept)."""
        import numpy as np

        with self._lock:
            pending = self.pending
            n = len(pending)
            if not n:
                return
            values = np.array(pending[:n], dtype=np.float64)
            del pending[:n]  # one call, as the appends: none of theirs is lost
            found = np.bincount(
                np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts)
            )
            self.counts = [a + int(b) for a, b in zip(self.counts, found, strict=True)]
            self.total += float(values.sum())

    def flush(self) -> None:
        """Add the counts to the prometheus-client child and start again from zero."""
        self._fold()
        with self._lock:
            counts, total = self.counts, self.total
            self.counts, self.total = [0] * len(counts), 0.0
        if not self.bounds:
            if counts[0]:
                self.child.inc(counts[0])
            return
        # prometheus-client has no call to add many observations: its values, as observe does
        self.child._sum.inc(total)
        for bucket, n in zip(self.child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)


class ServerMetrics:
    """The metrics a server observes (one set per process; every app of the process adds to it).

    Args:
        multiprocess: Whether the values go to ``PROMETHEUS_MULTIPROC_DIR`` (``--workers N``).
    """

    def __init__(self, multiprocess: bool) -> None:
        from quiver.errors import require

        prom = require("prometheus_client", "server", "metrics")
        self.multiprocess = multiprocess
        self.registry = prom.CollectorRegistry(auto_describe=True)
        target = None if multiprocess else self.registry
        self.latency = prom.Histogram(
            "quiver_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route template and status.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=target,
        )
        self.retrieval = prom.Histogram(
            "quiver_feature_retrieval_duration_seconds",
            "Time of one online feature lookup (the store read and the answer's values).",
            buckets=_LATENCY_BUCKETS,
            registry=target,
        )
        self.cache_hits = prom.Counter(
            "quiver_serving_cache_hits_total",
            "Online lookups answered from the serving cache.",
            registry=target,
        )
        self.cache_misses = prom.Counter(
            "quiver_serving_cache_misses_total",
            "Online lookups the serving cache sent to the online store.",
            registry=target,
        )
        self._children: dict[tuple[str, str, int], Any] = {}
        self._counts: list[_Counts] = []
        self._counts_lock = threading.Lock()
        self.observe_retrieval: Callable[[float], None] = self._kept(
            self.retrieval, _LATENCY_BUCKETS
        ).observe
        self._hits = self._kept(self.cache_hits).inc
        self._misses = self._kept(self.cache_misses).inc

    def _kept(self, child: Any, buckets: tuple[float, ...] = ()) -> Any:
        """What observes into ``child``: itself with ``--workers N``, else a :class:`_Counts`."""
        if self.multiprocess:
            return child
        counts = _Counts(child, buckets)
        with self._counts_lock:
            self._counts.append(counts)
        return counts

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (``quiver_http_requests_total`` is the
        histogram's count, copied when scraped: one observation per request)."""
        key = (method, route, status)
        found = self._children.get(key)
        if found is None:
            child = self.latency.labels(method, route, str(status))
            found = self._children[key] = self._kept(child, _LATENCY_BUCKETS)
        found.observe(seconds)

    def observe_cache(self, hit: bool) -> None:
        """Count one serving cache lookup."""
        (self._hits if hit else self._misses)()

    def flush(self) -> None:
        """Add this process's counts to prometheus-client's values (before a page is built)."""
        with self._counts_lock:
            counts = list(self._counts)
        for c in counts:
            c.flush()


_METRICS: ServerMetrics | None = None


def server_metrics() -> ServerMetrics:
    """This process's :class:`ServerMetrics` (made at the first call)."""
    global _METRICS, RETRIEVAL
    if _METRICS is None:
        _METRICS = ServerMetrics(multiprocess=bool(os.environ.get(MULTIPROC_ENV)))
        RETRIEVAL = _METRICS.observe_retrieval
    return _METRICS


class RegistryCollector:
    """Metrics read from the registry when Prometheus scrapes (see the module).

    Args:
        store: The served store (its registry is read).
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def describe(self) -> list[Any]:
        return []  # not described up front: the registry is read only when scraped

    def collect(self) -> Iterator[Any]:
        import sqlalchemy as sa
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from quiver.errors import QuiverError

        registry = self.store.registry
        project = registry.project
        last_success = GaugeMetricFamily(
            "quiver_materialization_last_success_timestamp",
            "Unix time the last successful materialization of each view finished.",
            labels=["view"],
        )
        rows = GaugeMetricFamily(
            "quiver_materialization_rows",
            "Rows written by each view's last materialization run.",
            labels=["view", "status"],
        )
        duration = GaugeMetricFamily(
            "quiver_materialization_duration_seconds",
            "Duration of each view's last materialization run.",
            labels=["view", "status"],
        )
        counts = CounterMetricFamily(
            "quiver_materialization_runs",
            "Materialization runs by view and status (as the registry records them).",
            labels=["view", "status"],
        )
        freshness = GaugeMetricFamily(
            "quiver_feature_freshness_seconds",
            "Age of each view's newest materialized value (from the runs' statistics; without "
            "them: now minus the end of its last materialized range).",
            labels=["view"],
        )
        jobs = GaugeMetricFamily(
            "quiver_jobs",
            "Background jobs (materialize, train, predict_batch) by kind and status.",
            labels=["kind", "status"],
        )
        psi = GaugeMetricFamily(
            "quiver_feature_drift_psi",
            "Population stability index of each feature of a model version, from its latest "
            "drift check (after each materialization of a view it uses, or quiver monitor drift).",
            labels=["model", "version", "feature"],
        )
        flagged = GaugeMetricFamily(
            "quiver_feature_drifted",
            "1 when the feature's PSI is over monitoring.drift_psi_threshold, else 0.",
            labels=["model", "version", "feature"],
        )
        try:
            from quiver.registry.runs import online_store_key

            where = online_store_key(self.store.config)
            with registry.engine.connect() as conn:
                ages = self._read(
                    conn,
                    project,
                    where,
                    last_success,
                    rows,
                    duration,
                    counts,
                    freshness,
                    jobs,
                    psi,
                    flagged,
                )
            ages.update(_newest_value_ages(registry, where))
            for view, age in sorted(ages.items()):
                freshness.add_metric([view], age)
        except (sa.exc.SQLAlchemyError, QuiverError) as exc:  # the page answers without them
            logger.warning("metrics: the registry cannot be read: %s", exc)
        yield from (last_success, rows, duration, counts, freshness, jobs, psi, flagged)

    @staticmethod
    def _read(
        conn: Any,
        project: str,
        where: str,
        last_success: Any,
        rows: Any,
        duration: Any,
        counts: Any,
        freshness: Any,
        jobs: Any,
        psi: Any,
        flagged: Any,
    ) -> dict[str, float]:
        """Fill the families from the registry; the watermark age of each view."""
        import sqlalchemy as sa

        from quiver.registry.tables import materialization_runs as runs
        from quiver.registry.tables import materialization_watermarks as marks

        now = time.time()
        # The runs into the served online store (runs recorded before stores were told apart: '')
        mine = runs.c.online_store.in_([where, ""])
        query = (
            sa.select(runs.c.view, sa.func.max(runs.c.finished_at))
            .where(runs.c.project == project, mine, runs.c.status == "succeeded")
            .group_by(runs.c.view)
        )
        for view, finished in conn.execute(query):
            if finished is not None:
                last_success.add_metric([view], _unix(finished))
        by_status = (
            sa.select(runs.c.view, runs.c.status, sa.func.count())
            .where(runs.c.project == project, mine)
            .group_by(runs.c.view, runs.c.status)
        )
        for view, status, n in conn.execute(by_status):
            counts.add_metric([view, status], float(n))
        latest = (
            sa.select(runs.c.view, sa.func.max(runs.c.started_at).label("started_at"))
            .where(runs.c.project == project, mine)
            .group_by(runs.c.view)
            .subquery()
        )
        last = (
            sa.select(runs.c.view, runs.c.status, runs.c.rows_written, runs.c.duration_seconds)
            .join(
                latest,
                (runs.c.view == latest.c.view) & (runs.c.started_at == latest.c.started_at),
            )
            .where(runs.c.project == project, mine)
        )
        for view, status, n, seconds in conn.execute(last):
            rows.add_metric([view, status], float(n or 0))
            duration.add_metric([view, status], float(seconds or 0.0))
        ages = {
            view: max(0.0, now - _unix(watermark))
            for view, watermark in conn.execute(
                sa.select(marks.c.view, marks.c.watermark).where(
                    marks.c.project == project, marks.c.online_store == where
                )
            )
        }
        for kind, status, n in _jobs(conn, project):
            jobs.add_metric([kind, status], float(n))
        from quiver.monitoring.drift import latest_drift_scores

        for model, version, feature, score, drifted in latest_drift_scores(conn, project):
            labels = [model, str(version), feature]
            if score is not None:
                psi.add_metric(labels, score)
            flagged.add_metric(labels, 1.0 if drifted else 0.0)
        return ages


def _newest_value_ages(registry: Any, where: str) -> dict[str, float]:
    """Each view's age of its newest materialized value (:mod:`quiver.monitoring.freshness`,
    from the statistics its runs stored; views without them keep their watermark's age)."""
    from quiver.monitoring.freshness import view_freshness

    views = [v for v in registry.list("feature_view") if getattr(v, "online", True)]
    return {
        f.view: f.age_seconds
        for f in view_freshness(registry, views, online_store=where)
        if f.age_seconds is not None
    }


def _jobs(conn: Any, project: str) -> list[tuple[str, str, int]]:
    """Background job counts by kind and status (:mod:`quiver.jobs.records`)."""
    import sqlalchemy as sa

    from quiver.jobs.records import jobs as table

    query = (
        sa.select(table.c.kind, table.c.status, sa.func.count())
        .where(table.c.project == project)
        .group_by(table.c.kind, table.c.status)
    )
    return [(str(k), str(s), int(n)) for k, s, n in conn.execute(query)]


def _unix(value: Any) -> float:
    from datetime import UTC

    if value.tzinfo is None:  # SQLite gives naive UTC datetimes back
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def exposition(store: FeatureStore, prefix: str) -> tuple[bytes, str]:
    """The metrics page: the observed metrics (every worker's) and the registry's.

    Args:
        store: The served store.
        prefix: ``quiver``, or ``feast`` to expose every family under both names.

    Returns:
        The body and its content type.
    """
    metrics = server_metrics()  # checks that prometheus-client is installed
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    if metrics.multiprocess:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        metrics.flush()
        registry.register(_Forward(metrics.registry))
    registry.register(RegistryCollector(store))
    page: Any = _Derived(registry)
    if prefix == "feast":
        page = _Aliased(page)
    return generate_latest(page), CONTENT_TYPE_LATEST


class _Forward:
    """A collector that yields another registry's families."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        yield from self.registry.collect()


class _Derived:
    """A registry with ``quiver_http_requests_total``: the request histogram's counts."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        for family in self.registry.collect():
            yield family
            if family.name != "quiver_http_request_duration_seconds":
                continue
            counts = CounterMetricFamily(
                "quiver_http_requests",
                "HTTP requests answered, by method, route template and status.",
                labels=["method", "route", "status"],
            )
            for s in family.samples:
                if s.name.endswith("_count"):
                    labels = s.labels
                    counts.add_metric(
                        [labels["method"], labels["route"], labels["status"]], s.value
                    )
            yield counts


class _Aliased:
    """A registry whose ``quiver_*`` families are each followed by a ``feast_*`` copy."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        from prometheus_client import Metric

        for family in self.registry.collect():
            yield family
            if not family.name.startswith("quiver_"):
                continue
            alias = "feast_" + family.name[len("quiver_") :]
            copy = Metric(alias, family.documentation, family.type, family.unit)
            for s in family.samples:
                copy.add_sample(
                    alias + s.name[len(family.name) :], s.labels, s.value, s.timestamp, s.exemplar
                )
            yield copy
