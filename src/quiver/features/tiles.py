"""Tiles: the online state of windowed aggregations, per entity key and time bucket.

Time is cut into tiles of the view's ``aggregation_interval`` ``I``: tile ``k`` holds the events
with ``k * I < event_ts <= (k + 1) * I`` (right-closed, as windows are), so an event at
microsecond ``ts`` lies in tile ``(ts - 1) // I``. A tile keeps *partial aggregates* of its
events, per aggregated column only what the view's functions need (:class:`TileSpec`):

========== =====================================================================
``n``      events (``count(*)``);           ``maxts``: the latest event time
``cnt``    non-null values;                 ``sum``: their sum (int64 or float64)
``m2``     sum of squared deviations from the tile's mean (``stddev``; tiles
           combine by Chan's parallel formula, which stays accurate where a
           sum of squares cancels)
``min``    / ``max`` of the values;         ``last``: the latest non-null value, with its
           event and created times (ties: greatest created time, then value)
``dist``   the distinct values (``count_distinct``, exact)
========== =====================================================================

A read at time ``t`` combines the tiles ``floor(t / I) - w / I .. ceil(t / I) - 1``, which hold
exactly the events with ``floor(t / I) * I - w < event_ts <= t`` when the store holds no event
later than ``t`` (see :mod:`quiver.features.aggregations`).

All tiles of one entity key are one value in the online store (:meth:`TileSpec.encode`): a
header (tile count, a write counter for compare-and-set, where the head and the summary end), the
*summary* (below), the tile numbers,
the latest event time per tile and the running totals of the additive parts (``n``, ``cnt``,
``sum``: a window's sum is one subtraction) -- together the *head*, all that ``count``, ``sum``
and ``mean`` reads need --, then the other fixed-width parts, then the variable-width parts
(strings, distinct sets) as JSON. A store may keep the head apart to read it alone. A read
unpacks the running totals it needs in place and casts the other arrays without copying
(``memoryview.cast``) only for ``min``, ``max``, ``stddev``, ``last`` and ``count_distinct``.

The **summary** is what a ``count``/``sum``/``mean`` read needs when it comes after the key's
newest tile ``A``, computed on write. As ``now`` moves on from ``A``, a window's totals change
only where one of the stored tiles leaves it (tile ``t`` leaves a window of ``w`` tiles at read
tile ``t + w + 1``), so the summary keeps *runs*: ``A``, the latest event time of tile ``A`` and
the *horizon* ``H``, then the first read tile ``A + d`` of each run (``d``, from ``0``), then one
row per run holding, per window width and additive part, the window's total exactly as a read
of the running totals at that time computes it (the same subtraction of the same two prefix
sums, so the same float). A read at ``now`` uses the row of the run holding ``d = floor(now /
I) - A`` when ``ceil(now / I) - 1 >= A`` (every stored tile is at or before ``now``) and
``d < H``; otherwise it reads the head. When every run fits, the last is the one of empty
windows, which lasts for ever (``H`` is ``INT64_MAX``); so a key idle past its widest window
never needs the head. The summary's size is fixed per view and kept under
:data:`SUMMARY_BUDGET` bytes with the header (the runs it holds shrink with more windows and
parts), so a store can keep it where a read fetches it without the rest (SQLite: before the
head in the row, within the part of a row that never overflows its page).
"""

from __future__ import annotations

import heapq
import json
import math
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate, islice
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from quiver.definitions import FeatureView

__all__ = ["INT64_MAX", "INT64_MIN", "Part", "TileSpec", "tile_of"]

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
_HEADER = struct.Struct("<QQQQ")  # tile count, write counter, head end, summary end
HEADER_SIZE = _HEADER.size
SUMMARY_BUDGET = 448
"""Bytes the header and the summary stay within (SQLite keeps at least the first 489 bytes of a
row with 4 KiB pages on the row's own page)."""
ANCHOR = struct.Struct("=qqq")
"""The summary's newest tile ``A``, that tile's latest event time and the horizon ``H``."""
NO_SUMMARY = (1 << 63) - 1
"""The anchor of a state without a usable summary (never at or before a read's tile)."""
I64 = struct.Struct("=q")  # the arrays are in the machine's order, as array.array writes them
F64 = struct.Struct("=d")
_FLOATS = ("float32", "float64")


def tile_of(ts_us: int, interval_us: int) -> int:
    """The tile holding an event at ``ts_us`` (tiles are right-closed)."""
    return (ts_us - 1) // interval_us


