"""Every documented ``/feast`` platform example, posted byte for byte to ``quiver serve``.

The bodies and answers are in ``tests/fixtures/feast_platform`` (see its README for where each
comes from). The tables the examples name (``customer_features``, ``customers_to_score``, ... in
the ``gold`` schema) are Iceberg tables of the repo's catalog, named as the platform names them:
a bare name resolves to ``iceberg.gold.<name>``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from tests.e2e.conftest import Server, start_server

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feast_platform"
TS = pa.timestamp("us", tz="UTC")
JSON_HEADERS = {"Content-Type": "application/json"}
# Keys the answers have beyond the documented ones (Quiver extensions, documented in
# docs/feast-migration.md).
STATUS_EXTRA = {"status"}
MODEL_LIST_EXTRA = {"name", "stage"}
# A feature's description: in the test summary's listing, not in FEAST_DOCUMENTATION.md's; it
# is there when the feature has one.
OPTIONAL = {"description"}
# Maps whose keys are the example's own (feature names, classes): only value types compare.
MAPS = {"feature_importance", "probabilities"}
# The platform types a prediction as a float, an int or a string: the class label as it is.
SCALARS = {"prediction"}


def body(name: str) -> bytes:
    """A documented request body, as the bytes the documentation sends (a curl ``-d '...'``
    body ends at its closing brace: the file's final newline is not sent)."""
    return (FIXTURES / f"{name}.request.json").read_bytes().removesuffix(b"\n")


def documented(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.response.json").read_text())


def post(client: httpx.Client, url: str, content: bytes) -> httpx.Response:
    return client.post(url, content=content, headers=JSON_HEADERS)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return type(value).__name__


def assert_shape(
    doc: Any, ours: Any, extra: Collection[str] = frozenset(), path: str = "$"
) -> None:
    """``ours`` has the documented keys, array shapes and JSON types (values may differ)."""
    if path.rsplit(".", 1)[-1] in SCALARS:
        assert _kind(ours) in {"bool", "number", "string"}, f"{path}: {ours!r}"
        return
    assert _kind(ours) == _kind(doc), f"{path}: {ours!r} is not a {_kind(doc)} like {doc!r}"
    if isinstance(doc, list) and doc:
        assert ours, f"{path}: an empty array where the documentation shows items"
        for i, item in enumerate(ours):
            assert_shape(doc[0], item, extra, f"{path}[{i}]")
    elif isinstance(doc, dict) and path.rsplit(".", 1)[-1] in MAPS:
        for key, value in ours.items():
            assert _kind(value) == _kind(next(iter(doc.values()))), f"{path}.{key}: {value!r}"
    elif isinstance(doc, dict):
        missing = set(doc) - set(ours) - OPTIONAL
        assert not missing, f"{path}: no {sorted(missing)} in {sorted(ours)}"
        unexpected = set(ours) - set(doc) - set(extra) - OPTIONAL
        if path == "$" or path.endswith("]"):  # objects, not maps of names
            assert not unexpected, f"{path}: undocumented keys {sorted(unexpected)}"
        for key, value in doc.items():
            if key in ours:
                assert_shape(value, ours[key], set(), f"{path}.{key}")


def _write_iceberg(repo: Path, tables: dict[str, pa.Table]) -> None:
    from pyiceberg.exceptions import NamespaceAlreadyExistsError

    from quiver.config import load_config
    from quiver.offline.sources import iceberg_catalog

    catalog = iceberg_catalog(load_config(repo), "default")
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace("gold")
    for name, data in tables.items():
        catalog.create_table(f"gold.{name}", schema=data.schema).append(data)


def _make_repo(directory: Path, tables: dict[str, pa.Table]) -> Path:
    directory.mkdir(parents=True)
    (directory / "quiver.yaml").write_text("project: platform_docs\n")
    _write_iceberg(directory, tables)
    return directory


def _customers(n: int = 60) -> dict[str, list[Any]]:
    """Three snapshots a customer in 2024; churn follows days since the last order."""
    start = datetime(2024, 2, 1, tzinfo=UTC)
    cols: dict[str, list[Any]] = {
        k: []
        for k in (
            "customer_id",
            "total_orders",
            "total_spent",
            "avg_order_value",
            "days_since_last_order",
            "preferred_category",
            "created_at",
            "churned",
            "lifetime_value",
        )
    }
    for i in range(n):
        for snap in range(3):
            orders = 1 + (i * 7 + snap * 3) % 40
            spent = orders * (20.0 + (i % 9) * 5.0)
            idle = (i * 13 + snap * 29) % 180
            cols["customer_id"].append(f"C{i:04d}")
            cols["total_orders"].append(orders)
            cols["total_spent"].append(spent)
            cols["avg_order_value"].append(spent / orders)
            cols["days_since_last_order"].append(idle)
            cols["preferred_category"].append(["books", "garden", "toys"][i % 3])
            cols["created_at"].append(start + timedelta(days=90 * snap, hours=i))
            cols["churned"].append(idle > 90)
            cols["lifetime_value"].append(spent * 1.5 - idle)
    return cols


def _tables_a() -> dict[str, pa.Table]:
    cols = _customers()
    int_cols = {"total_orders", "days_since_last_order"}
    fields = {
        k: pa.array(v, TS if k == "created_at" else pa.int64() if k in int_cols else None)
        for k, v in cols.items()
    }
    features = pa.table(fields)
    aggregates = features.drop_columns(["preferred_category", "lifetime_value"])
    aggregates = aggregates.append_column("updated_at", aggregates["created_at"])
    ids = sorted(set(cols["customer_id"]))
    to_score = pa.table(
        {
            "customer_id": ids,
            "created_at": pa.array([datetime(2025, 1, 1, tzinfo=UTC)] * len(ids), TS),
        }
    )
    runs = 80
    production = pa.table(
        {
            "production_run_id": pa.array(range(1, runs + 1), pa.int64()),
            "temperature": [150.0 + (i * 17) % 60 for i in range(runs)],
            "pressure": [1.0 + (i * 7) % 10 / 10 for i in range(runs)],
            "speed": [10.0 + (i * 3) % 20 for i in range(runs)],
            "run_start_time": pa.array(
                [datetime(2024, 3, 1, tzinfo=UTC) + timedelta(days=i) for i in range(runs)], TS
            ),
            "is_defective": [150.0 + (i * 17) % 60 > 185.0 for i in range(runs)],
        }
    )
    return {
        "customer_features": features,
        "customer_aggregates": aggregates,
        "customers_to_score": to_score,
        "production_runs": production,
    }


def _tables_b() -> dict[str, pa.Table]:
    cols = _customers()
    aggregates = pa.table(
        {
            "customer_id": cols["customer_id"],
            "total_orders": pa.array(cols["total_orders"], pa.int64()),
            "avg_order_value": cols["avg_order_value"],
            "updated_at": pa.array(cols["created_at"], TS),
        }
    )
    customers = pa.table(
        {
            "customer_id": cols["customer_id"],
            "snapshot_date": pa.array([t + timedelta(hours=1) for t in cols["created_at"]], TS),
            "churned": cols["churned"],
        }
    )
    return {"customer_aggregates": aggregates, "customers": customers}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Server]]:
    started: dict[str, Server] = {}
    makers = {"a": _tables_a, "b": _tables_b}

    def get(which: str) -> Server:
        if which not in started:
            repo = _make_repo(tmp_path_factory.mktemp("platform_docs") / "repo", makers[which]())
            started[which] = start_server(repo)
        return started[which]

    try:
        yield get
    finally:
        for srv in started.values():
            srv.stop()


