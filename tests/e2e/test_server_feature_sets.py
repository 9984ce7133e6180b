"""The specification's resources over real HTTP: feature sets, features, their materialization
and the serving shape keyed by entity id (issue 15 part 4, issue 18 part 5).

The specification's bodies are sent as written; every write is checked as a new version of
the set's feature view in the registry history, and values against the Parquet files.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.e2e.test_server_registry import assert_error

USERS = 20
BASE = datetime(2025, 1, 1, tzinfo=UTC)

# The specification's bodies, as written.
FEATURE_SET = {
    "name": "user_features",
    "description": "User behavioral features",
    "owner": "ml-team@company.com",
    "entities": ["user"],
    "source_type": "batch",
    "offline_enabled": True,
    "online_enabled": True,
    "materialization_schedule": "0 */6 * * *",
}
FEATURE = {
    "name": "total_purchases",
    "feature_set_id": "user_features",
    "description": "Total number of purchases",
    "data_type": "int",
    "transformation": None,
    "validation_rules": {"min_value": 0, "max_value": 100000},
    "default_value": 0,
    "allowed_values": None,
    "window_size": None,
    "source_features": None,
}
NOT_YET = ("validation_rules", "default_value", "allowed_values")  # the fixture's set: plain


def _users() -> pa.Table:
    """Two snapshots per user: day 10 and day 40 of 2025."""
    rows: dict[str, list[Any]] = {
        "user_id": [],
        "event_timestamp": [],
        "total_purchases": [],
        "avg_order_value": [],
    }
    for day in (10, 40):
        for u in range(1, USERS + 1):
            rows["user_id"].append(u)
            rows["event_timestamp"].append(BASE + timedelta(days=day))
            rows["total_purchases"].append(u * 10 + day)
            rows["avg_order_value"].append(u * 1.5 + day / 10)
    return pa.table(rows)


def _purchases() -> pa.Table:
    """Purchase events: user u buys on days u..u+9 of 2025, amount = day."""
    rows: dict[str, list[Any]] = {"user_id": [], "event_timestamp": [], "amount": []}
    for u in range(1, USERS + 1):
        for day in range(u, u + 10):
            rows["user_id"].append(u)
            rows["event_timestamp"].append(BASE + timedelta(days=day, hours=1))
            rows["amount"].append(float(day))
    return pa.table(rows)


@pytest.fixture(scope="module")
def spec_server(new_demo_server: Callable[[], Any]) -> Any:
    server = new_demo_server()
    pq.write_table(_users(), server.repo / "data" / "users.parquet")
    pq.write_table(_purchases(), server.repo / "data" / "purchases.parquet")
    with server.client() as client:
        for path, body in (
            ("/api/v1/entities", {"name": "user", "join_keys": ["user_id"]}),
            # Named like the set, so the specification's body (which names no source) reads it.
            ("/api/v1/data-sources", {"name": "user_features", "path": "data/users.parquet"}),
        ):
            r = client.post(path, json=body)
            assert r.status_code == 201, r.text
    return server


@pytest.fixture
def api(spec_server: Any) -> Any:
    with spec_server.client() as client:
        yield client


def _history(api: httpx.Client, view: str) -> list[dict[str, Any]]:
    r = api.get(f"/api/v1/feature-views/{view}/history")
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _post(api: httpx.Client, path: str, body: dict[str, Any], status: int = 201) -> Any:
    r = api.post(path, json=body)
    assert r.status_code == status, r.text
    return r.json()


@pytest.fixture(scope="module")
def user_features(spec_server: Any) -> dict[str, Any]:
    """The specification's set with four features, materialized."""
    with spec_server.client() as api:
        created = _post(api, "/api/v1/feature-sets", FEATURE_SET)
        plain = {k: v for k, v in FEATURE.items() if k not in NOT_YET}
        _post(api, "/api/v1/features", plain)
        _post(
            api,
            "/api/v1/features",
            {"name": "avg_order_value", "feature_set_id": "user_features", "data_type": "float"},
        )
        _post(
            api,
            "/api/v1/features",
            {
                "name": "total_spend",
                "feature_set_id": "user_features",
                "data_type": "float",
                "transformation": "total_purchases * avg_order_value",
                "source_features": ["total_purchases", "avg_order_value"],
            },
        )
        _post(
            api,
            "/api/v1/features",
            {
                "name": "big_spender",
                "feature_set_id": "user_features",
                "data_type": "bool",
                "transformation": "avg_order_value > 20",
            },
        )
        runs = _post(
            api,
            "/api/v1/feature-sets/user_features/materialize",
            {"start_date": "2025-01-01", "end_date": "2026-01-01"},
        )
    return {"created": created, "runs": runs}


