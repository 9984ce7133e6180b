"""The ``/feast`` platform routes with the payloads the platform documents."""

from __future__ import annotations

import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

TS = pa.timestamp("us", tz="UTC")


def assert_error(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    return error


def _stores_table(n: int = 5) -> pa.Table:
    now = datetime.now(UTC).replace(microsecond=0)
    return pa.table(
        {
            "store_id": pa.array(range(1, n + 1), pa.int64()),
            "event_timestamp": pa.array([now - timedelta(hours=i) for i in range(n)], TS),
            "revenue": [100.0 * i for i in range(n)],
            "open": [i % 2 == 0 for i in range(n)],
            "city": [f"city{i}" for i in range(n)],
        }
    )


def _view_body(name: str, table_name: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "entities": ["store_id"],
        "features": [
            {"name": "revenue", "dtype": "Float64", "description": "daily revenue"},
            {"name": "open", "dtype": "Bool", "description": "open today"},
            {"name": "city", "dtype": "String", "description": ""},
        ],
        "source": {
            "table_name": table_name,
            "timestamp_field": "event_timestamp",
            "catalog": "hive_prod",
            "schema": "retail",
        },
        "ttl_seconds": 86400,
        "online": True,
        "description": "store sales",
    }
    body.update(overrides)
    return body


def test_status(client: httpx.Client) -> None:
    body = client.get("/feast/status").json()
    assert body["status"] == "healthy"
    assert body["registry_type"] == "sqlite"
    assert body["online_store_type"] == "sqlite"
    assert body["offline_store_type"] == "duckdb"
    assert body["num_feature_views"] == len(body["feature_views"]) >= 3
    assert body["num_entities"] == len(body["entities"]) >= 1
    assert "customer_behavior" in body["feature_views"]
    assert isinstance(body["num_feature_services"], int)


def test_register_parquet_view_then_serve_it(client: httpx.Client, server: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    table_name = f"stores_{suffix}"
    folder = server.repo / "data" / "retail" / table_name
    folder.mkdir(parents=True)
    pq.write_table(_stores_table(), folder / "part-0.parquet")
    name = f"store_sales_{suffix}"

    created = client.post("/feast/features", json=_view_body(name, table_name))
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {
        "name",
        "entities",
        "features",
        "source_table",
        "online_enabled",
        "status",
        "created_at",
        "message",
    }
    assert body["name"] == name
    assert body["entities"] == ["store_id"]
    assert body["status"] == "registered"
    assert body["features"] == ["revenue", "open", "city"]
    assert body["source_table"] == f"data/retail/{table_name}"
    assert body["online_enabled"] is True
    dtypes = client.get(f"/api/v1/feature-views/{name}").json()["spec"]["features"]
    assert [f["dtype"] for f in dtypes] == ["float64", "bool", "string"]
    assert datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))

    # the join key had no entity: one was created, typed from the table
    entity = client.get("/api/v1/entities/store_id").json()
    assert entity["spec"]["join_keys"] == ["store_id"]
    assert entity["spec"]["value_type"] == "int64"
    source = client.get(f"/api/v1/data-sources/{name}_source").json()["spec"]
    assert source["type"] == "file"
    assert source["path"] == f"data/retail/{table_name}"

    listing = client.get("/feast/features").json()
    assert isinstance(listing, list)
    mine = next(v for v in listing if v["name"] == name)
    assert mine["entities"] == ["store_id"]
    assert mine["features"][0] == {
        "name": "revenue",
        "dtype": "float64",
        "description": "daily revenue",
    }
    assert mine["features"][2] == {"name": "city", "dtype": "string"}  # no description
    assert mine["online_enabled"] is True
    assert mine["ttl_seconds"] == 86400
    assert mine["created_at"] == body["created_at"]
    demo = next(v for v in listing if v["name"] == "customer_behavior")
    assert demo["entities"] == ["customer_id"]
    assert demo["ttl_seconds"] == 30 * 86400

    # posting again is idempotent and keeps created_at
    again = client.post("/feast/features", json=_view_body(name, table_name))
    assert again.status_code == 201
    assert again.json()["created_at"] == body["created_at"]

    # a second view on an existing join key reuses its entity
    other = f"customer_extra_{suffix}"
    customers = pa.table(
        {
            "customer_id": pa.array([1, 2], pa.int64()),
            "event_timestamp": pa.array([datetime.now(UTC)] * 2, TS),
            "score": [0.5, 0.7],
        }
    )
    pq.write_table(customers, server.repo / "data" / f"{other}.parquet")
    reused = client.post(
        "/feast/features",
        json={
            "name": other,
            "entities": ["customer_id"],
            "features": [{"name": "score", "dtype": "float64"}],
            "source": {"table_name": other, "timestamp_field": "event_timestamp"},
            "ttl_seconds": None,
            "online": True,
        },
    )
    assert reused.status_code == 201, reused.text
    spec = client.get(f"/api/v1/feature-views/{other}").json()["spec"]
    assert spec["entities"] == ["customer"]
    assert spec["ttl_seconds"] is None
    assert (
        next(v for v in client.get("/feast/features").json() if v["name"] == other)["ttl_seconds"]
        == 0
    )

    service = f"svc_{suffix}"
    svc = client.post(
        "/feast/features/service",
        json={"name": service, "feature_views": [name, other], "description": "both"},
    )
    assert svc.status_code == 201, svc.text
    assert svc.json() == {"name": service, "feature_views": [name, other], "status": "created"}
    assert client.get(f"/api/v1/feature-services/{service}").json()["spec"]["features"] == [
        f"{name}:*",
        f"{other}:*",
    ]

    run = client.post(
        "/api/v1/materializations",
        json={"start": "2020-01-01T00:00:00Z", "views": [name, other]},
    )
    assert run.status_code == 201, run.text
    online = client.post(
        "/get-online-features",
        json={"feature_service": service, "entities": {"store_id": [2], "customer_id": [1]}},
    ).json()
    names = online["metadata"]["feature_names"]
    assert names[:2] == ["store_id", "customer_id"]
    values = {n: v["values"][0] for n, v in zip(names, online["results"], strict=True)}
    assert values["revenue"] == 100.0 and values["city"] == "city1" and values["score"] == 0.5


