"""Feast feature server compatibility: the same request and response JSON as Feast."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

DEMOGRAPHICS = ["customer_demographics:age", "customer_demographics:region"]


def assert_error(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    return error


def test_get_online_features_shape(client: httpx.Client) -> None:
    response = client.post(
        "/get-online-features",
        json={
            "features": [*DEMOGRAPHICS, "customer_behavior:tenure_months"],
            "entities": {"customer_id": [1, 2, 999_999]},
            "full_feature_names": False,
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"metadata", "results"}
    assert body["metadata"] == {"feature_names": ["customer_id", "age", "region", "tenure_months"]}
    results = body["results"]
    assert len(results) == 4
    for vector in results:
        assert set(vector) == {"values", "statuses", "event_timestamps"}
        assert len(vector["values"]) == len(vector["statuses"]) == 3
        assert len(vector["event_timestamps"]) == 3
    keys = results[0]
    assert keys["values"] == [1, 2, 999_999]
    assert keys["statuses"] == ["PRESENT"] * 3
    assert keys["event_timestamps"] == ["1970-01-01T00:00:00Z"] * 3
    age = results[1]
    assert age["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert isinstance(age["values"][0], int) and age["values"][2] is None
    assert age["event_timestamps"][0].endswith("Z") and age["event_timestamps"][0] > "2020"
    assert age["event_timestamps"][2] == "1970-01-01T00:00:00Z"
    tenure = results[3]
    # the demo's weekly snapshots end on 2026-01-01 and the view's TTL is 30 days
    if datetime.now(UTC) > datetime(2026, 2, 1, tzinfo=UTC):
        assert tenure["statuses"][:2] == ["OUTSIDE_MAX_AGE"] * 2
    assert tenure["statuses"][2] == "NOT_FOUND"


def test_get_online_features_with_service_and_full_names(client: httpx.Client) -> None:
    body = client.post(
        "/get-online-features",
        json={
            "feature_service": "churn_prediction_v1",
            "entities": {"customer_id": [7]},
            "full_feature_names": True,
        },
    ).json()
    names = body["metadata"]["feature_names"]
    assert names[0] == "customer_id"
    assert "customer_demographics__age" in names
    assert "customer_contract__paperless_billing" in names
    assert len(body["results"]) == len(names)
    paperless = body["results"][names.index("customer_contract__paperless_billing")]
    assert paperless["values"][0] in (True, False, None)


def test_get_online_features_errors(client: httpx.Client) -> None:
    assert_error(
        client.post("/get-online-features", json={"features": DEMOGRAPHICS}), 422
    )  # no entities
    assert_error(
        client.post(
            "/get-online-features",
            json={"features": ["nope:x"], "entities": {"customer_id": [1]}},
        ),
        404,
    )
    assert_error(
        client.post(
            "/get-online-features",
            json={"features": DEMOGRAPHICS, "entities": {"customer_id": [1], "x": [1, 2]}},
        ),
        422,
    )


def test_push_like_feast_then_read(client: httpx.Client) -> None:
    key = 800_000 + uuid.uuid4().int % 100_000
    response = client.post(
        "/push",
        json={
            "push_source_name": "customer_demographics",
            "df": {
                "customer_id": [key],
                "event_timestamp": [datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")],
                "created": ["2022-05-13 10:59:42"],  # Feast scripts send extra columns
                "age": [41],
                "gender": ["female"],
                "region": ["east"],
            },
            "to": "online",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json() is None
    assert response.headers["x-quiver-rows"] == "1"
    body = client.post(
        "/get-online-features",
        json={"features": DEMOGRAPHICS, "entities": {"customer_id": [key]}},
    ).json()
    assert [v["values"][0] for v in body["results"]] == [key, 41, "east"]
    assert [v["statuses"][0] for v in body["results"]] == ["PRESENT"] * 3


def test_push_by_data_source_name(client: httpx.Client) -> None:
    key = 900_000 + uuid.uuid4().int % 50_000
    response = client.post(
        "/push",
        json={
            "push_source_name": "customer_contract_source",
            "df": {
                "customer_id": [key, key + 1],
                "event_timestamp": ["2026-05-13T10:59:42+00:00", "2026-05-13T10:59:42Z"],
                "contract_type": ["one_year", "two_year"],
                "payment_method": ["credit_card", "mailed_check"],
                "paperless_billing": [True, False],
            },
        },
    )
    assert response.status_code == 200, response.text
    body = client.post(
        "/get-online-features",
        json={
            "features": ["customer_contract:contract_type"],
            "entities": {"customer_id": [key, key + 1]},
        },
    ).json()
    assert body["results"][1]["values"] == ["one_year", "two_year"]


def test_push_errors(client: httpx.Client) -> None:
    assert_error(client.post("/push", json={"push_source_name": "nope", "df": {"a": [1]}}), 404)
    assert_error(
        client.post(
            "/push",
            json={
                "push_source_name": "customer_demographics",
                "df": {"customer_id": [1]},
                "to": "x",
            },
        ),
        422,
    )
    missing = client.post(
        "/push",
        json={"push_source_name": "customer_demographics", "df": {"customer_id": [1], "age": [3]}},
    )
    assert "region" in assert_error(missing, 422)["message"]
    ragged = {"customer_id": [1, 2], "age": [3]}
    assert_error(
        client.post("/push", json={"push_source_name": "customer_demographics", "df": ragged}), 422
    )


def test_write_to_online_store_and_materialize(client: httpx.Client) -> None:
    key = 960_000 + uuid.uuid4().int % 10_000
    written = client.post(
        "/write-to-online-store",
        json={
            "feature_view_name": "customer_demographics",
            "df": {
                "customer_id": [key],
                "event_timestamp": [datetime.now(UTC).isoformat()],
                "age": [50],
                "gender": ["male"],
                "region": ["north"],
            },
        },
    )
    assert written.status_code == 200, written.text
    assert written.json() is None
    materialized = client.post(
        "/materialize",
        json={
            "start_ts": "2025-01-01T00:00:00",
            "end_ts": "2025-02-01T00:00:00",
            "feature_views": ["customer_contract"],
        },
    )
    assert materialized.status_code == 200, materialized.text
    assert materialized.json() is None
    incremental = client.post(
        "/materialize-incremental",
        json={"end_ts": datetime.now(UTC).isoformat(), "feature_views": ["customer_contract"]},
    )
    assert incremental.status_code == 200, incremental.text
    assert_error(client.post("/materialize", json={"start_ts": "x", "end_ts": "y"}), 422)
    assert_error(
        client.post(
            "/materialize",
            json={"start_ts": "2025-02-01T00:00:00", "end_ts": "2025-01-01T00:00:00"},
        ),
        422,
    )


def test_online_routes_with_redis(demo_repo: Any, serve_repo: Any, redis_url: str) -> None:
    srv = serve_repo(
        demo_repo,
        env={"QUIVER_ONLINE_STORE__TYPE": "redis", "QUIVER_ONLINE_STORE__URL": redis_url},
    )
    with srv.client() as c:
        assert c.get("/ready").json()["checks"]["online_store"] == "ok"
        assert c.get("/api/v1/status").json()["online_store_type"] == "redis"
        pushed = c.post(
            "/push",
            json={
                "push_source_name": "customer_demographics",
                "df": {
                    "customer_id": [11, 12],
                    "event_timestamp": [datetime.now(UTC).isoformat()] * 2,
                    "age": [20, 30],
                    "gender": ["other", "male"],
                    "region": ["south", "west"],
                },
            },
        )
        assert pushed.status_code == 200, pushed.text
        body = c.post(
            "/get-online-features",
            json={"features": DEMOGRAPHICS, "entities": {"customer_id": [12, 11, 13]}},
        ).json()
        assert body["results"][1]["values"] == [30, 20, None]
        assert body["results"][1]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
        native = c.post(
            "/api/v1/serving/online",
            json={"features": DEMOGRAPHICS, "entities": {"customer_id": [11]}},
        ).json()
        assert native["results"][0]["values"] == {"age": 20, "region": "south"}
