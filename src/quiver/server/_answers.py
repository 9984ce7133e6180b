"""Answers kept by the fast path: the response bytes of an identical online read, reused.

With the serving cache on (``serving_cache.enabled``, the ``memory`` backend), a cache hit still
costs the parse of the body, the resolution of the request, the lookup and the encoding of the
answer. For an identical request (the same route and body bytes: the same features, keys and
flags) :mod:`quiver.server.fastpath` keeps the encoded answer too, and a later identical request
is answered with it after only the checks that must run every time:

- the request's permission check (``auth: api_key``: the same ``check_features`` call, on the
  request as parsed the first time) and the usage count;
- the answer's views: the resolved request must still be the current one (no registry change),
  and the views' versions in the serving cache's version file must be those read *before* the
  store was read: a materialization or push of a view (in any process of the machine) bumps its
  version, so invalidation is exactly the value cache's;
- its expiry: the first of the cache's TTL (``ttl_seconds`` from the store read) and the
  serving-clock time at which the first value present in the answer expires by its view's TTL
  (:func:`~quiver.online.serving.get_online_features` computes it), so an expired value is never
  answered as ``present``.

The native answer's ``metadata`` is written per request (``latency_ms``; ``cache_hit`` is
``true``). Its expiry is never later than the value-cache entry it was built from. Kept for
bodies of at most :data:`MAX_BODY` bytes, without on-demand features, windowed aggregations, the
specification's ``feature_sets`` shape or Feast's version metadata; at most ``max_entries`` per
process, oldest out. With the ``redis`` backend nothing is kept here (its versions live in
Redis, one round trip a hit already makes).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

from quiver.errors import QuiverError
from quiver.monitoring.cache import _ATTR as _CACHE_ATTR
from quiver.monitoring.cache import MemoryCache
from quiver.monitoring.usage import ATTR as _USAGE
from quiver.online import serving as _serving
from quiver.online._plans import _plan

if TYPE_CHECKING:
    from quiver.online.serving import OnlineResponse
    from quiver.store import FeatureStore

__all__ = ["MAX_BODY", "Answer", "Answers"]

MAX_BODY = 8192
"""Request bodies longer than this are not kept (the point is the hot single-key read)."""

_MISS_TAIL = b',"cache_hit":false}}'
_HIT_TAIL = b',"cache_hit":true}}'


class Answer(NamedTuple):
    """One kept answer."""

    plan: Any
    req: Any
    n: int
    offsets: tuple[int, ...]
    versions: tuple[int, ...]
    expires: float
    """The cache's clock (monotonic): the TTL of the store read it was built from."""
    valid_until_us: int | float
    """The serving clock: when its first present value expires."""
    head: bytes
    """The body, up to the value of ``latency_ms`` (native) or whole (Feast)."""
    tail: bytes
    """What follows ``latency_ms`` (native), else empty."""


class Answers:
    """The kept answers of one store's fast path (``None`` from :meth:`of` when the serving
    cache is off or not the memory backend)."""

    def __init__(self, store: FeatureStore, cache: MemoryCache) -> None:
        self.store = store
        self.cache = cache
        self.max_entries = cache.max_entries
        self.entries: dict[tuple[str, bytes], Answer] = {}

    @classmethod
    def of(cls, store: FeatureStore) -> Answers | None:
        """The store's answers, if the serving cache is on with the memory backend."""
        from quiver.monitoring.cache import serving_cache

        cache = store.__dict__.get(_CACHE_ATTR, False)
        if cache is False:
            cache = serving_cache(store)
        return cls(store, cache) if isinstance(cache, MemoryCache) else None

    def get(self, path: str, body: bytes) -> Answer | None:
        """The kept answer of an identical request, if it may still be served (the versions,
        the plan, both expiries). The caller checks permissions, then calls :meth:`served`."""
        answer = self.entries.get((path, body))
        if answer is None:
            return None
        cache = self.cache
        req = answer.req
        if (
            cache._versions(answer.offsets) != answer.versions
            or cache.clock() >= answer.expires
            or _serving._now_us() >= answer.valid_until_us
            or _plan(self.store, req.features, req.feature_service, req.full_feature_names)
            is not answer.plan
        ):
            self.entries.pop((path, body), None)
            return None
        return answer

    def served(self, answer: Answer) -> None:
        """Count a kept answer served (after its permission check): usage and a cache hit."""
        usage = self.store.__dict__.get(_USAGE)
        if usage is not None:
            req = answer.req
            usage.record_online(
                self.store, answer.plan, req.features, req.feature_service, answer.n
            )
        self.cache._count(True)

    def before_read(self, req: Any) -> tuple[Any, tuple[int, ...], tuple[int, ...], float] | None:
        """What a miss notes before the store is read: the plan, its views' version offsets
        and versions, and the entry's expiry (the cache's clock); ``None`` if the request does
        not resolve (the read itself then answers the error, after the permission check)."""
        cache = self.cache
        try:
            plan = _plan(self.store, req.features, req.feature_service, req.full_feature_names)
        except QuiverError:
            return None
        offsets = cache._offsets(plan)
        return plan, offsets, cache._versions(offsets), cache.clock() + cache.ttl

    def keep(
        self,
        path: str,
        body: bytes,
        req: Any,
        n: int,
        noted: tuple[Any, tuple[int, ...], tuple[int, ...], float],
        result: OnlineResponse,
        answer: bytes,
        native: bool,
    ) -> None:
        """Keep ``answer`` (the bytes just sent for ``body``) if it may be reused."""
        valid_until, entry_ends = result.valid_until, result.cache_expires
        plan, offsets, versions, expires = noted
        if (
            valid_until is None
            or entry_ends is None
            or len(body) > MAX_BODY
            or plan.on_demand is not None
            or plan.aggregated
            or not plan.views
        ):
            return
        head, tail = answer, b""
        if native:
            # built from the store (a miss) or from the value cache (a hit): kept either way
            at = answer.rfind(b'"metadata":{"latency_ms":')
            ending = next((t for t in (_MISS_TAIL, _HIT_TAIL) if answer.endswith(t)), None)
            if at < 0 or ending is None:
                return
            head = answer[: at + len(b'"metadata":{"latency_ms":')]
            rest = answer[len(head) :]
            comma = rest.find(b",")
            tail = rest[comma : -len(ending)] + _HIT_TAIL
        entries = self.entries
        if len(entries) >= self.max_entries:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del entries[next(iter(entries))]  # the oldest out
        entries[(path, body)] = Answer(
            plan, req, n, offsets, versions, min(expires, entry_ends), valid_until, head, tail
        )

    def clear(self) -> None:
        """Forget every kept answer."""
        self.entries = {}


def native_body(answer: Answer, start: int) -> bytes:
    """A kept native answer with this request's ``latency_ms``."""
    latency_ms = (time.perf_counter_ns() - start) // 1000 / 1000
    return answer.head + orjson.dumps(latency_ms) + answer.tail
