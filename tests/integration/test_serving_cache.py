"""The serving cache (quiver.monitoring.cache): a cached read always equals an uncached one.

Oracle: a second FeatureStore over the same repo with the cache off, read at the same serving
clock. Pushes, the view's TTL running out and the cache's own TTL are driven by explicit clocks.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.monitoring.cache import serving_cache
from quiver.online import serving

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TTL = timedelta(hours=1)

customer = Entity(name="customer", join_keys=["customer_id"])
src = FileSource(name="src", path="data/src.parquet")
view = FeatureView(
    name="stats",
    entities=[customer],
    features=[Field(name="orders", dtype="int64"), Field(name="tier", dtype="string")],
    source=src,
    ttl=TTL,
)
other = FeatureView(
    name="other",
    entities=[customer],
    features=[Field(name="score", dtype="float64")],
    source=FileSource(name="src2", path="data/src2.parquet"),
)
FEATURES = ["stats:orders", "stats:tier", "other:score"]


def _us(t: datetime) -> int:
    return round((t - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1e6)


def _repo(root: Path, cache: dict[str, Any], online: dict[str, Any] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "project": "shop",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": online or {"type": "sqlite", "path": "data/online.db"},
        "serving_cache": cache,
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    return root


class Clock:
    """The cache's monotonic clock and the serving clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.mono += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(serving, "_now_us", lambda: _us(c.now))
    return c


def _open(root: Path, clock: Clock) -> FeatureStore:
    store = FeatureStore(root)
    cache = serving_cache(store)
    if cache is not None:
        cache.clock = lambda: clock.mono
    return store


def _read(store: FeatureStore, keys: list[int]) -> tuple[dict[str, Any], bool]:
    r = store.get_online_features(FEATURES, [{"customer_id": k} for k in keys])
    return {"values": r.to_dict(), "statuses": r.statuses}, r.cache_hit


@pytest.fixture
def stores(tmp_path: Path, clock: Clock) -> Iterator[tuple[FeatureStore, FeatureStore]]:
    root = _repo(tmp_path / "repo", {"enabled": True, "ttl_seconds": 60, "max_entries": 3})
    cached = _open(root, clock)
    cached.apply([customer, src, other.source, view, other])
    plain = FeatureStore(root)
    plain.__dict__["_quiver_result_cache"] = None  # the oracle reads the store, never a cache
    yield cached, plain
    cached.close()
    plain.close()


def _push(store: FeatureStore, key: int, orders: int, at: datetime) -> None:
    store.push(
        "stats",
        [{"customer_id": key, "orders": orders, "tier": f"t{orders}", "event_timestamp": at}],
    )


def test_hit_then_push_of_the_same_key_is_seen(
    stores: tuple[FeatureStore, FeatureStore], clock: Clock
) -> None:
    cached, _ = stores
    _push(cached, 1, 5, clock.now)
    first, hit = _read(cached, [1])
    assert not hit and first["values"]["orders"] == [5]
    again, hit = _read(cached, [1])
    assert hit and again == first
    _push(cached, 1, 6, clock.now)
    after, hit = _read(cached, [1])
    assert not hit and after["values"]["orders"] == [6]


def test_a_push_by_another_process_invalidates(tmp_path: Path, clock: Clock) -> None:
    """Two stores over one repo (two workers, or the CLI and a server) share the versions."""
    root = _repo(tmp_path / "repo", {"enabled": True})
    worker_a = _open(root, clock)
    worker_a.apply([customer, src, other.source, view, other])
    worker_b = _open(root, clock)
    _push(worker_a, 1, 5, clock.now)
    assert _read(worker_b, [1])[0]["values"]["orders"] == [5]
    assert _read(worker_b, [1])[1]  # cached in b
    _push(worker_a, 1, 7, clock.now)  # a writes: b's entry is stale
    got, hit = _read(worker_b, [1])
    assert not hit and got["values"]["orders"] == [7]
    worker_a.close()
    worker_b.close()


