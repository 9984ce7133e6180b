"""The serving cache: online reads answered from memory (or Redis) within a TTL.

What is cached is what the online store returned for a request's keys (the stored rows with
their event times), never the answer: statuses are computed again at every read with the
serving clock, so a value whose view TTL has run out is ``expired`` from the cache exactly as
it would be from the store, never ``present``. Requests reading aggregations (tiles) are not
cached.

Invalidation is by view, through version counters: a reader takes the versions of its views
before it reads the store and tags its entry with them; a write (materialization, push) bumps
its view's version after it wrote the store. An entry whose versions are no longer current is a
miss, so no value is served from the cache once the write that replaced it has returned.

- ``memory``: entries in a dict per process (at most ``max_entries``, oldest out); version
  counters in a small file of the data directory that every process of the machine maps
  (``quiver serve`` workers, ``quiver materialize``, scripts), so a write anywhere on the
  machine invalidates every worker's entries. Replicas on other machines need ``redis``.
- ``redis``: entries (``SET ... EX ttl``) and version counters (``INCR``) in Redis; a lookup
  is one ``MGET`` of the entry and its views' versions.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import mmap
import os
import pickle
import struct
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError

if TYPE_CHECKING:
    from quiver.config import RepoConfig, ServingCacheConfig
    from quiver.store import FeatureStore

__all__ = ["MemoryCache", "RedisCache", "ServingCache", "invalidate", "serving_cache"]

VERSION_FILE = ".serving_cache_versions"
"""The memory backend's shared version counters, in the data directory."""
_SLOTS = 4096
_SLOT = struct.Struct("<Q")
_ATTR = "_quiver_result_cache"
logger = logging.getLogger("quiver.serving")
_lock = threading.Lock()


class ServingCache:
    """What both backends share: the counters and the hit/miss hook.

    Attributes:
        hits: Lookups answered from the cache (this process).
        misses: Lookups that went to the store (this process).
        observe: Called with ``True`` on a hit and ``False`` on a miss (the metrics' hook).
    """

    def __init__(self, settings: ServingCacheConfig, project: str) -> None:
        self.settings = settings
        self.project = project
        self.ttl = settings.ttl_seconds
        self.hits = 0
        self.misses = 0
        self.observe: Callable[[bool], None] | None = None
        self.clock: Callable[[], float] = time.monotonic

    def lookup(self, plan: Any, key: tuple[Any, ...]) -> tuple[Any, Any]:
        """``(results, None)`` from the cache, or ``(None, token)`` to :meth:`put` after
        reading the store."""
        raise NotImplementedError

    def put(self, plan: Any, key: tuple[Any, ...], token: Any, results: Any) -> None:
        """Keep ``results`` of ``key`` read after :meth:`lookup` gave ``token``."""
        raise NotImplementedError

    def invalidate(self, views: Sequence[str]) -> None:
        """Drop every entry that read one of ``views`` (in every process that shares it)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release files and connections."""

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1
        if self.observe is not None:
            self.observe(hit)


