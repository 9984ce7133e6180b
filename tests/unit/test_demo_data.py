"""Tests for the deterministic churn demo dataset and the demo ``features.py`` template."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver import definitions
from quiver.demo import (
    FEATURES_TEMPLATE,
    LABEL_SOURCE,
    TABLE_NAMES,
    build_demo_tables,
    generate_demo_data,
)
from quiver.demo.data import (
    BEHAVIOR_SCHEMA,
    CONTRACT_SCHEMA,
    CONTRACT_TYPES,
    DEMOGRAPHICS_SCHEMA,
    GENDERS,
    LABELS_SCHEMA,
    ORDER_EVENTS_SCHEMA,
    PAYMENT_METHODS,
    REGIONS,
)
from quiver.types import arrow_type

CUSTOMERS = 500
WEEKS = 52
END = datetime(2026, 1, 1, tzinfo=UTC)
EXPECTED_SCHEMAS = {
    "customer_behavior": BEHAVIOR_SCHEMA,
    "customer_demographics": DEMOGRAPHICS_SCHEMA,
    "customer_contract": CONTRACT_SCHEMA,
    "churn_labels": LABELS_SCHEMA,
    "order_events": ORDER_EVENTS_SCHEMA,
}
# Tables with a row for every customer (a customer may have no orders).
PER_CUSTOMER = ("customer_behavior", "customer_demographics", "customer_contract", "churn_labels")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return generate_demo_data(tmp_path_factory.mktemp("demo"), customers=CUSTOMERS, seed=42)


@pytest.fixture(scope="module")
def frames(demo_dir: dict[str, Path]) -> dict[str, pd.DataFrame]:
    return {name: pq.read_table(path).to_pandas() for name, path in demo_dir.items()}


def _as_of(labels: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    right = features.drop(columns=["created_timestamp"], errors="ignore").rename(
        columns={"event_timestamp": "_feature_ts"}
    )
    return pd.merge_asof(
        labels.sort_values("event_timestamp"),
        right.sort_values("_feature_ts"),
        left_on="event_timestamp",
        right_on="_feature_ts",
        by="customer_id",
        direction="backward",
    ).drop(columns="_feature_ts")


@pytest.fixture(scope="module")
def training(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Labels joined point-in-time with every feature table."""
    out = frames["churn_labels"]
    for name in ("customer_behavior", "customer_demographics", "customer_contract"):
        out = _as_of(out, frames[name])
    return out


# --- files, schemas, determinism ------------------------------------------------------------


def test_writes_one_parquet_file_per_table(demo_dir: dict[str, Path]) -> None:
    assert list(demo_dir) == list(TABLE_NAMES)
    for name, path in demo_dir.items():
        assert path.name == f"{name}.parquet"
        assert path.is_file()
        meta = pq.ParquetFile(path).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"


def test_schemas_and_dtypes(demo_dir: dict[str, Path]) -> None:
    for name, path in demo_dir.items():
        schema = pq.read_schema(path)
        assert schema.remove_metadata().equals(EXPECTED_SCHEMAS[name]), name
        assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    behavior = pq.read_schema(demo_dir["customer_behavior"])
    assert behavior.field("created_timestamp").type == pa.timestamp("us", tz="UTC")


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a = generate_demo_data(tmp_path / "a", customers=CUSTOMERS, seed=7)
    b = generate_demo_data(tmp_path / "b", customers=CUSTOMERS, seed=7)
    for name in TABLE_NAMES:
        assert a[name].read_bytes() == b[name].read_bytes(), name


def test_same_seed_gives_identical_tables() -> None:
    a = build_demo_tables(customers=CUSTOMERS, seed=3)
    b = build_demo_tables(customers=CUSTOMERS, seed=3)
    for name in TABLE_NAMES:
        assert a[name].equals(b[name]), name


