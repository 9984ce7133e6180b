"""Background jobs and schedules over real HTTP (issue 16), with ``quiver serve`` subprocesses.

- ``quiver serve --scheduler`` runs the demo repo's schedule (``customer_behavior``, every 6
  hours: one catch-up run at start), shown by ``GET /api/v1/schedules`` and the job list;
- an asynchronous materialization, training and batch prediction answer 202 with a job and a
  ``Location``, and are polled to completion; their records are the materialization runs and
  the prediction job (same ids);
- a running training is cancelled (nothing half-written is left);
- a server killed with a job running leaves it ``failed: interrupted`` after a restart;
- SIGTERM gives running jobs ``jobs.grace_seconds``, then cancels them and exits.

Times here are liveness bounds (an answer within tens of seconds), not benchmarks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import poll_job

from _http import assert_error

pytestmark = pytest.mark.slow  # demo repos, servers and model training

SLOW_TREES = 50_000  # a random forest this large takes minutes
ENV = {
    "QUIVER_SERVER__MAX_ESTIMATORS": str(SLOW_TREES),
    "QUIVER_SCHEDULER__POLL_SECONDS": "0.5",
    "QUIVER_JOBS__HEARTBEAT_SECONDS": "0.5",
}
BOUND = 120.0


def training(name: str, framework: str = "lightgbm", **params: Any) -> dict[str, Any]:
    return {
        "name": name,
        "framework": framework,
        "model_type": "classification",
        "training_data": {"entity_df_source": "churn_labels", "label_column": "churned"},
        "hyperparameters": {"params": params},
    }


def slow_training(name: str) -> dict[str, Any]:
    return training(name, "sklearn", n_estimators=SLOW_TREES, n_jobs=1)


def poll(client: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool]) -> Any:
    return poll_job(client, job_id, until, BOUND, pause=0.2)


def finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed", "cancelled")


def accepted(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['job_id']}"
    assert job["status"] in ("queued", "running")
    return job


def run_cli(*args: str) -> str:
    command = [sys.executable, "-c", "from quiver.cli import main; main()", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def repo(new_demo_server: Callable[[], Any]) -> Path:
    """A fresh materialized demo repo (its first server stopped)."""
    srv = new_demo_server()
    srv.stop()
    return Path(srv.repo)


@pytest.fixture
def client(repo: Path, serve_repo: Any) -> Any:
    srv = serve_repo(repo, "--scheduler", env=ENV)
    with srv.client() as c:
        yield c


def test_serve_with_scheduler_runs_the_demo_schedule(client: httpx.Client, repo: Path) -> None:
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline:
        schedules = client.get("/api/v1/schedules").json()
        (item,) = [s for s in schedules["items"] if s["view"] == "customer_behavior"]
        if item["last_job"] and item["last_job"]["status"] == "succeeded":
            break
        time.sleep(0.3)
    assert item["cron"] == "0 */6 * * *" and item["timezone"] == "UTC"
    assert item["last_job"]["status"] == "succeeded", item
    assert item["next_run"] > item["last_fire"]
    jobs = client.get("/api/v1/jobs", params={"view": "customer_behavior"}).json()["items"]
    assert len(jobs) == 1 and jobs[0]["created_by"] == "scheduler"
    (run,) = jobs[0]["result"]["runs"]
    assert run["view"] == "customer_behavior" and run["job_id"] == jobs[0]["job_id"]
    listed = json.loads(run_cli("schedules", "list", "--repo", str(repo), "--json"))
    assert [s["view"] for s in listed] == ["customer_behavior"]
    job_id = jobs[0]["job_id"]
    shown = json.loads(run_cli("jobs", "show", job_id, "--repo", str(repo), "--json"))
    assert shown["status"] == "succeeded"
    listed_jobs = json.loads(run_cli("jobs", "list", "--repo", str(repo), "--json"))
    assert job_id in {j["job_id"] for j in listed_jobs}


def test_async_materialization_is_polled_to_completion(client: httpx.Client) -> None:
    body = {"incremental": True, "views": ["customer_demographics"], "async": True}
    job = accepted(client.post("/api/v1/materializations", json=body))
    assert job["kind"] == "materialize"
    done = poll(client, job["job_id"], finished)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {
        "views": 1,
        "views_done": 1,
        "rows_written": done["result"]["rows_written"],
    }
    runs = client.get("/api/v1/materializations", params={"view": "customer_demographics"}).json()
    assert runs["items"][0]["job_id"] == job["job_id"]
    # Unknown views are refused before a job is made.
    bad = {"incremental": True, "views": ["nope"], "async": True}
    assert_error(client.post("/api/v1/materializations", json=bad), 404)


def test_async_training_and_batch_prediction(client: httpx.Client, repo: Path) -> None:
    job = accepted(
        client.post("/api/v1/models", json={**training("bg", n_estimators=5), "async": True})
    )
    done = poll(client, job["job_id"], finished)
    assert done["status"] == "succeeded", done
    model_id = done["result"]["model_id"]
    assert model_id.startswith("bg:")
    body = {"model": model_id, "input_source": "churn_labels", "output_path": "outputs/bg.parquet"}
    job = accepted(
        client.post("/api/v1/predictions/batch", json=body, headers={"Prefer": "respond-async"})
    )
    done = poll(client, job["job_id"], finished)
    assert done["status"] == "succeeded", done
    assert done["result"]["prediction_id"] == job["job_id"]  # the same record
    record = client.get(f"/api/v1/predictions/jobs/{job['job_id']}").json()
    assert record["status"] == "completed" and record["rows"] > 0
    assert (repo / "outputs" / "bg.parquet").exists()
    kinds = {
        j["kind"]
        for j in client.get("/api/v1/jobs", params={"status": "succeeded"}).json()["items"]
    }
    assert {"train", "predict_batch", "materialize"} <= kinds
    trains = client.get("/api/v1/jobs", params={"kind": "train"}).json()["items"]
    assert {j["kind"] for j in trains} == {"train"}


def test_cancel_of_a_running_training(client: httpx.Client, repo: Path) -> None:
    job = accepted(client.post("/api/v1/models", json={**slow_training("slow"), "async": True}))
    running = poll(client, job["job_id"], lambda j: j["status"] == "running")
    assert running["status"] == "running"
    time.sleep(1.0)  # inside the worker now
    response = client.post(f"/api/v1/jobs/{job['job_id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["cancel_requested"] or response.json()["status"] == "cancelled"
    done = poll(client, job["job_id"], finished)
    assert done["status"] == "cancelled", done
    assert not list((repo / "models").rglob(".staging-*"))
    models = client.get("/api/v1/models").json()["models"]
    assert "slow" not in {m["name"] for m in models}
    assert_error(client.post(f"/api/v1/jobs/{job['job_id']}/cancel"), 409)


def test_job_routes_refuse_bad_input(client: httpx.Client) -> None:
    assert_error(client.get("/api/v1/jobs/" + "0" * 32), 404)
    assert_error(client.get("/api/v1/jobs/not-an-id!"), 422)
    assert_error(client.get("/api/v1/jobs", params={"status": "done"}), 422)
    assert_error(client.get("/api/v1/jobs", params={"limit": 0}), 422)
    assert_error(client.post("/api/v1/materializations", json={"async": 1}), 422)


def test_a_server_killed_with_a_job_running_leaves_it_failed_interrupted(
    repo: Path, serve_repo: Any
) -> None:
    first = serve_repo(repo, env=ENV)
    with first.client() as c:
        job = accepted(c.post("/api/v1/models", json={**slow_training("killed"), "async": True}))
        assert poll(c, job["job_id"], lambda j: j["status"] == "running")["status"] == "running"
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(15)
    second = serve_repo(repo, env=ENV)
    with second.client() as c:
        after = c.get(f"/api/v1/jobs/{job['job_id']}").json()
    assert after["status"] == "failed", after
    assert after["error"].startswith("interrupted")


def test_sigterm_gives_running_jobs_the_grace_period_then_cancels_them(
    repo: Path, serve_repo: Any
) -> None:
    srv = serve_repo(repo, env={**ENV, "QUIVER_JOBS__GRACE_SECONDS": "1"})
    with srv.client() as c:
        job = accepted(c.post("/api/v1/models", json={**slow_training("stopped"), "async": True}))
        assert poll(c, job["job_id"], lambda j: j["status"] == "running")["status"] == "running"
    srv.process.send_signal(signal.SIGTERM)
    srv.process.wait(60)
    from quiver.jobs.records import get_job
    from quiver.store import FeatureStore

    with FeatureStore(repo_path=repo) as store:
        record = get_job(store.registry, job["job_id"])
    assert record.status == "cancelled", record
    assert not list((repo / "models").rglob(".staging-*"))


def test_a_second_sigterm_exits_at_once_and_the_next_start_reaps_the_job(
    repo: Path, serve_repo: Any
) -> None:
    srv = serve_repo(repo, env={**ENV, "QUIVER_JOBS__GRACE_SECONDS": "600"})
    with srv.client() as c:
        job = accepted(c.post("/api/v1/models", json={**slow_training("twice"), "async": True}))
        assert poll(c, job["job_id"], lambda j: j["status"] == "running")["status"] == "running"
    srv.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert srv.process.poll() is None  # the job has 600 s of grace
    srv.process.send_signal(signal.SIGTERM)
    assert srv.process.wait(30) != 0  # liveness bound: far below the grace period
    again = serve_repo(repo, env=ENV)
    with again.client() as c:
        after = c.get(f"/api/v1/jobs/{job['job_id']}").json()
    assert after["status"] == "failed" and after["error"].startswith("interrupted"), after


def test_two_servers_with_the_scheduler_on_one_postgres_registry_run_the_fire_once(
    new_demo_server: Callable[[], Any], serve_repo: Any, postgres_url: str
) -> None:
    first = new_demo_server()
    first.stop()
    repo = Path(first.repo)
    env = {**ENV, "QUIVER_REGISTRY__URL": postgres_url}
    command = [sys.executable, "-c", "from quiver.cli import main; main()"]
    applied = subprocess.run(
        [*command, "apply", "--repo", str(repo)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    servers = [serve_repo(repo, "--scheduler", env=env) for _ in range(2)]
    with servers[0].client() as c:
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            jobs = c.get("/api/v1/jobs", params={"view": "customer_behavior"}).json()["items"]
            if jobs and all(finished(j) for j in jobs):
                break
            time.sleep(0.3)
        time.sleep(3.0)  # several more ticks of both schedulers (0.5 s each)
        jobs = c.get("/api/v1/jobs", params={"view": "customer_behavior"}).json()["items"]
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded", jobs
    with servers[1].client() as c:
        (item,) = c.get("/api/v1/schedules").json()["items"]
    assert item["last_job"]["job_id"] == jobs[0]["job_id"]


def test_a_queued_then_running_batch_prediction_is_in_the_prediction_job_list(
    repo: Path, serve_repo: Any
) -> None:
    srv = serve_repo(repo, env={**ENV, "QUIVER_JOBS__WORKERS": "1"})
    with srv.client() as c:
        made = c.post("/api/v1/models", json=training("listed", n_estimators=5))
        assert made.status_code == 201, made.text
        model_id = made.json()["model_id"]
        blocker = accepted(
            c.post("/api/v1/models", json={**slow_training("blocker"), "async": True})
        )
        assert poll(c, blocker["job_id"], lambda j: j["status"] == "running")["status"] == "running"
        body = {"model": model_id, "input_source": "churn_labels", "async": True}
        scored = accepted(
            c.post("/api/v1/predictions/batch", json={**body, "output_path": "outputs/l.parquet"})
        )
        dropped = accepted(
            c.post("/api/v1/predictions/batch", json={**body, "output_path": "outputs/d.parquet"})
        )

        def listed() -> dict[str, str]:
            jobs = c.get("/api/v1/predictions/jobs", params={"model": "listed"}).json()["jobs"]
            return {j["prediction_id"]: j["status"] for j in jobs}

        # Both wait behind the training: listed, queued, under their jobs' ids (REST and CLI).
        assert listed() == {scored["job_id"]: "queued", dropped["job_id"]: "queued"}
        cli = json.loads(run_cli("models", "jobs", "listed", "--json", "--repo", str(repo)))
        assert {j["prediction_id"]: j["status"] for j in cli} == listed()
        record = c.get(f"/api/v1/predictions/jobs/{scored['job_id']}").json()
        assert record["model_id"] == model_id and record["output"].endswith("l.parquet")
        assert c.post(f"/api/v1/jobs/{dropped['job_id']}/cancel").status_code == 200
        # Regression: the record stayed queued until the pool reached the job, after the one
        # before it had finished (a race with the check at the end).
        assert listed() == {scored["job_id"]: "queued", dropped["job_id"]: "cancelled"}
        assert c.post(f"/api/v1/jobs/{blocker['job_id']}/cancel").status_code == 200
        # The prediction runs, then completes: the same record all along.
        seen = set()
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            job = c.get(f"/api/v1/jobs/{scored['job_id']}").json()
            status = listed()[scored["job_id"]]
            seen.add(status)
            if finished(job) and status != "running":
                break
            time.sleep(0.05)
        assert job["status"] == "succeeded", job
        assert listed() == {scored["job_id"]: "completed", dropped["job_id"]: "cancelled"}
        assert seen <= {"queued", "running", "completed"}
