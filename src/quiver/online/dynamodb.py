"""Amazon DynamoDB as the online store (boto3).

One table per feature view, ``<table_prefix><project>.<view>`` (on-demand capacity), created by
``quiver apply`` for every online view it creates or changes, and on the first write otherwise.
Every item is one entity key of one schema version:

======== ==== =========================================================================
``k``    B    the hash key: the view's schema version, ``#``, the encoded entity key
``ts``   N    the event timestamp, microseconds (what conditional writes compare)
``cts``  N    the created timestamp, microseconds (the tie-break)
``v``    B    the row, as :class:`~quiver.online.encoding.RowCodec` encodes it for Redis
``xp``   N    (views with a TTL) when DynamoDB's TimeToLive may delete the item, in seconds
======== ==== =========================================================================

A view with windowed aggregations keeps its tile state in ``v`` and its write counter in ``c``.

**Newer wins.** ``BatchWriteItem`` cannot carry a condition: an unconditional batch could put an
older row over a newer one that another writer stored meanwhile (two materializations, a push
during a materialization). ``TransactWriteItems`` can, but costs twice the write capacity,
cancels all 100 puts when one loses, and may not name an item twice. So every row is a
``PutItem`` with the condition ``attribute_not_exists(k) OR ts < :ts OR (ts = :ts AND cts <=
:cts)``, checked by DynamoDB itself at the cost of a plain write (a row that loses costs the
same and changes nothing). A batch is first reduced to its newest row per key (the last one
among equals, as Redis and SQLite keep), then the puts go out on up to ``max_workers`` threads
over pooled connections; botocore retries throttling and server errors with backoff.

**Reads** are ``BatchGetItem`` requests of up to 100 distinct keys (of any views), sent in
parallel, with ``UnprocessedKeys`` retried with backoff; reads are eventually consistent.

**TTL.** As with Redis, with ``expire_with_ttl`` (the default) a row of a view with a TTL stays
readable (with the status ``expired``) until its event time plus twice the TTL and reads as
``not_found`` after that; rows already past that point are not written. The item carries that
instant in ``xp`` (whole seconds, rounded up), fixed when it is written as a Redis key's expiry
is; reads treat an item past its ``xp`` as missing, and the table's TimeToLive on ``xp`` has
DynamoDB delete it later (within days).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

from quiver.errors import BackendError, ConfigError, InvalidError, require
from quiver.online import Reader, ReadRequest, StoredRow, ViewRead, reader_of_read
from quiver.online.encoding import ViewLayout, prepare_write

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["EXPIRY_TTL_MULTIPLE", "NEWER_WINS_CONDITION", "DynamoDBOnlineStore"]

EXPIRY_TTL_MULTIPLE = 2
"""An item of a view with a TTL reads as missing at event time + this many TTLs."""

NEWER_WINS_CONDITION = "attribute_not_exists(#k) OR #ts < :ts OR (#ts = :ts AND #cts <= :cts)"
"""The condition of every put: no stored row, or one with a smaller (event, created) pair."""

_ITEM_BYTES = 400 * 1024
_GET_KEYS = 100
_ATTEMPTS = 12  # BatchGetItem rounds for unprocessed keys
_TILE_RETRIES = 20
_MISSING_RECHECK_S = 1.0
_NAME_RE = re.compile(r"#[a-z]+")


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.02 * 2**attempt) * (0.5 + random.random()))


class _Put:
    """One conditional put of a transaction, and what to do when its condition fails."""

    __slots__ = ("condition", "item", "size", "values")

    def __init__(self, item: dict[str, Any], condition: str, values: dict[str, Any]) -> None:
        self.item = item
        self.condition = condition
        self.values = values
        self.size = sum(len(name) + len(next(iter(v.values()))) for name, v in item.items())


class DynamoDBOnlineStore:
    """An online store in Amazon DynamoDB (see the module docs for the table layout).

    Args:
        region: The AWS region (default: ``AWS_REGION`` / ``AWS_DEFAULT_REGION``).
        table_prefix: The start of every table name.
        endpoint_url: Another endpoint (DynamoDB Local, a test server); default: AWS's, or
            ``AWS_ENDPOINT_URL_DYNAMODB`` / ``AWS_ENDPOINT_URL``.
        access_key_id: With ``secret_access_key`` (and ``session_token``): explicit
            credentials; default: boto3's chain (``AWS_*`` variables, profile, role).
        secret_access_key: See ``access_key_id``.
        session_token: See ``access_key_id``.
        expire_with_ttl: Give items of views with a TTL an expiry (see the module docs).
        max_workers: Requests in flight at once for reads and writes of many keys.
    """

    name = "dynamodb"

    def __init__(
        self,
        *,
        region: str | None = None,
        table_prefix: str = "quiver.",
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        expire_with_ttl: bool = True,
        max_workers: int = 8,
    ) -> None:
        boto3 = require("boto3", "dynamodb", "the DynamoDB online store")
        import botocore.config
        import botocore.exceptions

        self.table_prefix = table_prefix
        self.expire_with_ttl = expire_with_ttl
        self.max_workers = max_workers
        self._client_error = botocore.exceptions.ClientError
        self._errors: tuple[type[BaseException], ...] = (
            botocore.exceptions.ClientError,
            botocore.exceptions.BotoCoreError,
        )
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=max(10, 2 * max_workers),
        )
        try:
            session = boto3.session.Session(
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                region_name=region,
            )
            self.client = session.client("dynamodb", endpoint_url=endpoint_url, config=config)
        except botocore.exceptions.NoRegionError as exc:
            raise ConfigError(
                "the DynamoDB online store needs a region: set online_store.region or AWS_REGION"
            ) from exc
        except (*self._errors, ValueError) as exc:
            raise ConfigError(f"cannot set up the DynamoDB online store: {exc}") from exc
        self.where = f"region {self.client.meta.region_name}" + (
            f", endpoint {self.client.meta.endpoint_url}" if endpoint_url else ""
        )
        self._ready: set[str] = set()
        self._missing: dict[str, float] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._prefixes: dict[str, bytes] = {}

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the worker threads and close the HTTP connections."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.client.close()

    def _fail(self, what: str, exc: BaseException) -> BackendError:
        return BackendError(f"{what} in the DynamoDB online store ({self.where}) failed: {exc}")

    def _code(self, exc: BaseException) -> str:
        if isinstance(exc, self._client_error):
            return str(exc.response.get("Error", {}).get("Code", ""))
        return ""

    def _map(self, fn: Callable[[Any], Any], parts: Sequence[Any]) -> list[Any]:
        """``fn`` over ``parts``, on the worker threads when there is more than one."""
        if len(parts) <= 1 or self.max_workers == 1:
            return [fn(p) for p in parts]
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.max_workers, "quiver-dynamodb")
        return list(self._pool.map(fn, parts))

    def table_name(self, layout: ViewLayout) -> str:
        """The table holding one view's items: ``<table_prefix><project>.<view>``."""
        return f"{self.table_prefix}{layout.project}.{layout.view}"

    def key_prefix_for(self, layout: ViewLayout) -> bytes:
        """The start of the hash key of every item of one view's current schema version."""
        found = self._prefixes.get(layout.version)
        if found is None:
            found = self._prefixes[layout.version] = layout.version.encode() + b"#"
        return found

    def retention_us(self, layout: ViewLayout) -> int | None:
        """Items of a view with a TTL read as missing at event time + twice the TTL."""
        if self.expire_with_ttl and layout.ttl_us is not None:
            return layout.ttl_us * EXPIRY_TTL_MULTIPLE
        return None

    def ping(self) -> None:
        """Check that DynamoDB answers ``ListTables``."""
        try:
            self.client.list_tables(Limit=1)
        except self._errors as exc:
            raise self._fail("ListTables", exc) from exc

    # -- tables ---------------------------------------------------------------------------------

    def _exists(self, table: str) -> bool:
        """Whether the table exists (cached; a missing one is looked up again after a second)."""
        if table in self._ready:
            return True
        if self._missing.get(table, 0.0) > time.monotonic():
            return False
        try:
            self.client.describe_table(TableName=table)
        except self._errors as exc:
            if self._code(exc) != "ResourceNotFoundException":
                raise self._fail(f"describing table '{table}'", exc) from exc
            self._missing[table] = time.monotonic() + _MISSING_RECHECK_S
            return False
        self._ready.add(table)
        self._missing.pop(table, None)
        return True

    def _ensure(self, layout: ViewLayout) -> str:
        """The view's table, created (and waited for) if missing."""
        table = self.table_name(layout)
        if table in self._ready:
            return table
        try:
            if not self._exists(table):
                try:
                    self.client.create_table(
                        TableName=table,
                        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "B"}],
                        BillingMode="PAY_PER_REQUEST",
                        Tags=[{"Key": "quiver:view", "Value": f"{layout.project}.{layout.view}"}],
                    )
                    created = True
                except self._client_error as exc:
                    if self._code(exc) != "ResourceInUseException":  # another writer made it
                        raise
                    created = False
                waiter = self.client.get_waiter("table_exists")
                waiter.wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 300})
                if created and self.expire_with_ttl:
                    self.client.update_time_to_live(
                        TableName=table,
                        TimeToLiveSpecification={"Enabled": True, "AttributeName": "xp"},
                    )
        except self._errors as exc:
            raise self._fail(f"creating table '{table}'", exc) from exc
        self._ready.add(table)
        self._missing.pop(table, None)
        return table

    def prepare_views(self, layouts: Sequence[ViewLayout]) -> None:
        """Create the tables of these views where missing (``quiver apply`` calls this)."""
        for layout in layouts:
            self._ensure(layout)

    def delete_view(self, layout: ViewLayout) -> None:
        """Drop the view's table (every schema version) and wait until it is gone."""
        table = self.table_name(layout)
        self._ready.discard(table)
        try:
            self.client.delete_table(TableName=table)
            self.client.get_waiter("table_not_exists").wait(
                TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
            )
        except self._errors as exc:
            if self._code(exc) != "ResourceNotFoundException":
                raise self._fail(f"deleting table '{table}'", exc) from exc
        self._missing[table] = time.monotonic() + _MISSING_RECHECK_S

    # -- writes ---------------------------------------------------------------------------------

    def write(self, layout: ViewLayout, batch: pa.Table | pa.RecordBatch) -> int:
        """Write rows with conditional puts in transactions of 100, keeping the newer row per
        key (see the module docs); returns the rows processed."""
        cols = prepare_write(layout, batch)
        n = len(cols)
        if not n:
            return 0
        keys, event, created = cols.keys, cols.event_us, cols.created_us
        best: dict[bytes, int] = {}  # the newest row per key; the last one among equals
        for i, key in enumerate(keys):
            j = best.get(key)
            if j is None or (event[i], created[i]) >= (event[j], created[j]):
                best[key] = i
        chosen = sorted(best.values())
        keep_us = self.retention_us(layout)
        if keep_us is not None:
            now_us = time.time_ns() // 1000
            chosen = [i for i in chosen if event[i] + keep_us > now_us]
        if not chosen:
            return n
        values = layout.row_codec.encode_arrow(cols.features, event, created)
        prefix = self.key_prefix_for(layout)
        puts = []
        for i in chosen:
            item = {
                "k": {"B": prefix + keys[i]},
                "ts": {"N": str(event[i])},
                "cts": {"N": str(created[i])},
                "v": {"B": values[i]},
            }
            if keep_us is not None:
                item["xp"] = {"N": str(-(-(event[i] + keep_us) // 1_000_000))}
            put = _Put(
                item,
                NEWER_WINS_CONDITION,
                {":ts": item["ts"], ":cts": item["cts"]},
            )
            if put.size > _ITEM_BYTES:
                raise InvalidError(
                    f"a row of feature view '{layout.view}' takes {put.size} bytes; a DynamoDB "
                    f"item holds at most {_ITEM_BYTES}"
                )
            puts.append(put)
        table = self._ensure(layout)
        self._put_all(table, puts)
        return n

    def _put_all(self, table: str, puts: list[_Put]) -> list[bool]:
        """Send every conditional put (in slices, one per worker thread); for each, whether it
        was written (``False``: its condition failed)."""
        if not puts:
            return []
        step = max(1, -(-len(puts) // self.max_workers))
        slices = [puts[i : i + step] for i in range(0, len(puts), step)]
        return [ok for part in self._map(partial(self._put_slice, table), slices) for ok in part]

    def _put_slice(self, table: str, puts: list[_Put]) -> list[bool]:
        out = []
        put_item = self.client.put_item
        for put in puts:
            try:
                put_item(
                    TableName=table,
                    Item=put.item,
                    ConditionExpression=put.condition,
                    ExpressionAttributeNames=_names(put.condition),
                    **({"ExpressionAttributeValues": put.values} if put.values else {}),
                )
                out.append(True)
            except self._errors as exc:
                code = self._code(exc)
                if code == "ConditionalCheckFailedException":
                    out.append(False)
                elif code == "ResourceNotFoundException":
                    self._ready.discard(table)
                    raise BackendError(
                        f"table '{table}' of the DynamoDB online store ({self.where}) is gone "
                        "(dropped while writing?); write again to create it"
                    ) from exc
                else:  # botocore already retried throttling and server errors
                    raise self._fail(f"writing to table '{table}'", exc) from exc
        return out

    # -- reads ----------------------------------------------------------------------------------

    def _get(
        self, wanted: dict[str, list[bytes]], attributes: str, consistent: bool = False
    ) -> dict[tuple[str, bytes], dict[str, Any]]:
        """The items of ``{table: distinct hash keys}`` that exist, by ``(table, key)``, from
        ``BatchGetItem`` requests of up to 100 keys sent in parallel."""
        live = [table for table in wanted if self._exists(table)]
        pairs = [(table, key) for table in live for key in wanted[table]]
        chunks = [pairs[i : i + _GET_KEYS] for i in range(0, len(pairs), _GET_KEYS)]
        found: dict[tuple[str, bytes], dict[str, Any]] = {}
        for part in self._map(lambda c: self._get_chunk(c, attributes, consistent), chunks):
            found.update(part)
        return found

    def _get_chunk(
        self, pairs: list[tuple[str, bytes]], attributes: str, consistent: bool
    ) -> dict[tuple[str, bytes], dict[str, Any]]:
        request: dict[str, Any] = {}
        for table, key in pairs:
            entry = request.get(table)
            if entry is None:
                entry = request[table] = {
                    "Keys": [],
                    "ProjectionExpression": ", ".join(f"#{a}" for a in _attrs(attributes)),
                    "ExpressionAttributeNames": {f"#{a}": a for a in _attrs(attributes)},
                    "ConsistentRead": consistent,
                }
            entry["Keys"].append({"k": {"B": key}})
        found: dict[tuple[str, bytes], dict[str, Any]] = {}
        for attempt in range(_ATTEMPTS):
            try:
                reply = self.client.batch_get_item(RequestItems=request)
            except self._errors as exc:
                if self._code(exc) != "ResourceNotFoundException":
                    raise self._fail("reading features", exc) from exc
                # A table was dropped since it was seen: read the tables that remain.
                for table in list(request):
                    self._ready.discard(table)
                    if not self._exists(table):
                        del request[table]
                if not request:
                    return found
                continue
            for table, items in reply.get("Responses", {}).items():
                for item in items:
                    found[(table, bytes(item["k"]["B"]))] = item
            request = reply.get("UnprocessedKeys") or {}
            if not request:
                return found
            _backoff(attempt)
        raise BackendError(
            f"reading features from the DynamoDB online store ({self.where}): keys stayed "
            f"unprocessed after {_ATTEMPTS} attempts (throttled); read again"
        )

    def reader(self, views: Sequence[ViewRead]) -> Reader:
        """A read of fixed views: :meth:`read` with the call's keys."""
        return reader_of_read(self.read, views)

    def read(self, requests: Sequence[ReadRequest]) -> list[list[StoredRow | None]]:
        """Read the keys of every view with ``BatchGetItem`` (distinct keys, 100 a request)."""
        wanted: dict[str, dict[bytes, None]] = {}
        encoded: list[tuple[str, list[bytes]]] = []
        for req in requests:
            table = self.table_name(req.layout)
            prefix = self.key_prefix_for(req.layout)
            keys = [prefix + k for k in req.layout.key_encoder.encode_columns(req.key_columns)]
            wanted.setdefault(table, {}).update(dict.fromkeys(keys))
            encoded.append((table, keys))
        if not any(keys for _, keys in encoded):
            return [[] for _ in requests]
        found = self._get({t: list(keys) for t, keys in wanted.items()}, "k, v, xp")
        now_s = time.time()
        out: list[list[StoredRow | None]] = []
        for req, (table, keys) in zip(requests, encoded, strict=True):
            decode = req.layout.row_codec.decode
            features = req.features
            decoded: dict[bytes, StoredRow | None] = {}
            rows: list[StoredRow | None] = []
            for key in keys:
                if key in decoded:
                    rows.append(decoded[key])
                    continue
                item = found.get((table, key))
                row: StoredRow | None = None
                if item is not None and ("xp" not in item or int(item["xp"]["N"]) > now_s):
                    event, created, values = decode(bytes(item["v"]["B"]))
                    row = (event, created, *[values[i] for i in features])
                decoded[key] = row
                rows.append(row)
            out.append(rows)
        return out

    # -- tiles (windowed aggregations) ----------------------------------------------------------

    def _tile_keys(self, layout: ViewLayout, key_columns: Sequence[Sequence[Any]]) -> list[bytes]:
        prefix = self.key_prefix_for(layout)
        return [prefix + k for k in layout.key_encoder.encode_columns(key_columns)]

    def read_tiles(
        self,
        layout: ViewLayout,
        key_columns: Sequence[Sequence[Any]],
        head_only: bool = False,
        summary_only: bool = False,
        summary_at: tuple[int, int] | None = None,
    ) -> list[bytes | None]:
        """The tile state of each key (``None``: none, or expired), in key order; always the
        whole state, of which the summary and the head are prefixes (so ``summary_at`` changes
        nothing)."""
        keys = self._tile_keys(layout, key_columns)
        if not keys:
            return []
        table = self.table_name(layout)
        found = self._get({table: list(dict.fromkeys(keys))}, "k, v, xp")
        now_s = time.time()
        out: list[bytes | None] = []
        for key in keys:
            item = found.get((table, key))
            live = item is not None and ("xp" not in item or int(item["xp"]["N"]) > now_s)
            out.append(bytes(item["v"]["B"]) if live else None)  # type: ignore[index]
        return out

    def update_tiles(
        self,
        layout: ViewLayout,
        key_columns: Sequence[Sequence[Any]],
        update: Callable[[int, bytes | None], bytes | None],
        expire_at_ms: Callable[[bytes], int | None] | None = None,
    ) -> int:
        """Replace the tile state of each key by ``update(position, old state)`` (``None``: keep
        it). Each put is conditional on the stored write counter (``c``): a key changed by
        another writer meanwhile is read and updated again. Returns the keys written."""
        keys = self._tile_keys(layout, key_columns)
        if not keys:
            return 0
        table = self._ensure(layout)
        pending = list(range(len(keys)))
        written = 0
        for _ in range(_TILE_RETRIES):
            if not pending:
                return written
            distinct = list(dict.fromkeys(keys[i] for i in pending))
            stored = self._get({table: distinct}, "k, v, c, xp", consistent=True)
            now_s = time.time()
            state: dict[bytes, bytes | None] = {}
            counter: dict[bytes, bytes | None] = {}
            for key in distinct:
                item = stored.get((table, key))
                counter[key] = None if item is None else bytes(item["c"]["B"])
                live = item is not None and ("xp" not in item or int(item["xp"]["N"]) > now_s)
                state[key] = bytes(item["v"]["B"]) if live else None  # type: ignore[index]
            changed: dict[bytes, list[int]] = {}
            for i in pending:
                new = update(i, state[keys[i]])
                if new is not None:
                    state[keys[i]] = new
                    changed.setdefault(keys[i], []).append(i)
            puts: list[_Put] = []
            owners: list[bytes] = []
            for key in changed:
                new = state[key]
                assert new is not None
                item = {"k": {"B": key}, "v": {"B": new}, "c": {"B": new[8:16]}}
                at = expire_at_ms(new) if expire_at_ms and self.expire_with_ttl else None
                if at is not None:
                    item["xp"] = {"N": str(-(-at // 1000))}
                old = counter[key]
                if old is None:
                    puts.append(_Put(item, "attribute_not_exists(#k)", {}))
                else:
                    puts.append(_Put(item, "#c = :c", {":c": {"B": old}}))
                owners.append(key)
            retry: list[int] = []
            written_ok = self._put_all(table, puts)
            lost = {owner for owner, ok in zip(owners, written_ok, strict=True) if not ok}
            for key, positions in changed.items():
                if key in lost:
                    retry += positions
                else:
                    written += len(positions)
            pending = sorted(retry)
        if not pending:
            return written
        raise BackendError(
            f"writing the tiles of feature view '{layout.view}': {len(pending)} key(s) kept "
            "changing under concurrent writers; run it again"
        )


def _names(condition: str) -> dict[str, str]:
    """The attribute names a condition uses (DynamoDB refuses unused ones)."""
    return {name: name[1:] for name in set(_NAME_RE.findall(condition))}


def _attrs(projection: str) -> list[str]:
    return [a.strip() for a in projection.split(",")]
