"""The DuckDB engine's tie check (``quiver.offline.duckdb._has_ties``): rows in key or time
order are seen tie-free in one pass, any others by a hash aggregate; both answer the same."""

from __future__ import annotations

import random
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from quiver.offline import duckdb as engine


def _check(rows: list[tuple[Any, ...]], keys: list[str]) -> bool:
    names = [*keys, "__qv_ts"]
    table = pa.table(
        {
            n: pa.array([r[i] for r in rows], pa.timestamp("us") if n == "__qv_ts" else None)
            for i, n in enumerate(names)
        }
    )
    con = duckdb.connect()
    con.register("t", table)
    return engine._has_ties(con, "SELECT * FROM t", [], keys)


def _brute(rows: list[tuple[Any, ...]]) -> bool:
    seen = [r for r in rows if r[-1] is not None]
    return len(set(seen)) < len(seen)


@pytest.mark.parametrize(
    ("rows", "ties"),
    [
        ([(1, 10), (1, 20), (2, 10), (2, 30)], False),  # by key, then time
        ([(1, 10), (2, 10), (1, 20), (2, 30)], False),  # by time, then key
        ([(2, 30), (1, 10), (2, 10), (1, 20)], False),  # no order: the hash aggregate
        ([(1, 10), (1, 10), (2, 10)], True),  # in order but tied
        ([(2, 10), (1, 20), (2, 10)], True),  # out of order and tied
        ([(1, None), (1, None), (1, 10)], False),  # rows without a time never match
        ([(None, 10), (None, 10)], True),  # null keys: the hash aggregate decides
        ([], False),
    ],
)
def test_ties_one_key(rows: list[tuple[Any, ...]], ties: bool) -> None:
    stamped = [(k, None if t is None else _at(t)) for k, t in rows]
    assert _check(stamped, ["k"]) is ties


def test_compound_and_string_keys() -> None:
    rows = [("a", 1, _at(5)), ("a", 2, _at(5)), ("b", 1, _at(5))]
    assert _check(rows, ["s", "n"]) is False
    assert _check([*rows, ("a", 2, _at(5))], ["s", "n"]) is True
    assert _check(list(reversed(rows)), ["s", "n"]) is False


def test_random_rows_against_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(0, 30)
        rows = [(rng.randint(0, 4), _at(rng.randint(0, 6))) for _ in range(n)]
        if rng.random() < 0.5:  # in one of the orders the check reads in one pass
            by_time = rng.random() < 0.5
            rows.sort(key=lambda r: (r[1], r[0]) if by_time else r)
        assert _check(rows, ["k"]) is _brute(rows), rows


def test_order_is_checked_across_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "_SORTED_BATCH", 2)
    ordered = [(k, _at(t)) for k in range(3) for t in range(3)]
    assert _check(ordered, ["k"]) is False
    assert _check([*ordered, (2, _at(2))], ["k"]) is True  # the tie spans two batches


def _at(t: int) -> Any:
    from datetime import datetime, timedelta

    return datetime(2024, 1, 1) + timedelta(hours=t)
