"""Feast feature server compatibility: the same request and response JSON as Feast."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from _http import BEHAVIOR_ROW

DEMOGRAPHICS = ["customer_demographics:age", "customer_demographics:region"]


def assert_error(response: httpx.Response, status: int, cls: str | None = None) -> Any:
    """Feast's error: a JSON string holding ``module``, ``class`` and ``message``, which Feast's
    client turns into the typed exception ``feast.errors.<class>``."""
    assert response.status_code == status, response.text
    error = json.loads(response.json())
    assert set(error) == {"module", "class", "message"}
    assert error["module"] == "feast.errors"
    if cls is not None:
        assert error["class"] == cls
    return error


FEAST_STATUS = {"present": "PRESENT", "not_found": "NOT_FOUND", "expired": "OUTSIDE_MAX_AGE"}
EPOCH = "1970-01-01T00:00:00Z"


def _zulu(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_get_online_features_shape(client: httpx.Client) -> None:
    """Feast's response shape, with every status pinned whatever ran before on this server.

    Customer 1 comes from the demo data: whether its 30-day TTL behaviour values have expired
    depends on the materializations earlier tests made, so it is checked against Quiver's own
    online API; two fresh keys are pushed with a known fresh and a known stale row.
    """
    fresh = 610_000 + uuid.uuid4().int % 40_000
    stale = fresh + 40_000
    now = datetime.now(UTC).replace(microsecond=0)
    pushed = {fresh: now - timedelta(hours=1), stale: now - timedelta(days=40)}
    for key, when in pushed.items():
        row = {"customer_id": key, "event_timestamp": when.isoformat(), **BEHAVIOR_ROW}
        response = client.post("/api/v1/push", json={"view": "customer_behavior", "rows": [row]})
        assert response.status_code == 200, response.text
    keys = [1, fresh, stale, 999_999]
    features = [*DEMOGRAPHICS, "customer_behavior:tenure_months"]
    response = client.post(
        "/get-online-features",
        json={"features": features, "entities": {"customer_id": keys}, "full_feature_names": False},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"metadata", "results"}
    assert body["metadata"] == {"feature_names": ["customer_id", "age", "region", "tenure_months"]}
    results = body["results"]
    assert len(results) == 4
    for vector in results:
        assert set(vector) == {"values", "statuses", "event_timestamps"}
        assert len(vector["values"]) == len(vector["statuses"]) == len(keys)
        assert len(vector["event_timestamps"]) == len(keys)
    key_vector, age, region, tenure = results
    assert key_vector == {
        "values": keys,
        "statuses": ["PRESENT"] * 4,
        "event_timestamps": [EPOCH] * 4,
    }
    # demographics (no TTL): customer 1 has them, the pushed keys and 999_999 do not
    for vector, kind in ((age, int), (region, str)):
        assert vector["statuses"] == ["PRESENT", "NOT_FOUND", "NOT_FOUND", "NOT_FOUND"]
        assert isinstance(vector["values"][0], kind) and vector["values"][1:] == [None] * 3
        first = vector["event_timestamps"][0]
        assert first.endswith("Z") and "2020" < first < _zulu(now + timedelta(days=1))
        assert vector["event_timestamps"][1:] == [EPOCH] * 3
    # behaviour (30-day TTL): fresh is present, stale is outside the max age, 999_999 is absent
    assert tenure["statuses"][1:] == ["PRESENT", "OUTSIDE_MAX_AGE", "NOT_FOUND"]
    assert tenure["values"][1:] == [7, None, None]
    assert tenure["event_timestamps"][1:] == [_zulu(pushed[fresh]), _zulu(pushed[stale]), EPOCH]
    # customer 1: exactly what Quiver's own online API says, in Feast's words
    native = client.post(
        "/api/v1/serving/online", json={"features": features, "entities": {"customer_id": [1]}}
    ).json()["results"][0]
    for vector, name in ((age, "age"), (region, "region"), (tenure, "tenure_months")):
        assert vector["statuses"][0] == FEAST_STATUS[native["statuses"][name]]
        assert vector["values"][0] == native["values"][name]
        assert vector["event_timestamps"][0] == (native["event_timestamps"][name] or EPOCH)
    assert tenure["statuses"][0] in ("PRESENT", "OUTSIDE_MAX_AGE")


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
    assert response.content == b""  # Feast's /push answers an empty body
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
    assert_error(
        client.post("/push", json={"push_source_name": "nope", "df": {"a": [1]}}),
        422,
        "PushSourceNotFoundException",
    )
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
