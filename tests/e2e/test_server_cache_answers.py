"""Kept answers of the serving cache over real HTTP with ``auth: api_key`` (issue 17).

A ``quiver serve`` with the serving cache on keeps the answer of an identical request; the
permission check still runs on every request: a key-less request is 401, and a deny policy
applied while the answer is kept refuses the next identical request (403), while a role the
policy does not name is still answered from the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.e2e.conftest import AuthServer, create_key, make_demo_repo, start_server

pytestmark = pytest.mark.slow  # a demo repo and a server

SERVICE = {  # plain features (aggregations are never cached); the first view is tagged pii
    "features": ["customer_demographics:age", "customer_behavior:orders"],
    "entities": {"customer_id": [1]},
}
DENY = {
    "permissions": [
        {
            "name": "no_pii_online_cached",
            "effect": "deny",
            "actions": ["read_online"],
            "roles": ["reader"],
            "kinds": ["feature_view"],
            "tags": {"pii": "true"},
        }
    ]
}


@pytest.fixture(scope="module")
def cached_auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    repo: Path = make_demo_repo(tmp_path_factory.mktemp("answers") / "repo")
    keys = {role: create_key(repo, role, role) for role in ("reader", "writer", "admin")}
    env = {"QUIVER_AUTH__MODE": "api_key", "QUIVER_SERVING_CACHE__ENABLED": "true"}
    srv = start_server(repo, env=env)
    try:
        yield AuthServer(srv, keys)
    finally:
        srv.stop()


@pytest.mark.parametrize("path", ["/api/v1/serving/online", "/get-online-features"])
def test_a_kept_answer_still_checks_the_caller(cached_auth_server: AuthServer, path: str) -> None:
    server = cached_auth_server
    with server.client("reader") as reader, server.client() as anonymous:
        first, second = reader.post(path, json=SERVICE), reader.post(path, json=SERVICE)
        assert first.status_code == second.status_code == 200, second.text
        if path.startswith("/api"):
            assert second.json()["metadata"]["cache_hit"] is True
            assert second.json()["results"] == first.json()["results"]
        else:
            assert second.content == first.content
        assert anonymous.post(path, json=SERVICE).status_code == 401
        with server.client("admin") as admin:
            applied = admin.post("/api/v1/permissions", json=DENY)
            assert applied.status_code == 200, applied.text
            try:
                refused = reader.post(path, json=SERVICE)
                assert refused.status_code == 403, refused.text
                with server.client("writer") as writer:
                    assert writer.post(path, json=SERVICE).status_code == 200
            finally:
                gone = admin.delete("/api/v1/permissions/no_pii_online_cached")
                assert gone.status_code in (200, 204), gone.text
        assert reader.post(path, json=SERVICE).status_code == 200