@dataclass(frozen=True)
class Part:
    """One partial aggregate kept per tile.

    Attributes:
        column: The aggregated column (``None`` for the per-event parts ``n`` and ``maxts``).
        kind: ``n``, ``maxts``, ``cnt``, ``sum``, ``m2``, ``min``, ``max``, ``last_ts``,
            ``last_cts``, ``last`` or ``dist``.
        code: ``q`` (int64), ``d`` (float64) or ``j`` (JSON, variable width).
    """

    column: str | None
    kind: str
    code: str

    @property
    def empty(self) -> Any:
        """The value of a tile without (non-null) values."""
        if self.kind == "min":
            return INT64_MAX if self.code == "q" else math.inf
        if self.kind in ("max", "maxts", "last_ts", "last_cts"):
            return INT64_MIN if self.code == "q" else -math.inf
        if self.code == "j":
            return [] if self.kind == "dist" else None
        return 0 if self.code == "q" else 0.0


_NEEDS = {
    "count": ("cnt",),
    "sum": ("cnt", "sum"),
    "mean": ("cnt", "sum"),
    "stddev": ("cnt", "sum", "m2"),
    "min": ("cnt", "min"),
    "max": ("cnt", "max"),
    "last": ("last_ts", "last_cts", "last"),
    "count_distinct": ("dist",),
}
_ORDER = ("cnt", "sum", "m2", "min", "max", "last_ts", "last_cts", "last", "dist")


