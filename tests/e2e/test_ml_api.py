"""The model and prediction API over real HTTP (``quiver serve`` in a subprocess).

Uses a fresh demo repo (``new_demo_server``): training writes models into it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

TRAIN_BODY: dict[str, Any] = {
    "name": "churn_api",
    "framework": "lightgbm",
    "model_type": "classification",
    "training_data": {
        "entity_df_source": "churn_labels",
        "label_column": "churned",
        "event_timestamp_column": "event_timestamp",
        "start_date": "2025-01-01",
        "end_date": "2026-01-01",
    },
    "hyperparameters": {"params": {"n_estimators": 30, "n_jobs": 1}},
    "test_size": 0.2,
    "description": "trained over HTTP",
}
WHEN = "2025-12-15T00:00:00Z"

pytestmark = pytest.mark.slow  # a fresh demo repo and server: ~20 s of set-up


@pytest.fixture(scope="module")
def api(new_demo_server: Any) -> Iterator[tuple[httpx.Client, Path]]:
    server = new_demo_server()
    with server.client() as client:
        yield client, server.repo


@pytest.fixture(scope="module")
def trained(api: tuple[httpx.Client, Path]) -> dict[str, Any]:
    client, _ = api
    response = client.post("/feast/models", json=TRAIN_BODY)
    assert response.status_code == 201, response.text
    return response.json()


def test_train_answers_the_platform_shape(trained: dict[str, Any]) -> None:
    assert set(trained) >= {
        "model_id",
        "model_name",
        "version",
        "framework",
        "model_type",
        "training_metrics",
        "test_metrics",
        "feature_importance",
        "created_at",
        "training_duration_seconds",
        "status",
    }
    assert trained["model_id"] == "churn_api:1" and trained["status"] == "completed"
    assert trained["version"] == "1"  # a string, as the platform documents it
    assert {"accuracy", "precision", "recall", "f1_score", "roc_auc", "log_loss"} <= set(
        trained["test_metrics"]
    )
    assert len(trained["feature_importance"]) == 20  # every view keyed on customer_id


def test_model_registry_routes(api: tuple[httpx.Client, Path], trained: dict[str, Any]) -> None:
    client, _ = api
    listed = client.get("/feast/models").json()  # a bare array
    assert [m["model_id"] for m in listed if m["name"] == "churn_api"] == ["churn_api:1"]
    models = client.get("/api/v1/models").json()
    assert [m["name"] for m in models["models"]] == ["churn_api"]
    versions = client.get("/api/v1/models/churn_api/versions").json()
    assert versions["count"] == 1
    lineage = versions["versions"][0]["lineage"]
    assert lineage["label_column"] == "churned"
    assert set(lineage["feature_views"]) == {
        "customer_behavior",
        "customer_demographics",
        "customer_contract",
        "customer_order_activity",
    }
    promoted = client.post(
        "/api/v1/models/churn_api/versions/1/stage", json={"stage": "production"}
    )
    assert promoted.status_code == 200 and promoted.json()["stage"] == "production"
    one = client.get("/api/v1/models/churn_api").json()
    assert one["production_version"] == 1
    missing = client.get("/api/v1/models/churn_apx")
    assert missing.status_code == 404
    assert "did you mean 'churn_api'" in missing.json()["error"]["message"]
    bad_stage = client.post("/api/v1/models/churn_api/versions/1/stage", json={"stage": "gold"})
    assert bad_stage.status_code == 422


def test_batch_predictions(api: tuple[httpx.Client, Path], trained: dict[str, Any]) -> None:
    client, repo = api
    labels = pq.read_table(repo / "data" / "churn_labels.parquet")
    body = {
        "model_id": "churn_api:1",
        "input_table": "churn_labels",
        "entity_columns": ["customer_id"],
        "feature_views": [
            "customer_behavior",
            "customer_demographics",
            "customer_contract",
            "customer_order_activity",
        ],
        "output_table": "churn_scores",
        "output_schema": "predictions",
        "prediction_column_name": "churn_probability",
        "event_timestamp_column": "event_timestamp",
    }
    response = client.post("/feast/predictions/batch", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["mode"] == "batch" and answer["status"] == "completed"
    assert answer["num_predictions"] == labels.num_rows
    assert answer["output_table"] == "iceberg.predictions.churn_scores"
    assert answer["input_table"] == "churn_labels"  # a registered data source
    assert answer["model_version"] == "1"
    assert set(answer) >= {
        "prediction_id",
        "model_id",
        "model_version",
        "input_table",
        "created_at",
        "execution_time_seconds",
    }
    from quiver.config import load_config
    from quiver.offline.sources import iceberg_catalog

    table = (
        iceberg_catalog(load_config(repo)).load_table("predictions.churn_scores").scan().to_arrow()
    )
    assert table.num_rows == labels.num_rows
    assert {
        "customer_id",
        "event_timestamp",
        "churn_probability",
        "churn_probability_class",
    } <= set(table.column_names)
    job = client.get(f"/api/v1/predictions/jobs/{answer['prediction_id']}").json()
    assert job["rows"] == labels.num_rows and job["model_id"] == "churn_api:1"

    bad_views = dict(body, feature_views=["customer_behavior", "nope"])
    response = client.post("/feast/predictions/batch", json=bad_views)
    assert response.status_code == 422
    assert "not trained on feature view" in response.json()["error"]["message"]
    unknown = client.post("/feast/predictions/batch", json=dict(body, model_id="nope:1"))
    assert unknown.status_code == 404


def test_native_batch_with_inline_rows(
    api: tuple[httpx.Client, Path], trained: dict[str, Any]
) -> None:
    client, repo = api
    # in production whichever tests ran before (under xdist this module's tests may be split)
    promoted = client.post(
        "/api/v1/models/churn_api/versions/1/stage", json={"stage": "production"}
    )
    assert promoted.status_code == 200, promoted.text
    response = client.post(
        "/api/v1/predictions/batch",
        json={
            "model": "churn_api",
            "stage": "production",
            "entity_rows": {
                "columns": ["customer_id", "event_timestamp"],
                "data": [[1, WHEN], [2, WHEN], [3, WHEN]],
            },
            "output_path": "outputs/inline.parquet",
        },
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["rows"] == 3
    table = pq.read_table(job["output"])
    assert Path(job["output"]).resolve() == (repo / "outputs" / "inline.parquet").resolve()
    assert table.column_names[:3] == ["customer_id", "event_timestamp", "prediction"]
    jobs = client.get("/api/v1/predictions/jobs", params={"model": "churn_api"}).json()
    assert job["prediction_id"] in [j["prediction_id"] for j in jobs["jobs"]]
    escape = client.post(
        "/api/v1/predictions/batch",
        json={"model": "churn_api", "input_source": "churn_labels", "output_path": "../x.parquet"},
    )
    assert escape.status_code == 403


def test_online_equals_batch_over_http(
    api: tuple[httpx.Client, Path], trained: dict[str, Any]
) -> None:
    client, repo = api
    response = client.post(
        "/api/v1/predictions/batch",
        json={
            "model": "churn_api:1",
            "entity_rows": {"columns": ["customer_id", "event_timestamp"], "data": [[7, WHEN]]},
            "output_path": "outputs/one.parquet",
        },
    )
    batch = pq.read_table(response.json()["output"]).to_pylist()[0]
    from quiver.store import FeatureStore

    with FeatureStore(repo_path=repo) as store:
        import pyarrow as pa

        entity = pa.table(
            {
                "customer_id": pa.array([7], pa.int64()),
                "event_timestamp": pa.array(
                    [datetime(2025, 12, 15, tzinfo=UTC)], pa.timestamp("us", tz="UTC")
                ),
            }
        )
        row = store.get_historical_features(
            entity, feature_service="churn_prediction_v1"
        ).to_arrow()
    values = {k: row[k][0].as_py() for k in trained["feature_importance"]}  # the model's features
    online = client.post(
        "/feast/predictions/online", json={"model_id": "churn_api:1", "features": values}
    )
    assert online.status_code == 200, online.text
    answer = online.json()
    assert answer["prediction"] == batch["prediction_class"]
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0)
    assert batch["prediction"] in [
        pytest.approx(p, rel=1e-9) for p in answer["probabilities"].values()
    ]
    assert answer["mode"] == "online" and answer["status"] == "completed"
    assert "features_used" not in answer
    native = client.post(
        "/api/v1/predictions/online", json={"model": "churn_api:1", "features": values}
    ).json()
    assert native["predictions"][0]["prediction"] == pytest.approx(batch["prediction"], rel=1e-9)


def test_online_errors_and_defaults(
    api: tuple[httpx.Client, Path], trained: dict[str, Any]
) -> None:
    client, _ = api
    # The demo repo was materialized up to 2026-06: behaviour values (30-day TTL) have expired.
    expired = client.post(
        "/api/v1/predictions/online", json={"model": "churn_api", "entities": {"customer_id": [1]}}
    )
    assert expired.status_code == 422
    error = expired.json()["error"]
    assert error["type"] == "missing_features"
    assert "tenure_months (expired)" in error["message"]
    filled = client.post(
        "/api/v1/predictions/online",
        json={"model": "churn_api", "entities": {"customer_id": [1]}, "use_defaults": True},
    )
    assert filled.status_code == 200, filled.text
    row = filled.json()["predictions"][0]
    assert "tenure_months" in row["used_defaults"] and "age" not in row["used_defaults"]
    partial = client.post(
        "/feast/predictions/online",
        json={"model_id": "churn_api:1", "features": {"tenure_months": 3}},
    )
    assert partial.status_code == 422 and "age (not_found)" in partial.json()["error"]["message"]
    unknown = client.post(
        "/feast/predictions/online", json={"model_id": "churn_api:1", "features": {"tenure": 3}}
    )
    assert unknown.status_code == 422
    assert "not trained on feature" in unknown.json()["error"]["message"]
    no_model = client.post(
        "/feast/predictions/online", json={"model_id": "ghost:1", "features": {"tenure_months": 3}}
    )
    assert no_model.status_code == 404


def test_bad_training_requests(api: tuple[httpx.Client, Path]) -> None:
    client, _ = api
    body = dict(TRAIN_BODY, name="bad", hyperparameters={"params": {"n_estimator": 3}})
    response = client.post("/feast/models", json=body)
    assert response.status_code == 422
    assert "unknown hyperparameter 'n_estimator'" in response.json()["error"]["message"]
    body = dict(
        TRAIN_BODY, name="bad", training_data=dict(TRAIN_BODY["training_data"], label_column="x")
    )
    response = client.post("/api/v1/models", json=body)
    assert response.status_code == 422 and "label column 'x'" in response.json()["error"]["message"]
    response = client.post("/feast/models", json=dict(TRAIN_BODY, framework="torch"))
    assert response.status_code == 422
    assert client.get("/api/v1/models/bad/versions").status_code == 404


@pytest.mark.parametrize("version", [2**31, 2**63, 2**70, 0, -5])
def test_versions_out_of_range(
    api: tuple[httpx.Client, Path], trained: dict[str, Any], version: int
) -> None:
    client, _ = api
    before = client.get("/api/v1/models/churn_api").json()
    for stage in ("production", "archived"):
        response = client.post(
            f"/api/v1/models/churn_api/versions/{version}/stage", json={"stage": stage}
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["loc"] == ["path", "version"]
    assert client.get(f"/api/v1/models/churn_api/versions/{version}").status_code == 422
    for route, body in (
        ("/api/v1/predictions/online", {"features": {"tenure_months": 1}}),
        ("/api/v1/predictions/batch", {"input_source": "churn_labels"}),
    ):
        response = client.post(route, json={**body, "model": "churn_api", "version": version})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"][0]["loc"] == ["body", "version"]
    if version > 0:  # in a model id the version is text: a version that does not exist
        for route, body in (
            ("/feast/predictions/online", {"features": {"tenure_months": 1}}),
            ("/feast/predictions/batch", {"input_table": "churn_labels", "output_table": "o"}),
        ):
            response = client.post(route, json={**body, "model_id": f"churn_api:{version}"})
            assert response.status_code == 404, response.text
            assert f"has no version {version}" in response.json()["error"]["message"]
        jobs = client.get("/api/v1/predictions/jobs", params={"model": f"churn_api:{version}"})
        assert jobs.status_code == 200 and jobs.json()["count"] == 0
    assert client.get("/api/v1/models/churn_api").json() == before  # nothing changed


def test_the_largest_version_is_not_found(
    api: tuple[httpx.Client, Path], trained: dict[str, Any]
) -> None:
    client, _ = api
    response = client.post(
        f"/api/v1/models/churn_api/versions/{2**31 - 1}/stage", json={"stage": "staging"}
    )
    assert response.status_code == 404, response.text
    assert "versions are 1" in response.json()["error"]["message"]


def test_training_settings_out_of_range(api: tuple[httpx.Client, Path]) -> None:
    client, _ = api
    dates = dict(TRAIN_BODY["training_data"], start_date="0001-01-01T00:00:00+01:00")
    for body in (
        dict(TRAIN_BODY, name="bad_range", split="random", random_state=2**32),
        dict(TRAIN_BODY, name="bad_range", split="random", random_state=-1),
        dict(TRAIN_BODY, name="bad_range", training_data=dates),
    ):
        response = client.post("/api/v1/models", json=body)
        assert response.status_code == 422, response.text
    for body in (
        dict(TRAIN_BODY, name="bad_range", test_size=1.5),
        dict(TRAIN_BODY, name="bad_range", training_data=dates),
    ):
        response = client.post("/feast/models", json=body)
        assert response.status_code == 422, response.text
    assert client.get("/api/v1/models/bad_range/versions").status_code == 404
