"""Bad input over real HTTP: every failure is a JSON error with the right status, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from _http import assert_any_error, assert_error, assert_feast_error


def test_malformed_json_is_400(client: httpx.Client) -> None:
    for url in ("/api/v1/serving/online", "/get-online-features", "/api/v1/entities", "/push"):
        response = client.post(
            url, content=b'{"features": [', headers={"content-type": "application/json"}
        )
        error = assert_any_error(response, 400, "bad_request")
        assert "not valid JSON" in error["message"]
        if "details" in error:
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
    assert_feast_error(response, response.status_code)


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


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/entities", "GET, POST"),
        ("PATCH", "/api/v1/entities/customer", "GET, PUT, DELETE"),
        ("DELETE", "/api/v1/data-sources", "GET, POST"),
        ("POST", "/api/v1/feature-views/customer_behavior", "GET, PUT, DELETE"),
        ("GET", "/api/v1/feature-views/customer_behavior/restore", "POST"),
        ("PUT", "/api/v1/models", "GET, POST"),
        ("DELETE", "/feast/features", "GET, POST"),
        ("GET", "/get-online-features", "POST"),
        ("POST", "/health", "GET"),
    ],
)
def test_405_allow_lists_every_method_of_the_path(
    client: httpx.Client, method: str, path: str, allowed: str
) -> None:
    """The Allow header once named only the first route of the path (``allow: GET``)."""
    response = client.request(method, path)
    error = assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allowed
    assert allowed in error["message"]


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


# --- input at the edges of what the stores take (each was a 500 once) -------------------------

HUGE_VERSIONS = [2**31, 2**63, 2**70, 0, -1]


@pytest.mark.parametrize("version", HUGE_VERSIONS)
def test_versions_out_of_range_are_422(client: httpx.Client, version: int) -> None:
    for path in ("entities/customer", "feature-views/customer_behavior"):
        error = assert_error(client.get(f"/api/v1/{path}/history/{version}"), 422, "invalid")
        assert error["details"][0]["loc"] == ["path", "version"]
        restore = client.post(f"/api/v1/{path}/restore", json={"version": version})
        assert assert_error(restore, 422)["details"][0]["loc"] == ["body", "version"]
    stage = client.post(f"/api/v1/models/churn/versions/{version}/stage", json={"stage": "none"})
    assert assert_error(stage, 422)["details"][0]["loc"] == ["path", "version"]
    assert_error(client.get(f"/api/v1/models/churn/versions/{version}"), 422)
    online = {"model": "churn", "version": version, "features": {"age": 1}}
    assert_error(client.post("/api/v1/predictions/online", json=online), 422)
    # the largest storable version is a plain "not found"
    assert_error(client.get(f"/api/v1/entities/customer/history/{2**31 - 1}"), 404, "not_found")


def test_version_ranges_are_documented(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    stage = spec["paths"]["/api/v1/models/{name}/versions/{version}/stage"]["post"]
    version = next(p for p in stage["parameters"] if p["name"] == "version")["schema"]
    assert (version["minimum"], version["maximum"]) == (1, 2**31 - 1)
    restore = spec["components"]["schemas"]["RestoreRequest"]["properties"]["version"]
    assert restore["maximum"] == 2**31 - 1


def test_jobs_of_a_model_version_out_of_range(client: httpx.Client) -> None:
    for model in (f"churn:{2**70}", "churn:" + "9" * 30):
        response = client.get("/api/v1/predictions/jobs", params={"model": model})
        assert response.status_code == 200, response.text
        assert response.json() == {"jobs": [], "count": 0}
    assert_error(client.get("/api/v1/predictions/jobs", params={"model": "churn:" + "9" * 31}), 422)


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/api/v1/entities", '{"name": "\\ud800", "join_keys": ["id"]}'),
        ("/api/v1/push", '{"view": "\\udfff", "rows": [{"customer_id": 1}]}'),
        ("/push", '{"push_source_name": "x\\ud800", "df": {"customer_id": [1]}}'),
        (
            "/materialize",
            '{"start_ts": "2025-01-01", "end_ts": "2025-02-01", "feature_views": ["\\ud800"]}',
        ),
        ("/api/v1/materializations", '{"start": "2025-01-01T00:00:00Z", "views": ["\\ud800"]}'),
        ("/api/v1/serving/historical", '{"feature_service": "\\ud800", "entity_path": "x"}'),
        ("/api/v1/predictions/online", '{"model": "churn", "features": {"\\ud800": 1}}'),
        (
            "/feast/predictions/batch",
            '{"model_id": "m:1", "input_table": "\\ud800/x", "output_table": "o"}',
        ),
        (
            "/api/v1/models",
            '{"name": "m", "framework": "sklearn", "model_type": "regression", '
            '"training_data": {"entity_df_source": "\\ud800/x", "label_column": "y"}}',
        ),
    ],
)
def test_lone_surrogates_are_invalid_json(client: httpx.Client, url: str, body: str) -> None:
    response = client.post(url, content=body.encode(), headers={"content-type": "application/json"})
    error = assert_any_error(response, 400, "bad_request")
    if "details" not in error:  # Feast's routes: the message only
        assert "surrogate" in error["message"]
        return
    assert error["details"][0]["type"] == "json_invalid"
    assert "surrogate" in error["details"][0]["ctx"]["error"]


def test_escaped_emoji_is_fine(client: httpx.Client) -> None:
    body = b'{"name": "e_\\ud83d\\ude00", "join_keys": ["id"]}'  # a surrogate pair: valid
    response = client.post(
        "/api/v1/entities", content=body, headers={"content-type": "application/json"}
    )
    assert "not a plain identifier" in assert_error(response, 422)["message"]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_times_beyond_year_1_or_9999_in_utc_are_422(client: httpx.Client, when: str) -> None:
    inside = "2025-01-01T00:00:00Z"
    for body in ({"start": when, "end": inside}, {"start": inside, "end": when}):
        error = assert_error(client.post("/api/v1/materializations", json=body), 422)
        assert "out of range" in error["message"]
    assert_error(
        client.post("/api/v1/materializations", json={"incremental": True, "end": when}), 422
    )
    feast_start = client.post("/materialize", json={"start_ts": when, "end_ts": inside})
    assert_feast_error(feast_start, 422)
    assert_feast_error(client.post("/materialize-incremental", json={"end_ts": when}), 422)
    rows = {"columns": ["customer_id", "event_timestamp"], "data": [[1, when]]}
    historical = client.post(
        "/api/v1/serving/historical",
        json={"features": ["customer_demographics:age"], "entity_rows": rows},
    )
    assert "out of range" in assert_error(historical, 422)["message"]
    training = {
        "name": "never_trained",
        "framework": "lightgbm",
        "model_type": "classification",
        "training_data": {
            "entity_df_source": "churn_labels",
            "label_column": "churned",
            "start_date": when,
        },
    }
    assert_error(client.post("/api/v1/models", json=training), 422)
    assert_error(client.post("/feast/models", json=training), 422)
    assert client.get("/api/v1/models/never_trained").status_code == 404


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("data/x\x00.parquet", "NUL"),
        ("data/" + "a" * 300 + ".parquet", "longer than 255 bytes"),
        ("~no_such_user_here/x.parquet", "no_such_user_here"),
        ("s3://", "names no bucket"),
        ("http://example.com/x.parquet", "s3://"),
    ],
)
def test_paths_no_file_system_takes_are_422(client: httpx.Client, path: str, needle: str) -> None:
    features = ["customer_demographics:age"]
    rows = {"columns": ["customer_id", "event_timestamp"], "data": [[1, "2025-06-01T00:00:00Z"]]}
    url = "/api/v1/serving/historical"
    read = assert_error(client.post(url, json={"features": features, "entity_path": path}), 422)
    assert needle in read["message"] and "entity_path" in read["message"]
    write = client.post(
        url,
        json={"features": features, "entity_rows": rows, "output": "parquet", "output_path": path},
    )
    assert "output_path" in assert_error(write, 422)["message"]
    batch = {"model_id": "churn:1", "input_table": "churn_labels", "output_table": path}
    if "/" in path:
        assert_error(client.post("/feast/predictions/batch", json=batch), 422)
    batch = {"model_id": "churn:1", "input_table": path, "output_table": "o"}
    assert_error(client.post("/feast/predictions/batch", json=batch), 422)
    training = {
        "name": "never_trained",
        "framework": "lightgbm",
        "model_type": "classification",
        "training_data": {"entity_df_source": path, "label_column": "churned"},
    }
    assert needle in assert_error(client.post("/api/v1/models", json=training), 422)["message"]
    assert_error(client.post("/feast/models", json=training), 422)


def test_output_paths_that_are_directories_or_under_files(
    client: httpx.Client, server: Any
) -> None:
    (server.repo / "outputs" / "a_directory").mkdir(parents=True, exist_ok=True)
    (server.repo / "outputs" / "a_file.parquet").write_bytes(b"not a directory")
    rows = {"columns": ["customer_id", "event_timestamp"], "data": [[1, "2025-06-01T00:00:00Z"]]}
    body = {"features": ["customer_demographics:age"], "entity_rows": rows, "output": "parquet"}
    url = "/api/v1/serving/historical"
    for path in ("outputs", "outputs/a_directory", "outputs/a_file.parquet/x.parquet"):
        error = assert_error(client.post(url, json={**body, "output_path": path}), 422)
        assert "output_path" in error["message"]


def test_training_input_outside_the_read_roots_is_403(client: httpx.Client) -> None:
    training = {
        "name": "never_trained",
        "framework": "lightgbm",
        "model_type": "classification",
        "training_data": {"entity_df_source": "/", "label_column": "churned"},
    }
    error = assert_error(client.post("/api/v1/models", json=training), 403, "forbidden")
    assert "outside the folders the API reads" in error["message"]
    training["random_state"] = -1
    assert_error(client.post("/api/v1/models", json=training), 422)


@pytest.mark.parametrize("path", ["data/x\x00.parquet", "data/" + "a" * 300 + ".parquet"])
def test_sources_with_unusable_paths_are_refused(client: httpx.Client, path: str) -> None:
    """Such a path would be stored, then fail every later read of the source."""
    source = {"name": "unusable_src", "type": "file", "path": path}
    assert "path" in assert_error(client.post("/api/v1/data-sources", json=source), 422)["message"]
    assert client.get("/api/v1/data-sources/unusable_src").status_code == 404
    view = {
        "name": "unusable_view",
        "entities": ["customer"],
        "features": [{"name": "age", "dtype": "int64"}],
        "source": source,
    }
    assert_error(client.post("/api/v1/feature-views", json=view), 422)
    assert client.get("/api/v1/feature-views/unusable_view").status_code == 404
