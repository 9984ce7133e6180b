"""Batch and online predictions on a demo repo whose data ends an hour ago.

The data is fresh, so after materialization every customer's features are present online and an
online prediction for a customer "now" must equal the batch prediction for that customer at the
same time. Inputs and outputs are real files and a real Iceberg table (SQLite catalog).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from quiver.demo import FEATURES_TEMPLATE, generate_demo_data
from quiver.errors import InvalidError, NotFoundError
from quiver.ml.artifacts import ArtifactIntegrityError
from quiver.ml.predict import MissingFeaturesError
from quiver.store import FeatureStore

CUSTOMERS = 400
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
END = NOW - timedelta(hours=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    root = tmp_path_factory.mktemp("ml_predict")
    generate_demo_data(root / "data", customers=CUSTOMERS, seed=3, end=END)
    (root / "features.py").write_text(FEATURES_TEMPLATE)
    (root / "quiver.yaml").write_text("project: ml_predict\ndefinitions: [features.py]\n")
    with FeatureStore(repo_path=root) as s:
        s.apply(s.load_definitions(), prune=True)
        s.materialize(END - timedelta(days=800), NOW + timedelta(minutes=1))
        yield s


def _train(store: FeatureStore, name: str, framework: str, task: str = "classification") -> Any:
    params: dict[str, Any] = {"n_estimators": 40, "n_jobs": 1}
    label = "churned" if task == "classification" else "lifetime_value"
    return store.train(
        {
            "name": name,
            "framework": framework,
            "model_type": task,
            "training_data": {"entity_df_source": "churn_labels", "label_column": label},
            "features": "churn_prediction_v1",
            "hyperparameters": {"params": params},
        }
    )


@pytest.fixture(scope="module")
def models(store: FeatureStore) -> dict[str, Any]:
    return {
        "lightgbm": _train(store, "churn_lgb", "lightgbm"),
        "xgboost": _train(store, "churn_xgb", "xgboost"),
        "sklearn": _train(store, "churn_rf", "sklearn"),
        "regression": _train(store, "ltv_lgb", "lightgbm", "regression"),
    }


def _now_rows(customers: list[int], when: datetime = NOW) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array(customers, pa.int64()),
            "event_timestamp": pa.array([when] * len(customers), pa.timestamp("us", tz="UTC")),
        }
    )


# -- batch ----------------------------------------------------------------------------------


def test_batch_output_rows_and_columns(store: FeatureStore, models: dict[str, Any]) -> None:
    out = store.repo_path / "out" / "churn.parquet"
    job = store.predict_batch("churn_lgb:1", "churn_labels", str(out))
    labels = pq.read_table(store.repo_path / "data" / "churn_labels.parquet")
    table = pq.read_table(out)
    assert job.status == "completed" and job.rows == labels.num_rows == table.num_rows
    assert table.column_names == [
        "customer_id",
        "event_timestamp",
        "prediction",
        "prediction_class",
        "model_id",
        "model_version",
        "features_missing",
    ]
    assert table.schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert table["customer_id"].to_pylist() == labels["customer_id"].to_pylist()  # input order
    pred = table["prediction"].to_numpy()
    assert ((pred >= 0) & (pred <= 1)).all()
    assert set(table["prediction_class"].to_pylist()) <= {0, 1}
    assert (table["prediction_class"].to_numpy() == (pred > 0.5)).all()
    assert set(table["model_id"].to_pylist()) == {"churn_lgb:1"}
    assert set(table["model_version"].to_pylist()) == {1}
    recorded = store.registry  # the job is in the registry
    from quiver.ml.service import get_prediction_job

    again = get_prediction_job(store, job.prediction_id)
    assert again.to_dict() == job.to_dict()
    assert (again.input, again.output, again.mode) == ("churn_labels", str(out), "batch")
    assert again.duration_seconds > 0
    del recorded


def test_regression_output_has_no_class_column(store: FeatureStore, models: dict[str, Any]) -> None:
    out = store.repo_path / "out" / "ltv.parquet"
    store.predict_batch("ltv_lgb", _now_rows([1, 2, 3]), out, prediction_column="ltv")
    table = pq.read_table(out)
    assert table.column_names == [
        "customer_id",
        "event_timestamp",
        "ltv",
        "model_id",
        "model_version",
        "features_missing",
    ]
    assert table.num_rows == 3


@pytest.mark.parametrize("form", ["parquet", "csv", "pandas", "arrow"])
def test_batch_input_forms_and_chunks_agree(
    store: FeatureStore, models: dict[str, Any], form: str, tmp_path: Path
) -> None:
    labels = pq.read_table(store.repo_path / "data" / "churn_labels.parquet").slice(0, 300)
    labels = labels.select(["customer_id", "event_timestamp", "churned"])
    source: Any
    if form == "parquet":
        source = tmp_path / "in.parquet"
        pq.write_table(labels, source)
        source = str(source)
    elif form == "csv":
        source = tmp_path / "in.csv"
        pacsv.write_csv(labels, source)
        source = str(source)
    elif form == "pandas":
        source = labels.to_pandas()
    else:
        source = labels
    whole = tmp_path / "whole.parquet"
    chunked = tmp_path / "chunked.parquet"
    store.predict_batch("churn_xgb:1", source, whole, entity_columns=["customer_id", "churned"])
    job = store.predict_batch(
        "churn_xgb:1", source, chunked, entity_columns=["customer_id", "churned"], chunk_rows=64
    )
    assert job.rows == 300
    a, b = pq.read_table(whole), pq.read_table(chunked)
    assert a.column_names[:3] == ["customer_id", "churned", "event_timestamp"]
    assert a.schema.field("churned").type == pa.int64()  # entity columns keep their type
    assert a.equals(b)
    assert a["customer_id"].to_pylist() == labels["customer_id"].to_pylist()


def test_batch_iceberg_input_and_output(store: FeatureStore, models: dict[str, Any]) -> None:
    from quiver.offline.sources import iceberg_catalog

    catalog = iceberg_catalog(store.config)
    catalog.create_namespace_if_not_exists("scoring")
    rows = _now_rows(list(range(1, 51)))
    table = catalog.create_table("scoring.requests", schema=rows.schema)
    table.append(rows)
    job = store.predict_batch("churn_lgb:1", "iceberg:scoring.requests", "iceberg:scoring.preds")
    assert job.rows == 50
    written = catalog.load_table("scoring.preds").scan().to_arrow()
    assert written.num_rows == 50
    assert {"customer_id", "prediction", "prediction_class", "model_id"} <= set(
        written.column_names
    )
    # A second run appends in one more commit.
    store.predict_batch("churn_lgb:1", "iceberg:scoring.requests", "scoring.preds")
    assert catalog.load_table("scoring.preds").scan().to_arrow().num_rows == 100


def test_failed_batch_is_recorded_and_writes_nothing(
    store: FeatureStore, models: dict[str, Any], tmp_path: Path
) -> None:
    from quiver.ml.service import list_prediction_jobs

    out = tmp_path / "never.parquet"
    bad = _now_rows([1, 2]).rename_columns(["customer_id", "ts"])
    with pytest.raises(InvalidError, match=r"lacks column.*event_timestamp"):
        store.predict_batch("churn_lgb:1", bad, out)
    assert not out.exists() and not list(tmp_path.iterdir())
    last = list_prediction_jobs(store, "churn_lgb")[0]
    assert last.status == "failed" and "event_timestamp" in (last.error or "")


def test_batch_bad_requests(store: FeatureStore, models: dict[str, Any], tmp_path: Path) -> None:
    rows = _now_rows([1])
    with pytest.raises(NotFoundError, match=r"model 'churn_lbg' does not exist.*churn_lgb"):
        store.predict_batch("churn_lbg", rows, tmp_path / "x.parquet")
    with pytest.raises(NotFoundError, match=r"has no version 7"):
        store.predict_batch("churn_lgb:7", rows, tmp_path / "x.parquet")
    with pytest.raises(InvalidError, match=r"not trained on feature view.*customer_profile"):
        store.predict_batch(
            "churn_lgb:1", rows, tmp_path / "x.parquet", feature_views=["customer_profile"]
        )
    with pytest.raises(InvalidError, match=r"also needs feature view"):
        store.predict_batch(
            "churn_lgb:1", rows, tmp_path / "x.parquet", feature_views=["customer_behavior"]
        )
    with pytest.raises(NotFoundError, match=r"neither a registered data source"):
        store.predict_batch("churn_lgb:1", "no_such_input", tmp_path / "x.parquet")
    with pytest.raises(InvalidError, match=r"neither a Parquet path"):
        store.predict_batch("churn_lgb:1", rows, "not a target")
    with pytest.raises(InvalidError, match=r"clash"):
        store.predict_batch(
            "churn_lgb:1", rows, tmp_path / "x.parquet", prediction_column="customer_id"
        )


# -- online ---------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["lightgbm", "xgboost", "sklearn", "regression"])
def test_online_prediction_equals_batch(
    store: FeatureStore, models: dict[str, Any], which: str, tmp_path: Path
) -> None:
    version = models[which]
    customers = [3, 17, 42, 101]
    out = tmp_path / "batch.parquet"
    store.predict_batch(version.model_id, _now_rows(customers), out)
    batch = pq.read_table(out)
    online = store.predict_online(
        version.model_id, entity_rows=[{"customer_id": c} for c in customers]
    )
    assert online["model_id"] == version.model_id
    got = [p["prediction"] for p in online["predictions"]]
    np.testing.assert_allclose(got, batch["prediction"].to_pylist(), rtol=1e-9, atol=1e-12)
    for p in online["predictions"]:
        assert p["used_defaults"] == []
    if version.model_type == "classification":
        assert [p["prediction_class"] for p in online["predictions"]] == batch[
            "prediction_class"
        ].to_pylist()
        for p in online["predictions"]:
            assert sum(p["probabilities"].values()) == pytest.approx(1.0)
            assert p["probabilities"]["1"] == pytest.approx(p["prediction"])

    # The same values given directly give the same prediction.
    features = store.get_historical_features(
        _now_rows(customers[:1]), feature_service="churn_prediction_v1"
    ).to_arrow()
    values = {
        k: v[0] for k, v in features.drop(["customer_id", "event_timestamp"]).to_pydict().items()
    }
    direct = store.predict_online(version.model_id, features=values)
    assert direct["predictions"][0]["prediction"] == pytest.approx(got[0], rel=1e-9)
    # ... also when named view:feature or view__feature.
    refs = {f"customer_behavior:{k}" if k == "orders" else k: v for k, v in values.items()}
    assert store.predict_online(version.model_id, features=refs)["predictions"][0][
        "prediction"
    ] == pytest.approx(got[0], rel=1e-9)


def test_online_by_name_and_stage(store: FeatureStore, models: dict[str, Any]) -> None:
    store.promote("churn_rf", 1, "staging")
    by_stage = store.predict_online("churn_rf", stage="staging", entity_rows=[{"customer_id": 5}])
    assert by_stage["model_id"] == "churn_rf:1"
    with pytest.raises(NotFoundError, match=r"no version in stage 'production'"):
        store.predict_online("churn_rf", stage="production", entity_rows=[{"customer_id": 5}])


def test_batch_missing_features_flagged_refused_defaulted(
    store: FeatureStore, models: dict[str, Any]
) -> None:
    from quiver.ml.service import get_prediction_job, list_prediction_jobs

    rows = _now_rows([1, 999_999, 2])
    out = store.repo_path / "out" / "missing.parquet"
    flagged = store.predict_batch("churn_lgb:1", rows, out)
    table = pq.read_table(out)
    assert table["features_missing"].to_pylist() == [False, True, False]
    assert (flagged.rows, flagged.rows_missing_features) == (3, 1)
    assert get_prediction_job(store, flagged.prediction_id).rows_missing_features == 1

    refused_out = store.repo_path / "out" / "refused.parquet"
    with pytest.raises(MissingFeaturesError, match=r"customer_id=999999") as info:
        store.predict_batch("churn_lgb:1", rows, refused_out, missing="refuse")
    assert info.value.details["rows"] == 1
    assert "customer_behavior" in info.value.details["views"]
    assert not refused_out.exists()
    failed = list_prediction_jobs(store)[0]
    assert (failed.status, failed.rows_missing_features) == ("failed", 1)

    defaulted_out = store.repo_path / "out" / "defaulted.parquet"
    defaulted = store.predict_batch("churn_lgb:1", rows, defaulted_out, missing="defaults")
    scored = pq.read_table(defaulted_out)
    assert scored["features_missing"].to_pylist() == [False, True, False]
    assert defaulted.rows_missing_features == 1
    # the rows with features are scored as before; the missing one as online with defaults
    assert scored["prediction"][0].as_py() == pytest.approx(table["prediction"][0].as_py())
    online = store.predict_online(
        "churn_lgb:1", entity_rows=[{"customer_id": 999_999}], use_defaults=True
    )
    assert scored["prediction"][1].as_py() == pytest.approx(
        online["predictions"][0]["prediction"], rel=1e-9
    )
    with pytest.raises(InvalidError, match=r"missing='sometimes' must be one of"):
        store.predict_batch("churn_lgb:1", rows, defaulted_out, missing="sometimes")


def test_online_missing_features(store: FeatureStore, models: dict[str, Any]) -> None:
    with pytest.raises(
        MissingFeaturesError, match=r"customer_id=999999: tenure_months \(not_found\)"
    ):
        store.predict_online("churn_lgb:1", entity_rows=[{"customer_id": 999_999}])
    answer = store.predict_online(
        "churn_lgb:1", entity_rows=[{"customer_id": 999_999}, {"customer_id": 1}], use_defaults=True
    )
    first, second = answer["predictions"]
    # 22 features: the 6 windowed aggregations of a key without events are count 0 and nulls, as
    # offline, and the 2 on-demand ones are computed (from nulls): 14 defaults
    assert len(first["used_defaults"]) == 14 and second["used_defaults"] == []
    with pytest.raises(MissingFeaturesError, match=r"age \(not_found\)"):
        store.predict_online("churn_lgb:1", features={"tenure_months": 3})
    partial = store.predict_online("churn_lgb:1", features={"tenure_months": 3}, use_defaults=True)
    assert "tenure_months" not in partial["predictions"][0]["used_defaults"]


def test_online_expired_features(
    store: FeatureStore, models: dict[str, Any], tmp_path: Path
) -> None:
    # Push a customer whose behaviour snapshot is older than the view's 30-day TTL.
    old = NOW - timedelta(days=45)
    store.push(
        "customer_behavior",
        pd.DataFrame(
            {
                "customer_id": [777_777],
                "event_timestamp": [old],
                "created_timestamp": [old],
                "tenure_months": [3],
                "monthly_charges": [50.0],
                "total_charges": [150.0],
                "support_tickets": [0],
                "orders": [1],
                "avg_order_value": [20.0],
                "days_since_last_order": [10],
            }
        ),
        to="online",
    )
    with pytest.raises(MissingFeaturesError, match=r"tenure_months \(expired\)") as info:
        store.predict_online("churn_lgb:1", entity_rows=[{"customer_id": 777_777}])
    missing = info.value.details["missing"][0]["features"]
    assert missing["tenure_months"] == "expired" and missing["age"] == "not_found"


def test_online_bad_requests(store: FeatureStore, models: dict[str, Any]) -> None:
    with pytest.raises(
        InvalidError, match=r"not trained on feature.*'tenure' .did you mean 'tenure_months'"
    ):
        store.predict_online("churn_lgb:1", features={"tenure": 3})
    with pytest.raises(InvalidError, match=r"either entity_rows"):
        store.predict_online("churn_lgb:1")
    with pytest.raises(InvalidError, match=r"lacks the join key"):
        store.predict_online("churn_lgb:1", entity_rows=[{"customer": 1}])
    with pytest.raises(InvalidError, match=r"expects int64"):
        store.predict_online("churn_lgb:1", features={"tenure_months": "long"}, use_defaults=True)
    with pytest.raises(NotFoundError):
        store.predict_online("nope:1", entity_rows=[{"customer_id": 1}])


def test_tampered_artifact_is_refused_at_prediction(
    store: FeatureStore, models: dict[str, Any], tmp_path: Path
) -> None:
    version = _train(store, "tamper_me", "lightgbm")
    store.predict_online(version.model_id, entity_rows=[{"customer_id": 1}])  # loads and caches
    model_file = store.config.model_path / version.artifact_dir / "model.txt"
    model_file.write_text(model_file.read_text().replace("num_leaves", "num_leaveZ", 1))
    with pytest.raises(ArtifactIntegrityError, match=r"model.txt.*does not match its registered"):
        store.predict_online(version.model_id, entity_rows=[{"customer_id": 1}])
    with pytest.raises(ArtifactIntegrityError):
        store.predict_batch(version.model_id, _now_rows([1]), tmp_path / "x.parquet")
    encoding = store.config.model_path / version.artifact_dir / "encoding.json"
    model_file.unlink()
    with pytest.raises(NotFoundError, match=r"is missing"):
        store.predict_online(version.model_id, entity_rows=[{"customer_id": 1}])
    assert json.loads(encoding.read_text())["features"]


def test_multiclass(store: FeatureStore, tmp_path: Path) -> None:
    labels = pq.read_table(store.repo_path / "data" / "churn_labels.parquet")
    value = labels["lifetime_value"]
    bucket = pc.if_else(
        pc.less(value, 1000.0), "low", pc.if_else(pc.less(value, 3000.0), "mid", "high")
    )
    path = tmp_path / "tiers.parquet"
    pq.write_table(labels.append_column("tier", bucket), path)
    version = store.train(
        {
            "name": "tier",
            "framework": "lightgbm",
            "model_type": "classification",
            "training_data": {"entity_df_source": str(path), "label_column": "tier"},
            "features": "churn_prediction_v1",
            "hyperparameters": {"n_estimators": 30, "n_jobs": 1},
        }
    )
    assert set(version.lineage["label_distribution"]["total"]) == {"high", "low", "mid"}
    out = tmp_path / "tiers_out.parquet"
    store.predict_batch("tier", _now_rows([1, 2, 3]), out)
    table = pq.read_table(out)
    assert table.schema.field("prediction_class").type == pa.string()
    online = store.predict_online("tier", entity_rows=[{"customer_id": c} for c in (1, 2, 3)])
    assert [p["prediction_class"] for p in online["predictions"]] == table[
        "prediction_class"
    ].to_pylist()
    for p in online["predictions"]:
        assert set(p["probabilities"]) == {"high", "low", "mid"}
        assert p["prediction"] == pytest.approx(max(p["probabilities"].values()))
