"""Map, struct and json features over real HTTP (``quiver serve``): pushed in the native and
Feast bodies, answered as JSON values by ``/api/v1/serving/online`` and ``/get-online-features``,
and hostile values refused with a 4xx, the stored value left as it was."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from _cli import quiver_command
from _http import assert_any_error
from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.types import arrow_type

NOW = datetime.now(UTC).replace(microsecond=0)
PROFILE = "struct<name: string, age: string>"
FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:driver_metadata",
    "driver_hourly_stats:driver_config",
    "driver_hourly_stats:driver_profile",
    "driver_hourly_stats:seen",
]


def _repo(root: Path) -> Path:
    (root / "data").mkdir(parents=True)
    config = {
        "project": "drivers",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": {"type": "sqlite", "path": "data/online.db"},
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    ts = arrow_type("timestamp")
    pq.write_table(
        pa.table(
            {
                "driver_id": [1001, 1002],
                "event_timestamp": pa.array([NOW - timedelta(hours=1)] * 2, ts),
                "conv_rate": pa.array([0.5, 0.25], pa.float32()),
                "driver_metadata": pa.array(
                    [{"vehicle": "sedan", "ключ": "é"}, {}], arrow_type("map<string, string>")
                ),
                "driver_config": ['{"max_trips": 10, "zones": ["a", "b"]}', None],
                "driver_profile": pa.array(
                    [{"name": "Ann", "age": "41"}, {"name": None, "age": None}], arrow_type(PROFILE)
                ),
                "seen": pa.array(
                    [{"first": NOW - timedelta(days=3)}, None],
                    arrow_type("map<string, timestamp>"),
                ),
            }
        ),
        root / "data" / "driver_stats.parquet",
    )
    driver = Entity(name="driver", join_keys=["driver_id"])
    source = FileSource(
        name="driver_hourly_stats_source",
        path="data/driver_stats.parquet",
        timestamp_field="event_timestamp",
    )
    view = FeatureView(
        name="driver_hourly_stats",
        entities=[driver],
        ttl=timedelta(days=1),
        schema=[
            Field(name="conv_rate", dtype="float32"),
            Field(name="driver_metadata", dtype="map<string, string>"),
            Field(name="driver_config", dtype="json"),
            Field(name="driver_profile", dtype=PROFILE),
            Field(name="seen", dtype="map<string, timestamp>"),
        ],
        source=source,
    )
    with FeatureStore(root) as store:
        store.apply([driver, source, view])
        store.materialize(NOW - timedelta(days=2), NOW)
    return root


@pytest.fixture
def client(
    serve_repo: Callable[..., Any], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[httpx.Client]:
    """A client of ``quiver serve`` over a fresh repo holding the nested view."""
    server = serve_repo(_repo(tmp_path / "repo"))
    request.node.repo = server.repo
    with server.client() as c:
        yield c


def _online(client: httpx.Client, keys: list[int]) -> dict[str, Any]:
    response = client.post(
        "/api/v1/serving/online", json={"features": FEATURES, "entities": {"driver_id": keys}}
    )
    assert response.status_code == 200, response.text
    return response.json()


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def test_answers_and_pushes_hold_json_values(
    client: httpx.Client, request: pytest.FixtureRequest
) -> None:
    body = _online(client, [1001, 1002, 7])
    first, second, missing = (r["values"] for r in body["results"])
    assert first == {
        "conv_rate": 0.5,
        "driver_metadata": {"vehicle": "sedan", "ключ": "é"},
        "driver_config": {"max_trips": 10, "zones": ["a", "b"]},
        "driver_profile": {"name": "Ann", "age": "41"},
        "seen": {"first": _iso(NOW - timedelta(days=3))},
    }
    assert second == {
        "conv_rate": 0.25,
        "driver_metadata": {},
        "driver_config": None,
        "driver_profile": {"name": None, "age": None},
        "seen": None,
    }
    assert body["results"][1]["statuses"]["driver_config"] == "present"
    assert set(missing.values()) == {None}
    feast = client.post(
        "/get-online-features", json={"features": FEATURES, "entities": {"driver_id": [1001]}}
    )
    assert feast.status_code == 200, feast.text
    names = feast.json()["metadata"]["feature_names"]
    values = {n: r["values"][0] for n, r in zip(names, feast.json()["results"], strict=True)}
    assert values == {"driver_id": 1001, **first}
    _native_push_then_read(client)
    _feast_push_takes_json_text_and_objects(client)
    _cli_prints_nested_values_as_json(request.node.repo)


def _native_push_then_read(client: httpx.Client) -> None:
    row = {
        "driver_id": 2001,
        "event_timestamp": _iso(NOW),
        "conv_rate": 0.75,
        "driver_metadata": {"😀": "ok", "e": None},
        "driver_config": {"nested": {"list": [1, 2.5, None, True, "x"]}},
        "driver_profile": {"name": "Bo"},
        "seen": {"at": "2024-05-01T12:00:00Z"},
    }
    response = client.post("/api/v1/push", json={"view": "driver_hourly_stats", "rows": [row]})
    assert response.status_code == 200, response.text
    values = _online(client, [2001])["results"][0]["values"]
    assert values == {
        "conv_rate": 0.75,
        "driver_metadata": {"😀": "ok", "e": None},
        "driver_config": {"nested": {"list": [1, 2.5, None, True, "x"]}},
        "driver_profile": {"name": "Bo", "age": None},
        "seen": {"at": "2024-05-01T12:00:00Z"},
    }


def _feast_push_takes_json_text_and_objects(client: httpx.Client) -> None:
    response = client.post(
        "/push",
        json={
            "push_source_name": "driver_hourly_stats_source",
            "df": {
                "driver_id": [3001, 3002],
                "event_timestamp": [_iso(NOW), _iso(NOW)],
                "conv_rate": [0.1, 0.2],
                "driver_metadata": [{"a": "b"}, None],
                "driver_config": ['{"from": "text"}', [1, {"from": "value"}]],
                "driver_profile": [{"name": "C", "age": "9"}, '{"name": "D"}'],
                "seen": [None, {}],
            },
            "to": "online",
        },
    )
    assert response.status_code == 200, response.text
    first, second = (r["values"] for r in _online(client, [3001, 3002])["results"])
    assert first["driver_config"] == {"from": "text"}
    assert second["driver_config"] == [1, {"from": "value"}]
    assert second["driver_profile"] == {"name": "D", "age": None}
    assert (first["driver_metadata"], second["seen"]) == ({"a": "b"}, {})


def _error(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, response.text
    return dict(assert_any_error(response, response.status_code))


HOSTILE = [
    ("driver_config", json.loads("[" * 70 + "]" * 70), 422),  # deeper than 64 levels
    ("driver_config", "{not json", 422),
    ("driver_profile", {"name": "x", "salary": 1}, 422),
    ("driver_metadata", {"k": 5}, 422),
    ("driver_metadata", "v", 422),
    ("seen", {"t": "yesterday"}, 422),
    ("driver_config", "x" * 300_000, 413),  # beyond the server's body limit
]


def test_hostile_values_are_refused_and_change_nothing(client: httpx.Client) -> None:
    before = _online(client, [1001])
    for column, value, status in HOSTILE:
        row = {"driver_id": 1001, "conv_rate": 9.0, column: value}
        for name in ("driver_metadata", "driver_config", "driver_profile", "seen"):
            row.setdefault(name, None)
        for path, body in (
            ("/api/v1/push", {"view": "driver_hourly_stats", "rows": [row]}),
            (
                "/push",
                {
                    "push_source_name": "driver_hourly_stats",
                    "df": {k: [v] for k, v in row.items()},
                },
            ),
        ):
            response = client.post(path, json=body)
            assert response.status_code == status, (path, column, response.text)
            error = _error(response)
            if status == 422:
                assert column in error["message"], error
    assert _online(client, [1001])["results"] == before["results"]
    _nested_beyond_the_parser(client)


def _nested_beyond_the_parser(client: httpx.Client) -> None:
    deep = "[" * 5000 + "]" * 5000
    body = '{"view": "driver_hourly_stats", "rows": [{"driver_id": 1, "driver_config": ' + deep
    body += "}]}"
    response = client.post(
        "/api/v1/push", content=body, headers={"content-type": "application/json"}
    )
    _error(response)
    feast = '{"push_source_name": "driver_hourly_stats", "df": {"driver_config": [' + deep + "]}}"
    response = client.post("/push", content=feast, headers={"content-type": "application/json"})
    _error(response)


def _cli_prints_nested_values_as_json(repo: Path) -> None:
    base = [*quiver_command(), "get-online", "-e", "driver_id=1001", "--repo", str(repo)]
    features = ["-f", "driver_hourly_stats:driver_profile", "-f", "driver_hourly_stats:seen"]
    out = subprocess.run(
        [*base, *features, "--json"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert "Ann" in out and json.loads(out)
    table = subprocess.run(
        [*base, *features], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert '{"name": "Ann", "age": "41"}' in table
