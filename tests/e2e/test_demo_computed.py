"""The demo's computed features through the CLI: for the same customers and time, the SQL
transformation, the windowed aggregations and the on-demand feature of ``churn_prediction_v1``
are the same in ``quiver training-set``, ``quiver predict batch`` and ``quiver get-online``.

The demo's data ends at today's midnight (UTC) and ``get-online`` reads at the wall clock, so the
entity rows are stamped with a time in the same hour as the online read: the aggregations have
hourly tiles and no event after midnight, so every instant of that hour gives the same values
offline and online (``docs/architecture.md``, "Windowed aggregations").
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from _cli import quiver

CUSTOMERS = 300
TRANSFORMED = ["order_spend_30d"]
AGGREGATED = [
    "count_7d",
    "count_30d",
    "amount_sum_7d",
    "amount_sum_30d",
    "amount_mean_7d",
    "amount_mean_30d",
]
ON_DEMAND = ["charges_per_month_of_tenure", "order_amount_7d_share"]
COMPUTED = TRANSFORMED + AGGREGATED + ON_DEMAND
EXACT = {"count_7d", "count_30d", "order_spend_30d", "charges_per_month_of_tenure"}


def _same(name: str, offline: Any, online: Any) -> bool:
    if offline is None or online is None:
        return offline is None and online is None
    if name in EXACT:
        return bool(offline == online)
    # float sums and means: DuckDB and the tiles add in different orders
    return math.isclose(offline, online, rel_tol=1e-9, abs_tol=1e-12)


def _pick_customers(repo: Path, end: datetime) -> list[int]:
    """Customers with orders in the last 7 days, only in the last 30, and in neither."""
    orders = pq.read_table(repo / "data" / "order_events.parquet").to_pandas()
    last = orders.groupby("customer_id")["event_timestamp"].max()
    end_ts = pd.Timestamp(end)
    week = last[last > end_ts - timedelta(days=6)].index.tolist()
    month = last[(last < end_ts - timedelta(days=8)) & (last > end_ts - timedelta(days=28))]
    old = last[last < end_ts - timedelta(days=40)].index.tolist()
    picked = week[:4] + month.index.tolist()[:2] + old[:1]
    assert len(week) >= 4 and len(month) >= 2 and old, (len(week), len(month), len(old))
    return picked


def _online(repo: Path, customers: list[int]) -> tuple[dict[str, list[Any]], datetime]:
    """get-online --json, and an instant in the same hour as its read of the wall clock."""
    entities = [a for c in customers for a in ("-e", f"customer_id={c}")]
    for _ in range(3):
        before = datetime.now(UTC)
        out = quiver(
            "get-online", "--service", "churn_prediction_v1", *entities, "--json", cwd=repo
        )
        after = datetime.now(UTC)
        if before.replace(minute=0, second=0, microsecond=0) == after.replace(
            minute=0, second=0, microsecond=0
        ):
            return json.loads(out.stdout), before
        time.sleep(1)  # the read straddled an hour boundary: read again
    raise AssertionError("three online reads straddled an hour boundary")


def test_demo_computed_features_agree_offline_and_online(tmp_path: Path) -> None:
    repo = tmp_path / "demo"
    quiver("init", str(repo), "--demo", "--customers", str(CUSTOMERS), cwd=tmp_path)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    quiver("apply", cwd=repo)
    quiver("train", "churn_model.yaml", cwd=repo)
    quiver("materialize-incremental", "now", cwd=repo)
    customers = _pick_customers(repo, today)

    # plain keys are enough: the on-demand view needs no request data
    online, at = _online(repo, customers)
    if at.date() != today.date():  # midnight passed since init: the data ends a day earlier
        today = at.replace(hour=0, minute=0, second=0, microsecond=0)
    entities = pd.DataFrame(
        {"customer_id": customers, "event_timestamp": [pd.Timestamp(at)] * len(customers)}
    )
    entities.to_parquet(repo / "data" / "now.parquet")

    quiver(
        "training-set",
        "--entities",
        "data/now.parquet",
        "--service",
        "churn_prediction_v1",
        "--out",
        "data/now_training.parquet",
        cwd=repo,
    )
    training = pq.read_table(repo / "data" / "now_training.parquet").to_pandas()
    training = training.set_index("customer_id").loc[customers]

    mismatches = []
    for i, customer in enumerate(customers):
        assert online["customer_id"][i] == customer
        for name in COMPUTED:
            offline_value = training.at[customer, name]
            offline_value = None if pd.isna(offline_value) else offline_value
            if not _same(name, offline_value, online[name][i]):
                mismatches.append((customer, name, offline_value, online[name][i]))
    assert not mismatches, mismatches

    # the values are not trivial: orders in both windows, and the ratios computed
    recent = training.loc[customers[:4]]
    assert (recent["count_7d"] > 0).all() and (recent["amount_sum_7d"] > 0).all()
    assert (training.loc[customers[4:6], "count_7d"] == 0).all()
    assert (training.loc[customers[4:6], "count_30d"] > 0).all()
    assert training.loc[customers[-1], "count_30d"] == 0
    assert pd.isna(training.loc[customers[-1], "amount_mean_30d"])
    for customer in customers:
        row = training.loc[customer]
        assert row["order_spend_30d"] == row["orders"] * row["avg_order_value"]
        if row["tenure_months"]:
            expected = row["total_charges"] / row["tenure_months"]
            assert row["charges_per_month_of_tenure"] == expected
        share = row["amount_sum_7d"] / row["amount_sum_30d"] if row["count_7d"] else None
        if share is not None:
            assert math.isclose(row["order_amount_7d_share"], share, rel_tol=1e-12)

    # batch prediction reads the same point-in-time features; online prediction the online ones
    quiver(
        "predict",
        "batch",
        "churn_model",
        "--input",
        "data/now.parquet",
        "--output",
        "data/now_predictions.parquet",
        cwd=repo,
    )
    batch = pq.read_table(repo / "data" / "now_predictions.parquet").to_pandas()
    batch = batch.set_index("customer_id").loc[customers, "prediction"].tolist()
    entity_args = [a for c in customers for a in ("-e", f"customer_id={c}")]
    predicted = json.loads(
        quiver("predict", "online", "churn_model", *entity_args, "--json", cwd=repo).stdout
    )
    online_predictions = [p["prediction"] for p in predicted["predictions"]]
    assert [p["used_defaults"] for p in predicted["predictions"]] == [[]] * len(customers)
    for customer, b, o in zip(customers, batch, online_predictions, strict=True):
        assert math.isclose(b, o, rel_tol=1e-9), (customer, b, o)

    # the model was trained on the computed features
    info = json.loads(quiver("models", "describe", "churn_model", "--json", cwd=repo).stdout)
    assert set(COMPUTED) <= set(info["feature_importance"])
