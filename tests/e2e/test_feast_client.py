"""The real Feast SDK (``feast`` 0.67, its own environment) against ``quiver serve``.

A Feast client repo (``online_store: {type: remote}`` pointing at Quiver, Feast's own local
registry and file offline store over the demo's Parquet files) calls Feast's own
``get_online_features``, ``write_to_online_store``, ``push``, ``materialize`` and
``materialize_incremental``; the answers are checked against Quiver's own API, and Quiver's
errors must come back to the client as Feast's typed exceptions. ``test_feast_client_template.py``
runs Feast's template (Map, Struct, Json, on-demand views) the same way.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from _feast import feast_cli, feast_python, run_feast
from _http import BEHAVIOR_ROW
from e2e.conftest import Server

pytestmark = pytest.mark.slow

DEFINITIONS = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, PushSource
from feast.types import Float64, Int64, String
from feast.value_type import ValueType

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)

demographics_source = FileSource(
    path="{data}/customer_demographics.parquet", timestamp_field="event_timestamp"
)
behavior_source = FileSource(
    path="{data}/customer_behavior.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)
behavior_push = PushSource(name="customer_behavior", batch_source=behavior_source)

customer_demographics = FeatureView(
    name="customer_demographics",
    entities=[customer],
    schema=[Field(name="age", dtype=Int64), Field(name="gender", dtype=String),
            Field(name="region", dtype=String)],
    source=demographics_source,
    ttl=timedelta(days=36500),
)
customer_behavior = FeatureView(
    name="customer_behavior",
    entities=[customer],
    schema=[Field(name="tenure_months", dtype=Int64), Field(name="monthly_charges", dtype=Float64),
            Field(name="total_charges", dtype=Float64), Field(name="support_tickets", dtype=Int64),
            Field(name="orders", dtype=Int64), Field(name="avg_order_value", dtype=Float64),
            Field(name="days_since_last_order", dtype=Int64)],
    source=behavior_push,
    ttl=timedelta(days=30),
)
"""

STORE_YAML = """project: quiver_demo
registry: {registry}
provider: local
online_store:
  type: remote
  path: {url}
offline_store:
  type: file
entity_key_serialization_version: 3
"""

PRELUDE = """
import json
import textwrap
from datetime import datetime, timedelta, timezone
import pandas as pd
from feast import FeatureStore
store = FeatureStore(repo_path=".")
"""


@pytest.fixture(scope="module")
def feast_py() -> Path:
    return feast_python()


