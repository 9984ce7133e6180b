"""``feast_compat.serve_stale: true`` in ``quiver.yaml``: the Feast route answers a value past its
view's TTL as Feast does (``PRESENT`` with its value), on the fast path and on the FastAPI route
alike; the native ``/api/v1`` route, and a repo without the option, keep ``expired``.

The app is driven in process (Starlette's TestClient: the real ASGI app) over a copy of the demo
repo with the option written into its ``quiver.yaml``; ``test_feast_client.py`` checks Feast's
own client against a ``quiver serve`` with the option.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from _http import BEHAVIOR_ROW
from quiver.config import load_config
from quiver.server import create_app
from quiver.server.deps import get_principal
from quiver.server.fastpath import QuiverAPI
from quiver.store import FeatureStore

FEATURES = ["customer_demographics:age", "customer_behavior:tenure_months"]
NOW = datetime.now(UTC).replace(microsecond=0)
FRESH, STALE = NOW - timedelta(hours=1), NOW - timedelta(days=40)  # the view's TTL: 30 days


def _zulu(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _copy(demo_repo: Path, target: Path, extra_yaml: str) -> Path:
    shutil.copytree(demo_repo, target, ignore=shutil.ignore_patterns("server-*.log"))
    with (target / "quiver.yaml").open("a") as f:
        f.write(extra_yaml)
    return target


@pytest.fixture(scope="module", params=["no cache", "serving cache"])
def stale_repo(
    demo_repo: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> tuple[Path, dict[str, int]]:
    """A copy of the demo repo with ``serve_stale`` (and the serving cache, or not), and a fresh
    and a stale key pushed to ``customer_behavior``."""
    extra = "\nfeast_compat:\n  serve_stale: true\n"
    if request.param == "serving cache":
        extra += "serving_cache:\n  enabled: true\n"
    repo = _copy(demo_repo, tmp_path_factory.mktemp("stale") / "repo", extra)
    fresh = 620_000 + uuid.uuid4().int % 40_000
    keys = {"fresh": fresh, "stale": fresh + 40_000}
    with FeatureStore(repo_path=repo) as store:
        for key, when in ((keys["fresh"], FRESH), (keys["stale"], STALE)):
            row = {"customer_id": key, "event_timestamp": when, **BEHAVIOR_ROW}
            store.push("customer_behavior", [row])
    return repo, keys


@pytest.fixture(scope="module")
def app_client(stale_repo: tuple[Path, dict[str, int]]) -> Iterator[tuple[QuiverAPI, TestClient]]:
    with FeatureStore(repo_path=stale_repo[0]) as store:
        app = create_app(store)
        assert isinstance(app, QuiverAPI)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield app, client


def _post(client: TestClient, path: str, body: Any) -> Any:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_option_is_read_from_quiver_yaml(stale_repo: tuple[Path, dict[str, int]]) -> None:
    assert load_config(stale_repo[0]).feast_compat.serve_stale is True


@pytest.mark.parametrize("path", ["fast path", "FastAPI route"])
def test_feast_route_serves_an_expired_value_as_present(
    app_client: tuple[QuiverAPI, TestClient], stale_repo: tuple[Path, dict[str, int]], path: str
) -> None:
    app, client = app_client
    keys = stale_repo[1]
    body = {"features": FEATURES, "entities": {"customer_id": [keys["fresh"], keys["stale"], 1]}}
    if path == "FastAPI route":  # an override makes the fast path step aside
        app.dependency_overrides[get_principal] = get_principal
    try:
        for _ in range(2):  # the second read is a serving cache hit where the cache is on
            answer = _post(client, "/get-online-features", body)
            tenure = answer["results"][2]
            assert tenure["statuses"][:2] == ["PRESENT", "PRESENT"]
            assert tenure["values"][:2] == [BEHAVIOR_ROW["tenure_months"]] * 2
            assert tenure["event_timestamps"][:2] == [_zulu(FRESH), _zulu(STALE)]
            # never OUTSIDE_MAX_AGE: customer 1's behaviour row is PRESENT whatever its age
            assert "OUTSIDE_MAX_AGE" not in json.dumps(answer)
    finally:
        app.dependency_overrides.clear()


def test_native_route_keeps_quivers_answer(
    app_client: tuple[QuiverAPI, TestClient], stale_repo: tuple[Path, dict[str, int]]
) -> None:
    _app, client = app_client
    keys = stale_repo[1]
    body = {"features": FEATURES, "entities": {"customer_id": [keys["stale"]]}}
    for _ in range(2):  # the Feast read before it may have filled the serving cache
        _post(client, "/get-online-features", body)
        row = _post(client, "/api/v1/serving/online", body)["results"][0]
        assert row["statuses"]["tenure_months"] == "expired"
        assert row["values"]["tenure_months"] is None
        assert row["event_timestamps"]["tenure_months"] == _zulu(STALE)


def test_sdk_keeps_quivers_answer_unless_asked(stale_repo: tuple[Path, dict[str, int]]) -> None:
    repo, keys = stale_repo
    with FeatureStore(repo_path=repo) as store:
        rows = [{"customer_id": keys["stale"]}]
        for _ in range(2):
            default = store.get_online_features(FEATURES, rows).to_dict()
            stale = store.get_online_features(FEATURES, rows, serve_stale=True).to_dict()
            assert default["tenure_months"] == [None]
            assert stale["tenure_months"] == [BEHAVIOR_ROW["tenure_months"]]


def test_without_the_option_the_feast_route_answers_outside_max_age(
    demo_repo: Path, stale_repo: tuple[Path, dict[str, int]], tmp_path: Path
) -> None:
    repo = _copy(stale_repo[0], tmp_path / "repo", "")
    text = (repo / "quiver.yaml").read_text().replace("serve_stale: true", "serve_stale: false")
    (repo / "quiver.yaml").write_text(text)
    with FeatureStore(repo_path=repo) as store, TestClient(create_app(store)) as client:
        body = {"features": FEATURES, "entities": {"customer_id": [stale_repo[1]["stale"]]}}
        tenure = _post(client, "/get-online-features", body)["results"][2]
        assert tenure["statuses"] == ["OUTSIDE_MAX_AGE"] and tenure["values"] == [None]
