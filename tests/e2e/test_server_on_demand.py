"""On-demand features over real HTTP: defined through the REST API, computed at serving time by
the native and Feast routes (fast path included), and a missing request field is a 422."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from _http import assert_any_error

UDF = """
def charges_ratio(df):
    per_month = df["total_charges"] / df["tenure_months"].clip(lower=1)
    return pd.DataFrame({"charges_per_month": per_month * (1 - df["discount"])})
"""

ODFV = {
    "name": "charges_ratio",
    "sources": ["customer_behavior"],
    "request_sources": [{"name": "offer", "fields": [{"name": "discount", "dtype": "float64"}]}],
    "features": [{"name": "charges_per_month", "dtype": "float64"}],
    "udf": UDF,
}
COMPOSITE = {
    "name": "charges_sql",
    "sources": ["customer_behavior"],
    "features": [
        {
            "name": "orders_per_ticket",
            "dtype": "float64",
            "transformation": "orders / NULLIF(support_tickets, 0)",
        }
    ],
}
FEATURES = [
    "customer_behavior:total_charges",
    "customer_behavior:tenure_months",
    "customer_behavior:orders",
    "customer_behavior:support_tickets",
    "charges_ratio:charges_per_month",
    "charges_sql:orders_per_ticket",
]


@pytest.fixture(scope="module")
def odfv_server(new_demo_server: Callable[[], Any]) -> Any:
    from quiver.store import FeatureStore

    server = new_demo_server()
    with FeatureStore(repo_path=server.repo) as store:  # values up to now: present, not expired
        store.materialize_incremental(datetime.now(UTC))
    with server.client() as client:
        for body in (ODFV, COMPOSITE):
            r = client.post("/api/v1/on-demand-feature-views", json=body)
            assert r.status_code in (200, 201), r.text
    return server


def _online(client: httpx.Client, entities: dict[str, list[object]]) -> httpx.Response:
    return client.post("/api/v1/serving/online", json={"features": FEATURES, "entities": entities})


def test_on_demand_features_are_computed_at_serving(odfv_server: Any) -> None:
    with odfv_server.client() as client:
        r = _online(client, {"customer_id": [1, 2], "discount": [0.0, 0.5]})
        assert r.status_code == 200, r.text
        body = r.json()
        for row, discount in zip(body["results"], (0.0, 0.5), strict=True):
            values = row["values"]
            expected = values["total_charges"] / max(values["tenure_months"], 1) * (1 - discount)
            assert values["charges_per_month"] == pytest.approx(expected)
            assert row["statuses"]["charges_per_month"] == "present"
            tickets = values["support_tickets"]
            assert values["orders_per_ticket"] == (
                None if not tickets else pytest.approx(values["orders"] / tickets)
            )
        # one entity (the fast path's one-row body) gives the same values
        one = _online(client, {"customer_id": [2], "discount": [0.5]}).json()
        assert one["results"][0]["values"] == body["results"][1]["values"]


@pytest.mark.parametrize("path", ["/api/v1/serving/online", "/get-online-features"])
def test_missing_request_data_is_a_422_naming_the_field(odfv_server: Any, path: str) -> None:
    with odfv_server.client() as client:
        r = client.post(path, json={"features": FEATURES, "entities": {"customer_id": [1]}})
    error = assert_any_error(r, 422)
    assert "'discount'" in error["message"]
    assert "charges_ratio" in error["message"]


def test_feast_route_computes_on_demand_features(odfv_server: Any) -> None:
    with odfv_server.client() as client:
        r = client.post(
            "/get-online-features",
            json={
                "features": ["charges_ratio:charges_per_month"],
                "entities": {"customer_id": [1], "discount": [0.25]},
            },
        )
        assert r.status_code == 200, r.text
        native = _online(client, {"customer_id": [1], "discount": [0.25]}).json()
    body = r.json()
    idx = body["metadata"]["feature_names"].index("charges_per_month")
    assert body["results"][idx]["values"] == [native["results"][0]["values"]["charges_per_month"]]
    assert body["results"][idx]["statuses"] == ["PRESENT"]


def test_an_on_demand_view_with_a_forbidden_function_is_refused(odfv_server: Any) -> None:
    bad = {**COMPOSITE, "name": "evil"}
    bad["features"] = [{"name": "x", "dtype": "string", "transformation": "getenv('HOME')"}]
    with odfv_server.client() as client:
        r = client.post("/api/v1/on-demand-feature-views", json=bad)
        assert r.status_code == 422, r.text
        assert "getenv" in r.json()["error"]["message"]
        history = client.get("/api/v1/on-demand-feature-views/charges_ratio/history")
        assert history.status_code == 200, history.text


def test_a_transformation_defined_and_pushed_over_http(odfv_server: Any) -> None:
    view = {
        "name": "behavior_tx",
        "entities": ["customer"],
        "source": "customer_behavior_source",
        "features": [
            {"name": "charges_x2", "dtype": "float64", "transformation": "total_charges * 2"}
        ],
    }
    now = datetime.now(UTC).isoformat()
    with odfv_server.client() as client:
        r = client.post("/api/v1/feature-views", json=view)
        assert r.status_code in (200, 201), r.text
        assert r.json()["object"]["spec"]["features"][0]["transformation"] == "total_charges * 2"
        # Feast's push sends one frame; the transformation's input column must be kept
        r = client.post(
            "/push",
            json={
                "push_source_name": "behavior_tx",
                "df": {"customer_id": [777], "total_charges": [10.5], "event_timestamp": [now]},
                "to": "online",
            },
        )
        assert r.status_code == 200, r.text
        r = client.post(
            "/get-online-features",
            json={"features": ["behavior_tx:charges_x2"], "entities": {"customer_id": [777]}},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        idx = body["metadata"]["feature_names"].index("charges_x2")
        assert body["results"][idx]["values"] == [21.0]
        bad = {**view, "name": "evil_tx"}
        bad["features"] = [
            {"name": "x", "dtype": "string", "transformation": "current_setting('home_directory')"}
        ]
        r = client.post("/api/v1/feature-views", json=bad)
        assert r.status_code == 422 and "current_setting" in r.text, r.text
