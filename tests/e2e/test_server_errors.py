"""Bad input over real HTTP: every failure is a JSON error with the right status, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest


def assert_error(response: httpx.Response, status: int, type_: str | None = None) -> Any:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"type", "message", "details"}
    assert error["message"] and "Traceback" not in response.text
    if type_ is not None:
        assert error["type"] == type_, error
    return error


def test_malformed_json(client: httpx.Client) -> None:
    for url in ("/api/v1/serving/online", "/get-online-features", "/api/v1/entities", "/push"):
        response = client.post(
            url, content=b'{"features": [', headers={"content-type": "application/json"}
        )
        error = assert_error(response, 422, "invalid")
        assert error["details"][0]["type"] == "json_invalid"


def test_wrong_types_carry_pydantic_details(client: httpx.Client) -> None:
    error = assert_error(
        client.post("/api/v1/serving/online", json={"features": "x", "entities": [1, 2]}), 422
    )
    locs = [tuple(d["loc"]) for d in error["details"]]
    assert ("body", "features") in locs and ("body", "entities") in locs
    assert all({"loc", "msg", "type"} <= set(d) for d in error["details"])
    assert_error(client.post("/api/v1/entities", json=[1, 2, 3]), 422)
    assert_error(client.post("/api/v1/entities", content=b"name=x"), 422)
    assert_error(client.post("/api/v1/materializations", json={"start": 12.5e99}), 422)
    assert_error(client.get("/api/v1/materializations", params={"limit": "many"}), 422)


@pytest.mark.parametrize(
    "key",
    [2**70, -(2**70), 1.5, True, None, "1", "", "ünïcödé", [1], {"a": 1}],
)
def test_odd_entity_keys_are_422(client: httpx.Client, key: Any) -> None:
    response = client.post(
        "/api/v1/serving/online",
        json={"features": ["customer_demographics:age"], "entities": {"customer_id": [key]}},
    )
    assert_error(response, 422)


@pytest.mark.parametrize(
    "ref",
    ["a:b:c", ":", "customer_demographics:", "", "🙂:age", "x" * 500, "customer_demographics:*x"],
)
def test_odd_feature_references(client: httpx.Client, ref: str) -> None:
    response = client.post(
        "/get-online-features", json={"features": [ref], "entities": {"customer_id": [1]}}
    )
    assert response.status_code in (404, 422), response.text
    assert_error(response, response.status_code)


def test_odd_names_in_paths(client: httpx.Client) -> None:
    for name in ("%00", "..%2F..%2Fetc", "a" * 300, "ünï", "%F0%9F%99%82"):
        for path in ("entities", "feature-views", "data-sources", "feature-services"):
            response = client.get(f"/api/v1/{path}/{name}")
            assert response.status_code in (404, 422), (path, name, response.text)


def test_unknown_route_and_method(client: httpx.Client) -> None:
    error = assert_error(client.get("/api/v1/nothing-here"), 404, "not_found")
    assert "/docs" in error["message"]
    assert_error(client.delete("/api/v1/features"), 405, "method_not_allowed")
    assert_error(client.get("/get-online-features"), 405)


def test_oversized_bodies_are_413(client: httpx.Client, server: Any) -> None:
    big = (
        b'{"features": ["customer_demographics:age"], "entities": {"customer_id": ['
        + (b"1," * server.max_body_bytes)
        + b"1]}}"
    )
    error = assert_error(
        client.post(
            "/api/v1/serving/online", content=big, headers={"content-type": "application/json"}
        ),
        413,
        "payload_too_large",
    )
    assert str(server.max_body_bytes) in error["message"]

    def chunks() -> Iterator[bytes]:
        yield b'{"view": "customer_demographics", "rows": ['
        for _ in range(server.max_body_bytes // 1000 + 2):
            yield b'{"customer_id": 1, "age": 1, "gender": "x", "region": "y"},' * 17
        yield b'{"customer_id": 1}]}'

    streamed = client.post(
        "/api/v1/push", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_error(streamed, 413, "payload_too_large")
    # the server still serves
    assert client.get("/health").status_code == 200


def test_nothing_changes_after_a_failed_write(client: httpx.Client) -> None:
    before = client.get("/api/v1/feature-views/customer_contract").json()
    bad = dict(before["spec"])
    bad["features"] = [{"name": "contract_type", "dtype": "int64"}]  # breaking + removals
    assert_error(client.put("/api/v1/feature-views/customer_contract", json=bad), 409)
    bad["entities"] = ["ghost"]
    assert_error(
        client.put(
            "/api/v1/feature-views/customer_contract",
            json=bad,
            params={"allow_breaking": "true"},
        ),
        404,
    )
    after = client.get("/api/v1/feature-views/customer_contract").json()
    assert after["version"] == before["version"] and after["spec"] == before["spec"]
