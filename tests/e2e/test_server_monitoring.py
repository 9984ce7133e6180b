"""Metrics, usage counts and the serving cache through real ``quiver serve`` processes.

With ``--workers 2`` the requests are spread over two processes; the metrics page (parsed by
``prometheus_client.parser``) and the usage counts (after a flush) must add up to what was sent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.e2e.conftest import Server, make_demo_repo, run_cli, start_server

FEATURES = ["customer_behavior:orders", "customer_behavior:monthly_charges"]
N = 40


def _configure(repo: Path, **sections: Any) -> None:
    path = repo / "quiver.yaml"
    config = yaml.safe_load(path.read_text())
    config.update(sections)
    path.write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def monitored_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = make_demo_repo(tmp_path_factory.mktemp("monitoring") / "repo")
    _configure(
        repo,
        monitoring={"usage_flush_seconds": 0.3, "metric_prefix": "feast"},
        serving_cache={"enabled": True, "ttl_seconds": 300},
    )
    return repo


@pytest.fixture(scope="module")
def two_workers(monitored_repo: Path) -> Iterator[Server]:
    server = start_server(monitored_repo, "--workers", "2")
    try:
        yield server
    finally:
        server.stop()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _total(samples: dict[Any, float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def _row(key: int, orders: int) -> dict[str, Any]:
    return {
        "customer_id": key,
        "event_timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
        "tenure_months": 7,
        "monthly_charges": 42.0,
        "total_charges": 294.5,
        "support_tickets": 0,
        "orders": orders,
        "avg_order_value": 19.9,
        "days_since_last_order": 2,
    }


def _wait_for(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError("the condition did not hold in time")


def test_metrics_totals_with_two_workers(two_workers: Server) -> None:
    with two_workers.client() as c:
        before = _samples(c.get("/metrics").text)
        for i in range(N):
            body = {"features": FEATURES, "entities": {"customer_id": [1 + i % 7]}}
            assert c.post("/api/v1/serving/online", json=body).status_code == 200
            feast = {"features": FEATURES, "entities": {"customer_id": [1 + i % 7]}}
            assert c.post("/get-online-features", json=feast).status_code == 200
            assert c.get("/api/v1/feature-views").status_code == 200
            assert c.get("/api/v1/feature-views/nope").status_code == 404
        for _ in range(10):  # scrapes land on either worker: the same totals
            page = c.get("/monitoring/metrics")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/plain")
        after = _samples(c.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        return _total(after, name, **labels) - _total(before, name, **labels)

    route = "/api/v1/serving/online"
    assert delta("quiver_http_requests_total", route=route, status="200") == N
    assert delta("quiver_http_request_duration_seconds_count", route=route, status="200") == N
    assert delta("quiver_http_requests_total", route="/get-online-features") == N
    assert delta("quiver_http_requests_total", route="/api/v1/feature-views", method="GET") == N
    assert (
        delta("quiver_http_requests_total", route="/api/v1/feature-views/{name}", status="404") == N
    )
    assert delta("quiver_feature_retrieval_duration_seconds_count") == 2 * N
    hits = delta("quiver_serving_cache_hits_total")
    misses = delta("quiver_serving_cache_misses_total")
    assert hits + misses == 2 * N and misses <= 2 * 7 * 2  # 7 keys x 2 plans x 2 workers
    # the registry's metrics, under both names (metric_prefix: feast)
    for name in ("quiver", "feast"):
        stamps = {
            dict(ls)["view"]: v
            for (n, ls), v in after.items()
            if n == f"{name}_materialization_last_success_timestamp"
        }
        assert "customer_behavior" in stamps and stamps["customer_behavior"] > 1.7e9
        assert _total(after, f"{name}_feature_freshness_seconds", view="customer_behavior") > 0
    # freshness: the age of the newest materialized value (quiver.monitoring.freshness)
    from quiver.monitoring.freshness import view_freshness
    from quiver.registry.runs import online_store_key
    from quiver.store import FeatureStore

    with FeatureStore(repo_path=two_workers.repo) as store:
        (fresh,) = view_freshness(
            store.registry,
            [store.get_feature_view("customer_behavior")],
            online_store=online_store_key(store.config),
        )
    assert fresh.age_seconds is not None
    served = _total(after, "quiver_feature_freshness_seconds", view="customer_behavior")
    assert abs(served - fresh.age_seconds) < 600
    assert _total(after, "feast_feature_retrieval_duration_seconds_count") == _total(
        after, "quiver_feature_retrieval_duration_seconds_count"
    )


def test_usage_counts_equal_the_requests(two_workers: Server) -> None:
    service = f"svc_{uuid.uuid4().hex[:6]}"
    with two_workers.client() as c:
        created = c.post(
            "/api/v1/feature-services",
            json={"name": service, "features": ["customer_behavior:orders"]},
        )
        assert created.status_code in (200, 201), created.text
        for i in range(N):
            body = {"feature_service": service, "entities": {"customer_id": [1 + i % 3, 4]}}
            assert c.post("/api/v1/serving/online", json=body).status_code == 200

        def counted() -> bool:
            items = c.get("/monitoring/usage", params={"kind": "feature_service"}).json()["items"]
            return any(it["name"] == service and it["requests"] == N for it in items)

        _wait_for(counted)
        items = c.get("/monitoring/usage").json()["items"]
        mine = next(it for it in items if it["kind"] == "feature_service" and it["name"] == service)
        assert mine == {"kind": "feature_service", "name": service, "requests": N, "rows": 2 * N}
        assert (
            c.get(
                "/monitoring/usage", params={"start_date": "2020-01-02", "end_date": "2020-01-01"}
            ).status_code
            == 422
        )
        assert c.get("/monitoring/usage", params={"start_date": "nope"}).status_code == 422
    out = run_cli("usage", "--repo", str(two_workers.repo), "--json", "--kind", "feature_service")
    assert f'"name": "{service}"' in out.stdout


def test_cache_hit_in_metadata_and_push_invalidates_across_workers(two_workers: Server) -> None:
    key = 13
    body = {"features": ["customer_behavior:orders"], "entities": {"customer_id": [key]}}
    with two_workers.client() as c:
        first = c.post("/api/v1/serving/online", json=body).json()
        seen = {first["metadata"]["cache_hit"]}
        for _ in range(10):
            seen.add(c.post("/api/v1/serving/online", json=body).json()["metadata"]["cache_hit"])
        assert True in seen
        orders = (first["results"][0]["values"]["orders"] or 0) + 1000
        push = {"view": "customer_behavior", "rows": [_row(key, orders)]}
        pushed = c.post("/api/v1/push", json=push)
        assert pushed.status_code == 200, pushed.text
        for _ in range(10):  # whichever worker answers: never the value before the push
            got = c.post("/api/v1/serving/online", json=body).json()
            assert got["results"][0]["values"]["orders"] == orders


def test_redis_cache_across_two_servers(tmp_path: Path, redis_url: str) -> None:
    repo = make_demo_repo(tmp_path / "repo")
    prefix = f"q{uuid.uuid4().hex[:6]}"
    _configure(
        repo,
        online_store={"type": "redis", "url": redis_url, "key_prefix": prefix},
        serving_cache={"enabled": True, "backend": "redis", "key_prefix": prefix},
    )
    from quiver.store import FeatureStore

    with FeatureStore(repo_path=repo) as store:
        store.materialize(datetime(2020, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC))
    a, b = start_server(repo), start_server(repo)
    try:
        body = {"features": ["customer_behavior:orders"], "entities": {"customer_id": [12]}}
        with httpx.Client(base_url=a.url, timeout=60) as ca, b.client() as cb:
            assert (
                ca.post("/api/v1/serving/online", json=body).json()["metadata"]["cache_hit"]
                is False
            )
            assert (
                cb.post("/api/v1/serving/online", json=body).json()["metadata"]["cache_hit"] is True
            )
            push = {"view": "customer_behavior", "rows": [_row(12, 4242)]}
            assert ca.post("/api/v1/push", json=push).status_code == 200
            got = cb.post("/api/v1/serving/online", json=body).json()
            assert got["metadata"]["cache_hit"] is False
            assert got["results"][0]["values"]["orders"] == 4242
    finally:
        a.stop()
        b.stop()


def test_one_worker_counts_in_memory_and_metrics_can_be_off(monitored_repo: Path) -> None:
    one = start_server(monitored_repo)
    off = start_server(
        monitored_repo,
        env={"QUIVER_MONITORING__METRICS_ENABLED": "false", "PROMETHEUS_MULTIPROC_DIR": "/nope"},
    )
    try:
        with one.client() as c:
            for _ in range(5):
                assert c.get("/no/such/route").status_code == 404
                body = {"features": FEATURES, "entities": {"customer_id": [2]}}
                assert c.post("/get-online-features", json=body).status_code == 200
            samples = _samples(c.get("/metrics").text)
        assert _total(samples, "quiver_http_requests_total", route="<unmatched>") == 5
        assert _total(samples, "quiver_http_requests_total", route="/get-online-features") == 5
        assert _total(samples, "feast_http_requests_total", route="/get-online-features") == 5
        with off.client() as c:
            assert c.get("/metrics").status_code == 404
            body = {"features": FEATURES, "entities": {"customer_id": [2]}}
            assert c.post("/get-online-features", json=body).status_code == 200
    finally:
        one.stop()
        off.stop()
