"""The API takes exactly what its OpenAPI document declares, over real HTTP.

Pydantic's lax parsing (FastAPI's default) took more: a repeated query parameter (the last
value won), ``0``/``1``/``yes``/``on`` as booleans, numbers (and numeric strings) as unix
times. Each was found by the schemathesis run (tests/e2e/test_server_fuzz.py) and is a 422 now.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from _http import assert_error


def locs(error: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [tuple(d["loc"]) for d in error["details"]]


# --- a scalar query parameter is given once ------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name", "values"),
    [
        ("/api/v1/materializations", "limit", ["1", "2"]),
        ("/api/v1/materializations", "view", ["customer_contract", "customer_behavior"]),
        ("/api/v1/audit", "limit", ["5", "5"]),
        ("/api/v1/audit", "since", ["2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]),
        ("/api/v1/features", "owner", ["a", "b"]),
    ],
)
def test_a_repeated_scalar_query_parameter_is_422(
    client: httpx.Client, url: str, name: str, values: list[str]
) -> None:
    error = assert_error(client.get(url, params=[(name, v) for v in values]), 422, "invalid")
    assert ("query", name) in locs(error)
    assert name in error["message"] and "once" in error["message"]
    assert client.get(url, params={name: values[0]}).status_code == 200


def test_a_repeated_query_parameter_on_a_write_is_422_and_changes_nothing(
    client: httpx.Client,
) -> None:
    name = f"strict_{uuid.uuid4().hex[:8]}"
    body = {"name": name, "join_keys": ["strict_id"]}
    params = [("allow_breaking", "false"), ("allow_breaking", "true")]
    error = assert_error(client.post("/api/v1/entities", json=body, params=params), 422)
    assert ("query", "allow_breaking") in locs(error)
    assert client.get(f"/api/v1/entities/{name}").status_code == 404


def test_a_list_query_parameter_may_repeat(client: httpx.Client) -> None:
    response = client.get("/api/v1/features", params=[("tag", "a"), ("tag", "b")])
    assert response.status_code == 200, response.text


# --- booleans in the query are true or false ---------------------------------------------------


@pytest.mark.parametrize("value", ["0", "1", "yes", "no", "on", "off", "t", "True", "FALSE", ""])
def test_query_booleans_other_than_true_or_false_are_422(client: httpx.Client, value: str) -> None:
    name = f"strict_{uuid.uuid4().hex[:8]}"
    body = {"name": name, "join_keys": ["strict_id"]}
    response = client.post("/api/v1/entities", json=body, params={"allow_breaking": value})
    error = assert_error(response, 422, "invalid")
    assert ("query", "allow_breaking") in locs(error)
    assert "true or false" in error["message"]
    assert client.get(f"/api/v1/entities/{name}").status_code == 404
    platform = client.post(
        "/feast/features/service",
        json={"name": name, "feature_views": ["customer_contract"]},
        params={"allow_breaking": value},
    )
    assert ("query", "allow_breaking") in locs(assert_error(platform, 422))


@pytest.mark.parametrize("value", ["true", "false"])
def test_query_booleans_true_and_false_are_taken(client: httpx.Client, value: str) -> None:
    name = f"strict_{uuid.uuid4().hex[:8]}"
    body = {"name": name, "join_keys": ["strict_id"]}
    response = client.post("/api/v1/entities", json=body, params={"allow_breaking": value})
    assert response.status_code == 201, response.text


def test_the_document_says_what_a_query_boolean_takes(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    parameters = document["paths"]["/api/v1/entities"]["post"]["parameters"]
    (flag,) = [p for p in parameters if p["name"] == "allow_breaking"]
    assert flag["schema"]["type"] == "boolean"
    assert "true or false" in flag["description"]


# --- times are ISO 8601 strings, never numbers -------------------------------------------------


@pytest.mark.parametrize("when", [0, 1700000000, 0.5, "1700000000", "0.5", True])
def test_a_number_is_not_a_materialization_time(client: httpx.Client, when: Any) -> None:
    url = "/api/v1/materializations"
    iso = "2025-01-01T00:00:00Z"
    for body, field in (
        ({"start": when, "end": iso, "views": ["customer_contract"]}, "start"),
        ({"start": "2020-01-01T00:00:00Z", "end": when, "views": ["customer_contract"]}, "end"),
        ({"incremental": True, "end": when, "views": ["customer_contract"]}, "end"),
    ):
        error = assert_error(client.post(url, json=body), 422, "invalid")
        assert ("body", field) in locs(error), error
        assert "ISO 8601" in error["message"]


@pytest.mark.parametrize("since", ["0.5", "0", "1700000000", "1e9", "yesterday"])
def test_audit_since_must_be_an_iso_time(client: httpx.Client, since: str) -> None:
    error = assert_error(client.get("/api/v1/audit", params={"since": since}), 422, "invalid")
    assert ("query", "since") in locs(error)


@pytest.mark.parametrize("since", ["2025-01-01T00:00:00Z", "2025-01-01T00:00:00", "2025-01-01"])
def test_audit_since_takes_iso_times(client: httpx.Client, since: str) -> None:
    response = client.get("/api/v1/audit", params={"since": since})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("when", [0, 1700000000, 1.5])
def test_a_number_is_not_a_training_date(client: httpx.Client, when: Any) -> None:
    training = {
        "name": "never_trained_strict",
        "framework": "lightgbm",
        "model_type": "classification",
        "training_data": {
            "entity_df_source": "churn_labels",
            "label_column": "churned",
            "start_date": when,
        },
    }
    for url in ("/api/v1/models", "/feast/models"):
        error = assert_error(client.post(url, json=training), 422)
        assert any("start_date" in loc for loc in locs(error)), error
    assert client.get("/api/v1/models/never_trained_strict").status_code == 404
