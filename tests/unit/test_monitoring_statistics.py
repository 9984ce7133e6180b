"""Feature statistics (quiver.monitoring.statistics) against pandas on the same rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.monitoring.statistics import QUANTILES, StatisticsCollector, compute_statistics

DTYPES = {"x": "float64", "n": "int64", "s": "string", "b": "bool"}
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _table(xs: list[float | None], ns: list[int | None], ss: list[str | None]) -> pa.Table:
    k = len(xs)
    return pa.table(
        {
            "x": pa.array(xs, pa.float64()),
            "n": pa.array(ns, pa.int64()),
            "s": pa.array(ss, pa.string()),
            "b": pa.array([None if v is None else v % 2 == 0 for v in ns], pa.bool_()),
            "event_timestamp": pa.array(
                [T0 + timedelta(seconds=i) for i in range(k)], pa.timestamp("us", tz="UTC")
            ),
        }
    )


def _close(a: float | None, b: float) -> bool:
    if a is None:
        return math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def _check_against_pandas(stats: dict, df: pd.DataFrame) -> None:
    for name, dtype in DTYPES.items():
        s, col = stats[name], df[name]
        assert s["rows"] == len(df)
        assert s["count"] == int(col.notna().sum())
        assert s["nulls"] == int(col.isna().sum())
        valid = col.dropna()
        if valid.empty:
            assert s["min"] is None and s["max"] is None
            continue
        if dtype == "bool":
            valid = valid.astype(float)
            assert s["min"] == bool(valid.min()) and s["max"] == bool(valid.max())
        else:
            assert s["min"] == valid.min() and s["max"] == valid.max()
        if dtype in ("float64", "int64", "bool"):
            assert _close(s["mean"], float(valid.astype(float).mean()))
            assert _close(s["stddev"], float(valid.astype(float).std(ddof=1)))
        if dtype in ("float64", "int64"):
            for key, q in QUANTILES:
                assert _close(s["quantiles"][key], float(valid.astype(float).quantile(q)))
        exact = valid.nunique()
        assert abs(s["distinct"] - exact) <= max(2, 0.05 * exact)
        if dtype in ("string", "bool"):
            counts = valid.value_counts()
            for item in s["top_values"]:
                value = float(item["value"]) if dtype == "bool" else item["value"]
                assert counts[value] == item["count"]
            assert [t["count"] for t in s["top_values"]] == sorted(counts.tolist(), reverse=True)[
                : len(s["top_values"])
            ]


floats = st.one_of(
    st.none(), st.just(float("nan")), st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
)
ints = st.one_of(st.none(), st.integers(-1000, 1000))
strings = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "dd", "é"]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(st.tuples(floats, ints, strings), min_size=1, max_size=60),
    chunk=st.integers(1, 25),
)
def test_collector_equals_pandas(rows: list[tuple], chunk: int) -> None:
    xs, ns, ss = (list(c) for c in zip(*rows, strict=True))
    table = _table(xs, ns, ss)
    collector = StatisticsCollector(DTYPES)
    for batch in table.to_batches(max_chunksize=chunk):
        collector.add(batch)
    stats = collector.finish()
    df = table.to_pandas()  # NaN and None are both missing in pandas
    _check_against_pandas(stats, df)
    assert collector.rows == len(rows)
    assert collector.newest == T0 + timedelta(seconds=len(rows) - 1)
    for name in ("x", "n", "s"):
        assert len(stats[name]["sample"]) == stats[name]["count"]  # fewer than sample_size

    # thinned to a sample: the counts, min, max, mean and stddev stay those of every row
    thin = StatisticsCollector(DTYPES, max_rows=2)
    for batch in table.to_batches(max_chunksize=chunk):
        thin.add(batch)
    sampled = thin.finish()
    for name in DTYPES:
        col, s = df[name], sampled[name]
        assert (s["count"], s["nulls"], s["rows"]) == (col.notna().sum(), col.isna().sum(), len(df))
        if name == "s" or col.dropna().empty:
            continue
        valid = col.dropna().astype(float)
        assert s["min"] == stats[name]["min"] and s["max"] == stats[name]["max"]
        assert _close(s["mean"], float(valid.mean()))
        assert _close(s["stddev"], float(valid.std(ddof=1)))


def test_sampled_run_keeps_exact_counts_min_max_and_a_spread_sample() -> None:
    rng = np.random.default_rng(1)
    k = 40_000
    xs = rng.normal(10, 2, k)
    xs[::9] = np.nan
    ns = rng.integers(0, 100, k)
    table = _table(xs.tolist(), ns.tolist(), rng.choice(["a", "b"], k).tolist())
    collector = StatisticsCollector(DTYPES, max_rows=5_000, sample_size=500)
    for batch in table.to_batches(max_chunksize=3_000):
        collector.add(batch)
    stats = collector.finish()
    df = table.to_pandas()
    x = stats["x"]
    assert x["sampled"] is True
    assert x["rows"] == k and x["nulls"] == int(df.x.isna().sum())
    assert x["min"] == df.x.min() and x["max"] == df.x.max()
    assert math.isclose(x["mean"], df.x.mean(), rel_tol=1e-9)  # exact, batch by batch
    assert math.isclose(x["stddev"], df.x.std(), rel_tol=1e-9)
    n = stats["n"]
    assert math.isclose(n["mean"], df.n.mean()) and math.isclose(n["stddev"], df.n.std())
    b = stats["b"]
    assert math.isclose(b["mean"], df.b.mean()) and b["sampled"] is True
    assert abs(x["quantiles"]["p50"] - df.x.median()) < 0.1  # every 8th row: a sample
    assert len(x["sample"]) <= 500


def test_nested_columns_get_the_counts_only() -> None:
    table = pa.table(
        {
            "l": pa.array([[1, 2], None, []], pa.list_(pa.int64())),
            "m": pa.array([[("a", 1)], None, [("b", 2)]], pa.map_(pa.string(), pa.int64())),
            "st": pa.array([{"x": 1}, {"x": 2}, None], pa.struct([("x", pa.int64())])),
            "j": pa.array(['{"a": 1}', None, "[]"], pa.string()),
        }
    )
    dtypes = {"l": "list<int64>", "m": "map<string, int64>", "st": "struct<x: int64>", "j": "json"}
    stats = compute_statistics(table, dtypes)
    for name, dtype in dtypes.items():
        assert stats[name] == {
            "dtype": dtype,
            "rows": 3,
            "count": 2,
            "nulls": 1,
            "null_rate": 1 / 3,
        }
    collector = StatisticsCollector(dtypes, max_rows=1)
    collector.add(table.append_column("event_timestamp", pa.array([T0] * 3)).to_batches()[0])
    assert collector.finish()["st"]["nulls"] == 1


def test_empty_and_list_columns() -> None:
    table = pa.table({"v": pa.array([], pa.float64()), "l": pa.array([], pa.list_(pa.int64()))})
    stats = compute_statistics(table, {"v": "float64", "l": "list<int64>"})
    assert stats["v"]["count"] == 0 and stats["v"]["null_rate"] == 0.0
    assert stats["v"]["mean"] is None and stats["l"] == {
        "dtype": "list<int64>",
        "rows": 0,
        "count": 0,
        "nulls": 0,
        "null_rate": 0.0,
    }


@pytest.mark.parametrize("size", [10, 1000])
def test_sample_is_deterministic(size: int) -> None:
    table = _table([float(i) for i in range(3000)], list(range(3000)), ["a"] * 3000)
    one = compute_statistics(table, DTYPES, sample_size=size)
    two = compute_statistics(table, DTYPES, sample_size=size)
    assert one["x"]["sample"] == two["x"]["sample"] and len(one["x"]["sample"]) == size