def test_different_seed_gives_different_tables() -> None:
    a = build_demo_tables(customers=CUSTOMERS, seed=1)
    b = build_demo_tables(customers=CUSTOMERS, seed=2)
    for name in TABLE_NAMES:
        assert not a[name].equals(b[name]), name


def test_naive_end_is_utc() -> None:
    a = build_demo_tables(customers=50, seed=5, end=datetime(2025, 6, 1))
    b = build_demo_tables(customers=50, seed=5, end=datetime(2025, 6, 1, tzinfo=UTC))
    for name in TABLE_NAMES:
        assert a[name].equals(b[name]), name


@pytest.mark.parametrize(("customers", "weeks"), [(0, 52), (10, 0)])
def test_rejects_empty_arguments(customers: int, weeks: int) -> None:
    with pytest.raises(ValueError):
        build_demo_tables(customers=customers, weeks=weeks)


@pytest.mark.parametrize(("customers", "weeks"), [(1, 1), (3, 2), (20, 6)])
def test_tiny_arguments_still_work(customers: int, weeks: int) -> None:
    tables = build_demo_tables(customers=customers, weeks=weeks)
    ids = set(range(1, customers + 1))
    for name in PER_CUSTOMER:
        assert set(tables[name].column("customer_id").to_pylist()) == ids, name
    assert set(tables["order_events"].column("customer_id").to_pylist()) <= ids


# --- row counts and value ranges ------------------------------------------------------------


def test_row_counts(frames: dict[str, pd.DataFrame]) -> None:
    behavior = frames["customer_behavior"]
    assert 0.6 * CUSTOMERS * WEEKS <= len(behavior) <= CUSTOMERS * WEEKS
    assert not behavior.duplicated(["customer_id", "event_timestamp"]).any()
    assert CUSTOMERS <= len(frames["customer_demographics"]) <= 1.1 * CUSTOMERS
    assert CUSTOMERS <= len(frames["customer_contract"]) <= 1.6 * CUSTOMERS
    assert 1.6 * CUSTOMERS <= len(frames["churn_labels"]) <= 2.4 * CUSTOMERS
    assert 10 * CUSTOMERS <= len(frames["order_events"]) <= 50 * CUSTOMERS
    for name in PER_CUSTOMER:
        ids = set(frames[name]["customer_id"])
        assert ids == set(range(1, CUSTOMERS + 1)), name
    assert len(set(frames["order_events"]["customer_id"])) > 0.95 * CUSTOMERS


def test_some_customers_join_late(frames: dict[str, pd.DataFrame]) -> None:
    per_customer = frames["customer_behavior"].groupby("customer_id").size()
    assert per_customer.max() == WEEKS
    assert (per_customer < WEEKS).mean() > 0.1
    assert per_customer.min() >= 4


def test_snapshots_are_weekly_and_end_at_end(frames: dict[str, pd.DataFrame]) -> None:
    behavior = frames["customer_behavior"]
    end = pd.Timestamp(END)
    assert behavior["event_timestamp"].max() == end
    assert behavior["event_timestamp"].min() == end - pd.Timedelta(weeks=WEEKS - 1)
    age = end - behavior["event_timestamp"]
    assert (age % pd.Timedelta(weeks=1) == pd.Timedelta(0)).all()
    gaps = behavior.groupby("customer_id")["event_timestamp"].diff().dropna()
    assert (gaps == pd.Timedelta(weeks=1)).all()
    lag = behavior["created_timestamp"] - behavior["event_timestamp"]
    assert (lag > pd.Timedelta(0)).all()
    assert (lag < pd.Timedelta(minutes=30)).all()