@pytest.fixture(scope="module")
def feast_repo(
    new_demo_server: Callable[[], Server], feast_py: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    server = new_demo_server()
    repo = tmp_path_factory.mktemp("feast_client")
    (repo / "feature_store.yaml").write_text(
        STORE_YAML.format(registry=repo / "registry.db", url=server.url)
    )
    (repo / "definitions.py").write_text(DEFINITIONS.format(data=server.repo / "data"))
    feast_cli(feast_py, "apply", cwd=repo)
    yield server, repo


def feast(feast_py: Path, repo: Path, code: str) -> Any:
    return run_feast(feast_py, PRELUDE + textwrap.dedent(code), cwd=repo)


def native_online(server: Server, features: list[str], keys: list[Any]) -> list[dict[str, Any]]:
    with server.client() as c:
        response = c.post(
            "/api/v1/serving/online",
            json={"features": features, "entities": {"customer_id": keys}},
        )
    assert response.status_code == 200, response.text
    return list(response.json()["results"])


def test_get_online_features_matches_quiver(
    feast_py: Path, feast_repo: tuple[Server, Path]
) -> None:
    server, repo = feast_repo
    answer = feast(
        feast_py,
        repo,
        """
        feats = ["customer_demographics:age", "customer_demographics:region"]
        rows = [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 999999}]
        out = store.get_online_features(features=feats, entity_rows=rows).to_dict()
        full = store.get_online_features(
            features=feats, entity_rows=rows[:1], full_feature_names=True
        ).to_dict()
        print(json.dumps({"out": out, "full": sorted(full)}))
        """,
    )
    native = native_online(
        server, ["customer_demographics:age", "customer_demographics:region"], [1, 2, 999999]
    )
    out = answer["out"]
    assert out["customer_id"] == [1, 2, 999999]
    assert out["age"] == [r["values"]["age"] for r in native]
    assert out["region"] == [r["values"]["region"] for r in native]
    assert out["age"][2] is None and out["age"][0] is not None
    assert answer["full"] == [
        "customer_demographics__age",
        "customer_demographics__region",
        "customer_id",
    ]


def test_entity_values_are_coerced_and_entity_names_accepted(
    feast_py: Path, feast_repo: tuple[Server, Path]
) -> None:
    server, repo = feast_repo
    answer = feast(
        feast_py,
        repo,
        """
        feats = ["customer_demographics:age"]
        a = store.get_online_features(feats, entity_rows=[{"customer_id": "1"}]).to_dict()
        b = store.get_online_features(feats, entity_rows=[{"customer_id": 1.0}]).to_dict()
        c = store.get_online_features(feats, entity_rows=[{"customer": 1}]).to_dict()
        print(json.dumps({"a": a["age"], "b": b["age"], "c": c["age"]}))
        """,
    )
    age = native_online(server, ["customer_demographics:age"], [1])[0]["values"]["age"]
    assert answer == {"a": [age], "b": [age], "c": [age]}


def test_errors_are_feast_typed_exceptions(feast_py: Path, feast_repo: tuple[Server, Path]) -> None:
    _server, repo = feast_repo
    answer = feast(
        feast_py,
        repo,
        """
        from feast.errors import FeatureViewNotFoundException, FeatureServiceNotFoundException
        out = {}
        try:
            store.get_online_features(["nope:x"], entity_rows=[{"customer_id": 1}])
        except FeatureViewNotFoundException as exc:
            out["view"] = str(exc)
        from feast.infra.online_stores.remote import get_remote_online_features
        try:
            get_remote_online_features(config=store.config, req_body={
                "feature_service": "nope", "entities": {"customer_id": [1]}})
        except FeatureServiceNotFoundException as exc:
            out["service"] = str(exc)
        print(json.dumps(out))
        """,
    )
    assert "nope" in answer["view"]
    assert "nope" in answer["service"]


def test_write_to_online_store_and_push(feast_py: Path, feast_repo: tuple[Server, Path]) -> None:
    server, repo = feast_repo
    key = 700_000 + uuid.uuid4().int % 100_000
    feast(
        feast_py,
        repo,
        f"""
        now = datetime.now(timezone.utc).replace(microsecond=0)
        demo = pd.DataFrame({{"customer_id": [{key}], "age": [33], "gender": ["other"],
                             "region": ["north"], "event_timestamp": [now]}})
        store.write_to_online_store("customer_demographics", demo)
        behavior = pd.DataFrame({{"customer_id": [{key}], "tenure_months": [7],
            "monthly_charges": [42.0], "total_charges": [294.5], "support_tickets": [0],
            "orders": [3], "avg_order_value": [19.9], "days_since_last_order": [2],
            "event_timestamp": [now - timedelta(hours=1)], "created_timestamp": [now]}})
        store.push("customer_behavior", behavior)
        print(json.dumps(True))
        """,
    )
    row = native_online(
        server,
        [
            "customer_demographics:age",
            "customer_demographics:region",
            "customer_behavior:tenure_months",
            "customer_behavior:avg_order_value",
        ],
        [key],
    )[0]
    assert row["values"] == {
        "age": 33,
        "region": "north",
        "tenure_months": 7,
        "avg_order_value": 19.9,
    }
    assert set(row["statuses"].values()) == {"present"}


def test_materialize_and_materialize_incremental(
    feast_py: Path, feast_repo: tuple[Server, Path]
) -> None:
    server, repo = feast_repo
    answer = feast(
        feast_py,
        repo,
        """
        end = datetime(2026, 6, 1, tzinfo=timezone.utc)
        store.materialize(start_date=end - timedelta(days=3650), end_date=end,
                          feature_views=["customer_demographics"])
        store.materialize_incremental(end_date=end, feature_views=["customer_demographics"])
        out = store.get_online_features(["customer_demographics:age"],
                                        entity_rows=[{"customer_id": 3}]).to_dict()
        print(json.dumps(out["age"]))
        """,
    )
    native = native_online(server, ["customer_demographics:age"], [3])[0]
    assert answer == [native["values"]["age"]] and answer[0] is not None


def test_raw_routes_answer_as_feast(feast_repo: tuple[Server, Path]) -> None:
    """Feast's bodies: ``/push`` answers an empty body, the others ``null``; metadata asked
    with ``include_feature_view_version_metadata`` lists each view and its version."""
    server, _repo = feast_repo
    key = 800_000 + uuid.uuid4().int % 100_000
    with server.client() as c:
        pushed = c.post(
            "/push",
            json={
                "push_source_name": "customer_demographics",
                "df": {
                    "customer_id": [key],
                    "age": [40],
                    "gender": ["f"],
                    "region": ["east"],
                    "event_timestamp": ["2026-01-01T00:00:00"],
                },
            },
        )
        assert pushed.status_code == 200 and pushed.content == b""
        answer = c.post(
            "/get-online-features",
            json={
                "features": ["customer_demographics:age"],
                "entities": {"customer": [key]},
                "include_feature_view_version_metadata": True,
            },
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["results"][1]["values"] == [40]
        meta = body["metadata"]["feature_view_metadata"]
        assert [m["name"] for m in meta] == ["customer_demographics"]
        assert isinstance(meta[0]["version"], int) and meta[0]["version"] >= 1
        missing = c.post("/push", json={"push_source_name": "nope", "df": {"x": [1]}})
        assert missing.status_code == 422
        detail = json.loads(missing.json())
        assert detail["class"] == "PushSourceNotFoundException"
        lossy = c.post(
            "/get-online-features",
            json={"features": ["customer_demographics:age"], "entities": {"customer_id": [1.5]}},
        )
        assert lossy.status_code == 422 and "1.5" in json.loads(lossy.json())["message"]
        assert httpx.get(f"{server.url}/health").status_code == 200


def test_serve_stale_gives_feasts_answer_to_feasts_client(
    feast_py: Path,
    feast_repo: tuple[Server, Path],
    serve_repo: Callable[..., Server],
    tmp_path: Path,
) -> None:
    """With ``feast_compat.serve_stale`` (here from the environment; ``quiver.yaml`` in
    ``test_feast_serve_stale.py``) Feast's client gets an expired value, as from Feast."""
    server, repo = feast_repo
    key = 900_000 + uuid.uuid4().int % 90_000
    old = (datetime.now(UTC) - timedelta(days=40)).replace(microsecond=0)  # the TTL: 30 days
    with server.client() as c:
        row = {"customer_id": key, "event_timestamp": old.isoformat(), **BEHAVIOR_ROW}
        pushed = c.post("/api/v1/push", json={"view": "customer_behavior", "rows": [row]})
        assert pushed.status_code == 200, pushed.text
    stale_server = serve_repo(server.repo, env={"QUIVER_FEAST_COMPAT__SERVE_STALE": "true"})
    stale_repo = tmp_path / "client"
    shutil.copytree(repo, stale_repo)
    (stale_repo / "feature_store.yaml").write_text(
        STORE_YAML.format(registry=repo / "registry.db", url=stale_server.url)
    )
    code = f"""
        resp = store.get_online_features(["customer_behavior:tenure_months"],
                                         entity_rows=[{{"customer_id": {key}}}])
        print(json.dumps({{"value": resp.to_dict()["tenure_months"],
                          "status": resp.proto.results[1].statuses[0]}}))
        """
    default = feast(feast_py, repo, code)
    stale = feast(feast_py, stale_repo, code)
    assert default == {"value": [None], "status": 4}  # FieldStatus.OUTSIDE_MAX_AGE
    assert stale == {"value": [BEHAVIOR_ROW["tenure_months"]], "status": 1}  # PRESENT
