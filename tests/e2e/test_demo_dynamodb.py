"""The demo with DynamoDB as its online store, by configuration alone (moto's server on loopback).

``quiver apply`` creates the online views' tables, ``quiver materialize`` fills them, and
``quiver get-online`` and ``quiver serve``'s REST API read them: the same values and statuses as
the same demo on the embedded SQLite store. Credentials come from the ``AWS_*`` variables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from _cli import cli_env, quiver
from _servers import MotoServer

CUSTOMERS = 60
SERVICE = "churn_prediction_v1"
ENTITIES = ["-e", "customer_id=1", "-e", "customer_id=7", "-e", "customer_id=999999"]


def _online(repo: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = quiver("get-online", "--service", SERVICE, *ENTITIES, "--json", cwd=repo, env=env)
    body: dict[str, Any] = json.loads(proc.stdout)
    return body


def test_demo_on_dynamodb_by_configuration(
    tmp_path: Path, moto_server: MotoServer, serve_repo: Any
) -> None:
    repo = tmp_path / "demo"
    quiver("init", str(repo), "--demo", "--customers", str(CUSTOMERS), cwd=tmp_path)
    config = yaml.safe_load((repo / "quiver.yaml").read_text())
    config["online_store"] = {
        "type": "dynamodb",
        "region": MotoServer.REGION,
        "endpoint_url": moto_server.endpoint,
        "table_prefix": "demo.",
    }
    (repo / "quiver.yaml").write_text(yaml.safe_dump(config))
    env = cli_env(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test")

    quiver("apply", cwd=repo, env=env)
    pages = moto_server.client("dynamodb").get_paginator("list_tables").paginate()
    tables = [name for page in pages for name in page["TableNames"]]
    project = config["project"]
    ours = sorted(t for t in tables if t.startswith(f"demo.{project}."))
    views = json.loads(quiver("feature-views", "list", "--json", cwd=repo, env=env).stdout)
    online_views = sorted(f"demo.{project}.{v['name']}" for v in views if v.get("online", True))
    assert ours == online_views and ours  # made by apply, before any write

    run = quiver("materialize", "2020-01-01", "now", "--json", cwd=repo, env=env)
    assert run.stdout.strip()
    on_dynamodb = _online(repo, env)

    # The same demo on the embedded store: the same answer.
    sqlite_env = cli_env(QUIVER_ONLINE_STORE__TYPE="sqlite")
    quiver("materialize", "2020-01-01", "now", cwd=repo, env=sqlite_env)
    on_sqlite = _online(repo, sqlite_env)
    assert on_dynamodb == on_sqlite
    text = json.dumps(on_dynamodb)
    assert "present" in text.lower() and "not_found" in text.lower()

    # And over HTTP, from `quiver serve` on the DynamoDB configuration.
    srv = serve_repo(repo, env={"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
    with srv.client() as client:
        assert client.get("/ready").json()["checks"]["online_store"] == "ok"
        assert client.get("/api/v1/status").json()["online_store_type"] == "dynamodb"
        served = client.post(
            "/api/v1/serving/online",
            json={"feature_service": SERVICE, "entities": {"customer_id": [1, 7, 999999]}},
        )
        assert served.status_code == 200, served.text
    rows = served.json()["results"]
    assert [row["entity"]["customer_id"] for row in rows] == [1, 7, 999999]
    for name, values in on_sqlite.items():
        if name in ("customer_id", "statuses", "event_timestamps"):
            continue
        for row, expected in zip(rows, values, strict=True):
            got = [v for k, v in row["values"].items() if _short(k) == name]
            assert got == [expected], (name, row["values"])
            (status,) = [v for k, v in row["statuses"].items() if _short(k) == name]
            assert status == on_sqlite["statuses"][name][rows.index(row)]


def _short(name: str) -> str:
    """A feature's name without its view (``view:feature`` or ``view__feature``)."""
    return name.rsplit(":", 1)[-1].rsplit("__", 1)[-1]