def test_the_specification_feature_set_body_as_written(
    api: httpx.Client, user_features: dict[str, Any]
) -> None:
    created = user_features["created"]
    assert created["id"] == "user_features" == created["name"]
    assert created["features"] == [] and created["version"] == 1
    assert created["entities"] == ["user"] and created["source"] == "user_features"
    assert created["materialization_schedule"] == "0 */6 * * *"
    assert created["source_type"] == "batch"
    assert created["offline_enabled"] is True and created["online_enabled"] is True
    assert created["owner"] == "ml-team@company.com" and created["tags"] == {}

    got = api.get("/api/v1/feature-sets/user_features").json()
    assert [f["id"] for f in got["features"]] == [
        "user_features:total_purchases",
        "user_features:avg_order_value",
        "user_features:total_spend",
        "user_features:big_spender",
    ]
    types = {f["name"]: f["data_type"] for f in got["features"]}
    assert types == {
        "total_purchases": "int64",
        "avg_order_value": "float64",
        "total_spend": "float64",
        "big_spender": "bool",
    }
    assert got["features"][2]["source_features"] == ["total_purchases", "avg_order_value"]
    # One new version of the view per write: the create and four features.
    history = _history(api, "user_features")
    assert [v["version"] for v in history] == [1, 2, 3, 4, 5] == [*range(1, got["version"] + 1)]
    assert [len(v["spec"]["features"]) for v in history] == [0, 1, 2, 3, 4]
    # The set is a feature view, and every feature view is a set.
    listed = {s["id"] for s in api.get("/api/v1/feature-sets").json()["items"]}
    assert {"user_features", "customer_behavior"} <= listed
    view = api.get("/api/v1/feature-views/user_features").json()
    assert view["version"] == got["version"]
    # The schedule is the view's own, which the scheduler runs.
    assert view["spec"]["materialization_schedule"] == "0 */6 * * *"
    assert created["schedule_timezone"] == "UTC"
    schedules = api.get("/api/v1/schedules").json()["items"]
    assert {"view": "user_features", "cron": "0 */6 * * *", "timezone": "UTC"}.items() <= next(
        s for s in schedules if s["view"] == "user_features"
    ).items()


def test_the_specification_feature_body_stores_validation_rules_and_defaults(
    api: httpx.Client, user_features: dict[str, Any]
) -> None:
    # A set of its own over the same source (user_features' data stays as the others read it).
    _post(api, "/api/v1/feature-sets", {**FEATURE_SET, "name": "rules", "source": "user_features"})
    body = {**FEATURE, "feature_set_id": "rules"}
    _post(api, "/api/v1/features", body)
    view = api.get("/api/v1/feature-views/rules").json()["spec"]
    (field,) = view["features"]
    assert field["validation_rules"] == {"min_value": 0, "max_value": 100000}
    assert field["default_value"] == 0
    before = _history(api, "rules")
    windowed = {**body, "name": "purchases_7d", "window_size": "7d"}
    windowed["transformation"] = "SUM(total_purchases)"
    error = assert_error(api.post("/api/v1/features", json=windowed), 422, "invalid")
    assert error["details"] == {"unsupported": ["validation_rules", "default_value"]}
    bad = {**body, "name": "avg_order_value", "data_type": "float", "default_value": -1}
    assert (
        "fails its own rule min_value"
        in assert_error(api.post("/api/v1/features", json=bad), 422)["message"]
    )
    assert _history(api, "rules") == before


