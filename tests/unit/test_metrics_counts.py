"""The server's metric observations kept as plain counts (``quiver.monitoring.metrics``) give
the page prometheus-client's own observations would: the same buckets, sum and count."""

from __future__ import annotations

import random
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram

from quiver.monitoring.metrics import _LATENCY_BUCKETS, ServerMetrics, _Counts


def _page(registry: CollectorRegistry) -> dict[str, float]:
    """The samples by name and ``le`` (the sum rounded: it is added in another order; the
    creation time left out)."""
    out = {}
    for family in registry.collect():
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            value = round(s.value, 9) if s.name.endswith("_sum") else s.value
            out[f"{s.name}{s.labels.get('le', '')}"] = value
    return out


def test_counts_equal_prometheus_observations() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    kept = Histogram("h", "h", buckets=_LATENCY_BUCKETS, registry=ours)
    direct = Histogram("h", "h", buckets=_LATENCY_BUCKETS, registry=theirs)
    counts = _Counts(kept, _LATENCY_BUCKETS)
    rng = random.Random(3)
    # every bound itself (a bucket's bound includes it), around it, and beyond the last
    values = [*_LATENCY_BUCKETS, *(b * 1.0001 for b in _LATENCY_BUCKETS), 0.0, 99.0]
    values += [rng.expovariate(200) for _ in range(2000)]
    for i, v in enumerate(values):
        counts.observe(v)
        direct.observe(v)
        if i % 500 == 0:
            counts.flush()  # flushed in parts, as between scrapes
    counts.flush()
    assert _page(ours) == _page(theirs)
    assert len(_page(ours)) == len(_LATENCY_BUCKETS) + 3  # the buckets, +Inf, count, sum
    counts.flush()  # nothing new: the page does not move
    assert _page(ours) == _page(theirs)


def test_counter_counts() -> None:
    registry = CollectorRegistry()
    counter = Counter("c", "c", registry=registry)
    counts = _Counts(counter)
    for _ in range(7):
        counts.inc()
    counts.flush()
    assert registry.get_sample_value("c_total") == 7


def test_no_observation_is_lost_across_threads() -> None:
    metrics = ServerMetrics(multiprocess=False)
    n, threads = 5000, 4

    def work() -> None:
        for _ in range(n):
            metrics.observe_request("POST", "/r", 200, 0.001)
            metrics.observe_retrieval(0.001)

    def scrape() -> None:
        for _ in range(50):
            metrics.flush()

    running = [threading.Thread(target=work) for _ in range(threads)]
    running.append(threading.Thread(target=scrape))
    for t in running:
        t.start()
    for t in running:
        t.join()
    metrics.flush()
    labels = {"method": "POST", "route": "/r", "status": "200"}
    count = metrics.registry.get_sample_value("quiver_http_request_duration_seconds_count", labels)
    assert count == n * threads
    retrieved = metrics.registry.get_sample_value("quiver_feature_retrieval_duration_seconds_count")
    assert retrieved == n * threads