class TileSpec:
    """The parts a view's tiles keep, in storage order, and how to combine them.

    Args:
        view: A feature view with aggregations.
    """

    def __init__(self, view: FeatureView) -> None:
        assert view.aggregations and view.aggregation_interval is not None
        self.view = view
        self.interval_us = int(view.aggregation_interval.total_seconds()) * 1_000_000
        self.dtypes = {f.name: f.dtype for f in view.features}
        wanted: dict[str, set[str]] = {}
        for agg in view.aggregations:
            if agg.column is not None:
                wanted.setdefault(agg.column, set()).update(_NEEDS[agg.function])
        parts = [Part(None, "n", "q"), Part(None, "maxts", "q")]
        for column in sorted(wanted):
            for kind in _ORDER:
                if kind in wanted[column]:
                    parts.append(Part(column, kind, self._code(column, kind)))
        self.parts: tuple[Part, ...] = tuple(parts)
        self.index = {(p.column, p.kind): i for i, p in enumerate(parts)}
        self.max_window_us = max(a.window_us for a in view.aggregations)
        self.keep_tiles = self.max_window_us // self.interval_us + 1
        """Tiles older than the newest minus this many are pruned on write."""
        self.widths = tuple(sorted({a.window_us // self.interval_us for a in view.aggregations}))
        """The windows' widths in tiles (the summary's columns, with :attr:`cumulative`)."""
        codes = "".join(self.parts[p].code for _ in self.widths for p in self.cumulative)
        self.summary_row = struct.Struct("=" + codes)
        """One summary row: per width, per additive part, the window's total."""
        start = "i" if self.keep_tiles < (1 << 31) - 1 else "q"
        room = (SUMMARY_BUDGET - HEADER_SIZE - ANCHOR.size) // (
            self.summary_row.size + struct.calcsize(start)
        )
        self.summary_rows = max(1, room)
        """The runs a summary holds (see the module)."""
        self.summary_starts = struct.Struct("=" + start * self.summary_rows)
        """The first read tile ``A + d`` of each run: its ``d``."""
        self.summary_size = (
            ANCHOR.size + self.summary_starts.size + self.summary_rows * self.summary_row.size
        )

    def _code(self, column: str, kind: str) -> str:
        dtype = self.dtypes[column]
        if kind in ("cnt", "last_ts", "last_cts"):
            return "q"
        if kind == "m2":
            return "d"
        if kind == "dist" or (kind == "last" and dtype == "string"):
            return "j"
        return "d" if dtype in _FLOATS else "q"

    @cached_property
    def fixed(self) -> tuple[int, ...]:
        """Positions of the fixed-width parts."""
        return tuple(i for i, p in enumerate(self.parts) if p.code != "j")

    @cached_property
    def cumulative(self) -> tuple[int, ...]:
        """Positions of the additive parts (``n``, ``cnt``, ``sum``), also stored as running
        totals so that a read sums a window with one subtraction."""
        return tuple(i for i, p in enumerate(self.parts) if p.kind in ("n", "cnt", "sum"))

    @cached_property
    def sections(self) -> list[tuple[str, int]]:
        """The arrays after the tile numbers, in storage order: ``("fixed", part)`` or
        ``("running", part)``. The head (what ``count``/``sum``/``mean`` reads need) comes
        first: the latest event times and the running totals."""
        head = [("fixed", 1)] + [("running", p) for p in self.cumulative]
        return head + [("fixed", p) for p in self.fixed if p != 1]

    @cached_property
    def head_sections(self) -> int:
        """How many arrays (with the tile numbers) the head holds."""
        return 2 + len(self.cumulative)

    @cached_property
    def section_of(self) -> dict[tuple[str, int], int]:
        """``(kind, part)`` -> its array's index (the tile numbers are index 0)."""
        return {sec: i for i, sec in enumerate(self.sections, 1)}

    @cached_property
    def variable(self) -> tuple[int, ...]:
        """Positions of the JSON parts."""
        return tuple(i for i, p in enumerate(self.parts) if p.code == "j")

    # -- partials -------------------------------------------------------------------------------

    def empty_partial(self) -> list[Any]:
        """A tile without events."""
        return [p.empty for p in self.parts]

    def event_partial(self, ts: int, cts: int, values: dict[str, Any]) -> list[Any]:
        """The partial of one event (``values``: column -> physical value or ``None``)."""
        out = self.empty_partial()
        out[0], out[1] = 1, ts
        for i, p in enumerate(self.parts[2:], 2):
            v = values.get(p.column or "")
            if v is None:
                continue
            if p.code == "d" and p.kind not in ("last_ts", "last_cts"):
                v = float(v)
            kind = p.kind
            if kind == "cnt":
                out[i] = 1
            elif kind in ("sum", "min", "max", "last"):
                out[i] = v
            elif kind == "last_ts":
                out[i] = ts
            elif kind == "last_cts":
                out[i] = cts
            elif kind == "dist":
                out[i] = [v]
        return out

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        """The partial of the events of two partials (of the same tile), in a new list."""
        out = list(a)
        idx = self.index
        for i, p in enumerate(self.parts):
            kind = p.kind
            if kind in ("n", "cnt", "sum"):
                out[i] = a[i] + b[i]
            elif kind in ("maxts", "max"):
                out[i] = max(a[i], b[i])
            elif kind == "min":
                out[i] = min(a[i], b[i])
            elif kind == "m2":
                c, s = idx[(p.column, "cnt")], idx[(p.column, "sum")]
                out[i] = _chan(a[c], a[s], a[i], b[c], b[s], b[i])
            elif kind == "dist":
                out[i] = _sorted_union(a[i], b[i])
            elif kind == "last_ts":
                t, ct, v = i, idx[(p.column, "last_cts")], idx[(p.column, "last")]
                if a[t] == INT64_MIN or (b[t] != INT64_MIN and _later(b, a, t, ct, v)):
                    out[t], out[ct], out[v] = b[t], b[ct], b[v]
        return out

    # -- encoding -------------------------------------------------------------------------------

    def encode(self, tiles: dict[int, list[Any]], counter: int) -> bytes:
        """All tiles of one key as bytes (``counter``: the write counter to store)."""
        from array import array

        order = sorted(tiles)
        rows = [tiles[k] for k in order]
        base = _HEADER.size + self.summary_size
        head = base + 8 * len(order) * self.head_sections
        pieces = [_HEADER.pack(len(order), counter, head, base), b"", array("q", order).tobytes()]
        running: dict[int, Any] = {}
        for kind, i in self.sections:
            column: Any = [r[i] for r in rows]
            if kind == "running":  # as stored: the summary subtracts the same values
                column = running[i] = array(self.parts[i].code, accumulate(column))
            pieces.append(array(self.parts[i].code, column).tobytes())
        pieces[1] = self._summary(order, rows, running)
        if self.variable:
            tail = [[r[i] for r in rows] for i in self.variable]
            pieces.append(json.dumps(tail, separators=(",", ":")).encode())
        return b"".join(pieces)

    def _summary(self, order: list[int], rows: list[list[Any]], running: dict[int, Any]) -> bytes:
        """The summary of a state (see the module): per run of read tiles ``A + d`` after the
        newest tile ``A``, each window's totals as :class:`~quiver.features.tile_store.Combiner`
        computes them from the running totals (``0`` for an empty window)."""
        n = len(order)
        anchor = order[-1]
        if any(r[0] < 1 for r in rows):  # a read tells an empty window by its event count
            anchor = NO_SUMMARY
        # where a stored tile leaves a window: the runs start there (and at 0)
        room = self.summary_rows
        changes = self._changes(order, room)
        starts = [0, *changes[: room - 1]]
        horizon = INT64_MAX if len(changes) < room else changes[room - 1]
        pack = self.summary_row.pack
        packed: list[bytes] = []
        for d in starts:
            values: list[Any] = []
            for w in self.widths:
                i = bisect_left(order, order[-1] + d - w)
                for p in self.cumulative:
                    totals = running[p]
                    hi = totals[n - 1]
                    values.append(0 if n <= i else hi - totals[i - 1] if i else hi)
            packed.append(pack(*values))
        unused = room - len(starts)  # only when the last run (empty windows) lasts for ever
        last_start = starts[-1]
        starts.extend([last_start] * unused)
        packed.extend([packed[-1]] * unused)
        return b"".join(
            [ANCHOR.pack(anchor, rows[-1][1], horizon), self.summary_starts.pack(*starts), *packed]
        )

    def _changes(self, order: list[int], room: int) -> list[int]:
        """The first ``room`` read tiles ``A + d`` (``d > 0``) where a stored tile leaves a
        window, as ``d``, in order: tile ``t`` leaves a window of ``w`` tiles at
        ``d = t - A + w + 1``."""
        newest = order[-1]
        streams = [
            map((w + 1 - newest).__add__, islice(order, bisect_right(order, newest - w - 1), None))
            for w in self.widths
        ]
        out: list[int] = []
        for d in heapq.merge(*streams):
            if not out or d != out[-1]:
                out.append(d)
                if len(out) == room:
                    break
        return out

    def decode(self, data: bytes) -> tuple[dict[int, list[Any]], int]:
        """The tiles of :meth:`encode`'s bytes (tile -> partial) and the write counter."""
        view = DecodedTiles(self, data)
        columns: list[Any] = [None] * len(self.parts)
        for i in self.fixed:
            columns[i] = list(view.arrays[i])
        for i, col in view.json_parts().items():
            columns[i] = col
        tiles = {k: [col[j] for col in columns] for j, k in enumerate(view.tiles)}
        return tiles, view.counter


class DecodedTiles:
    """The tiles of one key, read in place (the serving path): the tile numbers are cast
    without copying, a running total or a latest event time is unpacked at its offset, and the
    other parts are cast only when asked for (:attr:`arrays`)."""

    __slots__ = ("_arrays", "_base", "_data", "_n8", "counter", "n", "spec", "tiles")

    def __init__(self, spec: TileSpec, data: bytes) -> None:
        self.spec = spec
        self.n, self.counter, _, self._base = _HEADER.unpack_from(data, 0)
        self._n8 = self.n * 8
        self.tiles = memoryview(data)[self._base : self._base + self._n8].cast("q")
        self._data = data
        self._arrays: list[Any] | None = None

    @property
    def arrays(self) -> list[Any]:
        """Every fixed-width part as a sequence (``None`` at the JSON parts' positions)."""
        if self._arrays is None:
            mv = memoryview(self._data)
            arrays: list[Any] = [None] * len(self.spec.parts)
            for i in self.spec.fixed:
                at = self._base + self._n8 * self.spec.section_of[("fixed", i)]
                piece = mv[at : at + self._n8]
                arrays[i] = piece.cast("d") if self.spec.parts[i].code == "d" else piece.cast("q")
            self._arrays = arrays
        return self._arrays

    def latest(self, k: int) -> int:
        """The latest event time of the tile at position ``k``."""
        offset = self._base + self._n8 + 8 * k
        return int(I64.unpack_from(self._data, offset)[0])

    def total(self, part: int, i: int, j: int) -> Any:
        """The sum of an additive part over the tiles at positions ``[i, j)``."""
        if j <= i:
            return 0
        offset = self._base + self._n8 * self.spec.section_of[("running", part)]
        unpack = (F64 if self.spec.parts[part].code == "d" else I64).unpack_from
        data = self._data
        hi = unpack(data, offset + 8 * (j - 1))[0]
        return hi - unpack(data, offset + 8 * (i - 1))[0] if i else hi

    def json_parts(self) -> dict[int, list[Any]]:
        """The variable-width parts, by position."""
        if not self.spec.variable:
            return {}
        at = self._base + self._n8 * (1 + len(self.spec.sections))
        tail = json.loads(self._data[at:])
        return dict(zip(self.spec.variable, tail, strict=True))

    def span(self, first: int, last: int) -> tuple[int, int]:
        """The positions ``[i, j)`` of the stored tiles ``first..last``."""
        return bisect_left(self.tiles, first), bisect_right(self.tiles, last)


def _later(b: list[Any], a: list[Any], t: int, ct: int, v: int) -> bool:
    """Whether b's last value wins over a's: later event, then created time, then value."""
    if b[t] != a[t]:
        return bool(b[t] > a[t])
    if b[ct] != a[ct]:
        return bool(b[ct] > a[ct])
    return bool(b[v] > a[v])


def _chan(na: int, sa: float, ma: float, nb: int, sb: float, mb: float) -> float:
    """The m2 of two groups of values (Chan et al.'s parallel variance formula)."""
    if not na:
        return float(mb)
    if not nb:
        return float(ma)
    delta = sb / nb - sa / na
    return float(ma + mb + delta * delta * na * nb / (na + nb))


def _sorted_union(a: Sequence[Any], b: Sequence[Any]) -> list[Any]:
    if not a:
        return list(b)
    if not b:
        return list(a)
    return sorted(set(a) | set(b), key=_sort_key)


def _sort_key(v: Any) -> tuple[str, Any]:
    return (type(v).__name__, v)
