"""The training spec: Python, dict, YAML and JSON forms, and clear errors for bad specs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quiver.errors import InvalidError, NotFoundError
from quiver.ml.spec import TrainingSpec, load_spec

BASE = {
    "name": "churn_model",
    "framework": "lightgbm",
    "model_type": "classification",
    "training_data": {
        "entity_df_source": "churn_labels",
        "label_column": "churned",
        "event_timestamp_column": "event_timestamp",
        "start_date": "2025-01-01",
        "end_date": "2026-01-01T00:00:00Z",
    },
    "hyperparameters": {"params": {"n_estimators": 50}},
    "test_size": 0.25,
    "description": "churn",
}


def test_dict_parses_with_defaults() -> None:
    spec = TrainingSpec.parse(BASE)
    assert spec.split == "time"
    assert spec.algorithm is None
    assert spec.training_data.start_date == datetime(2025, 1, 1, tzinfo=UTC)
    assert spec.training_data.end_date == datetime(2026, 1, 1, tzinfo=UTC)
    assert spec.hyperparameters.params == {"n_estimators": 50}
    assert spec.service_name is None and spec.feature_refs is None


def test_sklearn_defaults_to_random_forest_and_accepts_aliases() -> None:
    spec = TrainingSpec.parse({**BASE, "framework": "sklearn"})
    assert spec.algorithm == "random_forest"
    spec = TrainingSpec.parse({**BASE, "framework": "sklearn", "algorithm": "Gradient-Boosting"})
    assert spec.algorithm == "gradient_boosting"
    spec = TrainingSpec.parse({**BASE, "framework": "sklearn", "algorithm": "logistic"})
    assert spec.algorithm == "logistic_regression"


def test_features_as_service_or_references() -> None:
    spec = TrainingSpec.parse({**BASE, "features": "churn_prediction_v1"})
    assert spec.service_name == "churn_prediction_v1"
    spec = TrainingSpec.parse(
        {**BASE, "features": ["customer_behavior:orders", "customer_contract"]}
    )
    assert spec.feature_refs == ["customer_behavior:orders", "customer_contract:*"]
    spec = TrainingSpec.parse({**BASE, "feature_service": "svc"})
    assert spec.service_name == "svc"


def test_params_shorthand() -> None:
    spec = TrainingSpec.parse({**BASE, "hyperparameters": {"max_depth": 3}})
    assert spec.hyperparameters.params == {"max_depth": 3}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"framework": "torch"}, "framework"),
        ({"model_type": "ranking"}, "model_type"),
        ({"test_size": 1.0}, "test_size"),
        ({"test_size": 0}, "test_size"),
        ({"name": "bad name"}, "plain identifier"),
        ({"algorithm": "random_forest"}, "only used with framework 'sklearn'"),
        ({"split": "sideways"}, "split"),
        ({"unknown_key": 1}, "unknown_key"),
        ({"features": ["bad ref!"]}, "feature reference"),
        ({"features": "svc", "feature_service": "svc"}, "not both"),
    ],
)
def test_bad_specs_are_clear_errors(change: dict, needle: str) -> None:
    with pytest.raises(InvalidError, match=needle):
        TrainingSpec.parse({**BASE, **change})


def test_bad_sklearn_algorithm_for_task() -> None:
    with pytest.raises(InvalidError, match=r"logistic_regression is for classification"):
        TrainingSpec.parse(
            {**BASE, "framework": "sklearn", "model_type": "regression", "algorithm": "logistic"}
        )
    with pytest.raises(InvalidError, match=r"unknown algorithm"):
        TrainingSpec.parse({**BASE, "framework": "sklearn", "algorithm": "svm"})


def test_bad_training_data() -> None:
    with pytest.raises(InvalidError, match=r"must be before"):
        TrainingSpec.parse(
            {**BASE, "training_data": {**BASE["training_data"], "start_date": "2027-01-01"}}
        )
    with pytest.raises(InvalidError, match=r"not an ISO date"):
        TrainingSpec.parse({**BASE, "training_data": {**BASE["training_data"], "end_date": "soon"}})
    with pytest.raises(InvalidError, match=r"label_column"):
        TrainingSpec.parse({**BASE, "training_data": {"entity_df_source": "x"}})
    with pytest.raises(InvalidError, match=r"extra"):
        TrainingSpec.parse({**BASE, "training_data": {**BASE["training_data"], "extra": 1}})


def test_yaml_and_json_files(tmp_path: Path) -> None:
    import yaml

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(BASE))
    (tmp_path / "spec.json").write_text(json.dumps(BASE))
    from_yaml = TrainingSpec.parse(tmp_path / "spec.yaml")
    from_json = load_spec(str(tmp_path / "spec.json"))
    assert from_yaml == from_json == TrainingSpec.parse(BASE)
    assert TrainingSpec.parse(from_yaml.to_dict()) == from_yaml


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"does not exist"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(InvalidError, match=r"not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(InvalidError, match=r"mapping"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "typo.yaml").write_text("name: m\nframewrk: sklearn\n")
    with pytest.raises(InvalidError, match=r"framewrk"):
        load_spec(tmp_path / "typo.yaml")


def test_not_a_spec() -> None:
    with pytest.raises(InvalidError, match=r"must be a TrainingSpec"):
        TrainingSpec.parse(42)
