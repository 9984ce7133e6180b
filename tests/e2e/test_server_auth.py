"""API keys, roles, permissions and the audit log over real HTTP (``auth: api_key``).

The session's :func:`auth_server` runs ``quiver serve`` with ``QUIVER_AUTH__MODE=api_key`` over
a fresh demo repo, with keys named ``reader``, ``writer``, ``ml`` and ``admin`` made by
``quiver keys create`` (the CLI, a separate process, as an operator would).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from _cli import quiver, quiver_command
from _http import BEHAVIOR_ROW
from quiver.security.permissions import ROLES

if TYPE_CHECKING:
    from e2e.conftest import AuthServer

pytestmark = pytest.mark.slow  # a fresh demo repo and server

ONLINE = {"features": ["customer_behavior:orders"], "entities": {"customer_id": [1]}}
HISTORICAL = {
    "features": ["customer_behavior:orders"],
    "entity_rows": {
        "columns": ["customer_id", "event_timestamp"],
        "data": [[1, "2026-03-01T00:00:00Z"]],
    },
}
TRAIN = {
    "name": "churn_auth",
    "framework": "lightgbm",
    "model_type": "classification",
    "features": "churn_prediction_v1",
    "training_data": {
        "entity_df_source": "churn_labels",
        "label_column": "churned",
        "event_timestamp_column": "event_timestamp",
        "start_date": "2025-01-01",
        "end_date": "2026-01-01",
    },
    "hyperparameters": {"params": {"n_estimators": 5, "n_jobs": 1}},
}
_RANK = {role: i for i, role in enumerate(ROLES)}


def _tag() -> str:
    return uuid.uuid4().hex[:6]


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _push(view: str = "customer_behavior", key: int = 700_001) -> dict[str, Any]:
    return {"view": view, "rows": [{"customer_id": key, "event_timestamp": _now(), **BEHAVIOR_ROW}]}


def _feast_push() -> dict[str, Any]:
    row = {"customer_id": 700_002, "event_timestamp": _now(), **BEHAVIOR_ROW}
    return {"push_source_name": "customer_behavior", "df": {k: [v] for k, v in row.items()}}


Body = Callable[[str], Any]
# (least role allowed, method, path, body, status when allowed); {role} is filled in.
CASES: list[tuple[str, str, str, Body | None, int]] = [
    ("reader", "GET", "/api/v1/feature-views", None, 200),
    ("reader", "GET", "/api/v1/feature-views/customer_behavior", None, 200),
    ("reader", "GET", "/api/v1/feature-views/customer_behavior/history", None, 200),
    ("reader", "GET", "/api/v1/status", None, 200),
    ("reader", "GET", "/feast/status", None, 200),
    ("reader", "GET", "/api/v1/features", None, 200),
    ("reader", "GET", "/api/v1/models", None, 200),
    ("reader", "GET", "/api/v1/materializations", None, 200),
    ("reader", "POST", "/api/v1/serving/online", lambda r: ONLINE, 200),
    ("reader", "POST", "/get-online-features", lambda r: ONLINE, 200),
    ("reader", "POST", "/api/v1/serving/historical", lambda r: HISTORICAL, 200),
    ("writer", "POST", "/api/v1/push", lambda r: _push(), 200),
    ("writer", "POST", "/push", lambda r: _feast_push(), 200),
    ("writer", "POST", "/api/v1/entities", lambda r: {"name": f"e_{r}", "join_keys": ["k"]}, 201),
    (
        "writer",
        "PUT",
        "/api/v1/entities/e_{role}",
        lambda r: {"name": f"e_{r}", "join_keys": ["k"], "description": "changed"},
        200,
    ),
    ("writer", "DELETE", "/api/v1/entities/e_{role}", None, 200),
    (
        "writer",
        "POST",
        "/api/v1/materializations",
        lambda r: {
            "views": ["customer_contract"],
            "start": "2026-01-01T00:00:00Z",
            "end": "2026-01-02T00:00:00Z",
        },
        201,
    ),
    ("ml", "POST", "/api/v1/models", lambda r: TRAIN, 201),
    (
        "ml",
        "POST",
        "/api/v1/models/churn_auth/versions/1/stage",
        lambda r: {"stage": "staging"},
        200,
    ),
    (
        "ml",
        "POST",
        "/api/v1/predictions/online",
        lambda r: {"model": "churn_auth:1", "entities": {"customer_id": [1]}, "use_defaults": True},
        200,
    ),
    ("admin", "GET", "/api/v1/permissions", None, 200),
    ("admin", "GET", "/api/v1/audit", None, 200),
]


def _error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "details"}
    assert body["error"]["type"] == error_type, body
    return dict(body["error"])


@pytest.mark.parametrize("role", ROLES)
def test_each_role_against_each_route_class(auth_server: AuthServer, role: str) -> None:
    with auth_server.client(role) as client:
        for least, method, path, body, status in CASES:
            url = path.format(role=role)
            kwargs = {"json": body(role)} if body is not None else {}
            response = client.request(method, url, **kwargs)
            if _RANK[role] >= _RANK[least]:
                assert response.status_code == status, (role, method, url, response.text)
            else:
                error = _error(response, 403, "forbidden")
                assert f"'{role}' (role {role}) may not" in error["message"], error
                assert error["details"]["principal"] == role


def test_public_routes_need_no_key(auth_server: AuthServer) -> None:
    with auth_server.client() as client:
        for path in ("/health", "/ready", "/docs", "/openapi.json"):
            assert client.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/v1/serving/online", ONLINE),  # the fast path
        ("POST", "/get-online-features", ONLINE),
        ("GET", "/api/v1/entities", None),
        ("POST", "/api/v1/push", _push()),
    ],
)
def test_missing_and_bad_keys_are_401_with_a_reason(
    auth_server: AuthServer, method: str, path: str, body: Any
) -> None:
    key = auth_server.keys["admin"]
    key_id = key.split("_")[1]
    kwargs = {"json": body} if body is not None else {}
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "an API key is required"),
        ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, "uses the 'Basic' scheme"),
        ({"Authorization": "Bearer nonsense"}, "malformed"),
        ({"X-API-Key": f"qk_{key_id}_{'x' * 43}"}, "not valid"),
        ({"X-API-Key": f"qk_{'f' * 16}_{'x' * 43}"}, "not valid"),
        ({"X-API-Key": key, "Authorization": "Bearer qk_0_0"}, "two different API keys"),
    ]
    with auth_server.client() as client:
        for headers, reason in cases:
            response = client.request(method, path, headers=headers, **kwargs)
            error = _error(response, 401, "unauthorized")
            assert reason in error["message"], (headers, error)
            assert response.headers["www-authenticate"].startswith("Bearer")
        # The same key in both headers is one key.
        same = {"X-API-Key": key, "Authorization": f"Bearer {key}"}
        assert client.request(method, path, headers=same, **kwargs).status_code < 400


def test_revoked_while_running_is_refused_within_a_second(auth_server: AuthServer) -> None:
    name = f"temp_{uuid.uuid4().hex[:6]}"
    key = auth_server.create_key(name, "reader")
    with auth_server.client(key=key) as client:
        assert client.post("/api/v1/serving/online", json=ONLINE).status_code == 200
        assert client.get("/api/v1/entities").status_code == 200
        quiver("keys", "revoke", name, cwd=auth_server.repo)
        revoked_at = time.monotonic()
        for path, body in (("/api/v1/serving/online", ONLINE), ("/api/v1/entities", None)):
            while True:
                response = client.request("POST" if body else "GET", path, json=body)
                if response.status_code == 401:
                    break
                assert response.status_code == 200, response.text
                assert time.monotonic() - revoked_at < 1.0, f"{path} still served after 1 s"
                time.sleep(0.02)
            assert time.monotonic() - revoked_at < 1.0
            error = _error(response, 401, "unauthorized")
            assert f"API key '{name}' was revoked at" in error["message"]
            assert error["details"]["reason"] == "revoked"


def test_expired_and_other_project_keys(auth_server: AuthServer) -> None:
    from quiver.store import FeatureStore

    other = auth_server.create_key(f"other_{_tag()}", "admin", "--project", "elsewhere")
    with FeatureStore(repo_path=auth_server.repo) as store:
        soon = datetime.now(UTC) + timedelta(seconds=2)
        short = store.security.keys.create(f"short_{_tag()}", "reader", expires_at=soon)
    with auth_server.client(key=short.key) as client:
        assert client.post("/get-online-features", json=ONLINE).status_code == 200
        time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.1)
        for response in (
            client.post("/get-online-features", json=ONLINE),
            client.get("/api/v1/status"),
        ):
            error = _error(response, 401, "unauthorized")
            assert "expired at" in error["message"] and error["details"]["reason"] == "expired"
    with auth_server.client(key=other) as client:
        error = _error(client.get("/api/v1/status"), 403, "forbidden")
        assert "is for project 'elsewhere'" in error["message"]


def test_permissions_by_tag_and_pattern(auth_server: AuthServer) -> None:
    """A deny by tag refuses a feature service that reads a tagged view (naming the view); a
    grant by name pattern lets a reader push to some views only; both take effect at once and
    go away when deleted."""
    policies = {
        "permissions": [
            {
                "name": "no_pii_online",
                "effect": "deny",
                "actions": ["read_online", "read_offline"],
                "roles": ["reader"],
                "kinds": ["feature_view"],
                "tags": {"pii": "true"},
            },
            {
                "name": "reader_pushes_contracts",
                "actions": ["write"],
                "principals": ["read*"],
                "names": ["customer_con*"],
            },
        ]
    }
    service = {"feature_service": "churn_prediction_v1", "entities": {"customer_id": [1]}}
    with auth_server.client("admin") as admin, auth_server.client("reader") as reader:
        assert reader.post("/api/v1/serving/online", json=service).status_code == 200
        applied = admin.post("/api/v1/permissions", json=policies)
        assert applied.status_code == 200, applied.text
        assert applied.json()["results"] == {
            "no_pii_online": "created",
            "reader_pushes_contracts": "created",
        }
        try:
            for path in ("/api/v1/serving/online", "/get-online-features"):
                error = _error(reader.post(path, json=service), 403, "forbidden")
                assert "feature view 'customer_demographics'" in error["message"], error
                assert "denied by permission 'no_pii_online'" in error["message"]
                assert "feature service 'churn_prediction_v1'" in error["message"]
                assert error["details"]["resource"] == "feature_view:customer_demographics"
            offline = dict(HISTORICAL, features=["customer_demographics:age"])
            _error(reader.post("/api/v1/serving/historical", json=offline), 403, "forbidden")
            # Views without the tag stay readable; the writer role is not named by the deny.
            assert reader.post("/api/v1/serving/online", json=ONLINE).status_code == 200
            with auth_server.client("writer") as writer:
                assert writer.post("/api/v1/serving/online", json=service).status_code == 200
            contract = {
                "view": "customer_contract",
                "rows": [
                    {
                        "customer_id": 700_003,
                        "event_timestamp": _now(),
                        "contract_type": "monthly",
                        "payment_method": "card",
                        "paperless_billing": True,
                    }
                ],
            }
            pushed = reader.post("/api/v1/push", json=contract)
            assert pushed.status_code == 200, pushed.text
            _error(reader.post("/api/v1/push", json=_push()), 403, "forbidden")
            listed = admin.get("/api/v1/permissions").json()
            assert [p["name"] for p in listed["items"]] == [
                "no_pii_online",
                "reader_pushes_contracts",
            ]
        finally:
            for name in ("no_pii_online", "reader_pushes_contracts"):
                assert admin.delete(f"/api/v1/permissions/{name}").status_code == 200
        assert reader.post("/api/v1/serving/online", json=service).status_code == 200


def test_scripted_session_is_audited(auth_server: AuthServer) -> None:
    """Every state-changing request of a session, and every denied one, has its row: the
    principal, key id, action, resource, outcome, request id and client address."""
    tag = uuid.uuid4().hex[:8]
    keys = {role: auth_server.keys[role].split("_")[1] for role in ROLES}
    entity = f"audited_{tag}"
    script: list[tuple[str | None, str, str, Any, str, str, str]] = [
        # role, method, path, body, expected outcome, principal, resource (part)
        (
            "admin",
            "POST",
            "/api/v1/entities",
            {"name": entity, "join_keys": ["k"]},
            "ok",
            "admin",
            f"entity:{entity}",
        ),
        (
            "writer",
            "PUT",
            f"/api/v1/entities/{entity}",
            {"name": entity, "join_keys": ["k"], "description": "v2"},
            "ok",
            "writer",
            f"entity:{entity}",
        ),
        (
            "writer",
            "POST",
            "/api/v1/push",
            _push(key=700_010),
            "ok",
            "writer",
            "feature_view:customer_behavior",
        ),
        (
            "reader",
            "DELETE",
            f"/api/v1/entities/{entity}",
            None,
            "forbidden",
            "reader",
            f"entity:{entity}",
        ),
        (
            "reader",
            "POST",
            "/api/v1/serving/online",
            {"feature_service": "churn_prediction_v1", "entities": {"customer_id": [1]}},
            "ok",
            "",
            "",
        ),  # a read: no row
        (None, "POST", "/api/v1/push", _push(key=700_011), "unauthorized", "anonymous", ""),
        ("reader", "GET", "/api/v1/audit", None, "forbidden", "reader", "project:"),
        (
            "writer",
            "PUT",
            "/api/v1/entities/nope_{tag}",
            {"name": f"nope_{tag}", "join_keys": ["k"]},
            "not_found",
            "writer",
            f"entity:nope_{tag}",
        ),
        (
            "writer",
            "DELETE",
            f"/api/v1/entities/{entity}",
            None,
            "ok",
            "writer",
            f"entity:{entity}",
        ),
    ]
    request_ids = []
    for i, (role, method, path, body, outcome, _, _) in enumerate(script):
        rid = f"{tag}-{i}"
        request_ids.append(rid)
        with auth_server.client(role) as client:
            kwargs = {"json": body} if body is not None else {}
            response = client.request(
                method, path.format(tag=tag), headers={"X-Request-ID": rid}, **kwargs
            )
        expected = 200 if outcome == "ok" else None
        if expected is not None:
            assert response.status_code < 300, response.text
        else:
            assert response.json()["error"]["type"] == outcome
        if script[i][5]:
            assert response.headers["x-request-id"] == rid
    with auth_server.client("admin") as admin:
        rows = admin.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    by_id = {r["request_id"]: r for r in rows if r["request_id"] in request_ids}
    for rid, (role, method, path, _, outcome, principal, resource) in zip(
        request_ids, script, strict=True
    ):
        if not principal:
            assert rid not in by_id, "online reads are not audited"
            continue
        row = by_id[rid]
        assert row["principal"] == principal, row
        assert row["key_id"] == (keys[role] if role else None), row
        assert row["outcome"] == outcome, row
        assert resource in row["resource"], row
        assert row["method"] == method and row["path"] == path.format(tag=tag)
        assert row["client"] == "127.0.0.1" and row["channel"] == "rest"
        assert row["action"]  # the route's operation id
    assert by_id[request_ids[0]]["action"] == "create_entity"
    # The CLI reads the same log, and its own changes are in it with the OS user.
    out = quiver("audit", "--resource", entity, "--json", cwd=auth_server.repo)
    cli_rows = json.loads(out.stdout)
    assert {r["request_id"] for r in cli_rows} >= {request_ids[0], request_ids[-1]}
    created = quiver("audit", "--action", "create_key", "--json", cwd=auth_server.repo)
    assert {r["resource"] for r in json.loads(created.stdout)} >= {f"api_key:{r}" for r in ROLES}
    assert all(r["channel"] == "cli" for r in json.loads(created.stdout))
    # Nothing in the API edits the log.
    with auth_server.client("admin") as admin:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            assert admin.request(method, "/api/v1/audit").status_code in (404, 405)


def test_history_author_is_the_principal(auth_server: AuthServer) -> None:
    name = f"authored_{uuid.uuid4().hex[:6]}"
    with auth_server.client("writer") as writer, auth_server.client("ml") as ml:
        assert (
            writer.post("/api/v1/entities", json={"name": name, "join_keys": ["k"]}).status_code
            == 201
        )
        body = {"name": name, "join_keys": ["k"], "description": "by ml"}
        assert ml.put(f"/api/v1/entities/{name}", json=body).status_code == 200
        history = writer.get(f"/api/v1/entities/{name}/history").json()["items"]
        assert [v["author"] for v in history] == ["writer", "ml"]
        assert writer.delete(f"/api/v1/entities/{name}").status_code == 200


def test_keys_are_stored_only_hashed(auth_server: AuthServer) -> None:
    """Neither a key nor its secret is anywhere in the registry's files; ``keys list`` shows
    ids and names only."""
    data = auth_server.repo / "data"
    blobs = b"".join(p.read_bytes() for p in data.glob("registry.db*"))
    for key in auth_server.keys.values():
        secret = key.split("_", 2)[2]
        assert secret.encode() not in blobs and key.encode() not in blobs
    with sqlite3.connect(data / "registry.db") as db:
        hashes = {row[0] for row in db.execute("SELECT secret_hash FROM api_keys")}
    import hashlib

    for key in auth_server.keys.values():
        assert hashlib.sha256(key.split("_", 2)[2].encode()).hexdigest() in hashes
    listed = quiver("keys", "list", "--json", cwd=auth_server.repo).stdout
    for key in auth_server.keys.values():
        assert key.split("_", 2)[2] not in listed
    assert {k["name"] for k in json.loads(listed)} >= set(ROLES)


def test_serve_refuses_a_public_address_without_auth(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    quiver("init", str(repo), cwd=tmp_path)
    result = subprocess.run(
        [*quiver_command(), "serve", "--repo", str(repo), "--host", "0.0.0.0", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "refusing to serve 0.0.0.0 with auth mode 'none'" in result.stderr
    assert "--insecure" in result.stderr and "quiver keys create" in result.stderr


def test_loopback_detection() -> None:
    from quiver.cli.server import is_loopback

    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "192.168.0.1", "example.invalid"):
        assert not is_loopback(host), host


def test_every_route_has_a_permission_rule(tmp_path: Path) -> None:
    """The route table covers every route of the app, and names no route that is gone; the
    audit log and the API keep out of each other (no route writes the log)."""
    from quiver.config import build_config
    from quiver.server.access import ROUTES
    from quiver.server.app import create_app
    from quiver.store import FeatureStore

    store = FeatureStore(config=build_config({"project": "p", "repo_path": tmp_path}))
    schema = create_app(store).openapi()
    operations = {
        op["operationId"]: method.upper()
        for item in schema["paths"].values()
        for method, op in item.items()
    }
    assert set(operations) == set(ROUTES)
    public = {op for op, rule in ROUTES.items() if rule.action is None}
    assert public == {"health", "ready"}
    for op, rule in ROUTES.items():
        if operations[op] == "GET":
            assert not rule.audit, f"{op}: reads are not audited"
        elif rule.action not in ("read_online", "read_offline", "predict"):
            assert rule.audit, f"{op}: a state change must be audited"
    assert "securitySchemes" not in schema.get("components", {})  # auth: none
    audit_paths = [p for p in schema["paths"] if p.startswith("/api/v1/audit")]
    assert audit_paths == ["/api/v1/audit"] and set(schema["paths"]["/api/v1/audit"]) == {"get"}


def test_openapi_declares_the_keys(auth_server: AuthServer) -> None:
    """Swagger UI's Authorize button: both ways to send a key, required on every route but
    the probes (with ``auth: none`` nothing is declared)."""
    with auth_server.client() as client:
        schema = client.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "an API key made with 'quiver keys create'",
    }
    assert schemes["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, item in schema["paths"].items():
        for operation in item.values():
            needed = "security" in operation
            assert needed is (path not in ("/health", "/ready")), (path, operation["operationId"])


def test_jobs_are_audited_once_as_their_caller(auth_server: AuthServer) -> None:
    """Training runs in a worker process: the model's author is the caller, and the request's
    one audit row names the model version the job made (no second row from the worker)."""
    rid = f"train-{_tag()}"
    with auth_server.client("ml") as ml:
        response = ml.post("/api/v1/models", json=TRAIN, headers={"X-Request-ID": rid})
    assert response.status_code == 201, response.text
    version = response.json()
    assert version["created_by"] == "ml"
    with auth_server.client("admin") as admin:
        rows = admin.get("/api/v1/audit", params={"limit": 1000}).json()["items"]
    mine = [r for r in rows if r["request_id"] == rid]
    assert len(mine) == 1, mine
    assert mine[0]["principal"] == "ml" and mine[0]["action"] == "train_model"
    assert f"model:{version['model_id']}" in mine[0]["resource"]
    assert not [r for r in rows if r["action"] == "train" and r["channel"] != "rest"]