def test_feast_documentation_walkthrough(servers: Callable[[str], Server]) -> None:
    """FEAST_DOCUMENTATION.md, section by section, then its two complete examples."""
    server = servers("a")
    with _client(server) as client:
        # Create Feature View
        created = post(client, "/feast/features", body("fd_create_feature_view"))
        assert created.status_code == 201, created.text
        answer = created.json()
        assert_shape(
            documented("fd_create_feature_view"),
            answer,
            extra={"source_table", "online_enabled", "message"},
        )
        assert_shape(documented("ts_create_feature_view"), answer)
        assert answer["features"] == ["total_orders", "total_spent", "avg_order_value"]
        assert answer["source_table"] == "iceberg.gold.customer_features"
        assert answer["online_enabled"] is False
        spec = client.get("/api/v1/data-sources/customer_features_source").json()["spec"]
        assert (spec["type"], spec["catalog"], spec["table"]) == (
            "iceberg",
            "default",
            "gold.customer_features",
        )

        # Create Feature Service
        service = post(client, "/feast/features/service", body("fd_create_feature_service"))
        assert service.status_code == 201, service.text
        assert_shape(documented("fd_create_feature_service"), service.json())
        assert service.json() == {
            "name": "churn_prediction_features",
            "feature_views": ["customer_features"],
            "status": "created",
        }

        # List Feature Views: a bare array
        listing = client.get("/feast/features").json()
        assert_shape(documented("fd_list_feature_views"), listing)
        assert_shape(documented("ts_list_feature_views"), listing)
        assert [v["name"] for v in listing] == ["customer_features"]
        only = listing[0]
        assert only["features"][0] == {
            "name": "total_orders",
            "dtype": "int64",
            "description": "Total number of orders",
        }
        assert (only["online_enabled"], only["ttl_seconds"]) == (False, 86400)
        assert only["created_at"] == answer["created_at"]

        # Status
        status = client.get("/feast/status").json()
        assert_shape(
            documented("fd_status"),
            status,
            extra={*STATUS_EXTRA, "online_store_type", "feature_views", "entities"},
        )
        assert_shape(documented("ts_status"), status, extra={*STATUS_EXTRA, "num_feature_services"})
        assert status["num_feature_views"] == 1 and status["num_feature_services"] == 1
        assert status["feature_views"] == ["customer_features"]
        assert status["entities"] == ["customer_id"]

        # Train Classification Model
        trained = post(client, "/feast/models", body("fd_train_classification"))
        assert trained.status_code == 201, trained.text
        model = trained.json()
        assert_shape(documented("fd_train_classification"), model)
        assert model["model_name"] == "customer_churn_predictor"
        assert model["version"] == "1" and model["status"] == "completed"
        assert set(model["feature_importance"]) == {
            "total_orders",
            "total_spent",
            "avg_order_value",
        }

        # Train Regression Model
        regression = post(client, "/feast/models", body("fd_train_regression"))
        assert regression.status_code == 201, regression.text
        assert regression.json()["model_type"] == "regression"
        assert {"rmse", "mae", "r2"} & set(regression.json()["test_metrics"])

        # List Trained Models: `jq '.[] | select(.name=="your_model")'` works
        models = client.get("/feast/models").json()
        assert isinstance(models, list)
        doc_model = documented("fd_train_classification")
        doc_regression = doc_model | {
            "training_metrics": {"rmse": 1.0},
            "test_metrics": {"rmse": 1.0},
        }
        for m in models:
            expected = doc_model if m["model_type"] == "classification" else doc_regression
            assert_shape([expected], [m], extra=MODEL_LIST_EXTRA)
        picked = [m for m in models if m["name"] == "customer_churn_predictor"]
        assert [m["model_id"] for m in picked] == [model["model_id"]]

        # Make Predictions: the documented model id is the one the server gave
        batch_body = body("fd_batch_predictions").replace(
            b"churn_predictor_20251014_100500", model["model_id"].encode()
        )
        scored = post(client, "/feast/predictions/batch", batch_body)
        assert scored.status_code == 200, scored.text
        result = scored.json()
        assert_shape(documented("fd_batch_predictions"), result)
        assert result["input_table"] == "iceberg.gold.customers_to_score"
        assert result["output_table"] == "iceberg.gold.churn_predictions"
        assert result["model_version"] == "1"
        assert result["num_predictions"] == 60
        output = _iceberg_rows(server.repo, "gold.churn_predictions")
        assert output.num_rows == 60
        assert {"customer_id", "created_at", "churn_probability"} <= set(output.column_names)

        _example_1(client, server.repo)
        _example_2(client)

        # the test summary's view (over the same table as Example 1's)
        summary = post(client, "/feast/features", body("ts_create_feature_view"))
        assert summary.status_code == 201, summary.text
        assert_shape(documented("ts_create_feature_view"), summary.json())
        assert summary.json()["source_table"] == "iceberg.gold.customer_aggregates"
        listing = client.get("/feast/features").json()
        assert_shape(documented("ts_list_feature_views"), listing)
        mine = next(v for v in listing if v["name"] == "test_customer_features")
        assert mine["features"] == documented("ts_list_feature_views")[0]["features"]
        status = client.get("/feast/status").json()
        assert status["num_feature_views"] == 4 and status["num_feature_services"] == 2