def test_behavior_values(frames: dict[str, pd.DataFrame]) -> None:
    behavior = frames["customer_behavior"]
    assert (behavior["tenure_months"] >= 0).all()
    assert behavior.groupby("customer_id")["tenure_months"].diff().dropna().ge(0).all()
    assert behavior.groupby("customer_id")["total_charges"].diff().dropna().gt(0).all()
    assert behavior["monthly_charges"].between(18, 151).all()
    assert (behavior["support_tickets"] >= 0).all()
    assert (behavior["orders"] >= 0).all()
    assert (behavior["avg_order_value"] > 0).all()
    assert (behavior["days_since_last_order"] >= 0).all()
    # "orders in the last 30 days" and "days since the last order" agree.
    assert (behavior.loc[behavior["orders"] > 0, "days_since_last_order"] <= 30).all()
    # total_charges is consistent-ish with tenure * monthly_charges.
    tenured = behavior[behavior["tenure_months"] >= 6]
    ratio = tenured["total_charges"] / (tenured["tenure_months"] * tenured["monthly_charges"])
    assert 0.7 < ratio.median() < 1.4


def test_features_drift_over_time(frames: dict[str, pd.DataFrame]) -> None:
    behavior = frames["customer_behavior"]
    for column in ("monthly_charges", "support_tickets", "orders", "avg_order_value"):
        distinct = behavior.groupby("customer_id")[column].nunique()
        assert (distinct > 1).mean() > 0.5, column


def test_categorical_values(frames: dict[str, pd.DataFrame]) -> None:
    demographics = frames["customer_demographics"]
    contract = frames["customer_contract"]
    assert set(demographics["gender"]) == set(GENDERS)
    assert set(demographics["region"]) == set(REGIONS)
    assert demographics["age"].between(18, 100).all()
    assert set(contract["contract_type"]) == set(CONTRACT_TYPES)
    assert set(contract["payment_method"]) == set(PAYMENT_METHODS)
    assert set(contract["paperless_billing"]) == {True, False}


def test_second_demographics_rows_change_region(frames: dict[str, pd.DataFrame]) -> None:
    demographics = frames["customer_demographics"]
    movers = demographics[demographics.duplicated("customer_id", keep=False)]
    assert len(movers) > 0
    regions = movers.groupby("customer_id")["region"].agg(["first", "last"])
    assert (regions["first"] != regions["last"]).all()
    assert (movers.groupby("customer_id")["age"].nunique() == 1).all()


def test_feature_rows_exist_for_every_label(
    frames: dict[str, pd.DataFrame], training: pd.DataFrame
) -> None:
    labels = frames["churn_labels"]
    first = frames["customer_behavior"].groupby("customer_id")["event_timestamp"].min()
    assert (
        labels["event_timestamp"].to_numpy() >= first.loc[labels["customer_id"]].to_numpy()
    ).all()
    assert labels["event_timestamp"].max() <= pd.Timestamp(END)
    assert not training.isna().any().any()


def test_feature_ages_fit_the_template_ttls(frames: dict[str, pd.DataFrame]) -> None:
    labels = frames["churn_labels"][["customer_id", "event_timestamp"]].sort_values(
        "event_timestamp"
    )
    ttls = {"customer_behavior": timedelta(days=30), "customer_contract": timedelta(days=365)}
    for name, ttl in ttls.items():
        right = (
            frames[name][["customer_id", "event_timestamp"]]
            .rename(columns={"event_timestamp": "feature_ts"})
            .sort_values("feature_ts")
        )
        joined = pd.merge_asof(
            labels, right, left_on="event_timestamp", right_on="feature_ts", by="customer_id"
        )
        age = joined["event_timestamp"] - joined["feature_ts"]
        assert age.notna().all(), name
        assert (age <= pd.Timedelta(ttl)).all(), name


# --- labels depend on the point-in-time features --------------------------------------------


def test_churn_rate(frames: dict[str, pd.DataFrame]) -> None:
    labels = frames["churn_labels"]
    assert set(labels["churned"]) == {0, 1}
    assert 0.15 <= labels["churned"].mean() <= 0.35
    assert (labels["lifetime_value"] > 0).all()


