"""Online stores: the latest feature row per entity key, for low-latency serving.

A store implements the small :class:`OnlineStore` protocol and is picked by the ``type`` of
``online_store`` in ``quiver.yaml`` from :data:`ONLINE_STORES`:

- ``sqlite`` (:mod:`quiver.online.sqlite`): one embedded file, one table per feature view;
- ``redis`` (:mod:`quiver.online.redis`): one key per (project, view, entity key);
- ``dynamodb`` (:mod:`quiver.online.dynamodb`): one DynamoDB table per feature view, one item
  per entity key.

Every write follows the *newer-wins* rule inside the store: a row replaces the stored row of the
same key only if its event timestamp is greater, or equal with a created timestamp at least as
great. Running the same write twice therefore leaves the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from quiver.online.encoding import ViewLayout

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.config import RepoConfig

__all__ = [
    "ONLINE_STORES",
    "PREPARING_STORES",
    "OnlineStore",
    "ReadRequest",
    "Reader",
    "StoredRow",
    "ViewLayout",
    "ViewRead",
    "create_online_store",
    "reader_of_read",
]

StoredRow = tuple[Any, ...]
"""``(event_us, created_us, value, ...)``: a stored row with the requested features' values, in
the requested order. A store may append items of its own after them; read by position."""


class ReadRequest(NamedTuple):
    """Entity keys to read from one view.

    Attributes:
        layout: The view's layout.
        features: Positions in ``layout.feature_names`` of the features to return.
        key_columns: One sequence of physical key values per join key (integers, strings,
            booleans; timestamps as microseconds), all of the same length. Each store encodes
            them as it needs (``layout.key_encoder``).
    """

    layout: ViewLayout
    features: tuple[int, ...]
    key_columns: Sequence[Sequence[Any]]

    @property
    def size(self) -> int:
        """How many keys the request holds."""
        return len(self.key_columns[0]) if self.key_columns else 0


class ViewRead(NamedTuple):
    """One view of a prepared read (:meth:`OnlineStore.reader`).

    Attributes:
        layout: The view's layout.
        features: Positions in ``layout.feature_names`` of the features to return.
        key_pos: Which of the call's key columns are this view's join keys, in the view's
            order (``None``: all of them, in order).
    """

    layout: ViewLayout
    features: tuple[int, ...]
    key_pos: tuple[int, ...] | None


Reader = Callable[[Sequence[Sequence[Any]]], list[list[StoredRow | None]]]
"""A prepared read: called with key columns (all of the same length), it returns what
:meth:`OnlineStore.read` would for its views: one stored row (or ``None``) per key, per view."""


def reader_of_read(
    read: Callable[[Sequence[ReadRequest]], list[list[StoredRow | None]]],
    views: Sequence[ViewRead],
) -> Reader:
    """The plain prepared read: the :class:`ReadRequest` list of each call passed to ``read``
    (for stores with nothing to prepare, and for the calls a prepared read does not cover)."""
    views = list(views)
    new = tuple.__new__  # skips the NamedTuple's Python-level constructor

    def reader(columns: Sequence[Sequence[Any]]) -> list[list[StoredRow | None]]:
        return read(
            [
                new(
                    ReadRequest,
                    (layout, feats, columns if pos is None else [columns[i] for i in pos]),
                )
                for layout, feats, pos in views
            ]
        )

    return reader


class OnlineStore(Protocol):
    """What an online store does: newer-wins writes, batched reads."""

    name: str

    def write(self, layout: ViewLayout, batch: pa.Table | pa.RecordBatch) -> int:
        """Write rows (join keys, every feature, ``event_timestamp``, optional
        ``created_timestamp``), keeping the newer row per key; returns the rows processed."""
        ...

    def read(self, requests: Sequence[ReadRequest]) -> list[list[StoredRow | None]]:
        """For each request, one stored row (or ``None``) per key, in key order."""
        ...

    def reader(self, views: Sequence[ViewRead]) -> Reader:
        """A read of these views and features, prepared once for many calls (serving keeps one
        per resolved request); stores with nothing to prepare return :func:`reader_of_read`."""
        ...

    def prepare_views(self, layouts: Sequence[ViewLayout]) -> None:
        """Create what these views need before their first write (``quiver apply`` calls it
        for the online views it creates or changes); stores that need nothing do nothing."""
        ...

    def delete_view(self, layout: ViewLayout) -> None:
        """Remove every row of one view (all schema versions)."""
        ...

    def read_tiles(
        self,
        layout: ViewLayout,
        key_columns: Sequence[Sequence[Any]],
        head_only: bool = False,
        summary_only: bool = False,
        summary_at: tuple[int, int] | None = None,
    ) -> list[bytes | None]:
        """The tile state (:mod:`quiver.features.tiles`) of each key of a view with
        aggregations, ``None`` where there is none, in key order. With ``head_only`` a store may
        return only the state's head (its first ``bytes 17-24`` bytes, little-endian); with
        ``summary_only``, only the header and the summary (the first ``bytes 25-32``).
        ``summary_at`` (``(ceil(now / I) - 1, floor(now / I))``) tells when the read happens:
        a store that can tell from it that the summary does not answer (its anchor ``A`` is not
        at or before the first, or the second is not before ``A`` plus its horizon ``H``) may
        add the head in the same read, sparing a second one."""
        ...

    def update_tiles(
        self,
        layout: ViewLayout,
        key_columns: Sequence[Sequence[Any]],
        update: Callable[[int, bytes | None], bytes | None],
        expire_at_ms: Callable[[bytes], int | None] | None = None,
    ) -> int:
        """Replace each key's tile state by ``update(position, old state)`` (``None``: keep it),
        atomically per key; returns how many keys were written. A store that reclaims keys may
        expire a state at ``expire_at_ms(state)``."""
        ...

    def retention_us(self, layout: ViewLayout) -> int | None:
        """How long after its event time a row stays readable, in microseconds (``None``: until
        it is overwritten). Stores that reclaim stale rows (Redis key expiry) say so here."""
        ...

    def ping(self) -> None:
        """Check that the store answers; raise :class:`~quiver.errors.BackendError` if not."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _sqlite(config: RepoConfig) -> OnlineStore:
    from quiver.online.sqlite import SqliteOnlineStore

    return SqliteOnlineStore(config.resolve(config.online_store.path))  # type: ignore[union-attr]


