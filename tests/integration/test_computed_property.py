"""Property: SQL transformations and on-demand features give the same value in a training set,
in batch-style input from a file, and online (after materialization and after a push), for
the same key and time, equal to a brute-force Python oracle."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _engines import OFFLINE_ENGINES, examples
from quiver import Entity, FeatureView, Field, FileSource
from quiver.definitions import OnDemandFeatureView, RequestSource
from quiver.features.on_demand import on_demand_feature_view
from quiver.store import FeatureStore

BASE = datetime(2024, 1, 1, tzinfo=UTC)
KEYS = [1, 2, 3]

customer = Entity(name="customer", join_keys=["customer_id"])
view = FeatureView(
    name="v",
    entities=[customer],
    source=FileSource(name="src", path="data/src.parquet"),
    schema=[
        Field(name="x", dtype="int64"),
        Field(name="t1", dtype="float64", transformation="x * 2 + coalesce(y, 0)"),
        Field(name="t2", dtype="int64", transformation="date_diff('day', birth, event_timestamp)"),
        Field(
            name="t3",
            dtype="string",
            transformation="CASE WHEN x > 0 THEN 'pos' ELSE lower(label) END",
        ),
    ],
)


@on_demand_feature_view(
    sources=[view, RequestSource(name="req", schema=[Field(name="r", dtype="float64")])],
    schema=[Field(name="o", dtype="float64")],
)
def od(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"o": df["t1"] + df["r"]})


comp = OnDemandFeatureView(
    name="comp",
    sources=[view],
    schema=[Field(name="c", dtype="float64", transformation="t1 / NULLIF(x, 0)")],
)
FEATURES = ["v:*", "od:o", "comp:c"]


def oracle(row: dict[str, Any] | None, r: float) -> dict[str, Any]:
    """The expected features from a source row (``None``: no row) and the request value."""
    if row is None:
        return {"x": None, "t1": None, "t2": None, "t3": None, "o": None, "c": None}
    x, y = row["x"], row["y"]
    t1 = None if x is None else x * 2 + (y if y is not None else 0.0)
    t2 = (row["event_timestamp"].date() - row["birth"]).days
    label = row["label"]
    t3 = "pos" if x is not None and x > 0 else (None if label is None else label.lower())
    o = None if t1 is None else t1 + r
    c = None if t1 is None or not x else t1 / x
    return {"x": x, "t1": t1, "t2": t2, "t3": t3, "o": o, "c": c}


def latest(rows: list[dict[str, Any]], key: int, t: datetime | None) -> dict[str, Any] | None:
    found = [
        r for r in rows if r["customer_id"] == key and (t is None or r["event_timestamp"] <= t)
    ]
    return max(found, key=lambda r: r["event_timestamp"]) if found else None


def same(actual: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    for name, want in expected.items():
        got = actual[name]
        if isinstance(want, float):
            assert got == pytest.approx(want), (where, name, got, want)
        else:
            assert got == want, (where, name, got, want)


source_row = st.fixed_dictionaries(
    {
        "x": st.one_of(st.none(), st.integers(-5, 5)),
        "y": st.one_of(st.none(), st.floats(-100, 100, allow_nan=False).map(lambda v: round(v, 3))),
        "birth": st.dates(date(1950, 1, 1), date(2010, 12, 31)),
        "label": st.one_of(st.none(), st.sampled_from(["A", "Bc", "dE"])),
    }
)


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for key in KEYS:
        days = draw(st.lists(st.integers(0, 300), min_size=0, max_size=4, unique=True))
        for d in days:
            rows.append(
                {
                    "customer_id": key,
                    "event_timestamp": BASE + timedelta(days=d),
                    **draw(source_row),
                }
            )
    return rows


@pytest.mark.parametrize("kind", OFFLINE_ENGINES)
def test_computed_features_agree_offline_and_online(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """On each offline engine (Spark: fewer examples, on the session fixture's Spark)."""
    if kind == "spark":
        request.getfixturevalue("spark_session")

    @settings(
        max_examples=examples(kind, 12), deadline=None, suppress_health_check=[HealthCheck.too_slow]
    )
    @given(
        rows=histories(),
        queries=st.lists(
            st.tuples(
                st.sampled_from(KEYS), st.integers(-5, 320), st.floats(-10, 10, allow_nan=False)
            ),
            min_size=1,
            max_size=8,
        ),
        pushed=source_row,
        value=st.floats(-10, 10, allow_nan=False),
    )
    def check(
        rows: list[dict[str, Any]],
        queries: list[tuple[int, int, float]],
        pushed: dict[str, Any],
        value: float,
    ) -> None:
        _agree(kind, rows, queries, pushed, value)

    check()


def _agree(
    kind: str,
    rows: list[dict[str, Any]],
    queries: list[tuple[int, int, float]],
    pushed: dict[str, Any],
    request: float,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / "data").mkdir()
        if kind == "spark":
            (repo / "quiver.yaml").write_text("offline_engine:\n  type: spark\n")
        frame = pd.DataFrame(
            rows
            or [
                {
                    "customer_id": 9,
                    "event_timestamp": BASE,
                    "x": 1,
                    "y": 1.0,
                    "birth": date(2000, 1, 1),
                    "label": "a",
                }
            ],
            columns=["customer_id", "event_timestamp", "x", "y", "birth", "label"],
        ).astype({"x": "Int64", "y": "Float64"})
        frame.to_parquet(repo / "data" / "src.parquet")
        with FeatureStore(repo_path=repo) as store:
            store.apply([customer, view, od, comp])

            # 1. the training set, at random times
            entity = pd.DataFrame(
                {
                    "customer_id": [k for k, _, _ in queries],
                    "event_timestamp": [BASE + timedelta(days=d) for _, d, _ in queries],
                    "r": [r for _, _, r in queries],
                }
            )
            training = store.get_historical_features(entity, FEATURES).to_arrow().to_pylist()
            for (k, d, r), got in zip(queries, training, strict=True):
                want = oracle(latest(rows, k, BASE + timedelta(days=d)), r)
                same(got, want, f"training key={k} day={d}")

            # 2. the same rows read from a file, as batch prediction reads its input
            entity.to_parquet(repo / "entity.parquet")
            from_file = (
                store.get_historical_features(str(repo / "entity.parquet"), FEATURES)
                .to_arrow()
                .to_pylist()
            )
            assert from_file == training

            # 3. online after materialization == offline at a time after every event
            store.materialize(BASE - timedelta(days=1), BASE + timedelta(days=400))
            rows_req = [{"customer_id": k, "r": request} for k in KEYS]
            online = store.get_online_features(FEATURES, rows_req).to_dict()
            late = BASE + timedelta(days=400)
            offline_late = (
                store.get_historical_features(
                    pd.DataFrame(
                        {
                            "customer_id": KEYS,
                            "event_timestamp": [late] * len(KEYS),
                            "r": [request] * len(KEYS),
                        }
                    ),
                    FEATURES,
                )
                .to_arrow()
                .to_pylist()
            )
            for i, k in enumerate(KEYS):
                want = oracle(latest(rows, k, None), request)
                same({n: online[n][i] for n in want}, want, f"online key={k}")
                same(offline_late[i], want, f"offline late key={k}")

            # 4. after a push (online and offline), both paths give the pushed row's values
            row = {"customer_id": 1, "event_timestamp": BASE + timedelta(days=500), **pushed}
            store.push("v", [row], to="both")
            want = oracle(row, request)
            online = store.get_online_features(
                FEATURES, [{"customer_id": 1, "r": request}]
            ).to_dict()
            same({n: online[n][0] for n in want}, want, "online after push")
            after = (
                store.get_historical_features(
                    pd.DataFrame(
                        {
                            "customer_id": [1],
                            "event_timestamp": [BASE + timedelta(days=501)],
                            "r": [request],
                        }
                    ),
                    FEATURES,
                )
                .to_arrow()
                .to_pylist()
            )
            same(after[0], want, "offline after push")


def test_pushed_text_inputs_are_read_as_the_source_types(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    pd.DataFrame(
        {
            "customer_id": [1],
            "event_timestamp": [BASE],
            "x": [2],
            "y": [1.5],
            "birth": [date(2000, 1, 1)],
            "label": ["A"],
        }
    ).to_parquet(tmp_path / "data" / "src.parquet")
    with FeatureStore(repo_path=tmp_path) as store:
        store.apply([customer, view])
        row = {
            "customer_id": [2],
            "event_timestamp": ["2024-03-01T00:00:00Z"],
            "x": [3],
            "y": [None],
            "birth": ["1990-02-28"],  # text, as JSON carries it; the source has a date
            "label": ["Q"],
        }
        store.push("v", row, to="both")
        online = store.get_online_features(["v:*"], [{"customer_id": 2}]).to_dict()
        offline = (
            store.get_historical_features(
                pd.DataFrame({"customer_id": [2], "event_timestamp": [BASE + timedelta(days=90)]}),
                ["v:*"],
            )
            .to_arrow()
            .to_pylist()[0]
        )
    expected = oracle(
        {
            "x": 3,
            "y": None,
            "birth": date(1990, 2, 28),
            "label": "Q",
            "event_timestamp": datetime(2024, 3, 1, tzinfo=UTC),
        },
        0.0,
    )
    for name in ("x", "t1", "t2", "t3"):
        assert online[name][0] == expected[name] == offline[name], name


def test_a_composite_over_windowed_aggregations(tmp_path: Path) -> None:
    from quiver import Aggregation

    (tmp_path / "data").mkdir()
    pd.DataFrame(
        {
            "customer_id": [1, 1, 2],
            "event_timestamp": [BASE, BASE + timedelta(days=4), BASE + timedelta(days=2)],
            "amount": [10.0, 20.0, 5.0],
        }
    ).to_parquet(tmp_path / "data" / "orders.parquet")
    orders = FeatureView(
        name="orders",
        entities=[customer],
        source=FileSource(name="orders_source", path="data/orders.parquet"),
        schema=[Field(name="amount", dtype="float64")],
        aggregations=[
            Aggregation(column="amount", function="sum", time_window="7d"),
            Aggregation(column="amount", function="count", time_window="7d"),
        ],
    )
    mean = OnDemandFeatureView(
        name="order_mean",
        sources=[orders],
        schema=[
            Field(
                name="mean_7d",
                dtype="float64",
                transformation="amount_sum_7d / NULLIF(amount_count_7d, 0)",
            )
        ],
    )
    with FeatureStore(repo_path=tmp_path) as store:
        store.apply([customer, orders, mean])
        entity = pd.DataFrame(
            {"customer_id": [1, 2, 1], "event_timestamp": [BASE + timedelta(days=5)] * 2 + [BASE]}
        )
        rows = store.get_historical_features(entity, ["order_mean:mean_7d"]).to_arrow()
        assert rows.column("mean_7d").to_pylist() == [15.0, 5.0, 10.0]


def test_a_push_reads_a_column_the_source_holds_only_nulls_in(tmp_path: Path) -> None:
    # Regression (found by the property above): a source whose `label` was null in every row
    # has Arrow type null; a pushed 'A' was refused ("cannot be read as the source's null").
    (tmp_path / "data").mkdir()
    pd.DataFrame(
        {
            "customer_id": [1],
            "event_timestamp": [BASE],
            "x": [2],
            "y": [1.5],
            "birth": [date(2000, 1, 1)],
            "label": [None],
        }
    ).to_parquet(tmp_path / "data" / "src.parquet")
    with FeatureStore(repo_path=tmp_path) as store:
        store.apply([customer, view])
        pushed = {"x": -1, "y": None, "birth": date(2000, 1, 1), "label": "Bc"}
        row = {"customer_id": 1, "event_timestamp": BASE + timedelta(days=3), **pushed}
        store.push("v", [row], to="both")
        want = oracle(row, 0.0)
        online = store.get_online_features(["v:*"], [{"customer_id": 1}]).to_dict()
        offline = (
            store.get_historical_features(
                pd.DataFrame({"customer_id": [1], "event_timestamp": [BASE + timedelta(days=4)]}),
                ["v:*"],
            )
            .to_arrow()
            .to_pylist()
        )
    for name in ("x", "t1", "t2", "t3"):
        assert online[name][0] == want[name], (name, online[name][0], want[name])
        assert offline[0][name] == want[name], (name, offline[0][name], want[name])
