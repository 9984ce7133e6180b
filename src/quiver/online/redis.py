"""Redis as the online store (redis-py with hiredis, pipelined).

One Redis string per (project, view, entity key)::

    <key_prefix>:<project>:<view>:<schema version>:<encoded entity key>

holding the row encoded by :class:`~quiver.online.encoding.RowCodec` (a 16-byte timestamp
header, then the features). Writes go through a server-side Lua script that keeps the newer
row; reads of every view in a request are one ``MGET``.

With ``expire_with_ttl`` (the default), a key of a view with a TTL expires at its event time
plus twice the TTL: for one TTL after going stale a value is still served with the status
``expired``, then Redis reclaims it and the key reads as ``not_found``. Rows already past that
point are not written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError, require
from quiver.online import Reader, ReadRequest, StoredRow, ViewRead, reader_of_read
from quiver.online.encoding import ViewLayout, prepare_write

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["EXPIRY_TTL_MULTIPLE", "NEWER_WINS_LUA", "RedisOnlineStore"]

EXPIRY_TTL_MULTIPLE = 2
"""A key expires at event time + this many TTLs (when ``expire_with_ttl`` is on)."""

_WRITE_CHUNK = 500
_READ_CHUNK = 5_000

NEWER_WINS_LUA = """
local n = #KEYS
local written = 0
for i = 1, n do
  local new = ARGV[i]
  local old = redis.call('GET', KEYS[i])
  local write = true
  if old then
    local o1, o2, o3, o4 = struct.unpack('>I4I4I4I4', old)
    local n1, n2, n3, n4 = struct.unpack('>I4I4I4I4', new)
    if n1 ~= o1 then write = n1 > o1
    elseif n2 ~= o2 then write = n2 > o2
    elseif n3 ~= o3 then write = n3 > o3
    else write = n4 >= o4 end
  end
  if write then
    local expire_at = ARGV[n + i]
    if expire_at ~= nil and expire_at ~= '' then
      redis.call('SET', KEYS[i], new, 'PXAT', expire_at)
    else
      redis.call('SET', KEYS[i], new)
    end
    written = written + 1
  end
