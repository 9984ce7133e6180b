"""A long materialization job is cut within its view by SIGTERM or a REST cancel (issue 16).

A real ``quiver serve --scheduler`` runs an asynchronous materialization of one large view
(``KEYS`` keys, each with an old row already in the SQLite online store and a newer row in the
source). While the job writes the view:

- SIGTERM with a short ``jobs.grace_seconds``: the server exits, the job is ``cancelled`` and
  the view is entirely old (its write, one transaction, was rolled back);
- ``POST /api/v1/jobs/{id}/cancel``: the same, with the server still running.

Times here are liveness bounds, not benchmarks.
"""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from tests.e2e.conftest import poll_job

from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.types import arrow_type

pytestmark = pytest.mark.slow  # a million-row view, servers

KEYS = 1_000_000
FEATURES = [f"f{i}" for i in range(6)]
T0 = datetime(2024, 3, 1, tzinfo=UTC)
OLD, NEW = T0 + timedelta(hours=1), T0 + timedelta(hours=2)
ENV = {"QUIVER_JOBS__HEARTBEAT_SECONDS": "0.5", "QUIVER_SCHEDULER__POLL_SECONDS": "0.5"}
BOUND = 120.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo whose one view holds its old rows (value 1) and has newer ones (2) to write."""
    root = tmp_path_factory.mktemp("cancel") / "repo"
    (root / "data").mkdir(parents=True)
    config = {
        "project": "acme",
        "definitions": [],
        "online_store": {"type": "sqlite", "path": "data/online.db"},
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    ids = np.tile(np.arange(1, KEYS + 1), 2)
    naive = [t.replace(tzinfo=None) for t in (OLD, NEW)]
    ts = pa.array(np.repeat(np.array(naive, dtype="datetime64[us]"), KEYS))
    columns = {name: np.repeat([1.0, 2.0], KEYS) for name in FEATURES}
    table = pa.table({"customer_id": ids, "ts": ts.cast(arrow_type("timestamp")), **columns})
    pq.write_table(table, root / "data" / "events.parquet")
    customer = Entity(name="customer", join_keys=["customer_id"])
    src = FileSource(name="src", path="data/events.parquet", timestamp_field="ts")
    big = FeatureView(
        name="big",
        entities=[customer],
        features=[Field(name=name, dtype="float64") for name in FEATURES],
        source=src,
    )
    with FeatureStore(root) as store:
        store.apply([customer, src, big])
        store.materialize(T0, OLD + timedelta(minutes=1))
    assert online_values(root) == {1.0: KEYS}
    return root


def online_values(repo: Path) -> dict[float, int]:
    """How many keys of the view hold each value of ``f0`` (and every feature agrees)."""
    path = repo / "data" / "online.db"
    with sqlite3.connect(path) as conn:
        (table,) = [
            r[0]
            for r in conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'acme__big__%'")
        ]
        same = " AND ".join(f'"f_{n}" = "f_f0"' for n in FEATURES[1:])
        (mixed,) = conn.execute(f'SELECT count(*) FROM "{table}" WHERE NOT ({same})').fetchone()
        assert mixed == 0
        return dict(conn.execute(f'SELECT "f_f0", count(*) FROM "{table}" GROUP BY 1').fetchall())


def poll(client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool]) -> Any:
    return poll_job(client, job_id, until, BOUND)


def writing(job: dict[str, Any]) -> bool:
    return job["progress"].get("phase") == "writing" or job["status"] not in ("queued", "running")


def start_job(client: httpx.Client) -> dict[str, Any]:
    body = {"start": T0.isoformat(), "end": (NEW + timedelta(minutes=1)).isoformat()}
    response = client.post("/api/v1/materializations", json={**body, "async": True})
    assert response.status_code == 202, response.text
    job = poll(client, response.json()["job_id"], writing)
    assert job["status"] == "running" and job["progress"]["view"] == "big", job
    return dict(job)


def test_sigterm_with_a_short_grace_cuts_a_long_view_and_leaves_it_entirely_old(
    repo: Path, serve_repo: Any
) -> None:
    srv = serve_repo(repo, "--scheduler", env={**ENV, "QUIVER_JOBS__GRACE_SECONDS": "0.2"})
    with srv.client() as c:
        job = start_job(c)
    srv.process.send_signal(signal.SIGTERM)
    srv.process.wait(BOUND)
    from quiver.jobs.records import get_job

    with FeatureStore(repo) as store:
        record = get_job(store.registry, job["job_id"])
    assert record.status == "cancelled", record
    assert online_values(repo) == {1.0: KEYS}


def test_a_rest_cancel_cuts_a_long_view_and_leaves_it_entirely_old(
    repo: Path, serve_repo: Any
) -> None:
    srv = serve_repo(repo, "--scheduler", env=ENV)
    with srv.client() as c:
        job = start_job(c)
        asked = c.post(f"/api/v1/jobs/{job['job_id']}/cancel")
        assert asked.status_code == 200, asked.text
        done = poll(c, job["job_id"], lambda j: j["status"] != "running")
        assert done["status"] == "cancelled", done
        assert online_values(repo) == {1.0: KEYS}
        runs = c.get("/api/v1/materializations", params={"view": "big"}).json()["items"]
        assert runs[0]["job_id"] == job["job_id"] and runs[0]["status"] == "failed"