def _client(server: Server) -> httpx.Client:
    # training 100-200 trees on a machine shared with other test runs can take a while
    return httpx.Client(base_url=server.url, timeout=600.0)


def _iceberg_rows(repo: Path, identifier: str) -> pa.Table:
    from quiver.config import load_config
    from quiver.offline.sources import iceberg_catalog

    return iceberg_catalog(load_config(repo)).load_table(identifier).scan().to_arrow()


def _example_1(client: httpx.Client, repo: Path) -> None:
    """ "Example 1: End-to-End Churn Prediction" (the bodies its Python script sends)."""
    view = post(client, "/feast/features", body("fd_example1_feature_view"))
    assert view.status_code == 201, view.text
    assert view.json()["source_table"] == "iceberg.gold.customer_aggregates"
    service = post(client, "/feast/features/service", body("fd_example1_feature_service"))
    assert service.status_code == 201, service.text
    trained = post(client, "/feast/models", body("fd_example1_train"))
    assert trained.status_code == 201, trained.text
    model = trained.json()
    assert isinstance(model["test_metrics"]["accuracy"], float)
    batch = body("fd_example1_batch").replace(b"MODEL_ID", model["model_id"].encode())
    scored = post(client, "/feast/predictions/batch", batch)
    assert scored.status_code == 200, scored.text
    assert scored.json()["output_table"] == "iceberg.gold.churn_predictions_latest"
    assert _iceberg_rows(repo, "gold.churn_predictions_latest").num_rows == 60