end
return written
"""
"""Writes each (key, value) unless the stored value has a greater (event, created) header."""


COMPARE_AND_SET_LUA = """
local n = #KEYS
local failed = {}
for i = 1, n do
  local old = redis.call('GET', KEYS[i])
  local counter = ''
  if old then counter = string.sub(old, 9, 16) end
  if counter == ARGV[3 * i - 2] then
    local expire_at = ARGV[3 * i]
    if expire_at ~= '' then
      redis.call('SET', KEYS[i], ARGV[3 * i - 1], 'PXAT', expire_at)
    else
      redis.call('SET', KEYS[i], ARGV[3 * i - 1])
    end
  else
    failed[#failed + 1] = i
  end
end
return failed
"""
"""Writes each key's new tile state unless its write counter (bytes 9-16) moved meanwhile;
returns the positions (from 1) of the keys that changed, to be read and updated again."""

_TILE_RETRIES = 20


def _safe_url(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


class RedisOnlineStore:
    """An online store in Redis.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS).
        key_prefix: The first part of every key.
        expire_with_ttl: Give keys of views with a TTL an expiry (see the module docs).
    """

    name = "redis"

    def __init__(self, url: str, *, key_prefix: str = "quiver", expire_with_ttl: bool = True):
        redis = require("redis", "redis", "the Redis online store")
        self.url = url
        self.key_prefix = key_prefix
        self.expire_with_ttl = expire_with_ttl
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError,)
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=60, socket_connect_timeout=10)
        except ValueError as exc:
            from quiver.errors import ConfigError

            raise ConfigError(
                f"online_store.url {_safe_url(url)!r} is not a Redis URL: {exc}"
            ) from exc
        self._script = self.client.register_script(NEWER_WINS_LUA)
        self._cas = self.client.register_script(COMPARE_AND_SET_LUA)
        self._prefixes: dict[tuple[str, str, str], bytes] = {}

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()

    def _fail(self, what: str, exc: BaseException) -> BackendError:
        return BackendError(
            f"{what} in the Redis online store at {_safe_url(self.url)} failed: {exc}"
        )

    def retention_us(self, layout: ViewLayout) -> int | None:
        """Keys of a view with a TTL expire at event time + twice the TTL (if enabled)."""
        if self.expire_with_ttl and layout.ttl_us is not None:
            return layout.ttl_us * EXPIRY_TTL_MULTIPLE
        return None

    def ping(self) -> None:
        """Check that Redis answers ``PING``."""
        try:
            self.client.ping()
        except self._errors as exc:
            raise self._fail("PING", exc) from exc

    def key_prefix_for(self, layout: ViewLayout) -> bytes:
        """The prefix of every key of one view's current schema version."""
        ident = (layout.project, layout.view, layout.version)
        found = self._prefixes.get(ident)
        if found is None:
            found = self._prefixes[ident] = (
                f"{self.key_prefix}:{layout.project}:{layout.view}:{layout.version}:".encode()
            )
        return found

    # -- writes --------------------------------------------------------------------------------

    def write(self, layout: ViewLayout, batch: pa.Table | pa.RecordBatch) -> int:
        """Write rows through the newer-wins Lua script, in pipelined chunks."""
        cols = prepare_write(layout, batch)
        n = len(cols)
        if not n:
            return 0
        values = layout.row_codec.encode_arrow(cols.features, cols.event_us, cols.created_us)
        prefix = self.key_prefix_for(layout)
        keys = [prefix + k for k in cols.keys]
        expire: list[Any] | None = None
        keep_us = self.retention_us(layout)
        if keep_us is not None:
            now_ms = int(time.time() * 1000)
            expire = [(e + keep_us) // 1000 for e in cols.event_us]
            live = [i for i, at in enumerate(expire) if at > now_ms]
            if len(live) != n:
                keys = [keys[i] for i in live]
                values = [values[i] for i in live]
                expire = [expire[i] for i in live]
        try:
            pipe = self.client.pipeline(transaction=False)
            for i in range(0, len(keys), _WRITE_CHUNK):
                chunk_values = values[i : i + _WRITE_CHUNK]
                args = (
                    chunk_values if expire is None else chunk_values + expire[i : i + _WRITE_CHUNK]
                )
                self._script(keys=keys[i : i + _WRITE_CHUNK], args=args, client=pipe)
            pipe.execute()
        except self._errors as exc:
            raise self._fail(f"writing feature view '{layout.view}'", exc) from exc
        return n

    def prepare_views(self, layouts: Sequence[ViewLayout]) -> None:
        """Nothing to prepare: a view's first write makes what it needs."""

    def delete_view(self, layout: ViewLayout) -> None:
        """Delete the keys of every schema version of one view (``SCAN`` + ``UNLINK``)."""
        pattern = f"{self.key_prefix}:{layout.project}:{layout.view}:*"
        try:
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    self.client.unlink(*batch)
                    batch = []
            if batch:
                self.client.unlink(*batch)
        except self._errors as exc:
            raise self._fail(f"deleting feature view '{layout.view}'", exc) from exc

    # -- tiles (windowed aggregations) ---------------------------------------------------------

    def read_tiles(
        self,
        layout: ViewLayout,
        key_columns: Sequence[Sequence[Any]],
        head_only: bool = False,
        summary_only: bool = False,
        summary_at: tuple[int, int] | None = None,
    ) -> list[bytes | None]:
        """The tile state of each key (``None``: none), in key order (one ``MGET``; always the
        whole state, of which the summary and the head are prefixes)."""
        prefix = self.key_prefix_for(layout)
        keys = [prefix + k for k in layout.key_encoder.encode_columns(key_columns)]
        if not keys:
            return []
        try:
            return list(self.client.mget(keys))
        except self._errors as exc:
            raise self._fail(f"reading the tiles of feature view '{layout.view}'", exc) from exc

    def update_tiles(
        self,
        layout: ViewLayout,
        key_columns: Sequence[Sequence[Any]],
        update: Callable[[int, bytes | None], bytes | None],
        expire_at_ms: Callable[[bytes], int | None] | None = None,
    ) -> int:
        """Replace the tile state of each key by ``update(position, old state)`` (``None``: keep
        it). Each write is a compare-and-set on the state's write counter: a key changed by
        another writer meanwhile is read and updated again. ``expire_at_ms`` gives a state's
        expiry (used when ``expire_with_ttl`` is on). Returns the keys written."""
        prefix = self.key_prefix_for(layout)
        keys = [prefix + k for k in layout.key_encoder.encode_columns(key_columns)]
        pending = list(range(len(keys)))
        written = 0
        try:
            for _ in range(_TILE_RETRIES):
                if not pending:
                    return written
                retry: list[int] = []
                for c in range(0, len(pending), _WRITE_CHUNK):
                    chunk = pending[c : c + _WRITE_CHUNK]
                    olds = self.client.mget([keys[i] for i in chunk])
                    args: list[Any] = []
                    todo: list[int] = []
                    state: dict[bytes, bytes | None] = {}
                    for i, old in zip(chunk, olds, strict=True):
                        old = state.get(keys[i], old)
                        new = update(i, old)
                        if new is None:
                            continue
                        state[keys[i]] = new
                        at = expire_at_ms(new) if expire_at_ms and self.expire_with_ttl else None
                        args += [old[8:16] if old else b"", new, "" if at is None else at]
                        todo.append(i)
                    if todo:
                        failed = self._cas(keys=[keys[i] for i in todo], args=args)
                        bad = {todo[int(f) - 1] for f in failed}
                        retry += sorted(bad)
                        written += len(todo) - len(bad)
                pending = retry
        except self._errors as exc:
            raise self._fail(f"writing the tiles of feature view '{layout.view}'", exc) from exc
        raise BackendError(
            f"writing the tiles of feature view '{layout.view}': {len(pending)} key(s) kept "
            "changing under concurrent writers; run it again"
        )

    # -- reads ---------------------------------------------------------------------------------

    def reader(self, views: Sequence[ViewRead]) -> Reader:
        """A read of fixed views: :meth:`read` with the call's keys (one ``MGET``)."""
        return reader_of_read(self.read, views)

    def read(self, requests: Sequence[ReadRequest]) -> list[list[StoredRow | None]]:
        """Read every view's keys with one ``MGET`` (chunked for very large requests)."""
        all_keys: list[bytes] = []
        sizes = []
        for req in requests:
            prefix = self.key_prefix_for(req.layout)
            encoded = req.layout.key_encoder.encode_columns(req.key_columns)
            all_keys.extend([prefix + k for k in encoded])
            sizes.append(len(encoded))
        if not all_keys:
            return [[] for _ in requests]
        try:
            if len(all_keys) <= _READ_CHUNK:
                raw = self.client.mget(all_keys)
            else:
                pipe = self.client.pipeline(transaction=False)
                for i in range(0, len(all_keys), _READ_CHUNK):
                    pipe.mget(all_keys[i : i + _READ_CHUNK])
                raw = [v for part in pipe.execute() for v in part]
        except self._errors as exc:
            raise self._fail("reading features", exc) from exc
        out: list[list[StoredRow | None]] = []
        pos = 0
        for req, size in zip(requests, sizes, strict=True):
            decode = req.layout.row_codec.decode
            features = req.features
            rows: list[StoredRow | None] = []
            for data in raw[pos : pos + size]:
                if data is None:
                    rows.append(None)
                else:
                    event, created, values = decode(data)
                    rows.append((event, created, *[values[i] for i in features]))
            out.append(rows)
            pos += size
        return out