def _redis(config: RepoConfig) -> OnlineStore:
    from quiver.online.redis import RedisOnlineStore

    cfg = config.online_store
    return RedisOnlineStore(
        cfg.url,  # type: ignore[union-attr]
        key_prefix=cfg.key_prefix,  # type: ignore[union-attr]
        expire_with_ttl=cfg.expire_with_ttl,  # type: ignore[union-attr]
    )


def _dynamodb(config: RepoConfig) -> OnlineStore:
    from quiver.online.dynamodb import DynamoDBOnlineStore

    cfg = config.online_store
    return DynamoDBOnlineStore(
        region=cfg.region,  # type: ignore[union-attr]
        table_prefix=cfg.table_prefix,  # type: ignore[union-attr]
        endpoint_url=cfg.endpoint_url,  # type: ignore[union-attr]
        access_key_id=cfg.access_key_id,  # type: ignore[union-attr]
        secret_access_key=cfg.secret_access_key,  # type: ignore[union-attr]
        session_token=cfg.session_token,  # type: ignore[union-attr]
        expire_with_ttl=cfg.expire_with_ttl,  # type: ignore[union-attr]
        max_workers=cfg.max_workers,  # type: ignore[union-attr]
    )


ONLINE_STORES: dict[str, Callable[[RepoConfig], OnlineStore]] = {
    "sqlite": _sqlite,
    "redis": _redis,
    "dynamodb": _dynamodb,
}
"""Online store factories by the ``online_store.type`` name."""

PREPARING_STORES = frozenset({"dynamodb"})
"""Store types whose ``prepare_views`` does something: ``apply`` opens only these."""


def create_online_store(config: RepoConfig) -> OnlineStore:
    """The online store that ``config.online_store`` chooses.

    Raises:
        ConfigError: an unknown store type.
    """
    factory = ONLINE_STORES.get(config.online_store.type)
    if factory is None:
        from quiver.errors import ConfigError

        raise ConfigError(
            f"online_store.type {config.online_store.type!r} is unknown; use one of "
            + ", ".join(sorted(ONLINE_STORES))
        )
    return factory(config)
