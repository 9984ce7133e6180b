"""Training on the demo repo: every framework x task, lineage, the time split, bad specs.

One small demo repo (real Parquet files, real registry, real DuckDB point-in-time joins) is
shared by the module; every model trains on it with few trees to stay fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from quiver.demo import FEATURES_TEMPLATE, generate_demo_data
from quiver.errors import InvalidError, NotFoundError
from quiver.ml.registry import ModelVersion
from quiver.store import FeatureStore

CUSTOMERS = 1000
FAST = {
    "lightgbm": {"n_estimators": 60, "learning_rate": 0.1, "num_leaves": 15, "n_jobs": 1},
    "xgboost": {"n_estimators": 60, "max_depth": 4, "learning_rate": 0.1, "n_jobs": 1},
    "sklearn": {"n_estimators": 60, "max_depth": 8, "n_jobs": 1},
}


def make_repo(root: Path, customers: int = CUSTOMERS, **demo: Any) -> FeatureStore:
    """A demo repo (data, features.py, quiver.yaml) applied to a fresh registry."""
    root.mkdir(parents=True, exist_ok=True)
    generate_demo_data(root / "data", customers=customers, seed=7, **demo)
    (root / "features.py").write_text(FEATURES_TEMPLATE)
    (root / "quiver.yaml").write_text("project: ml_test\ndefinitions: [features.py]\n")
    store = FeatureStore(repo_path=root)
    store.apply(store.load_definitions(), prune=True)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeatureStore]:
    with make_repo(tmp_path_factory.mktemp("ml_demo")) as s:
        yield s


def spec(name: str, framework: str, model_type: str, **extra: Any) -> dict[str, Any]:
    label = "churned" if model_type == "classification" else "lifetime_value"
    out: dict[str, Any] = {
        "name": name,
        "framework": framework,
        "model_type": model_type,
        "training_data": {"entity_df_source": "churn_labels", "label_column": label},
        "features": "churn_prediction_v1",
        "hyperparameters": {"params": dict(FAST[framework])},
    }
    out.update(extra)
    return out


def _labels(store: FeatureStore) -> pa.Table:
    return pq.read_table(store.repo_path / "data" / "churn_labels.parquet")


def _test_baseline(store: FeatureStore, version: ModelVersion) -> tuple[float, float]:
    """Trivial baselines on the test split: (log loss of the train prior, MSE of the train mean)."""
    labels = _labels(store)
    ts = labels["event_timestamp"]
    cutoff = pa.scalar(version.lineage["time_range"]["test_min_timestamp"]).cast(ts.type)
    train = labels.filter(pc.less(ts, cutoff))
    test = labels.filter(pc.greater_equal(ts, cutoff))
    label = version.lineage["label_column"]
    y_train = train[label].to_numpy().astype(float)
    y_test = test[label].to_numpy().astype(float)
    prior = min(max(y_train.mean(), 1e-6), 1 - 1e-6)
    logloss = -np.mean(y_test * math.log(prior) + (1 - y_test) * math.log(1 - prior))
    mse = float(np.mean((y_test - y_train.mean()) ** 2))
    return float(logloss), mse


CASES = [
    ("lightgbm", "classification", None),
    ("lightgbm", "regression", None),
    ("xgboost", "classification", None),
    ("xgboost", "regression", None),
    ("sklearn", "classification", "random_forest"),
    ("sklearn", "regression", "random_forest"),
]


@pytest.mark.parametrize(("framework", "task", "algorithm"), CASES)
def test_each_framework_and_task_beats_a_trivial_baseline(
    store: FeatureStore, framework: str, task: str, algorithm: str | None
) -> None:
    name = f"{framework}_{task}"
    version = store.train(spec(name, framework, task, algorithm=algorithm))
    assert version.model_id == f"{name}:1"
    test = version.test_metrics
    logloss_base, mse_base = _test_baseline(store, version)
    if task == "classification":
        assert set(test) >= {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
        assert set(version.training_metrics) == set(test)
        assert test["roc_auc"] > 0.7, test
        assert test["log_loss"] < logloss_base, (test, logloss_base)
    else:
        assert set(test) >= {"mse", "rmse", "mae", "r2"}
        assert test["mse"] < mse_base, (test, mse_base)
        assert test["r2"] > 0.3
        assert test["rmse"] == pytest.approx(math.sqrt(test["mse"]), rel=1e-4)
    importance = version.feature_importance
    assert len(importance) == 22  # churn_prediction_v1: 14 stored, 8 computed
    assert sum(importance.values()) == pytest.approx(1.0, abs=1e-3)
    assert version.training_duration_seconds > 0
    assert store.get_model(version.model_id) == version


@pytest.mark.parametrize(
    ("task", "algorithm"),
    [
        ("classification", "gradient_boosting"),
        ("classification", "logistic_regression"),
        ("regression", "linear_regression"),
        ("regression", "gradient_boosting"),
    ],
)
def test_other_sklearn_algorithms(store: FeatureStore, task: str, algorithm: str) -> None:
    params = {"n_estimators": 30} if algorithm == "gradient_boosting" else {}
    version = store.train(
        spec(f"sk_{algorithm}_{task}", "sklearn", task, algorithm=algorithm, hyperparameters=params)
    )
    if task == "classification":
        assert version.test_metrics["roc_auc"] > 0.7
    else:
        assert version.test_metrics["r2"] > 0.3
    assert version.algorithm == algorithm


def test_lineage_is_recorded(store: FeatureStore) -> None:
    version = store.train(
        spec(
            "lineage_model",
            "lightgbm",
            "classification",
            training_data={
                "entity_df_source": "churn_labels",
                "label_column": "churned",
                "start_date": "2025-03-01",
                "end_date": "2025-12-01",
            },
            description="for lineage",
        )
    )
    lin = version.lineage
    assert lin["feature_service"] == {
        "name": "churn_prediction_v1",
        "version": store.registry.get_record("feature_service", "churn_prediction_v1").version,
    }
    views = {
        "customer_behavior",
        "customer_demographics",
        "customer_contract",
        "customer_order_activity",
    }
    assert set(lin["feature_views"]) == views | {"customer_derived_features"}
    for view in views:
        assert lin["feature_views"][view] == store.registry.get_record("feature_view", view).version
    on_demand = store.registry.get_record("on_demand_feature_view", "customer_derived_features")
    assert lin["feature_views"]["customer_derived_features"] == on_demand.version
    refs = [f["ref"] for f in lin["features"]]
    assert "customer_behavior:tenure_months" in refs and len(refs) == 22
    assert lin["label_source"] == "churn_labels" and lin["label_column"] == "churned"
    rng = lin["time_range"]
    assert rng["start_date"].startswith("2025-03-01") and rng["end_date"].startswith("2025-12-01")
    assert rng["min_timestamp"] >= "2025-03-01" and rng["max_timestamp"] < "2025-12-01"
    labels = _labels(store)
    ts = labels["event_timestamp"]
    lo = pa.scalar(rng["start_date"]).cast(ts.type)
    hi = pa.scalar(rng["end_date"]).cast(ts.type)
    window = labels.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))
    counts = lin["row_counts"]
    assert counts["total"] == window.num_rows == counts["train"] + counts["test"]
    dist = lin["label_distribution"]["total"]
    assert dist == {
        "0": int(pc.sum(pc.equal(window["churned"], 0)).as_py()),
        "1": int(pc.sum(pc.equal(window["churned"], 1)).as_py()),
    }
    assert lin["hyperparameters"]["requested"] == FAST["lightgbm"]
    assert lin["hyperparameters"]["effective"]["num_leaves"] == 15
    assert {"python", "quiver", "lightgbm", "numpy", "pyarrow"} <= set(lin["library_versions"])
    assert lin["metrics"]["test"] == version.test_metrics
    assert version.description == "for lineage"
    assert version.spec["name"] == "lineage_model"
    files = sorted(p.name for p in (store.config.model_path / version.artifact_dir).iterdir())
    assert files == ["encoding.json", "metadata.json", "model.txt"]
    assert set(version.checksums) == set(files)


def test_time_split_puts_no_test_row_before_a_training_row(store: FeatureStore) -> None:
    version = store.train(spec("time_split", "lightgbm", "classification", test_size=0.3))
    rng = version.lineage["time_range"]
    assert rng["train_max_timestamp"] < rng["test_min_timestamp"]
    counts = version.lineage["row_counts"]
    assert counts["test"] >= math.ceil(counts["total"] * 0.3)
    # Every label row later than the cut-off is in the test split, every earlier one in train.
    labels = _labels(store)
    cutoff = pa.scalar(rng["test_min_timestamp"]).cast(labels["event_timestamp"].type)
    assert counts["test"] == int(
        pc.sum(pc.greater_equal(labels["event_timestamp"], cutoff)).as_py()
    )


def test_random_split_and_default_features(store: FeatureStore) -> None:
    body = spec("random_split", "xgboost", "classification", split="random")
    del body["features"]  # default: every view keyed on the label table's entities
    version = store.train(body)
    assert version.lineage["split"] == "random"
    assert version.lineage["feature_service"] is None
    assert set(version.lineage["feature_views"]) == {
        "customer_behavior",
        "customer_demographics",
        "customer_contract",
        "customer_order_activity",
    }
    train_dist = version.lineage["label_distribution"]["train"]
    test_dist = version.lineage["label_distribution"]["test"]
    # Stratified: the churn rate is about the same on both sides.
    rate = lambda d: d["1"] / (d["0"] + d["1"])  # noqa: E731
    assert abs(rate(train_dist) - rate(test_dist)) < 0.02


def test_feature_references_and_full_names(store: FeatureStore) -> None:
    version = store.train(
        spec(
            "refs_model",
            "lightgbm",
            "classification",
            features=["customer_behavior:tenure_months", "customer_contract:contract_type"],
            full_feature_names=True,
        )
    )
    assert version.feature_refs == [
        "customer_behavior:tenure_months",
        "customer_contract:contract_type",
    ]
    assert list(version.feature_importance) and set(version.feature_importance) == {
        "customer_behavior__tenure_months",
        "customer_contract__contract_type",
    }


def test_versions_accumulate_and_promote(store: FeatureStore) -> None:
    first = store.train(spec("promo", "lightgbm", "classification"))
    second = store.train(spec("promo", "lightgbm", "classification"))
    assert (first.version, second.version) == (1, 2)
    store.promote("promo", 1, "production")
    assert store.get_model("promo").version == 1
    store.promote("promo", 2, "production")
    assert store.get_model("promo").version == 2
    assert store.get_model("promo", version=1).stage == "archived"
    names = [m.name for m in store.list_models()]
    assert "promo" in names


# -- bad specs ------------------------------------------------------------------------------


def _no_new_versions(store: FeatureStore, name: str) -> None:
    assert name not in [m.name for m in store.list_models()]
    assert not (store.config.model_path / name).exists() or not any(
        p for p in (store.config.model_path / name).iterdir() if not p.name.startswith(".")
    )


def test_unknown_label_column(store: FeatureStore) -> None:
    body = spec("bad_label", "lightgbm", "classification")
    body["training_data"]["label_column"] = "churnd"
    with pytest.raises(InvalidError, match=r"label column 'churnd'.*did you mean 'churned'"):
        store.train(body)
    _no_new_versions(store, "bad_label")


def test_single_class_label(store: FeatureStore, tmp_path: Path) -> None:
    labels = _labels(store)
    one_class = labels.filter(pc.equal(labels["churned"], 0))
    path = tmp_path / "one_class.parquet"
    pq.write_table(one_class, path)
    body = spec("one_class", "lightgbm", "classification")
    body["training_data"]["entity_df_source"] = str(path)
    with pytest.raises(InvalidError, match=r"single class"):
        store.train(body)
    _no_new_versions(store, "one_class")


def test_too_few_rows(store: FeatureStore, tmp_path: Path) -> None:
    path = tmp_path / "few.parquet"
    pq.write_table(_labels(store).slice(0, 5), path)
    body = spec("few", "lightgbm", "classification")
    body["training_data"]["entity_df_source"] = str(path)
    with pytest.raises(InvalidError, match=r"only 5 labelled rows"):
        store.train(body)
    body["training_data"]["entity_df_source"] = "churn_labels"
    body["training_data"]["start_date"] = "2030-01-01"
    with pytest.raises(InvalidError, match=r"only 0 labelled rows.*between 2030"):
        store.train(body)
    _no_new_versions(store, "few")


def test_unknown_hyperparameter(store: FeatureStore) -> None:
    body = spec("bad_param", "xgboost", "classification", hyperparameters={"max_dept": 3})
    with pytest.raises(InvalidError, match=r"unknown hyperparameter 'max_dept'.*max_depth"):
        store.train(body)
    _no_new_versions(store, "bad_param")


def test_unknown_sources_and_features(store: FeatureStore) -> None:
    body = spec("bad_source", "lightgbm", "classification")
    body["training_data"]["entity_df_source"] = "churn_lables"
    with pytest.raises(NotFoundError, match=r"churn_lables.*did you mean 'churn_labels'"):
        store.train(body)
    body = spec("bad_feature", "lightgbm", "classification", features=["customer_behavior:nope"])
    with pytest.raises(NotFoundError, match=r"no feature 'nope'"):
        store.train(body)
    body = spec("bad_service", "lightgbm", "classification", features="no_such_service")
    with pytest.raises(NotFoundError, match=r"no_such_service"):
        store.train(body)


def test_regression_needs_a_numeric_label(store: FeatureStore, tmp_path: Path) -> None:
    labels = _labels(store)
    text = labels.set_column(
        labels.schema.get_field_index("churned"), "churned", pc.cast(labels["churned"], pa.string())
    )
    path = tmp_path / "text.parquet"
    pq.write_table(text, path)
    body = spec("text_reg", "lightgbm", "regression")
    body["training_data"] = {"entity_df_source": str(path), "label_column": "churned"}
    with pytest.raises(InvalidError, match=r"must be numeric"):
        store.train(body)
    # ... while string classes are fine for a classifier.
    body = spec("text_cls", "lightgbm", "classification")
    body["training_data"] = {"entity_df_source": str(path), "label_column": "churned"}
    version = store.train(body)
    assert version.lineage["label_distribution"]["total"].keys() == {"0", "1"}


def test_labels_from_iceberg_tables(store: FeatureStore) -> None:
    from quiver.definitions import IcebergSource
    from quiver.offline.sources import iceberg_catalog

    catalog = iceberg_catalog(store.config)
    catalog.create_namespace_if_not_exists("labels")
    labels = _labels(store)
    if not catalog.table_exists("labels.churn"):
        catalog.create_table("labels.churn", schema=labels.schema).append(labels)
    body = spec("iceberg_labels", "lightgbm", "classification")
    body["training_data"]["entity_df_source"] = "iceberg:labels.churn"
    version = store.train(body)
    assert version.lineage["row_counts"]["total"] == labels.num_rows
    store.apply([IcebergSource(name="churn_labels_ice", table="labels.churn")], prune=False)
    body["training_data"]["entity_df_source"] = "churn_labels_ice"
    again = store.train(body)
    assert again.lineage["label_source"] == "churn_labels_ice"
    assert again.test_metrics == version.test_metrics
