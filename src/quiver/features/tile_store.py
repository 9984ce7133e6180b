"""Windowed aggregations in the online store: materialization, push and reads of tiles.

* **Materialization** of ``[start, end)`` recomputes, from the offline source, every tile that
  the range touches (from the start of ``start``'s tile, with the events before ``end``) and
  replaces those tiles of each key that has events there: running a range again leaves the
  same tiles. Keys without offline events in the range keep their tiles.
* **Push** adds each event to its tile (an event older than the others lands in its own,
  older tile), merged with what the tile holds.
* Each write prunes the tiles older than the largest window before the key's newest tile.
* **Reads** at ``now`` combine the tiles of each window (:class:`Combiner`). A read of
  ``count``/``sum``/``mean`` fetches the state's summary and reads its window totals when the
  summary answers at ``now`` (see :mod:`quiver.features.tiles`); otherwise it reads the head (in
  the same statement on SQLite) and subtracts running totals. Both give the same values.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from quiver.features.tiles import (
    _HEADER,
    ANCHOR,
    F64,
    HEADER_SIZE,
    I64,
    INT64_MIN,
    DecodedTiles,
    TileSpec,
    _sort_key,
    tile_of,
)
from quiver.online.encoding import (
    CREATED_TS,
    EVENT_TS,
    NO_CREATED,
    ViewLayout,
    arrow_to_physical,
    python_converter,
    timestamps_us,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.definitions import Entity, FeatureView
    from quiver.online import OnlineStore
    from quiver.selection import ViewSelection
    from quiver.store import FeatureStore

__all__ = [
    "Combiner",
    "TileLayout",
    "materialize_tiles",
    "push_tiles",
    "read_groups",
    "tile_layout",
]

NEEDS_HEAD = object()
"""What :class:`Combiner` returns for a summary that does not answer the read: fetch the head."""
WRITE_KEYS = 5_000
"""Keys updated per store transaction / pipeline by materialization."""


@dataclass(frozen=True)
class TileLayout(ViewLayout):
    """A view with aggregations in the online store: its keys, source columns and
    aggregations (in :attr:`version`, so a changed aggregation never reads old tiles)."""

    aggregation_spec: str = ""

    @cached_property
    def version(self) -> str:
        """A short hash of the keys, columns, aggregations, tile size and tile format."""
        text = f"tiles-v5|{ViewLayout.version.func(self)}|{self.aggregation_spec}"  # type: ignore[attr-defined]
        return "t" + hashlib.sha256(text.encode()).hexdigest()[:11]


def tile_layout(project: str, view: FeatureView, entities: Sequence[Entity]) -> TileLayout:
    """The online layout of a view with aggregations."""
    base = ViewLayout.from_view(project, view, entities)
    spec = view.to_spec()
    text = json.dumps(
        [spec["aggregations"], spec["aggregation_interval"]], sort_keys=True, separators=(",", ":")
    )
    return TileLayout(
        project=base.project,
        view=base.view,
        join_keys=base.join_keys,
        key_dtypes=base.key_dtypes,
        feature_names=base.feature_names,
        feature_dtypes=base.feature_dtypes,
        ttl_us=None,
        aggregation_spec=text,
    )


# -- reads -------------------------------------------------------------------------------------


class Combiner:
    """Computes aggregated features from a key's tiles at a given time.

    Args:
        spec: The view's tile spec.
        names: The aggregated features to compute, in order.
    """

    def __init__(self, spec: TileSpec, names: Sequence[str]) -> None:
        self.spec = spec
        view = spec.view
        self.items: list[tuple[str, int, tuple[int, ...], Callable[[Any], Any] | None]] = []
        idx = spec.index
        empty: list[Any] = []
        for name in names:
            agg = view.aggregation(name)
            col = agg.column
            dtype = spec.dtypes.get(col or "")
            parts: tuple[int, ...]
            if agg.function == "count":
                parts = (idx[(col, "cnt")],) if col else (0,)
            elif agg.function == "last":
                parts = (idx[(col, "last_ts")], idx[(col, "last")])
            elif agg.function == "count_distinct":
                parts = (idx[(col, "dist")],)
            elif agg.function in ("min", "max"):
                parts = (idx[(col, "cnt")], idx[(col, agg.function)])
            else:  # sum, mean, stddev
                parts = (idx[(col, "cnt")], idx[(col, "sum")], idx.get((col, "m2"), -1))
            convert = None
            if agg.function in ("min", "max", "last") and dtype is not None:
                convert = python_converter(dtype)
            self.items.append((agg.function, agg.window_us // spec.interval_us, parts, convert))
            empty.append(0 if agg.function in ("count", "count_distinct") else None)
        self.empty = tuple(empty)
        self.widths = sorted({w for _, w, _, _ in self.items})
        self.widest = self.widths[-1]
        self._plan_totals()
        self.interval_us = spec.interval_us
        codes = {"count": 0, "sum": 1, "mean": 2}
        self.recipes: list[tuple[int, int, int]] | None = (
            [
                (codes[f], used[0], used[-1])
                for (f, _, _, _), used in zip(self.items, self.item_totals, strict=True)
            ]
            if all(f in codes for f, _, _, _ in self.items)
            else None
        )
        """``(kind, total, total)`` per item when every item reads running totals only."""
        self.needs_arrays = any(
            f not in ("count", "sum", "mean") for f, _, _, _ in self.items
        )  # the others read running totals only
        cumulative = spec.cumulative
        row_of = [spec.widths.index(self.widths[w]) * len(cumulative) for *_, w in self.total_plan]
        self.summary_recipes: list[tuple[int, int, int]] | None = None
        """The recipes with the summary row's indices in place of the totals'."""
        if self.recipes is not None:
            total_parts = [p for p, _ in self._total_keys]
            at = [r + cumulative.index(p) for r, p in zip(row_of, total_parts, strict=True)]
            self.summary_recipes = [(kind, at[a], at[b]) for kind, a, b in self.recipes]
        self.summary_events = spec.widths.index(self.widest) * len(cumulative) + cumulative.index(0)
        """The summary row's index of the widest window's event count (``0``: no event)."""
        self.summary_starts = spec.summary_starts
        self.summary_row = spec.summary_row
        self.starts_at = HEADER_SIZE + ANCHOR.size
        self.rows_at = self.starts_at + spec.summary_starts.size

    def _plan_totals(self) -> None:
        """The running totals the additive items read: ``(part, width)`` once each."""
        keys: list[tuple[int, int]] = []
        self.item_totals: list[tuple[int, ...]] = []
        for function, width, parts, _ in self.items:
            used = parts[:1] if function == "count" else parts[:2]
            if function not in ("count", "sum", "mean"):
                used = ()
            for p in used:
                if (p, width) not in keys:
                    keys.append((p, width))
            self.item_totals.append(tuple(keys.index((p, width)) for p in used))
        self._total_keys = keys
        spec = self.spec
        self.total_plan = [
            (
                spec.section_of[("running", p)],
                (F64 if spec.parts[p].code == "d" else I64).unpack_from,
                self.widths.index(w),
            )
            for p, w in keys
        ]
        # One unpack reads a tile's latest event time and every running total (the head's
        # arrays after the tile numbers, ``count`` items apart): ``(item, width)`` per total.
        self.total_items = [
            (spec.section_of[("running", p)] - 1, self.widths.index(w)) for p, w in keys
        ]
        self._codes = ["q"] + ["d" if spec.parts[p].code == "d" else "q" for p in spec.cumulative]
        self._column_structs: dict[int, struct.Struct] = {}

    def _column_struct(self, count: int) -> struct.Struct:
        """The struct reading one tile's items of the head (see :attr:`total_items`) in a
        state of ``count`` tiles."""
        found = self._column_structs.get(count)
        if found is None:
            gap = f"{8 * count - 8}x" if count > 1 else ""
            found = struct.Struct("<" + gap.join(self._codes))
            if len(self._column_structs) < 4096:
                self._column_structs[count] = found
        return found

    def __call__(self, data: bytes | None, now_us: int) -> tuple[int | None, tuple[Any, ...]]:
        """The latest event time in the widest window (``None``: no event) and the values, or
        :data:`NEEDS_HEAD` when ``data`` is a state's summary alone and does not answer."""
        if data is None:
            return None, self.empty
        interval = self.interval_us
        recipes = self.summary_recipes
        if recipes is not None:  # count, sum and mean only: the summary may answer
            anchor, newest, horizon = ANCHOR.unpack_from(data, HEADER_SIZE)
            d = now_us // interval - anchor
            if -((-now_us) // interval) - 1 >= anchor and d < horizon:
                run = bisect_right(self.summary_starts.unpack_from(data, self.starts_at), d) - 1
                row = self.summary_row.unpack_from(data, self.rows_at + run * self.summary_row.size)
                return newest if row[self.summary_events] else None, tuple(
                    [
                        row[a]
                        if kind == 0
                        else (row[b] if row[a] else None)
                        if kind == 1
                        else (row[b] / row[a] if row[a] else None)
                        for kind, a, b in recipes
                    ]
                )
        count, _, head, tiles_at = _HEADER.unpack_from(data, 0)
        if len(data) < head:
            return NEEDS_HEAD  # type: ignore[return-value]
        n8 = count << 3
        stored = memoryview(data)[tiles_at : tiles_at + n8].cast("q")
        j = bisect_right(stored, -((-now_us) // interval) - 1)
        base = now_us // interval
        starts = [bisect_left(stored, base - w, 0, j) for w in self.widths]
        if not j:
            return None, self.empty
        column = self._column_struct(count).unpack_from
        at = tiles_at + n8
        hi = column(data, at + 8 * (j - 1))
        lows = [column(data, at + 8 * (i - 1)) if 0 < i < j else None for i in starts]
        # a window's sum: one subtraction of running totals
        totals: list[Any] = [
            0 if j <= starts[w] else hi[k] if lows[w] is None else hi[k] - lows[w][k]  # type: ignore[index]
            for k, w in self.total_items
        ]
        latest = hi[0] if j > starts[-1] else None
        if self.recipes is not None:  # count, sum and mean only: from the running totals
            return latest, tuple(
                [
                    totals[a]
                    if kind == 0
                    else (totals[b] if totals[a] else None)
                    if kind == 1
                    else (totals[b] / totals[a] if totals[a] else None)
                    for kind, a, b in self.recipes
                ]
            )
        tiles = DecodedTiles(self.spec, data)
        arrays = list(tiles.arrays)
        for k, col in tiles.json_parts().items():
            arrays[k] = col
        out: list[Any] = []
        for (function, width, parts, convert), used in zip(
            self.items, self.item_totals, strict=True
        ):
            if function == "count":
                out.append(totals[used[0]])
            elif function == "sum":
                out.append(totals[used[1]] if totals[used[0]] else None)
            elif function == "mean":
                count = totals[used[0]]
                out.append(totals[used[1]] / count if count else None)
            else:
                value = _combine(function, arrays, parts, starts[self.widths.index(width)], j)
                out.append(convert(value) if convert is not None and value is not None else value)
        return latest, tuple(out)


def _combine(function: str, arrays: list[Any], parts: tuple[int, ...], i: int, j: int) -> Any:
    """One aggregate (``min``, ``max``, ``stddev``, ``count_distinct``, ``last``) over the
    tiles at positions ``[i, j)``."""
    if function == "count_distinct":
        return len(set().union(*arrays[parts[0]][i:j]))
    if function == "last":
        stamps, values = arrays[parts[0]], arrays[parts[1]]
        for k in range(j - 1, i - 1, -1):
            if stamps[k] != INT64_MIN:
                return values[k]
        return None
    counts = arrays[parts[0]][i:j]
    n = sum(counts)
    if not n:
        return None
    if function in ("min", "max"):
        part = arrays[parts[1]][i:j]
        return min(part) if function == "min" else max(part)
    if n < 2:  # stddev (sample)
        return None
    sums = arrays[parts[1]][i:j]
    mean = sum(sums) / n
    m2 = sum(arrays[parts[2]][i:j]) + sum(
        c * (s / c - mean) ** 2 for c, s in zip(counts, sums, strict=True) if c
    )
    return math.sqrt(max(m2, 0.0) / (n - 1))


@dataclass(frozen=True)
class AggregatedRead:
    """One view with aggregations in a serving plan."""

    position: int
    """Where its group goes among the response's groups."""
    layout: TileLayout
    combiner: Combiner
    outputs: tuple[str, ...]
    key_pos: tuple[int, ...] | None

    def _replace_keys(self) -> AggregatedRead:
        """This read with ``key_pos=None`` (it takes every key column, in order)."""
        return AggregatedRead(self.position, self.layout, self.combiner, self.outputs, None)


def aggregated_read(
    store: FeatureStore,
    sel: ViewSelection,
    position: int,
    outputs: tuple[str, ...],
    key_pos: tuple[int, ...] | None,
) -> AggregatedRead:
    """The serving plan entry of a selection of aggregated features."""
    layout = tile_layout(store.project, sel.view, sel.entities)
    combiner = Combiner(TileSpec(sel.view), sel.feature_names)
    return AggregatedRead(position, layout, combiner, outputs, key_pos)


def read_groups(
    online: OnlineStore,
    reads: Sequence[AggregatedRead],
    columns: Sequence[Sequence[Any]],
    now_us: int,
) -> Iterator[tuple[int, tuple[Any, ...]]]:
    """``(position, group)`` per aggregated view: a key with tiles is ``present``, one without
    ``not_found``; either way the values are the windows' (count 0 and nulls when empty), the
    values the offline join gives for a key without events."""
    for read in reads:
        keys = columns if read.key_pos is None else [columns[i] for i in read.key_pos]
        combine = read.combiner
        summary = combine.recipes is not None
        interval = combine.interval_us
        blobs = online.read_tiles(
            read.layout,
            keys,
            summary_only=summary,
            summary_at=(-((-now_us) // interval) - 1, now_us // interval) if summary else None,
        )
        if len(blobs) == 1:  # one entity: the serving hot path
            found = combine(blobs[0], now_us)
            if found is NEEDS_HEAD:  # the summary does not answer at now_us: read the head
                blobs = online.read_tiles(read.layout, keys, head_only=True)
                found = combine(blobs[0], now_us)
            status = "not_found" if blobs[0] is None else "present"
            yield read.position, (read.outputs, [status], [found[0]], [found[1]])
            continue
        results = [combine(blob, now_us) for blob in blobs]
        again = [r for r, found in enumerate(results) if found is NEEDS_HEAD]
        if again:  # summaries that do not answer at now_us: read those keys' heads
            heads = online.read_tiles(
                read.layout, [[col[r] for r in again] for col in keys], head_only=True
            )
            for r, head in zip(again, heads, strict=True):
                results[r] = combine(head, now_us)
                blobs[r] = head
        statuses = ["not_found" if blob is None else "present" for blob in blobs]
        events = [found[0] for found in results]
        rows = [found[1] for found in results]
        yield read.position, (read.outputs, statuses, events, rows)


# -- writes ------------------------------------------------------------------------------------


def _write(
    online: OnlineStore,
    layout: TileLayout,
    spec: TileSpec,
    keys: list[tuple[Any, ...]],
    new: list[dict[int, list[Any]]],
    replace: tuple[int, int] | None,
) -> int:
    """Update the tiles of ``keys``: ``replace`` the tiles in that range by ``new``, or merge
    ``new`` into them (``None``); prune the old ones."""

    def update(pos: int, old: bytes | None) -> bytes | None:
        tiles, counter = spec.decode(old) if old is not None else ({}, 0)
        if replace is not None:
            lo, hi = replace
            tiles = {k: v for k, v in tiles.items() if not lo <= k <= hi}
            tiles.update(new[pos])
        else:
            for k, partial in new[pos].items():
                found = tiles.get(k)
                tiles[k] = partial if found is None else spec.merge(found, partial)
        if not tiles:
            return None
        oldest = max(tiles) - spec.keep_tiles
        tiles = {k: v for k, v in tiles.items() if k >= oldest}
        return spec.encode(tiles, counter + 1)

    def expire_at_ms(data: bytes) -> int:
        newest = DecodedTiles(spec, data).tiles[-1]
        return ((newest + 1) * spec.interval_us + spec.max_window_us) // 1000

    columns = [list(col) for col in zip(*keys, strict=True)]
    return online.update_tiles(layout, columns, update, expire_at_ms=expire_at_ms)


def push_tiles(
    online: OnlineStore,
    layout: TileLayout,
    view: FeatureView,
    table: pa.Table,
    *,
    created: bool = True,
) -> int:
    """Add pushed events (join keys, source columns, ``event_timestamp``, optional
    ``created_timestamp``) to their tiles; returns the keys updated. ``created``: whether the
    view's source has a created timestamp (if not, pushed rows have none either, as offline,
    where ``last`` then breaks ties by value alone)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    spec = TileSpec(view)
    n = table.num_rows
    key_cols = [
        arrow_to_physical(table.column(k), d)
        for k, d in zip(layout.join_keys, layout.key_dtypes, strict=True)
    ]
    events = timestamps_us(table.column(EVENT_TS)).to_pylist()
    if created and CREATED_TS in table.column_names:
        filled = pc.fill_null(timestamps_us(table.column(CREATED_TS)), pa.scalar(NO_CREATED))
        creates = filled.to_pylist()
    else:
        creates = [NO_CREATED] * n
    used = sorted({p.column for p in spec.parts if p.column is not None})
    values = {c: _physical_values(table.column(c), spec.dtypes[c]) for c in used}
    per_key: dict[tuple[Any, ...], dict[int, list[Any]]] = {}
    for r in range(n):
        key = tuple(col[r] for col in key_cols)
        tile = tile_of(events[r], spec.interval_us)
        partial = spec.event_partial(events[r], creates[r], {c: values[c][r] for c in used})
        tiles = per_key.setdefault(key, {})
        found = tiles.get(tile)
        tiles[tile] = partial if found is None else spec.merge(found, partial)
    keys = list(per_key)
    return _write(online, layout, spec, keys, [per_key[k] for k in keys], None)


def _physical_values(arr: Any, dtype: str) -> list[Any]:
    """Values as tiles keep them: timestamps in microseconds, booleans as 0/1, NaN as null."""
    values = arrow_to_physical(arr, dtype)
    if dtype == "bool":
        return [None if v is None else int(v) for v in values]
    if dtype in ("float32", "float64"):
        return [None if v is None or v != v else float(v) for v in values]
    return values


def materialize_tiles(
    store: FeatureStore,
    sel: ViewSelection,
    layout: TileLayout,
    start: Any,
    end: Any,
    written: Callable[[int], None],
    *,
    staged: Callable[[Any], Iterable[Any]] | None = None,
) -> int:
    """Recompute the tiles that ``[start, end)`` touches from the offline source and write
    them (see the module); ``written`` is called after each batch of keys; ``staged``, if
    given, takes the pulled batches and returns those to write (a job holds them first).
    Returns the keys written."""
    from quiver.offline.sources import to_utc_micros

    spec = TileSpec(sel.view)
    interval = spec.interval_us
    end_us = to_utc_micros(end)
    lo_tile = INT64_MIN if start is None else tile_of(to_utc_micros(start), interval)
    hi_tile = tile_of(end_us - 1, interval)
    lo_us = None if start is None else lo_tile * interval
    reader: Iterable[Any] = store.offline_engine.pull_tiles(sel, spec, lo_us, end_us)
    if staged is not None:
        reader = staged(reader)
    nkeys = len(layout.join_keys)
    online = store.online_store
    total = 0
    keys: list[tuple[Any, ...]] = []
    tiles: list[dict[int, list[Any]]] = []
    for batch in reader:
        cols = [arrow_to_physical(batch.column(i), d) for i, d in enumerate(layout.key_dtypes)]
        tile_col = batch.column(nkeys).to_pylist()
        parts = [batch.column(nkeys + 1 + i).to_pylist() for i in range(len(spec.parts))]
        for r in range(batch.num_rows):
            key = tuple(col[r] for col in cols)
            if not keys or keys[-1] != key:
                if len(keys) >= WRITE_KEYS:
                    total += _write(
                        store.online_store, layout, spec, keys, tiles, (lo_tile, hi_tile)
                    )
                    written(len(keys))
                    keys, tiles = [], []
                keys.append(key)
                tiles.append({})
            partial = []
            for p, col in zip(spec.parts, parts, strict=True):
                v = col[r]
                if v is None:
                    v = p.empty
                elif p.kind == "dist":
                    v = sorted(v, key=_sort_key)
                partial.append(v)
            tiles[-1][tile_col[r]] = partial
    if keys:
        total += _write(online, layout, spec, keys, tiles, (lo_tile, hi_tile))
        written(len(keys))
    return total


def stored_rows_at(
    online: OnlineStore,
    layout: ViewLayout,
    view: FeatureView,
    key_columns: Sequence[Sequence[Any]],
    at_us: int,
) -> list[tuple[Any, ...]]:
    """Per key, ``(newest event time, created placeholder, *every aggregated feature at
    at_us)``, shaped as an online store's stored row for the consistency check. The newest event
    time is over all the key's tiles (``INT64_MIN`` without any), so events pushed after a
    watermark show; a key without tiles gets the empty windows' values."""
    spec = TileSpec(view)
    combine = Combiner(spec, view.feature_names)
    rows = []
    for blob in online.read_tiles(layout, key_columns):
        newest = INT64_MIN
        if blob is not None:
            stamps = DecodedTiles(spec, blob).arrays[1]
            newest = max(stamps) if len(stamps) else INT64_MIN
        rows.append((newest, NO_CREATED, *combine(blob, at_us)[1]))
    return rows
