"""The registry routes, status, probes and feature discovery over real HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest


def assert_error(response: httpx.Response, status: int, type_: str | None = None) -> Any:
    """Check the API's error shape and return ``error``."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"type", "message", "details"}, error
    assert isinstance(error["message"], str) and error["message"]
    if type_ is not None:
        assert error["type"] == type_, error
    return error


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"registry": "ok", "online_store": "ok"}}


def test_status(client: httpx.Client) -> None:
    body = client.get("/api/v1/status").json()
    assert body["registry_type"] == "sqlite"
    assert body["online_store_type"] == "sqlite"
    assert body["offline_engine_type"] == "duckdb"
    counts = body["counts"]
    assert counts["entities"] >= 1
    assert counts["feature_views"] >= 3
    assert counts["feature_services"] >= 1
    assert counts["data_sources"] >= 4
    assert "models" in counts
    views = {m["view"] for m in body["last_materialization"]}
    assert {"customer_behavior", "customer_demographics", "customer_contract"} <= views


def test_openapi_every_route_has_a_stable_operation_id_and_tags(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    ids = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op.get("operationId"), (method, path)
            assert op.get("tags"), (method, path)
            assert "200" in op["responses"] or "201" in op["responses"], (method, path)
            ids.append(op["operationId"])
    assert len(ids) == len(set(ids))
    for expected in (
        "list_entities",
        "create_feature_view",
        "feature_view_history",
        "restore_feature_view",
        "get_online_features",
        "get_historical_features",
        "start_materialization",
        "list_materializations",
        "push",
        "get_status",
        "list_features",
        "feast_get_online_features",
        "feast_push",
        "platform_status",
        "platform_register_feature_view",
        "platform_create_feature_service",
    ):
        assert expected in ids
    assert client.get("/docs").status_code == 200


def test_list_and_get_demo_objects(client: httpx.Client) -> None:
    for path, name in (
        ("entities", "customer"),
        ("data-sources", "customer_behavior_source"),
        ("feature-views", "customer_behavior"),
        ("feature-services", "churn_prediction_v1"),
    ):
        listing = client.get(f"/api/v1/{path}").json()
        assert listing["count"] == len(listing["items"])
        assert name in [i["name"] for i in listing["items"]]
        one = client.get(f"/api/v1/{path}/{name}").json()
        assert one["name"] == name and one["version"] >= 1
        assert one["spec"]["name"] == name
        assert one["created_at"] and one["updated_at"]
    view = client.get("/api/v1/feature-views/customer_behavior").json()
    assert view["spec"]["ttl_seconds"] == 30 * 24 * 3600
    assert view["spec"]["source"] == "customer_behavior_source"


def test_unknown_objects_are_404_with_a_suggestion(client: httpx.Client) -> None:
    error = assert_error(client.get("/api/v1/feature-views/customer_behaviour"), 404, "not_found")
    assert "customer_behavior" in error["message"]
    assert_error(client.get("/api/v1/entities/nope"), 404, "not_found")
    assert_error(client.delete("/api/v1/feature-services/nope"), 404, "not_found")
    assert_error(client.get("/api/v1/feature-views/nope/history"), 404, "not_found")


def test_entity_lifecycle(client: httpx.Client) -> None:
    name = _name("store")
    created = client.post(
        "/api/v1/entities",
        json={"name": name, "join_keys": ["store_id"], "description": "a shop"},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["action"] == "create"
    assert body["object"]["spec"]["join_keys"] == ["store_id"]
    assert body["object"]["version"] == 1

    again = client.post("/api/v1/entities", json={"name": name, "join_keys": ["store_id"]})
    assert_error(again, 409, "conflict")

    updated = client.put(
        f"/api/v1/entities/{name}", json={"join_keys": ["store_id"], "owner": "me"}
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["action"] == "update"
    assert updated.json()["object"]["spec"]["owner"] == "me"
    assert updated.json()["object"]["version"] == 2

    # changing the join keys is breaking
    breaking = client.put(f"/api/v1/entities/{name}", json={"join_keys": ["shop_id"]})
    error = assert_error(breaking, 409, "breaking_change")
    assert "allow_breaking" in error["message"]
    assert client.get(f"/api/v1/entities/{name}").json()["spec"]["join_keys"] == ["store_id"]
    allowed = client.put(
        f"/api/v1/entities/{name}",
        json={"join_keys": ["shop_id"]},
        params={"allow_breaking": "true"},
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["object"]["spec"]["join_keys"] == ["shop_id"]

    history = client.get(f"/api/v1/entities/{name}/history").json()
    assert [v["version"] for v in history["items"]] == [1, 2, 3]
    assert client.get(f"/api/v1/entities/{name}/history/2").json()["spec"]["owner"] == "me"
    assert_error(client.get(f"/api/v1/entities/{name}/history/9"), 404)

    restored = client.post(
        f"/api/v1/entities/{name}/restore", json={"version": 1}, params={"allow_breaking": True}
    )
    assert restored.status_code == 200, restored.text
    assert restored.json()["object"]["spec"]["join_keys"] == ["store_id"]
    assert restored.json()["object"]["version"] == 4

    deleted = client.delete(f"/api/v1/entities/{name}")
    assert deleted.status_code == 200
    assert deleted.json()["action"] == "delete"
    assert_error(client.get(f"/api/v1/entities/{name}"), 404)
    assert client.get(f"/api/v1/entities/{name}/history").json()["count"] == 5


def test_name_mismatch_and_invalid_specs_are_422(client: httpx.Client) -> None:
    name = _name("e")
    client.post("/api/v1/entities", json={"name": name}).raise_for_status()
    assert_error(client.put(f"/api/v1/entities/{name}", json={"name": "other"}), 422, "invalid")
    assert_error(client.post("/api/v1/entities", json={"join_keys": ["x"]}), 422)
    error = assert_error(
        client.post("/api/v1/entities", json={"name": "bad name!", "join_keys": ["x"]}), 422
    )
    assert "plain identifier" in error["message"]
    error = assert_error(
        client.post("/api/v1/entities", json={"name": _name("e"), "value_type": "float64"}), 422
    )
    assert "join key" in error["message"]
    assert_error(client.post("/api/v1/entities", json={"name": _name("e"), "colour": "red"}), 422)


def test_view_and_service_lifecycle_with_references(client: httpx.Client) -> None:
    view = _name("fv")
    service = _name("fs")
    spec = {
        "name": view,
        "entities": ["customer"],
        "features": [
            {"name": "age", "dtype": "int64", "description": "years"},
            {"name": "region", "dtype": "string"},
        ],
        "source": "customer_demographics_source",
        "ttl_seconds": 3600,
        "tags": {"team": "api-test"},
        "owner": "api@example.com",
    }
    created = client.post("/api/v1/feature-views", json=spec)
    assert created.status_code == 201, created.text
    assert created.json()["object"]["spec"]["ttl_seconds"] == 3600

    svc = client.post("/api/v1/feature-services", json={"name": service, "features": [f"{view}:*"]})
    assert svc.status_code == 201, svc.text

    # the service uses the view: deleting the view is a 409 naming the service
    error = assert_error(client.delete(f"/api/v1/feature-views/{view}"), 409, "referenced")
    assert service in error["message"]
    # removing a feature used by the service is breaking
    narrowed = {**spec, "features": [spec["features"][1]]}
    error = assert_error(client.put(f"/api/v1/feature-views/{view}", json=narrowed), 409)
    assert service in error["message"]
    # a dtype change is breaking; a description change is not
    retyped = {**spec, "features": [{"name": "age", "dtype": "float64"}, spec["features"][1]]}
    assert_error(client.put(f"/api/v1/feature-views/{view}", json=retyped), 409, "breaking_change")
    described = {**spec, "description": "demographics again"}
    ok = client.put(f"/api/v1/feature-views/{view}", json=described)
    assert ok.status_code == 200 and ok.json()["action"] == "update"
    changes = ok.json()["changes"][0]["changes"]
    assert changes == [
        {
            "path": "description",
            "old": "",
            "new": "demographics again",
            "breaking": False,
            "reason": "",
        }
    ]

    history = client.get(f"/api/v1/feature-views/{view}/history").json()
    assert [v["operation"] for v in history["items"]] == ["create", "update"]
    restored = client.post(f"/api/v1/feature-views/{view}/restore", json={"version": 1})
    assert restored.status_code == 200
    assert restored.json()["object"]["spec"]["description"] == ""

    # unknown references are 404 and change nothing
    bad = {**spec, "name": _name("fv"), "entities": ["nobody"]}
    assert_error(client.post("/api/v1/feature-views", json=bad), 404)
    bad_ref = {"name": _name("fs"), "features": [f"{view}:nope"]}
    assert_error(client.post("/api/v1/feature-services", json=bad_ref), 404)

    assert client.delete(f"/api/v1/feature-services/{service}").status_code == 200
    assert client.delete(f"/api/v1/feature-views/{view}").status_code == 200
    # the entity is still used by the demo views
    error = assert_error(client.delete("/api/v1/entities/customer"), 409, "referenced")
    assert "customer_" in error["message"]


def test_data_source_with_inline_view_source(client: httpx.Client) -> None:
    view = _name("fv")
    source = _name("src")
    spec = {
        "name": view,
        "entities": ["customer"],
        "features": [{"name": "contract_type", "dtype": "string"}],
        "source": {
            "type": "file",
            "name": source,
            "path": "data/customer_contract.parquet",
            "timestamp_field": "event_timestamp",
        },
    }
    created = client.post("/api/v1/feature-views", json=spec)
    assert created.status_code == 201, created.text
    kinds = {(c["kind"], c["name"]) for c in created.json()["changes"]}
    assert ("data_source", source) in kinds
    got = client.get(f"/api/v1/data-sources/{source}").json()
    assert got["spec"]["path"] == "data/customer_contract.parquet"
    assert got["spec"]["format"] == "parquet"
    assert_error(client.delete(f"/api/v1/data-sources/{source}"), 409, "referenced")
    client.delete(f"/api/v1/feature-views/{view}").raise_for_status()
    client.delete(f"/api/v1/data-sources/{source}").raise_for_status()

    iceberg = client.post(
        "/api/v1/data-sources",
        json={"type": "iceberg", "name": _name("ice"), "table": "ns.events"},
    )
    assert iceberg.status_code == 201, iceberg.text
    assert iceberg.json()["object"]["spec"]["catalog"] == "default"
    assert_error(
        client.post("/api/v1/data-sources", json={"type": "iceberg", "name": "x", "table": "t"}),
        422,
    )


def test_feature_discovery(client: httpx.Client) -> None:
    every = client.get("/api/v1/features").json()
    refs = {i["ref"] for i in every["items"]}
    assert "customer_behavior:tenure_months" in refs
    assert every["count"] == len(every["items"])
    item = next(i for i in every["items"] if i["ref"] == "customer_behavior:tenure_months")
    assert item["dtype"] == "int64"
    assert item["owner"] == "growth@example.com"
    assert item["join_keys"] == ["customer_id"]
    assert item["tags"]["team"] == "growth"
    assert item["freshness"]["ttl_seconds"] == 30 * 24 * 3600
    assert item["freshness"]["materialized_until"] is not None

    text = client.get("/api/v1/features", params={"q": "MONTHLY BILL"}).json()
    assert [i["ref"] for i in text["items"]] == ["customer_behavior:monthly_charges"]
    billing = client.get("/api/v1/features", params={"tag": "team=billing"}).json()
    assert {i["view"] for i in billing["items"]} == {"customer_contract"}
    both = client.get("/api/v1/features", params=[("tag", "team:growth"), ("tag", "pii=true")])
    assert {i["view"] for i in both.json()["items"]} == {"customer_demographics"}
    owner = client.get("/api/v1/features", params={"owner": "billing@example.com"}).json()
    assert owner["count"] == 3
    assert client.get("/api/v1/features", params={"q": "zzz-nothing"}).json()["count"] == 0


@pytest.mark.slow
def test_serve_with_workers(demo_repo: Any, serve_repo: Any) -> None:
    srv = serve_repo(demo_repo, "--workers", "2")
    with srv.client() as c:
        for _ in range(4):
            response = c.post(
                "/get-online-features",
                json={"features": ["customer_demographics:age"], "entities": {"customer_id": [1]}},
            )
            assert response.status_code == 200, response.text
        assert c.get("/ready").json()["status"] == "ready"


@pytest.mark.slow
def test_ready_reports_a_broken_online_store(tmp_path: Any, serve_repo: Any) -> None:
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("quiver")
    subprocess.run([str(exe), "init", str(tmp_path / "r")], check=True, capture_output=True)
    blocker = tmp_path / "r" / "not_a_dir"
    blocker.write_text("a file where the online store's folder should be")
    srv = serve_repo(tmp_path / "r", env={"QUIVER_ONLINE_STORE__PATH": str(blocker / "online.db")})
    with srv.client() as c:
        assert c.get("/health").status_code == 200
        ready = c.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"]["registry"] == "ok"
        assert ready.json()["checks"]["online_store"] != "ok"
        assert c.get("/feast/status").json()["status"] == "degraded"