def test_a_cached_value_expires_with_the_view_ttl(
    stores: tuple[FeatureStore, FeatureStore], clock: Clock
) -> None:
    cached, plain = stores
    _push(cached, 1, 5, clock.now - TTL + timedelta(seconds=10))
    got, _ = _read(cached, [1])
    assert got["statuses"]["orders"] == ["present"]
    clock.advance(10)  # within the cache's TTL (60 s), past the view's
    got, hit = _read(cached, [1])
    assert hit and got["statuses"]["orders"] == ["expired"] and got["values"]["orders"] == [None]
    assert got == _read(plain, [1])[0]


def test_the_cache_ttl_ends_an_entry(
    stores: tuple[FeatureStore, FeatureStore], clock: Clock
) -> None:
    cached, _ = stores
    _push(cached, 1, 5, clock.now)
    _read(cached, [1])
    clock.advance(59)
    assert _read(cached, [1])[1]
    clock.advance(1)
    assert not _read(cached, [1])[1]


ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(1, 3), st.integers(0, 99), st.integers(-7200, 60)),
        st.tuples(st.just("read"), st.lists(st.integers(1, 4), min_size=1, max_size=3)),
        st.tuples(st.just("wait"), st.floats(0, 3000)),
    ),
    min_size=1,
    max_size=25,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops)
def test_cached_reads_equal_uncached_reads(
    tmp_path_factory: pytest.TempPathFactory, clock: Clock, steps: list[Any]
) -> None:
    root = _repo(
        tmp_path_factory.mktemp("prop") / "repo",
        {"enabled": True, "ttl_seconds": 600, "max_entries": 4},
    )
    cached = _open(root, clock)
    cached.apply([customer, src, other.source, view, other])
    plain = FeatureStore(root)
    plain.__dict__["_quiver_result_cache"] = None
    try:
        for step in steps:
            if step[0] == "push":
                _, key, orders, offset = step
                _push(cached, key, orders, clock.now + timedelta(seconds=offset))
            elif step[0] == "read":
                assert _read(cached, step[1])[0] == _read(plain, step[1])[0]
            else:
                clock.advance(step[1])
    finally:
        cached.close()
        plain.close()


def test_redis_backend_shared_by_two_stores(tmp_path: Path, clock: Clock, redis_url: str) -> None:
    prefix = f"c{uuid.uuid4().hex[:6]}"
    cache = {"enabled": True, "backend": "redis", "key_prefix": prefix}
    online = {"type": "redis", "url": redis_url, "key_prefix": prefix, "expire_with_ttl": False}
    root = _repo(tmp_path / "a", cache, online)
    a = _open(root, clock)
    a.apply([customer, src, other.source, view, other])
    b = _open(_repo(tmp_path / "b", cache, online), clock)  # another replica, own files
    b.apply([customer, src, other.source, view, other])
    _push(a, 1, 5, clock.now)
    assert _read(b, [1])[0]["values"]["orders"] == [5]
    assert _read(a, [1])[1]  # b's entry, shared
    _push(a, 1, 8, clock.now)
    got, hit = _read(b, [1])
    assert not hit and got["values"]["orders"] == [8]
    a.close()
    b.close()


def test_reads_go_to_the_store_while_the_redis_cache_is_down(tmp_path: Path, clock: Clock) -> None:
    root = _repo(
        tmp_path / "repo",
        {"enabled": True, "backend": "redis", "redis_url": "redis://127.0.0.1:1/0"},
    )
    writer = FeatureStore(root)
    writer.__dict__["_quiver_result_cache"] = None  # writes without telling the (down) cache
    writer.apply([customer, src, other.source, view, other])
    _push(writer, 1, 5, clock.now)
    reader = _open(root, clock)
    for _ in range(2):
        got, hit = _read(reader, [1])
        assert not hit and got["values"]["orders"] == [5]
    writer.close()
    reader.close()
