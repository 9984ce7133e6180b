"""Models trained on computed features: SQL transformations and on-demand views (with a request
field) in the training set, then batch predictions on the same point-in-time values."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from quiver import Entity, FeatureService, FeatureView, Field, FileSource
from quiver.definitions import OnDemandFeatureView, RequestSource
from quiver.features.on_demand import on_demand_feature_view
from quiver.store import FeatureStore

BASE = datetime(2024, 1, 1, tzinfo=UTC)
N = 120

customer = Entity(name="customer", join_keys=["customer_id"])
usage = FeatureView(
    name="usage",
    entities=[customer],
    source=FileSource(name="usage_source", path="data/usage.parquet"),
    schema=[
        Field(name="calls", dtype="int64"),
        Field(name="minutes", dtype="float64"),
        Field(
            name="minutes_per_call", dtype="float64", transformation="minutes / NULLIF(calls, 0)"
        ),
    ],
)


@on_demand_feature_view(
    sources=[usage, RequestSource(name="offer", schema=[Field(name="discount", dtype="float64")])],
    schema=[Field(name="net_minutes", dtype="float64")],
)
def offer(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"net_minutes": df["minutes"] * (1 - df["discount"])})


heavy = OnDemandFeatureView(
    name="heavy",
    sources=[usage],
    schema=[
        Field(
            name="is_heavy", dtype="int64", transformation="CASE WHEN calls > 5 THEN 1 ELSE 0 END"
        )
    ],
)
service = FeatureService(
    name="churn_computed",
    features=["usage:minutes_per_call", "offer:net_minutes", "heavy:is_heavy"],
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    root: Path = tmp_path_factory.mktemp("computed_ml")
    (root / "data").mkdir()
    rng = np.random.default_rng(7)
    ids = np.arange(1, N + 1)
    pd.DataFrame(
        {
            "customer_id": ids,
            "event_timestamp": [BASE + timedelta(days=int(d)) for d in rng.integers(0, 30, N)],
            "calls": rng.integers(0, 12, N),
            "minutes": rng.uniform(0, 500, N).round(2),
        }
    ).to_parquet(root / "data" / "usage.parquet")
    labels = pd.DataFrame(
        {
            "customer_id": ids,
            "event_timestamp": [BASE + timedelta(days=40 + int(d)) for d in rng.integers(0, 20, N)],
            "discount": rng.uniform(0, 0.5, N).round(3),
            "churned": rng.integers(0, 2, N),
        }
    )
    labels.to_parquet(root / "data" / "labels.parquet")
    with FeatureStore(repo_path=root) as s:
        s.apply(
            [
                customer,
                usage,
                offer,
                heavy,
                service,
                FileSource(name="labels", path="data/labels.parquet"),
            ]
        )
        yield s


def test_a_model_trains_and_predicts_on_computed_features(
    store: FeatureStore, tmp_path: Path
) -> None:
    version = store.train(
        {
            "name": "churn_computed",
            "framework": "sklearn",
            "model_type": "classification",
            "training_data": {"entity_df_source": "labels", "label_column": "churned"},
            "features": "churn_computed",
            "hyperparameters": {"params": {"n_estimators": 10, "n_jobs": 1}},
        }
    )
    assert sorted(version.feature_refs) == sorted(service.features)
    assert version.lineage["feature_views"] == {"usage": 1, "offer": 1, "heavy": 1}
    out = tmp_path / "predictions.parquet"
    store.predict_batch(version.model_id, "labels", out, entity_columns=["customer_id", "discount"])
    predictions = pq.read_table(out)
    assert predictions.num_rows == N
    assert predictions.column("prediction").null_count == 0

    # online: the same function on the online values, the request field sent with the keys
    store.materialize(BASE - timedelta(days=1), BASE + timedelta(days=40))
    rows = [{"customer_id": 1, "discount": 0.2}, {"customer_id": 2, "discount": 0.0}]
    online = store.predict_online(version.model_id, entity_rows=rows)
    assert len(online["predictions"]) == 2
