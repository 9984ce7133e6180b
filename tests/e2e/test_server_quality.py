"""Validation rules over REST: every rule and policy at ``/api/v1/push`` and Feast's ``/push``,
materialization answers with counts, ``use_defaults`` on online reads, and the demo's done-when
(a push of ``orders = -5`` is refused over REST and in the SDK, the stored value intact)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from _http import BEHAVIOR_ROW, assert_error
from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.errors import DataValidationError

NOW = datetime.now(UTC).replace(microsecond=0)
GOOD = {"orders": 3, "charge": 20.0, "plan": "a", "code": "AB"}
BAD = {
    "min_value": ({"orders": -5}, "orders:min_value"),
    "max_value": ({"charge": 500.0}, "charge:max_value"),
    "allowed_values": ({"plan": "z"}, "plan:allowed_values"),
    "regex": ({"code": "x1"}, "code:regex"),
    "not_null": ({"orders": None}, "orders:not_null"),
    "check": ({"orders": 2000}, "check:orders <= 1000"),
}
customer = Entity(name="customer", join_keys=["customer_id"])
source = FileSource(name="src", path="data/src.parquet", timestamp_field="ts")


def policy_view(policy: str) -> FeatureView:
    return FeatureView(
        name=f"v_{policy}",
        entities=[customer],
        features=[
            Field(
                name="orders",
                dtype="int64",
                validation_rules={"min_value": 0, "not_null": True},
                default_value=0,
            ),
            Field(name="charge", dtype="float64", validation_rules={"max_value": 100}),
            Field(name="plan", dtype="string", allowed_values=["a", "b"], default_value="a"),
            Field(name="code", dtype="string", validation_rules={"regex": "[A-Z]{2}"}),
        ],
        source=source,
        validation={"policy": policy, "checks": ["orders <= 1000"]},
    )


def source_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([r["customer_id"] for r in rows], pa.int64()),
            "ts": pa.array([NOW - timedelta(hours=1)] * len(rows), pa.timestamp("us", tz="UTC")),
            **{
                name: pa.array([r[name] for r in rows], kind)
                for name, kind in (
                    ("orders", pa.int64()),
                    ("charge", pa.float64()),
                    ("plan", pa.string()),
                    ("code", pa.string()),
                )
            },
        }
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, session_serve_repo: Callable[..., Any]) -> Any:
    root = tmp_path_factory.mktemp("quality") / "repo"
    (root / "data").mkdir(parents=True)
    config = {"project": "quality", "definitions": []}
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    pq.write_table(source_table([{"customer_id": 1, **GOOD}]), root / "data" / "src.parquet")
    with FeatureStore(root) as store:
        store.apply([customer, source, *(policy_view(p) for p in ("reject", "drop", "warn"))])
    return session_serve_repo(root)


@pytest.fixture
def client(server: Any) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def new_key() -> int:
    return 100_000 + uuid.uuid4().int % 1_000_000


def push(client: httpx.Client, entry: str, view: str, rows: list[dict[str, Any]]) -> Any:
    if entry == "native":
        return client.post("/api/v1/push", json={"view": view, "rows": rows})
    columns = {name: [r[name] for r in rows] for name in rows[0]}
    return client.post("/push", json={"push_source_name": view, "df": columns, "to": "online"})


def read(client: httpx.Client, view: str, keys: list[int], **extra: Any) -> list[dict[str, Any]]:
    response = client.post(
        "/api/v1/serving/online",
        json={"features": [f"{view}:*"], "entities": {"customer_id": keys}, **extra},
    )
    assert response.status_code == 200, response.text
    return [r["values"] for r in response.json()["results"]]


ENTRIES = ["native", "feast"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("rule", sorted(BAD))
def test_reject_is_a_422_and_keeps_the_stored_values(
    client: httpx.Client, entry: str, rule: str
) -> None:
    change, failure = BAD[rule]
    a, b = new_key(), new_key()
    seeded = push(client, entry, "v_reject", [{"customer_id": k, **GOOD} for k in (a, b)])
    assert seeded.status_code == 200, seeded.text
    before = read(client, "v_reject", [a, b])
    rows = [{"customer_id": b, **GOOD, "orders": 9}, {"customer_id": a, **GOOD, **change}]
    response = push(client, entry, "v_reject", rows)
    if entry == "native":
        error = assert_error(response, 422, "validation_failed")
        assert error["details"]["failures"] == {failure: 1}
        assert error["details"]["samples"][failure] == [{"customer_id": a}]
    else:  # Feast's error body: FeastError.to_error_detail() as a JSON string
        assert response.status_code == 422, response.text
        error = json.loads(response.json())
    assert f"customer_id={a}" in error["message"] and failure.split(":")[1] in error["message"]
    assert read(client, "v_reject", [a, b]) == before


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("policy", ["drop", "warn"])
@pytest.mark.parametrize("rule", sorted(BAD))
def test_drop_and_warn_answer_with_counts(
    client: httpx.Client, entry: str, policy: str, rule: str
) -> None:
    change, failure = BAD[rule]
    a, b = new_key(), new_key()
    view = f"v_{policy}"
    push(client, entry, view, [{"customer_id": a, **GOOD}])
    rows = [{"customer_id": b, **GOOD, "orders": 9}, {"customer_id": a, **GOOD, **change}]
    response = push(client, entry, view, rows)
    assert response.status_code == 200, response.text
    written = 1 if policy == "drop" else 2
    if entry == "native":
        body = response.json()
        assert body["rows"] == written
        counts = body["validation"]
        assert counts["policy"] == policy and counts["failures"] == {failure: 1}
        assert (counts["rows_checked"], counts["rows_invalid"]) == (2, 1)
        assert counts["rows_dropped"] == (1 if policy == "drop" else 0)
    else:
        assert response.content == b""  # Feast's push answers an empty body
        assert response.headers["x-quiver-rows"] == str(written)
        assert response.headers["x-quiver-rows-invalid"] == "1"
        assert response.headers["x-quiver-rows-dropped"] == ("1" if policy == "drop" else "0")
    values = read(client, view, [a, b])
    assert values[1]["orders"] == 9  # b: written
    expected = GOOD if policy == "drop" else {**GOOD, **change}
    assert values[0] == expected  # a: kept (drop) or replaced (warn)


def test_materialize_answers_with_counts(client: httpx.Client, server: Any) -> None:
    rows = [{"customer_id": 1, **GOOD}, {"customer_id": 2, **GOOD, "orders": -1}]
    pq.write_table(source_table(rows), server.repo / "data" / "src.parquet")
    start = (NOW - timedelta(days=1)).isoformat()
    end = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    response = client.post(
        "/api/v1/materializations",
        json={"start": start, "end": end, "views": ["v_drop", "v_warn"]},
    )
    assert response.status_code == 201, response.text
    drop, warn = response.json()["items"]
    assert (drop["rows_written"], drop["rows_invalid"], drop["rows_dropped"]) == (1, 1, 1)
    assert drop["validation"]["failures"] == {"orders:min_value": 1}
    assert (warn["rows_written"], warn["rows_invalid"], warn["rows_dropped"]) == (2, 1, 0)
    before = read(client, "v_reject", [1, 2])
    refused = client.post(
        "/api/v1/materializations", json={"start": start, "end": end, "views": ["v_reject"]}
    )
    error = assert_error(refused, 422, "validation_failed")
    assert error["details"]["samples"] == {"orders:min_value": [{"customer_id": 2}]}
    assert read(client, "v_reject", [1, 2]) == before
    runs = client.get("/api/v1/materializations", params={"view": "v_reject", "limit": 1})
    (run,) = runs.json()["items"]
    assert (run["status"], run["rows_written"], run["rows_invalid"]) == ("failed", 0, 1)


def test_online_reads_with_defaults(client: httpx.Client) -> None:
    key = new_key()
    empty = {"orders": None, "charge": None, "plan": None, "code": None}
    assert read(client, "v_warn", [key]) == [empty]
    filled = {"orders": 0, "charge": None, "plan": "a", "code": None}
    assert read(client, "v_warn", [key], use_defaults=True) == [filled]
    assert_error(
        client.post(
            "/api/v1/serving/online",
            json={
                "features": ["v_warn:orders"],
                "entities": {"customer_id": [1]},
                "use_defaults": 1,
            },
        ),
        422,
    )


def test_demo_refuses_negative_orders_over_rest_and_sdk(
    new_demo_server: Callable[[], Any],
) -> None:
    server = new_demo_server()
    key = 1
    features = ["customer_behavior:orders", "customer_behavior:monthly_charges"]
    with server.client() as client:

        def stored() -> Any:
            body = client.post(
                "/api/v1/serving/online",
                json={"features": features, "entities": {"customer_id": [key]}},
            ).json()
            return body["results"][0]["values"]

        good = {"customer_id": key, **BEHAVIOR_ROW}
        seeded = client.post("/api/v1/push", json={"view": "customer_behavior", "rows": [good]})
        assert seeded.status_code == 200, seeded.text
        before = stored()
        assert before == {"orders": BEHAVIOR_ROW["orders"], "monthly_charges": 42.0}
        bad = {"customer_id": key, **BEHAVIOR_ROW, "orders": -5}
        error = assert_error(
            client.post("/api/v1/push", json={"view": "customer_behavior", "rows": [bad]}),
            422,
            "validation_failed",
        )
        assert "feature 'orders' fails min_value" in error["message"]
        assert stored() == before
        feast = client.post(
            "/push",
            json={
                "push_source_name": "customer_behavior",
                "df": {k: [v] for k, v in {**bad, "monthly_charges": -99.0}.items()},
            },
        )
        assert feast.status_code == 422, feast.text
        message = json.loads(feast.json())["message"]
        assert "feature 'orders' fails min_value" in message
        assert "feature 'monthly_charges' fails min_value" in message
        assert stored() == before
        with (
            FeatureStore(repo_path=Path(server.repo)) as store,
            pytest.raises(DataValidationError, match="feature 'orders' fails min_value"),
        ):
            store.push("customer_behavior", [bad])
        assert stored() == before


def test_rules_are_defined_over_rest(client: httpx.Client) -> None:
    spec = {
        "name": "v_rest",
        "entities": ["customer"],
        "features": [
            {
                "name": "orders",
                "dtype": "int64",
                "validation_rules": {"min_value": 0, "max_value": 50},
                "default_value": 1,
            },
            {"name": "plan", "dtype": "string", "allowed_values": ["a", "b"]},
        ],
        "source": "src",
        "validation": {"policy": "drop", "checks": ["orders < 40 OR plan = 'b'"]},
    }
    created = client.post("/api/v1/feature-views", json=spec)
    assert created.status_code == 201, created.text
    stored = client.get("/api/v1/feature-views/v_rest").json()["spec"]
    assert stored["features"][0]["validation_rules"] == {"min_value": 0, "max_value": 50}
    assert stored["features"][0]["default_value"] == 1
    assert stored["features"][1]["allowed_values"] == ["a", "b"]
    assert stored["validation"] == spec["validation"]
    for bad, message in (
        ({"validation_rules": {"min_value": "zero"}}, "min_value"),
        ({"validation_rules": {"regex": "a"}}, "regex needs a string"),
        ({"default_value": -1, "validation_rules": {"min_value": 0}}, "fails its own rule"),
    ):
        wrong = {**spec, "name": "v_rest_bad", "features": [{**spec["features"][0], **bad}]}
        error = assert_error(client.post("/api/v1/feature-views", json=wrong), 422)
        assert message in str(error), error
    bad_check = {**spec, "name": "v_rest_bad", "validation": {"checks": ["read_csv('x') = 1"]}}
    assert (
        "read_csv"
        in assert_error(client.post("/api/v1/feature-views", json=bad_check), 422)["message"]
    )
