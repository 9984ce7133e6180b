"""Online and historical serving, push and materialization routes over real HTTP."""

from __future__ import annotations

import math
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

BEHAVIOR = [
    "customer_behavior:tenure_months",
    "customer_behavior:monthly_charges",
    "customer_behavior:orders",
]
DEMOGRAPHICS = ["customer_demographics:age", "customer_demographics:region"]


def assert_error(response: httpx.Response, status: int, type_: str | None = None) -> Any:
    """Check the API's error shape and return ``error``."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"type", "message", "details"}
    assert error["message"]
    if type_ is not None:
        assert error["type"] == type_, error
    return error


def _now() -> str:
    return datetime.now(UTC).isoformat()


# --- online ------------------------------------------------------------------------------------


def test_online_values_and_statuses(client: httpx.Client) -> None:
    response = client.post(
        "/api/v1/serving/online",
        json={"features": DEMOGRAPHICS, "entities": {"customer_id": [1, 2, 999_999]}},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["feature_names"] == ["age", "region"]
    assert body["join_keys"] == ["customer_id"]
    assert body["metadata"]["latency_ms"] >= 0
    rows = body["results"]
    assert [r["entity"] for r in rows] == [
        {"customer_id": 1},
        {"customer_id": 2},
        {"customer_id": 999_999},
    ]
    for row in rows[:2]:
        assert row["statuses"] == {"age": "present", "region": "present"}
        assert isinstance(row["values"]["age"], int)
        assert row["values"]["region"] in ("north", "south", "east", "west", "central")
        assert row["event_timestamps"]["age"].endswith("Z")
    assert rows[2]["statuses"] == {"age": "not_found", "region": "not_found"}
    assert rows[2]["values"] == {"age": None, "region": None}
    assert rows[2]["event_timestamps"] == {"age": None, "region": None}


def test_online_matches_the_sdk(client: httpx.Client, demo_repo: Path) -> None:
    from quiver.store import FeatureStore

    keys = [3, 4, 5, 123]
    body = client.post(
        "/api/v1/serving/online",
        json={
            "feature_service": "churn_prediction_v1",
            "entities": {"customer_id": keys},
            "full_feature_names": True,
        },
    ).json()
    with FeatureStore(repo_path=demo_repo) as store:
        sdk = store.get_online_features(
            feature_service="churn_prediction_v1",
            entity_rows=[{"customer_id": k} for k in keys],
            full_feature_names=True,
        )
    assert body["feature_names"] == sdk.feature_names
    assert "customer_behavior__tenure_months" in body["feature_names"]
    assert body["metadata"]["feature_service"] == "churn_prediction_v1"
    for i, row in enumerate(body["results"]):
        for name in sdk.feature_names:
            expected = sdk.values[name][i]
            got = row["values"][name]
            if isinstance(expected, float):
                assert math.isclose(got, expected)
            else:
                assert got == expected
            assert row["statuses"][name] == sdk.statuses[name][i]


def test_online_bad_requests(client: httpx.Client, server: Any) -> None:
    url = "/api/v1/serving/online"
    assert_error(
        client.post(url, json={"features": ["nope:x"], "entities": {"customer_id": [1]}}), 404
    )
    error = assert_error(
        client.post(
            url, json={"features": ["customer_behavior:tenure"], "entities": {"customer_id": [1]}}
        ),
        404,
    )
    assert "tenure_months" in error["message"]
    assert_error(client.post(url, json={"features": DEMOGRAPHICS, "entities": {"cust": [1]}}), 422)
    assert_error(
        client.post(url, json={"features": DEMOGRAPHICS, "entities": {"customer_id": ["a"]}}), 422
    )
    assert_error(client.post(url, json={"features": DEMOGRAPHICS, "entities": {}}), 422)
    assert_error(
        client.post(url, json={"features": DEMOGRAPHICS, "entities": {"customer_id": []}}), 422
    )
    assert_error(client.post(url, json={"entities": {"customer_id": [1]}}), 422)
    assert_error(
        client.post(
            url,
            json={
                "features": DEMOGRAPHICS,
                "feature_service": "churn_prediction_v1",
                "entities": {"customer_id": [1]},
            },
        ),
        422,
    )
    too_many = list(range(server.max_inline_rows + 1))
    assert_error(
        client.post(url, json={"features": DEMOGRAPHICS, "entities": {"customer_id": too_many}}),
        413,
        "payload_too_large",
    )


# --- push --------------------------------------------------------------------------------------


def test_push_online_then_read_back(client: httpx.Client) -> None:
    key = 500_000 + uuid.uuid4().int % 100_000
    row = {
        "customer_id": key,
        "event_timestamp": _now(),
        "tenure_months": 7,
        "monthly_charges": 42,  # an int for a float64 feature is accepted
        "total_charges": 294.5,
        "support_tickets": 0,
        "orders": 3,
        "avg_order_value": 19.9,
        "days_since_last_order": 2,
    }
    pushed = client.post("/api/v1/push", json={"view": "customer_behavior", "rows": [row]})
    assert pushed.status_code == 200, pushed.text
    answer = pushed.json()
    assert {k: answer[k] for k in ("view", "rows", "to")} == {
        "view": "customer_behavior",
        "rows": 1,
        "to": "online",
    }
    assert answer["validation"]["rows_invalid"] == 0  # the demo's view declares min_value: 0
    body = client.post(
        "/api/v1/serving/online",
        json={"features": BEHAVIOR, "entities": {"customer_id": [key]}},
    ).json()
    result = body["results"][0]
    assert result["statuses"] == dict.fromkeys(
        ["tenure_months", "monthly_charges", "orders"], "present"
    )
    assert result["values"] == {"tenure_months": 7, "monthly_charges": 42.0, "orders": 3}


def test_push_bad_input(client: httpx.Client, server: Any) -> None:
    base = {"customer_id": 1, "event_timestamp": _now(), "age": 30, "gender": "other"}
    full = {**base, "region": "north"}
    assert_error(client.post("/api/v1/push", json={"view": "nope", "rows": [full]}), 404)
    error = assert_error(
        client.post("/api/v1/push", json={"view": "customer_demographics", "rows": [base]}), 422
    )
    assert "region" in error["message"]
    bad_ts = {**full, "event_timestamp": "yesterday-ish"}
    assert_error(
        client.post("/api/v1/push", json={"view": "customer_demographics", "rows": [bad_ts]}), 422
    )
    typed = {**full, "age": "thirty"}
    assert_error(
        client.post("/api/v1/push", json={"view": "customer_demographics", "rows": [typed]}), 422
    )
    extra = {**full, "shoe_size": 44}
    assert_error(
        client.post("/api/v1/push", json={"view": "customer_demographics", "rows": [extra]}), 422
    )
    assert_error(
        client.post(
            "/api/v1/push", json={"view": "customer_demographics", "rows": [full], "to": "disk"}
        ),
        422,
    )
    assert_error(
        client.post("/api/v1/push", json={"view": "customer_demographics", "rows": []}), 422
    )
    # nothing was written: customer 1's age is unchanged
    many = [{**full, "customer_id": i} for i in range(server.max_inline_rows + 1)]
    assert_error(
        client.post("/api/v1/push", json={"view": "customer_demographics", "rows": many}), 413
    )


def test_push_both_reaches_the_offline_store(client: httpx.Client, server: Any) -> None:
    suffix = uuid.uuid4().hex[:8]
    source_file = f"data/push_{suffix}.parquet"
    shutil.copy(server.repo / "data/customer_demographics.parquet", server.repo / source_file)
    view = f"pushable_{suffix}"
    created = client.post(
        "/api/v1/feature-views",
        json={
            "name": view,
            "entities": ["customer"],
            "features": [{"name": "age", "dtype": "int64"}, {"name": "region", "dtype": "string"}],
            "source": {"type": "file", "name": f"src_{suffix}", "path": source_file},
        },
    )
    assert created.status_code == 201, created.text
    key = 700_001
    when = "2026-03-01T12:00:00Z"
    pushed = client.post(
        "/api/v1/push",
        json={
            "view": view,
            "to": "both",
            "rows": [{"customer_id": key, "event_timestamp": when, "age": 77, "region": "west"}],
        },
    )
    assert pushed.status_code == 200, pushed.text
    online = client.post(
        "/api/v1/serving/online",
        json={"features": [f"{view}:age"], "entities": {"customer_id": [key]}},
    ).json()
    assert online["results"][0]["values"] == {"age": 77}
    historical = client.post(
        "/api/v1/serving/historical",
        json={
            "features": [f"{view}:age", f"{view}:region"],
            "entity_rows": {
                "columns": ["customer_id", "event_timestamp"],
                "data": [[key, "2026-03-02T00:00:00Z"], [key, "2026-02-01T00:00:00Z"]],
            },
        },
    )
    assert historical.status_code == 200, historical.text
    rows = historical.json()["data"]
    assert rows[0][2:] == [77, "west"]
    assert rows[1][2:] == [None, None]


# --- historical --------------------------------------------------------------------------------


def test_historical_inline_matches_the_sdk(client: httpx.Client, demo_repo: Path) -> None:
    from quiver.store import FeatureStore

    data = [
        [1, "2025-06-01T00:00:00Z", 10],
        [2, "2025-09-15T12:30:00+00:00", 20],
        [1, "2025-06-01T00:00:00Z", 30],
        [999_999, "2025-06-01T00:00:00", 40],
        [5, "2019-01-01T00:00:00Z", 50],
    ]
    features = [*BEHAVIOR, *DEMOGRAPHICS]
    response = client.post(
        "/api/v1/serving/historical",
        json={
            "features": features,
            "entity_rows": {"columns": ["customer_id", "event_timestamp", "label"], "data": data},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["row_count"] == 5
    assert body["output_path"] is None
    assert body["columns"][:3] == ["customer_id", "event_timestamp", "label"]
    entity = pa.table(
        {
            "customer_id": [r[0] for r in data],
            "event_timestamp": pa.array(
                [
                    datetime(2025, 6, 1, tzinfo=UTC),
                    datetime(2025, 9, 15, 12, 30, tzinfo=UTC),
                    datetime(2025, 6, 1, tzinfo=UTC),
                    datetime(2025, 6, 1, tzinfo=UTC),
                    datetime(2019, 1, 1, tzinfo=UTC),
                ],
                type=pa.timestamp("us", tz="UTC"),
            ),
            "label": [r[2] for r in data],
        }
    )
    with FeatureStore(repo_path=demo_repo) as store:
        expected = store.get_historical_features(entity, features=features).to_arrow()
    assert body["columns"] == expected.column_names
    for got, want in zip(body["data"], expected.to_pylist(), strict=True):
        for name, value in zip(body["columns"], got, strict=True):
            if name == "event_timestamp":
                assert datetime.fromisoformat(value.replace("Z", "+00:00")) == want[name]
            elif isinstance(want[name], float):
                assert math.isclose(value, want[name])
            else:
                assert value == want[name], name
    assert body["data"][3][3:] == [None] * len(features)  # unknown customer
    assert body["data"][4][3:] == [None] * len(features)  # before any data


def test_historical_from_a_source_to_parquet(client: httpx.Client, demo_repo: Path) -> None:
    response = client.post(
        "/api/v1/serving/historical",
        json={
            "feature_service": "churn_prediction_v1",
            "entity_source": "churn_labels",
            "output": "parquet",
            "output_path": f"outputs/train_{uuid.uuid4().hex[:6]}.parquet",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    path = Path(body["output_path"])
    assert path.is_relative_to((demo_repo / "outputs").resolve())
    table = pq.read_table(path)
    labels = pq.read_table(demo_repo / "data/churn_labels.parquet")
    assert body["row_count"] == table.num_rows == labels.num_rows
    assert body["columns"] == table.column_names
    assert "tenure_months" in body["columns"] and "churned" in body["columns"]
    assert body["data"] is None

    default = client.post(
        "/api/v1/serving/historical",
        json={
            "features": DEMOGRAPHICS,
            "entity_path": "data/churn_labels.parquet",
            "output": "parquet",
        },
    )
    assert default.status_code == 200, default.text
    assert "/outputs/historical-" in default.json()["output_path"]


def test_historical_bad_requests(client: httpx.Client, server: Any) -> None:
    url = "/api/v1/serving/historical"
    rows = {"columns": ["customer_id", "event_timestamp"], "data": [[1, "2025-06-01T00:00:00Z"]]}
    ok = {"features": DEMOGRAPHICS, "entity_rows": rows}
    assert client.post(url, json=ok).status_code == 200
    assert_error(client.post(url, json={**ok, "entity_source": "churn_labels"}), 422)
    assert_error(client.post(url, json={"features": DEMOGRAPHICS}), 422)
    assert_error(client.post(url, json={**ok, "output_path": "x.parquet"}), 422)
    outside = {**ok, "output": "parquet", "output_path": "../../escape.parquet"}
    assert_error(client.post(url, json=outside), 403)
    assert_error(
        client.post(url, json={**ok, "output": "parquet", "output_path": "/tmp/x.parquet"}), 403
    )
    assert_error(
        client.post(url, json={"features": DEMOGRAPHICS, "entity_path": "/etc/passwd"}), 403
    )
    assert_error(
        client.post(url, json={"features": DEMOGRAPHICS, "entity_path": "data/nope.parquet"}), 404
    )
    assert_error(client.post(url, json={"features": DEMOGRAPHICS, "entity_source": "nope"}), 404)
    ragged = {"columns": ["customer_id", "event_timestamp"], "data": [[1]]}
    assert_error(client.post(url, json={"features": DEMOGRAPHICS, "entity_rows": ragged}), 422)
    bad_ts = {"columns": ["customer_id", "event_timestamp"], "data": [[1, "not a time"]]}
    assert_error(client.post(url, json={"features": DEMOGRAPHICS, "entity_rows": bad_ts}), 422)
    mixed = {
        "columns": ["customer_id", "event_timestamp"],
        "data": [[1, "2025-01-01"], ["x", "2025-01-01"]],
    }
    assert_error(client.post(url, json={"features": DEMOGRAPHICS, "entity_rows": mixed}), 422)
    no_ts = {"columns": ["customer_id"], "data": [[1]]}
    assert_error(client.post(url, json={"features": DEMOGRAPHICS, "entity_rows": no_ts}), 422)
    big = {
        "columns": ["customer_id", "event_timestamp"],
        "data": [[1, "2025-06-01T00:00:00Z"]] * (server.max_inline_rows + 1),
    }
    assert_error(client.post(url, json={"features": DEMOGRAPHICS, "entity_rows": big}), 413)


def test_historical_to_s3(demo_repo: Path, serve_repo: Any, s3: Any) -> None:
    """The Parquet output goes to the S3 object (it once went to a local file 's3:/...')."""
    import io

    server = serve_repo(demo_repo, env=s3.env)
    key = f"training/{uuid.uuid4().hex[:8]}.parquet"
    rows = {
        "columns": ["customer_id", "event_timestamp"],
        "data": [[1, "2025-06-01T00:00:00Z"], [2, "2025-06-01T00:00:00Z"], [3, _now()]],
    }
    with server.client() as client:
        response = client.post(
            "/api/v1/serving/historical",
            json={
                "features": DEMOGRAPHICS,
                "entity_rows": rows,
                "output": "parquet",
                "output_path": f"s3://{s3.bucket}/{key}",
            },
        )
        assert response.status_code == 200, response.text
        inline = client.post(
            "/api/v1/serving/historical", json={"features": DEMOGRAPHICS, "entity_rows": rows}
        ).json()
    answer = response.json()
    assert answer["row_count"] == 3 and answer["output_path"] == f"s3://{s3.bucket}/{key}"
    assert answer["columns"] == ["customer_id", "event_timestamp", "age", "region"]
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    assert table.column_names == answer["columns"]
    assert [list(r.values())[2:] for r in table.to_pylist()] == [r[2:] for r in inline["data"]]
    assert not list(demo_repo.rglob("s3:*")) and not list(Path.cwd().glob("s3:*"))


# --- materialization ---------------------------------------------------------------------------


def test_materializations(client: httpx.Client) -> None:
    started = client.post(
        "/api/v1/materializations",
        json={
            "start": "2025-01-01T00:00:00Z",
            "end": "2025-12-31T00:00:00Z",
            "views": ["customer_contract"],
        },
    )
    assert started.status_code == 201, started.text
    runs = started.json()["items"]
    assert len(runs) == 1
    run = runs[0]
    assert run["view"] == "customer_contract"
    assert run["status"] == "succeeded"
    assert run["rows_written"] >= 0
    assert run["duration_seconds"] >= 0

    end = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    incremental = client.post("/api/v1/materializations", json={"incremental": True, "end": end})
    assert incremental.status_code == 201, incremental.text
    views = {r["view"] for r in incremental.json()["items"]}
    assert {"customer_behavior", "customer_demographics", "customer_contract"} <= views

    listing = client.get("/api/v1/materializations", params={"view": "customer_contract"}).json()
    assert listing["count"] >= 2
    assert {r["view"] for r in listing["items"]} == {"customer_contract"}
    assert all({"status", "rows_written", "duration_seconds"} <= set(r) for r in listing["items"])
    assert client.get("/api/v1/materializations", params={"limit": 1}).json()["count"] == 1

    url = "/api/v1/materializations"
    assert_error(client.post(url, json={"end": "2025-01-01T00:00:00Z"}), 422)
    assert_error(
        client.post(url, json={"start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}),
        422,
    )
    assert_error(client.post(url, json={"start": "2025-01-01T00:00:00Z", "views": ["nope"]}), 404)
    assert_error(client.post(url, json={"start": "yesterday"}), 422)
    assert_error(client.get(url, params={"view": "nope"}), 404)
    assert_error(client.get(url, params={"limit": 0}), 422)
