"""The fast path's kept answers (quiver.server._answers) over the serving cache.

An identical request is answered with the bytes kept from the first one; these tests check
that such an answer is never one the store would not give: a push of the same view (here, or
in another store over the same repo) or a registry change ends it, a value whose view TTL ran
out is never answered ``present``, the cache's own TTL ends it, ``metadata.cache_hit`` says so,
and a permission check still runs on every request. The oracle is the same request with the
serving cache off.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from test_serving_cache import (
    FEATURES,
    TTL,
    Clock,
    _open,
    _push,
    _repo,
    _us,
    customer,
    other,
    src,
    view,
)

from quiver import FeatureStore
from quiver.monitoring.cache import serving_cache
from quiver.online import serving
from quiver.server.app import create_app

NATIVE = "/api/v1/serving/online"
FEAST = "/get-online-features"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(serving, "_now_us", lambda: _us(c.now))
    return c


@pytest.fixture
def served(tmp_path: Path, clock: Clock) -> Iterator[tuple[TestClient, FeatureStore, Path]]:
    root = _repo(tmp_path / "repo", {"enabled": True, "ttl_seconds": 60})
    store = _open(root, clock)
    store.apply([customer, src, other.source, view, other])
    with TestClient(create_app(store)) as client:
        yield client, store, root
    store.close()


def body(keys: list[int]) -> dict[str, Any]:
    return {"features": FEATURES, "entities": {"customer_id": keys}}


def native(client: TestClient, keys: list[int]) -> dict[str, Any]:
    response = client.post(NATIVE, json=body(keys))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def oracle(root: Path, keys: list[int]) -> dict[str, Any]:
    plain = FeatureStore(root)
    plain.__dict__["_quiver_result_cache"] = None
    try:
        with TestClient(create_app(plain)) as client:
            return native(client, keys)
    finally:
        plain.close()


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["results"] == b["results"] and a["feature_names"] == b["feature_names"]


def kept(client: TestClient) -> int:
    answers = client.app._fast_answers  # type: ignore[attr-defined]
    return len(answers.entries)


def test_an_identical_request_is_answered_from_the_kept_bytes(
    served: tuple[TestClient, FeatureStore, Path], clock: Clock
) -> None:
    client, store, root = served
    _push(store, 1, 5, clock.now)
    first = native(client, [1])
    assert first["metadata"]["cache_hit"] is False and kept(client) == 1
    cache = serving_cache(store)
    assert cache is not None
    hits = cache.hits
    second = native(client, [1])
    assert second["metadata"]["cache_hit"] is True and cache.hits == hits + 1
    assert second["metadata"]["feature_service"] is None
    assert isinstance(second["metadata"]["latency_ms"], float)
    assert same(first, second) and same(second, oracle(root, [1]))
    # Feast's route keeps its own answer: the same bytes as an uncached one.
    feast = {"features": FEATURES, "entities": {"customer_id": [1]}}
    a, b = client.post(FEAST, json=feast), client.post(FEAST, json=feast)
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert kept(client) == 2


def test_an_answer_built_from_the_value_cache_is_kept_too(
    served: tuple[TestClient, FeatureStore, Path], clock: Clock
) -> None:
    """Regression: a native answer built from a value-cache hit (``cache_hit: true``) was never
    kept, so with a warm value cache identical native requests never reused their bytes."""
    client, store, root = served
    _push(store, 1, 5, clock.now)
    feast = client.post(FEAST, json=body([1]))  # the value cache now holds the read
    assert feast.status_code == 200 and kept(client) == 1
    first = native(client, [1])  # built from the value cache
    assert first["metadata"]["cache_hit"] is True and kept(client) == 2
    answers = client.app._fast_answers  # type: ignore[attr-defined]
    entry = answers.entries[(NATIVE, client.build_request("POST", NATIVE, json=body([1])).read())]
    assert entry.tail.endswith(b',"cache_hit":true}}') and entry.tail.count(b"cache_hit") == 1
    second = native(client, [1])
    assert second["metadata"]["cache_hit"] is True and same(second, oracle(root, [1]))


def test_a_push_of_the_view_ends_the_kept_answer(
    served: tuple[TestClient, FeatureStore, Path], clock: Clock
) -> None:
    client, store, root = served
    _push(store, 1, 5, clock.now)
    native(client, [1])
    assert native(client, [1])["metadata"]["cache_hit"]
    _push(store, 1, 6, clock.now + timedelta(seconds=1))  # this process
    got = native(client, [1])
    assert got["metadata"]["cache_hit"] is False
    assert got["results"][0]["values"]["orders"] == 6 and same(got, oracle(root, [1]))
    assert native(client, [1])["metadata"]["cache_hit"]
    writer = FeatureStore(root)  # another process's store over the same repo
    try:
        _push(writer, 1, 7, clock.now + timedelta(seconds=2))
    finally:
        writer.close()
    got = native(client, [1])
    assert not got["metadata"]["cache_hit"] and got["results"][0]["values"]["orders"] == 7


def test_a_kept_answer_never_serves_an_expired_value_as_present(
    served: tuple[TestClient, FeatureStore, Path], clock: Clock
) -> None:
    client, store, root = served
    _push(store, 1, 5, clock.now - TTL + timedelta(seconds=10))
    first = native(client, [1])
    assert first["results"][0]["statuses"]["orders"] == "present"
    clock.advance(9)
    assert native(client, [1])["metadata"]["cache_hit"]
    clock.advance(1)  # the value's TTL ran out; the cache's (60 s) has not
    got = native(client, [1])
    assert got["results"][0]["statuses"]["orders"] == "expired"
    assert got["results"][0]["values"]["orders"] is None
    assert same(got, oracle(root, [1]))


def test_the_cache_ttl_ends_a_kept_answer(
    served: tuple[TestClient, FeatureStore, Path], clock: Clock
) -> None:
    client, store, _ = served
    _push(store, 1, 5, clock.now)
    native(client, [1])
    clock.advance(59)
    assert native(client, [1])["metadata"]["cache_hit"]
    clock.advance(1)
    assert not native(client, [1])["metadata"]["cache_hit"]


def test_a_registry_change_ends_a_kept_answer(
    served: tuple[TestClient, FeatureStore, Path], clock: Clock
) -> None:
    client, store, root = served
    _push(store, 1, 5, clock.now)
    native(client, [1])
    assert native(client, [1])["metadata"]["cache_hit"]
    store.apply([customer, src, other.source, view.__class__(**{**_fields(view), "ttl": None})])
    got = native(client, [1])
    assert not got["metadata"]["cache_hit"] and same(got, oracle(root, [1]))


def _fields(v: Any) -> dict[str, Any]:
    return {
        "name": v.name,
        "entities": [customer],
        "features": list(v.features),
        "source": src,
        "ttl": v.ttl,
    }


def test_errors_are_not_kept(served: tuple[TestClient, FeatureStore, Path]) -> None:
    client, _, _ = served
    bad = {"features": ["stats:nope"], "entities": {"customer_id": [1]}}
    for _ in range(2):
        assert client.post(NATIVE, json=bad).status_code == 404
    assert kept(client) == 0