def test_materialize_and_online_serving_in_the_specification_shape(
    api: httpx.Client, user_features: dict[str, Any]
) -> None:
    runs = user_features["runs"]
    assert runs["feature_set_id"] == "user_features" and runs["count"] == 1
    assert runs["items"][0]["status"] == "succeeded"
    assert runs["items"][0]["rows_written"] == USERS
    # Again, for the set's current version (a test above may have added a feature since).
    _post(
        api,
        "/api/v1/feature-sets/user_features/materialize",
        {"start_date": "2025-01-01T00:00:00Z", "end_date": "2026-01-01T00:00:00Z"},
    )
    body = {
        "feature_sets": ["user_features"],
        "entities": {"user": [3, 7, 999]},
        "features": ["total_purchases", "total_spend", "big_spender"],
    }
    r = api.post("/api/v1/serving/online", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert set(answer) == {"features", "metadata"}
    latest = {u: (u * 10 + 40, u * 1.5 + 4.0) for u in (3, 7)}
    for u, (total, avg) in latest.items():
        assert answer["features"][str(u)] == {
            "total_purchases": total,
            "total_spend": pytest.approx(total * avg),
            "big_spender": avg > 20,
        }
    assert answer["features"]["999"] == dict.fromkeys(body["features"])
    meta = answer["metadata"]
    assert meta["cache_hit"] is False and meta["latency_ms"] >= 0
    assert meta["feature_sets"] == ["user_features"]
    # The join key works as the entity's name does; all features when none are named.
    r = api.post(
        "/api/v1/serving/online",
        json={"feature_sets": ["user_features"], "entities": {"user_id": [3]}},
    )
    assert r.status_code == 200, r.text
    every = api.get("/api/v1/feature-sets/user_features").json()["features"]
    assert (
        set(r.json()["features"]["3"])
        == {f["name"] for f in every}
        >= {
            "total_purchases",
            "avg_order_value",
            "total_spend",
            "big_spender",
        }
    )
    # The existing results shape is unchanged next to it.
    r = api.post(
        "/api/v1/serving/online",
        json={"features": ["user_features:total_purchases"], "entities": {"user_id": [3]}},
    )
    assert r.json()["results"][0]["values"] == {"total_purchases": 70}


def test_historical_serving_in_the_specification_shape(
    api: httpx.Client, user_features: dict[str, Any]
) -> None:
    body = {
        "feature_sets": ["user_features"],
        "entity_df": {
            "columns": ["user_id", "event_timestamp"],
            "data": [
                [5, "2025-01-20T00:00:00Z"],  # the day-10 snapshot
                [5, "2025-03-01T00:00:00Z"],  # the day-40 snapshot
                [6, "2025-01-05T00:00:00Z"],  # before any snapshot
            ],
        },
        "features": ["total_purchases", "total_spend"],
    }
    r = api.post("/api/v1/serving/historical", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["row_count"] == 3
    rows5 = answer["features"]["5"]
    assert [row["total_purchases"] for row in rows5] == [60, 90]
    assert rows5[0]["total_spend"] == pytest.approx(60 * (5 * 1.5 + 1.0))
    assert rows5[0]["event_timestamp"].startswith("2025-01-20")
    assert answer["features"]["6"] == [
        {"event_timestamp": answer["features"]["6"][0]["event_timestamp"]}
        | {"total_purchases": None, "total_spend": None}
    ]
    assert answer["metadata"]["cache_hit"] is False
    # The entity's name as the column works too.
    body["entity_df"]["columns"] = ["user", "event_timestamp"]  # type: ignore[index]
    r = api.post("/api/v1/serving/historical", json=body)
    assert r.status_code == 200, r.text
    assert [row["total_purchases"] for row in r.json()["features"]["5"]] == [60, 90]


def test_windowed_features_added_to_a_set(api: httpx.Client) -> None:
    _post(
        api,
        "/api/v1/feature-sets",
        {
            **FEATURE_SET,
            "name": "user_purchases",
            "source": {"name": "purchases", "path": "data/purchases.parquet"},
        },
    )
    spend = {
        "name": "spend_7d",
        "feature_set_id": "user_purchases",
        "data_type": "float",
        "transformation": "SUM(amount)",
        "window_size": "7d",
    }
    _post(api, "/api/v1/features", spend)
    _post(
        api,
        "/api/v1/features",
        {**spend, "name": "orders_30d", "data_type": "int", "transformation": "COUNT(*)"}
        | {"window_size": "30d"},
    )
    got = api.get("/api/v1/features/user_purchases:spend_7d").json()
    assert got["window_size"] == "7d" and got["aggregation"] == "sum"
    assert got["feature_set_version"] == 3
    # A plain feature cannot join windowed ones (a view's aggregations replace its fields).
    plain = {"name": "amount2", "feature_set_id": "user_purchases", "data_type": "float"}
    assert_error(api.post("/api/v1/features", json=plain), 409, "conflict")
    # A declared type the function does not give is refused, naming the right one.
    bad = {**spend, "name": "orders_bad", "transformation": "COUNT(*)", "data_type": "float"}
    assert "int64" in assert_error(api.post("/api/v1/features", json=bad), 422)["message"]

    at = BASE + timedelta(days=12, hours=12)
    body = {
        "feature_sets": ["user_purchases"],
        "entity_df": {"columns": ["user_id", "event_timestamp"], "data": [[4, at.isoformat()]]},
        "features": ["spend_7d", "orders_30d"],
    }
    r = api.post("/api/v1/serving/historical", json=body)
    assert r.status_code == 200, r.text
    events = [(BASE + timedelta(days=d, hours=1), float(d)) for d in range(4, 14)]
    in7 = [a for t, a in events if at - timedelta(days=7) < t <= at]
    in30 = [a for t, a in events if at - timedelta(days=30) < t <= at]
    row = r.json()["features"]["4"][0]
    assert row["spend_7d"] == pytest.approx(sum(in7))
    assert row["orders_30d"] == len(in30)


def test_ambiguous_and_unknown_names(api: httpx.Client, user_features: dict[str, Any]) -> None:
    _post(
        api,
        "/api/v1/feature-sets",
        {**FEATURE_SET, "name": "user_profile"} | {"source": "user_features"},
    )
    _post(
        api,
        "/api/v1/features",
        {"name": "total_purchases", "feature_set_id": "user_profile", "data_type": "int64"},
    )
    both = ["user_features", "user_profile"]
    for path, extra in (
        ("/api/v1/serving/online", {"entities": {"user": [1]}}),
        (
            "/api/v1/serving/historical",
            {"entity_df": {"columns": ["user_id", "event_timestamp"], "data": [[1, "2025-06-01"]]}},
        ),
    ):
        body = {"feature_sets": both, "features": ["total_purchases"], **extra}
        error = assert_error(api.post(path, json=body), 422, "invalid")
        assert "'user_features'" in error["message"] and "'user_profile'" in error["message"]
        assert error["details"]["feature_sets"] == both
        # Named as set:feature it is not ambiguous.
        body["features"] = ["user_profile:total_purchases", "avg_order_value"]
        assert api.post(path, json=body).status_code == 200
        body = {"feature_sets": ["user_features"], "features": ["nope"], **extra}
        assert "nope" in assert_error(api.post(path, json=body), 422)["message"]
        body = {"feature_sets": ["no_such_set"], "features": ["x"], **extra}
        assert_error(api.post(path, json=body), 404, "not_found")
    body = {"feature_sets": ["user_features"], "entities": {"customer_id": [1]}}
    assert "user" in assert_error(api.post("/api/v1/serving/online", json=body), 422)["message"]


def test_feature_set_errors_leave_the_registry_as_it_was(
    api: httpx.Client, user_features: dict[str, Any]
) -> None:
    before = _history(api, "user_features")
    assert_error(api.post("/api/v1/feature-sets", json=FEATURE_SET), 409, "conflict")
    cases: list[tuple[dict[str, Any], int]] = [
        ({**FEATURE_SET, "name": "../etc"}, 422),
        ({**FEATURE_SET, "name": "x" * 64}, 422),
        ({**FEATURE_SET, "name": "nosource"}, 422),  # no source, none registered of that name
        ({**FEATURE_SET, "name": "outside", "source": {"name": "o", "path": "/etc/passwd"}}, 403),
        ({**FEATURE_SET, "name": "dots", "source": {"name": "d", "path": "../../x.parquet"}}, 403),
        ({**FEATURE_SET, "name": "typo", "source": "user_features", "onwer": "x"}, 422),
        ({**FEATURE_SET, "name": "noent", "source": "user_features", "entities": []}, 422),
        ({**FEATURE_SET, "name": "badent", "source": "user_features", "entities": ["nope"]}, 404),
        ({**FEATURE_SET, "name": "strict", "source": "user_features", "online_enabled": 1}, 422),
        (
            {**FEATURE_SET, "name": "badcron", "source": "user_features"}
            | {"materialization_schedule": "every day"},
            422,
        ),
        (
            {**FEATURE_SET, "name": "badzone", "source": "user_features"}
            | {"schedule_timezone": "Mars/Olympus"},
            422,
        ),
    ]
    for body, status in cases:
        assert_error(api.post("/api/v1/feature-sets", json=body), status)
        if isinstance(body.get("name"), str) and len(body["name"]) < 64:
            assert api.get(f"/api/v1/feature-sets/{body['name']}").status_code in (404, 422)
    feature_cases: list[tuple[dict[str, Any], int]] = [
        ({"name": "a", "feature_set_id": "no_such_set", "data_type": "int"}, 404),
        ({"name": "total_purchases", "feature_set_id": "user_features", "data_type": "int"}, 409),
        ({"name": "a b", "feature_set_id": "user_features", "data_type": "int"}, 422),
        ({"name": "a", "feature_set_id": "user_features", "data_type": "decimal"}, 422),
        ({"name": "not_a_column", "feature_set_id": "user_features", "data_type": "int"}, 422),
        (
            {"name": "a", "feature_set_id": "user_features", "data_type": "int"}
            | {"transformation": "read_csv('/etc/passwd')"},
            422,
        ),
        (
            {"name": "a", "feature_set_id": "user_features", "data_type": "float"}
            | {"transformation": "x + 1", "source_features": ["nope"]},
            422,
        ),
        (
            {"name": "a", "feature_set_id": "user_features", "data_type": "float"}
            | {"transformation": "SUM(total_purchases)", "window_size": "forever"},
            409,  # windowed features do not join plain ones
        ),
        ({"name": "a", "feature_set_id": "user_features", "data_type": "int", "x": 1}, 422),
        (
            {"name": "a", "feature_set_id": "user_features", "data_type": "int"}
            | {"allowed_values": ["x"]},
            422,
        ),
    ]
    for body, status in feature_cases:
        assert_error(api.post("/api/v1/features", json=body), status)
    assert _history(api, "user_features") == before
    assert_error(api.get("/api/v1/features/user_features:nope"), 404, "not_found")
    assert_error(api.get("/api/v1/features/no_colon"), 422, "invalid")
    assert_error(api.get("/api/v1/feature-sets/nope"), 404, "not_found")
    body = {"start_date": "2025-06-01", "end_date": "2025-01-01"}
    assert_error(api.post("/api/v1/feature-sets/user_features/materialize", json=body), 422)
    body = {"start_date": 1735689600}
    assert_error(api.post("/api/v1/feature-sets/user_features/materialize", json=body), 422)
    too_many = {"feature_sets": ["user_features"], "entities": {"user": list(range(5000))}}
    assert_error(api.post("/api/v1/serving/online", json=too_many), 413)


def test_delete_a_feature_and_a_set_are_new_versions(api: httpx.Client) -> None:
    _post(
        api, "/api/v1/feature-sets", {**FEATURE_SET, "name": "scratch", "source": "user_features"}
    )
    _post(
        api,
        "/api/v1/features",
        {"name": "total_purchases", "feature_set_id": "scratch"} | {"data_type": "int"},
    )
    r = api.delete("/api/v1/features/scratch:total_purchases")
    assert r.status_code == 200, r.text
    assert r.json()["feature_set_version"] == 3
    assert api.get("/api/v1/feature-sets/scratch").json()["features"] == []
    r = api.delete("/api/v1/feature-sets/scratch")
    assert r.status_code == 200 and r.json()["id"] == "scratch"
    assert_error(api.get("/api/v1/feature-sets/scratch"), 404)
    assert [v["operation"] for v in _history(api, "scratch")][-1] == "delete"
    assert_error(api.delete("/api/v1/feature-sets/scratch"), 404)


def test_permissions_apply_to_the_new_routes(auth_server: Any) -> None:
    body = {**FEATURE_SET, "name": "authz_set", "entities": ["customer"]}
    body["source"] = "customer_behavior_source"
    with auth_server.client("reader") as reader:
        assert_error(reader.post("/api/v1/feature-sets", json=body), 403, "forbidden")
        assert reader.get("/api/v1/feature-sets").status_code == 200
        r = reader.post(
            "/api/v1/serving/online",
            json={"feature_sets": ["customer_behavior"], "entities": {"customer": [1]}}
            | {"features": ["orders"]},
        )
        assert r.status_code == 200, r.text
        assert set(r.json()["features"]["1"]) == {"orders"}
    with auth_server.client("writer") as writer:
        assert writer.post("/api/v1/feature-sets", json=body).status_code == 201
        feature = {"name": "orders", "feature_set_id": "authz_set", "data_type": "int"}
        assert writer.post("/api/v1/features", json=feature).status_code == 201
    with auth_server.client("reader") as reader:
        assert_error(reader.delete("/api/v1/features/authz_set:orders"), 403, "forbidden")
        assert_error(reader.delete("/api/v1/feature-sets/authz_set"), 403, "forbidden")
        body = {"start_date": "2025-01-01"}
        assert_error(reader.post("/api/v1/feature-sets/authz_set/materialize", json=body), 403)
    with auth_server.client() as anonymous:
        assert_error(anonymous.get("/api/v1/feature-sets"), 401)


def test_cache_hit_comes_from_the_serving_cache(
    spec_server: Any, user_features: dict[str, Any], serve_repo: Callable[..., Any]
) -> None:
    cached = serve_repo(spec_server.repo, env={"QUIVER_SERVING_CACHE__ENABLED": "true"})
    body = {"feature_sets": ["user_features"], "entities": {"user": [2]}}
    with cached.client() as api:
        first = api.post("/api/v1/serving/online", json=body).json()
        second = api.post("/api/v1/serving/online", json=body).json()
    assert first["metadata"]["cache_hit"] is False
    assert second["metadata"]["cache_hit"] is True
    assert second["features"] == first["features"]