def test_churn_depends_on_features(training: pd.DataFrame) -> None:
    churned = training["churned"]
    many = churned[training["support_tickets"] >= 3].mean()
    few = churned[training["support_tickets"] == 0].mean()
    assert many > few + 0.1
    by_contract = churned.groupby(training["contract_type"]).mean()
    assert by_contract["month-to-month"] > by_contract["two_year"] + 0.1
    echeck = churned[training["payment_method"] == "electronic_check"].mean()
    other = churned[training["payment_method"] != "electronic_check"].mean()
    assert echeck > other
    assert np.corrcoef(training["tenure_months"], churned)[0, 1] < -0.1
    assert np.corrcoef(training["monthly_charges"], churned)[0, 1] > 0.05
    assert np.corrcoef(training["days_since_last_order"], churned)[0, 1] > 0.0


def test_lifetime_value_depends_on_features(training: pd.DataFrame) -> None:
    ltv = training["lifetime_value"]
    assert np.corrcoef(training["monthly_charges"], ltv)[0, 1] > 0.15
    by_contract = ltv.groupby(training["contract_type"]).median()
    assert by_contract["two_year"] > by_contract["month-to-month"]


def test_point_in_time_features_beat_latest_features(
    frames: dict[str, pd.DataFrame], training: pd.DataFrame
) -> None:
    """Labels follow the as-of values, so the latest snapshot explains them worse."""
    latest = (
        frames["customer_behavior"]
        .sort_values("event_timestamp")
        .groupby("customer_id")["support_tickets"]
        .last()
    )
    stale = latest.loc[training["customer_id"]].to_numpy()
    as_of = np.corrcoef(training["support_tickets"], training["churned"])[0, 1]
    leaky = np.corrcoef(stale, training["churned"])[0, 1]
    assert as_of > leaky


# --- the features.py template ---------------------------------------------------------------


def _exec_template() -> dict[str, Any]:
    """Run the template; fall back to ``quiver.definitions`` if ``quiver`` lacks the re-exports."""
    source = FEATURES_TEMPLATE
    try:
        from quiver import Entity, FeatureService, FeatureView, Field, FileSource  # noqa: F401
    except ImportError:
        source = source.replace("from quiver import", "from quiver.definitions import")
    namespace: dict[str, Any] = {"__name__": "features"}
    exec(compile(source, "features.py", "exec"), namespace)
    return namespace


def test_template_compiles_and_uses_public_api() -> None:
    compile(FEATURES_TEMPLATE, "features.py", "exec")
    assert "from quiver import (" in FEATURES_TEMPLATE
    assert "quiver." not in FEATURES_TEMPLATE.split('"""')[2]  # nothing from private modules
    path = Path(definitions.__file__).parent / "demo" / "features_template.py"
    assert path.read_text(encoding="utf-8") == FEATURES_TEMPLATE


def test_template_defines_the_demo_objects() -> None:
    namespace = _exec_template()

    def instances(cls: type) -> dict[str, Any]:
        return {v.name: v for v in namespace.values() if isinstance(v, cls)}

    entities = instances(definitions.Entity)
    sources = instances(definitions.FileSource)
    views = instances(definitions.FeatureView)
    services = instances(definitions.FeatureService)

    assert list(entities) == ["customer"]
    assert entities["customer"].join_keys == ["customer_id"]
    assert LABEL_SOURCE in sources
    assert sources[LABEL_SOURCE].path == "data/churn_labels.parquet"
    for name in TABLE_NAMES:
        assert f"data/{name}.parquet" in {s.path for s in sources.values()}
    on_demand = instances(definitions.OnDemandFeatureView)
    assert set(views) == {
        "customer_behavior",
        "customer_demographics",
        "customer_contract",
        "customer_order_activity",
    }
    assert views["customer_behavior"].ttl == timedelta(days=30)
    assert views["customer_demographics"].ttl is None
    assert views["customer_contract"].ttl == timedelta(days=365)
    assert len(views["customer_behavior"].features) == 8
    # the computed features: a transformation, windowed aggregations, an on-demand view
    spend = views["customer_behavior"].features[-1]
    assert (spend.name, spend.transformation) == ("order_spend_30d", "orders * avg_order_value")
    orders = views["customer_order_activity"]
    assert orders.aggregation_interval == timedelta(hours=1)
    assert [f.name for f in orders.output_fields] == [
        "count_7d",
        "count_30d",
        "amount_sum_7d",
        "amount_sum_30d",
        "amount_mean_7d",
        "amount_mean_30d",
    ]
    assert list(on_demand) == ["customer_derived_features"]
    derived = on_demand["customer_derived_features"]
    assert derived.sources == ["customer_behavior", "customer_order_activity"]
    assert derived.request_sources == []  # served from the keys alone
    assert [f.name for f in derived.features] == [
        "charges_per_month_of_tenure",
        "order_amount_7d_share",
    ]
    assert list(services) == ["churn_prediction_v1"]
    assert set(services["churn_prediction_v1"].view_names) == set(views) | set(on_demand)


