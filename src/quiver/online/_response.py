"""The online read's response: :class:`OnlineResponse` and its per-view :class:`OnlineGroup`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from quiver.online.encoding import us_to_datetime
from quiver.types import arrow_type

if TYPE_CHECKING:
    import pandas
    import pyarrow as pa

__all__ = ["EXPIRED", "NOT_FOUND", "PRESENT", "OnlineGroup", "OnlineResponse"]

PRESENT = "present"
NOT_FOUND = "not_found"
EXPIRED = "expired"


# -- the response ------------------------------------------------------------------------------


class OnlineGroup(NamedTuple):
    """The features of one view in an :class:`OnlineResponse`, which share their statuses and
    event times (the lists are shared: treat them as read-only)."""

    names: tuple[str, ...]
    """Their output names, in request order."""
    statuses: list[str]
    """``present``, ``not_found`` or ``expired`` per row."""
    event_us: list[int | None]
    """Event time of the stored row per row, in microseconds since the epoch (UTC)."""
    rows: list[tuple[Any, ...] | None]
    """The values of ``names`` per row, in that order (``None`` where not ``present``)."""


class OnlineResponse:
    """Feature values for a list of entity rows, with a status per value.

    Attributes:
        feature_names: Output names (``feature`` or ``view__feature``), in request order.
        join_keys: The join keys of the requested views, in first-use order.
        entity_columns: Join key -> the requested key values, in request order.
        values: Output name -> values (``None`` where the status is not ``present``).
        groups: The features of each view with the statuses and event times they share and
            their values row by row, in request order (what formats a response convert once
            per view; ``values`` is built from them when first read).
        cache_hit: Whether the stored rows came from the serving cache
            (:mod:`quiver.monitoring.cache`).
        valid_until: For a response read through the serving cache, the serving clock
            (microseconds) at which its first present value expires by its view's TTL (its
            statuses stay the same until then); ``None`` otherwise.
        cache_expires: For a response read through the serving cache, when (the cache's
            clock) the cache entry of its stored rows ends; ``None`` otherwise.
    """

    __slots__ = (
        "_dtypes",
        "_event_us",
        "_key_dtypes",
        "_statuses",
        "_timestamps",
        "_values",
        "cache_expires",
        "cache_hit",
        "entity_columns",
        "feature_names",
        "groups",
        "join_keys",
        "valid_until",
    )

    def __init__(
        self,
        feature_names: list[str],
        join_keys: list[str],
        entity_columns: dict[str, list[Any]],
        groups: list[OnlineGroup],
        dtypes: dict[str, str],
        key_dtypes: dict[str, str],
    ) -> None:
        self.feature_names = feature_names
        self.join_keys = join_keys
        self.entity_columns = entity_columns
        self.groups = groups
        self._dtypes = dtypes
        self._key_dtypes = key_dtypes
        self._values: dict[str, list[Any]] | None = None
        self.cache_hit = False
        self.valid_until: int | float | None = None
        self.cache_expires: float | None = None
        self._statuses: dict[str, list[str]] | None = None
        self._event_us: dict[str, list[int | None]] | None = None
        self._timestamps: dict[str, list[datetime | None]] | None = None

    @property
    def values(self) -> dict[str, list[Any]]:
        """Output name -> values (``None`` where the status is not ``present``)."""
        if self._values is None:
            out: dict[str, list[Any]] = {}
            for names, _, _, rows in self.groups:
                if len(rows) == 1:  # one entity: no transposing
                    row = rows[0]
                    for i, name in enumerate(names):
                        out[name] = [None if row is None else row[i]]
                    continue
                blank = (None,) * len(names)
                filled = [blank if row is None else row for row in rows]
                if filled:
                    for name, column in zip(names, zip(*filled, strict=True), strict=True):
                        out[name] = list(column)
                else:
                    for name in names:
                        out[name] = []
            self._values = out
        return self._values

    @property
    def statuses(self) -> dict[str, list[str]]:
        """Output name -> ``present``, ``not_found`` or ``expired`` per row (the features of
        one view share one list: treat the lists as read-only)."""
        if self._statuses is None:
            self._statuses = {name: g.statuses for g in self.groups for name in g.names}
        return self._statuses

    @property
    def event_us(self) -> dict[str, list[int | None]]:
        """Output name -> event time of the stored row in microseconds since the epoch, UTC
        (``None`` where not found; the features of one view share one list: read-only)."""
        if self._event_us is None:
            self._event_us = {name: g.event_us for g in self.groups for name in g.names}
        return self._event_us

    @property
    def event_timestamps(self) -> dict[str, list[datetime | None]]:
        """Output name -> event time of the stored row (``None`` where not found)."""
        if self._timestamps is None:
            out: dict[str, list[datetime | None]] = {}
            for names, _, raw, _ in self.groups:
                converted = [None if v is None else us_to_datetime(v) for v in raw]
                for name in names:
                    out[name] = list(converted)
            self._timestamps = out
        return self._timestamps

    def __len__(self) -> int:
        first = next(iter(self.entity_columns.values()), None)
        return len(first) if first is not None else 0

    def __repr__(self) -> str:
        return (
            f"OnlineResponse(rows={len(self)}, join_keys={self.join_keys}, "
            f"features={self.feature_names})"
        )

    def to_dict(self) -> dict[str, list[Any]]:
        """Join keys, then features: column name -> list of values."""
        return {**self.entity_columns, **self.values}

    def to_arrow(self) -> pa.Table:
        """Join keys, then features, as a typed Arrow table (``json`` values as JSON text)."""
        import pyarrow as pa

        from quiver.online._nested import served_array

        arrays = {}
        for key in self.join_keys:
            dtype = self._key_dtypes[key]
            arrays[key] = pa.array(self.entity_columns[key], type=arrow_type(dtype))
        for name in self.feature_names:
            arrays[name] = served_array(self.values[name], self._dtypes[name])
        return pa.table(arrays)

    def to_pandas(self) -> pandas.DataFrame:
        """Join keys, then features, as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def to_df(self) -> Any:
        """Feast's name for :meth:`to_pandas`."""
        return self.to_pandas()

    def to_polars(self) -> Any:
        """Join keys, then features, as a polars DataFrame."""
        from quiver.errors import require

        polars = require("polars", "polars", "OnlineResponse.to_polars()")
        return polars.from_arrow(self.to_arrow())
