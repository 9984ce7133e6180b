"""The tile state's summary answers count/sum/mean reads exactly as the running totals do."""

from __future__ import annotations

import random
import struct

import pytest

from quiver import Aggregation, Entity, FeatureView, Field, FileSource
from quiver.features.tile_store import NEEDS_HEAD, Combiner
from quiver.features.tiles import ANCHOR, HEADER_SIZE, INT64_MAX, SUMMARY_BUDGET, TileSpec

customer = Entity(name="customer", join_keys=["customer_id"])
source = FileSource(name="events", path="data/events.parquet")


def _view(dtype: str) -> FeatureView:
    aggs = [
        Aggregation(column=None if f == "count" else "amount", function=f, window=w)
        for w in ("1h", "3h", "1d")
        for f in ("count", "sum", "mean")
    ]
    aggs.append(Aggregation(column="amount", function="count", window="2h"))
    return FeatureView(
        name="orders",
        entities=[customer],
        source=source,
        schema=[Field(name="amount", dtype=dtype)],
        aggregations=aggs,
        aggregation_interval="1h",
    )


@pytest.mark.parametrize("dtype", ["float64", "int64"])
def test_summary_equals_running_totals(dtype: str) -> None:
    view = _view(dtype)
    spec = TileSpec(view)
    assert 32 + spec.summary_size <= SUMMARY_BUDGET
    hour = spec.interval_us
    rng = random.Random(1)
    names = view.feature_names
    subsets = [names, names[:3], names[3:6], [names[-1], names[1]], names[6:9]]
    answered = 0
    for _ in range(150):
        tiles: dict[int, list[object]] = {}
        for _ in range(rng.randrange(1, 40)):
            ts = rng.randrange(1000 * hour, 1040 * hour)
            value: object = rng.choice([None, 0.1, 1e-9, rng.uniform(-1e6, 1e6)])
            if dtype == "int64" and value is not None:
                value = rng.randrange(-(10**6), 10**6)
            partial = spec.event_partial(ts, -1, {"amount": value})
            k = (ts - 1) // hour
            tiles[k] = partial if k not in tiles else spec.merge(tiles[k], partial)
        data = spec.encode(tiles, 1)
        head_end, summary_end = struct.unpack_from("<QQ", data, 16)
        horizon = ANCHOR.unpack_from(data, HEADER_SIZE)[2]
        # the runs cover at least as many read tiles as they are, and for ever when all fit
        assert horizon >= spec.summary_rows
        newest = max(tiles)
        changes = {d for t in tiles for w in spec.widths if (d := t - newest + w + 1) > 0}
        assert (horizon == INT64_MAX) == (len(changes) < spec.summary_rows)
        for subset in subsets:
            combine = Combiner(spec, subset)
            for _ in range(20):
                if rng.random() < 0.5:  # about the newest tile, where the summary answers
                    now = max(tiles) * hour + rng.randrange(-2 * hour, 6 * hour)
                elif rng.random() < 0.3:  # long after it, where windows empty one by one
                    now = max(tiles) * hour + rng.randrange(0, 40 * hour)
                elif rng.random() < 0.5:
                    now = rng.randrange(995 * hour, 1060 * hour)
                else:  # on the tile grid
                    now = rng.randrange(1000, 1050) * hour
                recipes, combine.summary_recipes = combine.summary_recipes, None
                want = combine(data[:head_end], now)  # the head: running totals
                assert combine(data, now) == want  # the whole state
                combine.summary_recipes = recipes
                got = combine(data[:summary_end], now)
                if got is NEEDS_HEAD:
                    late = now // hour - max(tiles) >= horizon
                    early = -(-now // hour) - 1 < max(tiles)
                    assert recipes is None or late or early
                    continue
                answered += 1
                assert got == want
                assert [type(v) for v in got[1]] == [type(v) for v in want[1]]
    assert answered > 1000