def _example_2(client: httpx.Client) -> None:
    """ "Example 2: Production Quality Prediction" (its curl sets no Content-Type; sent as JSON)."""
    view = post(client, "/feast/features", body("fd_example2_feature_view"))
    assert view.status_code == 201, view.text
    assert view.json()["source_table"] == "iceberg.gold.production_runs"
    listing = {v["name"]: v for v in client.get("/feast/features").json()}
    # the documented defaults: 86400 s, offline only
    assert listing["quality_features"]["ttl_seconds"] == 86400
    assert listing["quality_features"]["online_enabled"] is False
    trained = post(client, "/feast/models", body("fd_example2_train"))
    assert trained.status_code == 201, trained.text
    assert set(trained.json()["feature_importance"]) == {"temperature", "pressure", "speed"}


def test_readme_and_test_summary(servers: Callable[[str], Server]) -> None:
    """app/feast/README.md's register, train and online predict; the test summary's answers."""
    server = servers("b")
    with _client(server) as client:
        empty = client.get("/feast/models")
        assert empty.status_code == 200 and empty.content == b"[]"
        assert empty.json() == documented("ts_list_models")

        created = post(client, "/feast/features", body("rm_create_feature_view"))
        assert created.status_code == 201, created.text
        assert_shape(documented("ts_create_feature_view"), created.json())
        assert created.json()["source_table"] == "iceberg.gold.customer_aggregates"

        trained = post(client, "/feast/models", body("rm_train"))
        assert trained.status_code == 201, trained.text
        model_id = trained.json()["model_id"]

        request = body("rm_predict_online").replace(b"model-uuid", model_id.encode())
        predicted = post(client, "/feast/predictions/online", request)
        assert predicted.status_code == 200, predicted.text
        answer = predicted.json()
        assert_shape(documented("rm_predict_online"), answer)
        assert answer["model_id"] == model_id and answer["model_version"] == "1"
        assert answer["prediction"] in (0, 1, True, False)
        assert (
            set(answer["probabilities"]) == {"False", "True"} or len(answer["probabilities"]) == 2
        )

        with_values = json.loads(request) | {"include_feature_values": True}
        used = client.post("/feast/predictions/online", json=with_values).json()
        assert used["features_used"] == {"total_orders": 15, "avg_order_value": 83.37}