class MemoryCache(ServingCache):
    """Entries in this process; versions in a file all processes of the machine share.

    Args:
        settings: The ``serving_cache`` settings.
        project: The project.
        path: The version file.
    """

    def __init__(self, settings: ServingCacheConfig, project: str, path: Path) -> None:
        super().__init__(settings, project)
        self.max_entries = settings.max_entries
        self.entries: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._slots: dict[str, int] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if os.fstat(fd).st_size < _SLOTS * _SLOT.size:
                    os.ftruncate(fd, _SLOTS * _SLOT.size)
                self._map = mmap.mmap(fd, _SLOTS * _SLOT.size)
            finally:
                os.close(fd)
        except OSError as exc:
            raise BackendError(
                f"cannot open the serving cache's version file {path}: {exc}"
            ) from exc
        self._path = path

    def _offsets(self, plan: Any) -> tuple[int, ...]:
        found: tuple[int, ...] | None = plan.__dict__.get("_cache_offsets")
        if found is None:
            found = plan.__dict__["_cache_offsets"] = tuple(
                self._offset(v.layout.view) for v in plan.views
            )
        return found

    def _offset(self, view: str) -> int:
        slot = zlib.crc32(f"{self.project}\0{view}".encode()) % _SLOTS
        return slot * _SLOT.size

    def _versions(self, offsets: tuple[int, ...]) -> tuple[int, ...]:
        unpack, m = _SLOT.unpack_from, self._map
        return tuple([unpack(m, o)[0] for o in offsets])

    def lookup(self, plan: Any, key: tuple[Any, ...]) -> tuple[Any, Any]:
        offsets = self._offsets(plan)
        versions = self._versions(offsets)
        entry = self.entries.get((id(plan), key))
        if entry is not None:
            cached_plan, cached_versions, expires, results = entry
            if cached_plan is plan and cached_versions == versions and self.clock() < expires:
                self._count(True)
                return results, None
            self.entries.pop((id(plan), key), None)
        self._count(False)
        return None, versions

    def put(self, plan: Any, key: tuple[Any, ...], token: Any, results: Any) -> None:
        entries = self.entries
        if len(entries) >= self.max_entries:
            with contextlib.suppress(StopIteration, KeyError, RuntimeError):
                del entries[next(iter(entries))]  # the oldest out
        entries[(id(plan), key)] = (plan, token, self.clock() + self.ttl, results)

    def invalidate(self, views: Sequence[str]) -> None:
        import fcntl

        offsets = sorted({self._offset(v) for v in views})
        if not offsets:
            return
        with open(self._path, "rb+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                for o in offsets:
                    _SLOT.pack_into(self._map, o, (_SLOT.unpack_from(self._map, o)[0] + 1))
                self._map.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        self.entries = {}  # this process's entries: dropped at once

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._map.close()


class RedisCache(ServingCache):
    """Entries and version counters in Redis, shared by every replica.

    Args:
        settings: The ``serving_cache`` settings.
        project: The project.
        url: The Redis URL.
    """

    def __init__(self, settings: ServingCacheConfig, project: str, url: str) -> None:
        super().__init__(settings, project)
        from quiver.errors import require

        redis = require("redis", "redis", "the redis serving cache")
        self.client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self._prefix = f"{settings.key_prefix}:{project}"
        self._ttl_ms = max(1, int(settings.ttl_seconds * 1000))
        self._warned = -math.inf

    def _version_key(self, view: str) -> str:
        return f"{self._prefix}:v:{view}"

    def _keys(self, plan: Any, key: tuple[Any, ...]) -> tuple[str, list[str]]:
        found = plan.__dict__.get("_cache_redis")
        if found is None:
            ident = repr(
                (
                    plan.feature_names,
                    [(v.layout.view, v.layout.version, v.features, v.key_pos) for v in plan.views],
                )
            )
            found = plan.__dict__["_cache_redis"] = (
                hashlib.sha256(ident.encode()).hexdigest()[:32],
                [self._version_key(v.layout.view) for v in plan.views],
            )
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        return f"{self._prefix}:e:{found[0]}:{digest}", found[1]

    def lookup(self, plan: Any, key: tuple[Any, ...]) -> tuple[Any, Any]:
        entry_key, version_keys = self._keys(plan, key)
        try:
            raw, *versions = self.client.mget([entry_key, *version_keys])
        except Exception as exc:  # the cache is down: read the store (and keep nothing)
            self._warn(exc)
            self._count(False)
            return None, None
        current = tuple(int(v or 0) for v in versions)
        if raw is not None:
            cached_versions, cached_key, results = pickle.loads(raw)
            if cached_versions == current and cached_key == key:
                self._count(True)
                return results, None
        self._count(False)
        return None, (entry_key, current)

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned >= 60:  # at most a line a minute while Redis is down
            self._warned = now
            logger.warning("the serving cache's Redis failed (reading the store): %s", exc)

    def put(self, plan: Any, key: tuple[Any, ...], token: Any, results: Any) -> None:
        if token is None:  # the lookup failed: the cache is down
            return
        entry_key, versions = token
        data = pickle.dumps((versions, key, results), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.client.set(entry_key, data, px=self._ttl_ms)
        except Exception as exc:  # not kept; the next read reads the store again
            self._warn(exc)

    def invalidate(self, views: Sequence[str]) -> None:
        if not views:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for view in sorted(set(views)):
                pipe.incr(self._version_key(view))
            pipe.execute()
        except Exception as exc:
            raise BackendError(f"the serving cache's Redis failed: {exc}") from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def open_cache(config: RepoConfig, project: str) -> ServingCache:
    """The ``serving_cache`` of ``config`` (enabled or not).

    Raises:
        ConfigError: the redis backend without a Redis URL.
    """
    settings = config.serving_cache
    if settings.backend == "redis":
        url = settings.redis_url or getattr(config.online_store, "url", None)
        if url is None:
            from quiver.errors import ConfigError

            raise ConfigError(
                "serving_cache.backend 'redis' needs serving_cache.redis_url (the online store "
                "is not Redis)"
            )
        return RedisCache(settings, project, url)
    return MemoryCache(settings, project, config.data_path / VERSION_FILE)


def serving_cache(store: FeatureStore) -> ServingCache | None:
    """The store's serving cache, ``None`` when ``serving_cache.enabled`` is off."""
    found = store.__dict__.get(_ATTR, False)
    if found is not False:
        return found
    with _lock:
        found = store.__dict__.get(_ATTR, False)
        if found is False:
            config = store.config
            found = open_cache(config, store.project) if config.serving_cache.enabled else None
            store.__dict__[_ATTR] = found
    return found


def invalidate(store: FeatureStore, views: Sequence[str]) -> None:
    """Tell every process sharing the cache that ``views`` were written (a no-op when the
    serving cache is off)."""
    cache = serving_cache(store)
    if cache is not None:
        cache.invalidate(views)