def test_template_fields_match_the_data(frames: dict[str, pd.DataFrame]) -> None:
    namespace = _exec_template()
    views = {v.name: v for v in namespace.values() if isinstance(v, definitions.FeatureView)}
    for name, view in views.items():
        source = view.source
        assert isinstance(source, definitions.FileSource)
        schema = EXPECTED_SCHEMAS[Path(source.path).stem]
        assert source.timestamp_field in schema.names
        if source.created_timestamp_field:
            assert source.created_timestamp_field in schema.names
        for field in view.features:
            if field.transformation:
                continue  # computed from the source row
            assert schema.field(field.name).type == arrow_type(field.dtype), (name, field.name)


# --- order events -----------------------------------------------------------------------------


def test_order_events_are_sorted_and_before_the_end(frames: dict[str, pd.DataFrame]) -> None:
    orders = frames["order_events"]
    assert orders["order_id"].tolist() == list(range(1, len(orders) + 1))
    keys = list(zip(orders["customer_id"], orders["event_timestamp"], strict=True))
    assert keys == sorted(keys)
    assert orders["event_timestamp"].max() <= pd.Timestamp(END)
    assert (orders["amount"] > 0).all()
    per_customer = orders.groupby("customer_id").size()
    assert 10 <= per_customer.median() <= 40


def test_order_events_match_the_behavior_snapshots(frames: dict[str, pd.DataFrame]) -> None:
    """``orders`` counts the events of the four weeks up to a snapshot, and
    ``days_since_last_order`` is the whole days since the latest one (when there is one)."""
    orders = frames["order_events"]
    behavior = frames["customer_behavior"]
    behavior = behavior[behavior["customer_id"] <= 60]
    for customer, snaps in behavior.groupby("customer_id"):
        times = orders.loc[orders["customer_id"] == customer, "event_timestamp"]
        for snap in snaps.itertuples():
            ts = snap.event_timestamp
            recent = ((times > ts - timedelta(days=28)) & (times <= ts)).sum()
            assert recent == snap.orders, (customer, ts)
            before = times[times <= ts]
            if len(before):
                assert (ts - before.max()).days == snap.days_since_last_order, (customer, ts)


def test_order_amounts_follow_the_average_order_value(frames: dict[str, pd.DataFrame]) -> None:
    orders = frames["order_events"].rename(columns={"event_timestamp": "ts"})
    behavior = frames["customer_behavior"]
    last = behavior.sort_values("event_timestamp").groupby("customer_id").last()
    mean_amount = orders.groupby("customer_id")["amount"].mean()
    joined = pd.concat([mean_amount, last["avg_order_value"]], axis=1).dropna()
    assert np.corrcoef(joined["amount"], joined["avg_order_value"])[0, 1] > 0.8
    ratio = orders["amount"].sum() / len(orders) / behavior["avg_order_value"].mean()
    assert 0.8 < ratio < 1.25