def test_register_iceberg_view(client: httpx.Client, server: Any) -> None:
    from pyiceberg.exceptions import NamespaceAlreadyExistsError

    from quiver.config import load_config
    from quiver.offline.sources import iceberg_catalog

    suffix = uuid.uuid4().hex[:8]
    catalog = iceberg_catalog(load_config(server.repo), "default")
    with contextlib.suppress(NamespaceAlreadyExistsError):
        catalog.create_namespace("analytics")
    data = _stores_table(3)
    table = catalog.create_table(f"analytics.stores_{suffix}", schema=data.schema)
    table.append(data)

    name = f"iceberg_sales_{suffix}"
    body = _view_body(name, f"stores_{suffix}")
    body["source"] = {
        "table_name": f"stores_{suffix}",
        "timestamp_field": "event_timestamp",
        "catalog": "default",
        "schema": "analytics",
    }
    created = client.post("/feast/features", json=body)
    assert created.status_code == 201, created.text
    source = client.get(f"/api/v1/data-sources/{name}_source").json()["spec"]
    assert source["type"] == "iceberg"
    assert source["table"] == f"analytics.stores_{suffix}"
    assert source["catalog"] == "default"
    run = client.post(
        "/api/v1/materializations", json={"start": "2020-01-01T00:00:00Z", "views": [name]}
    )
    assert run.status_code == 201, run.text
    online = client.post(
        "/get-online-features",
        json={"features": [f"{name}:revenue"], "entities": {"store_id": [3]}},
    ).json()
    assert online["results"][1]["values"] == [200.0]


def test_platform_errors(client: httpx.Client, server: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    error = assert_error(
        client.post("/feast/features", json=_view_body("v_" + suffix, "absent")), 404
    )
    assert "hive_prod" in error["message"] and "absent" in error["message"]
    assert error["details"]["tried"]

    table_name = f"t_{suffix}"
    pq.write_table(_stores_table(), Path(server.repo) / "data" / f"{table_name}.parquet")
    plain = {**_view_body("v_" + suffix, table_name)}
    plain["source"] = {"table_name": table_name, "timestamp_field": "event_timestamp"}
    missing = {**plain, "features": [{"name": "profit", "dtype": "float64"}]}
    error = assert_error(client.post("/feast/features", json=missing), 422)
    assert "profit" in error["message"] and "revenue" in error["message"]
    bad_dtype = {**plain, "features": [{"name": "revenue", "dtype": "Decimal"}]}
    assert "dtype" in assert_error(client.post("/feast/features", json=bad_dtype), 422)["message"]
    escape = {**plain, "source": {"table_name": "../../etc", "timestamp_field": "event_timestamp"}}
    assert_error(client.post("/feast/features", json=escape), 422)
    assert_error(client.post("/feast/features", json={**plain, "entities": []}), 422)
    assert_error(client.post("/feast/features", json={**plain, "ttl_seconds": -1}), 422)
    assert_error(client.post("/feast/features", json={**plain, "name": "bad name"}), 422)
    no_source = {k: v for k, v in plain.items() if k != "source"}
    assert_error(client.post("/feast/features", json=no_source), 422)
    assert client.get(f"/api/v1/feature-views/v_{suffix}").status_code == 404

    assert_error(
        client.post(
            "/feast/features/service", json={"name": "s_" + suffix, "feature_views": ["nope"]}
        ),
        404,
    )
    assert_error(
        client.post("/feast/features/service", json={"name": "s", "feature_views": []}), 422
    )
    assert client.get(f"/api/v1/feature-services/s_{suffix}").status_code == 404


def test_batch_prediction_table_names_no_store_takes(client: httpx.Client) -> None:
    """Odd table names are refused before any model, catalog or file is touched."""
    url = "/feast/predictions/batch"
    body = {"model_id": "ghost:1", "input_table": "churn_labels", "output_table": "scores"}
    long = "t" * 64
    for overrides in (
        {"output_table": long},  # 'predictions.<64 chars>': Iceberg names stop at 63
        {"output_table": "scores", "output_schema": long},
        {"output_table": "a.b-c"},
        {"output_table": "x" * 300 + "/y.parquet"},
        {"output_table": "nul\x00/y.parquet"},
    ):
        error = assert_error(client.post(url, json={**body, **overrides}), 422)
        assert "output" in error["message"]
    for table in ("n" * 250, f"ns.{long}", "a" * 300, "in\x00put"):
        response = client.post(url, json={**body, "input_table": table})
        assert response.status_code in (404, 422), response.text
        assert_error(response, response.status_code)
    # a well-formed request gets as far as the model
    assert "ghost" in assert_error(client.post(url, json=body), 404)["message"]
