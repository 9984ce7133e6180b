"""Bounded work per request over real HTTP (issue 13, "bounded work per request").

- an entity table larger than the request may be is refused (413) before the join: shown with
  a table the join would refuse for another reason (it lacks the join key), so the answer
  proves which check ran first;
- a model larger than the server's bounds is refused (422) before any work (no worker starts);
- a training or batch prediction job past ``server.job_timeout_seconds`` is cancelled: its
  worker is killed, nothing it began is left, a prediction job's record says ``cancelled``;
- a job whose client went away is cancelled (the server stops spending CPU on it);
- ``quiver serve`` stops on SIGTERM within seconds with a training job running, and leaves no
  half-written model behind.

Times in these tests are liveness bounds (an answer within tens of seconds), not benchmarks.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from _http import assert_error

pytestmark = pytest.mark.slow  # demo repos, servers and model training

HISTORICAL = "/api/v1/serving/historical"
BIG_ROWS = 200_000
SLOW_TREES = 50_000  # a random forest this large takes minutes: always past a short limit
SLOW_ENV = {"QUIVER_SERVER__MAX_ESTIMATORS": str(SLOW_TREES)}
STOP_BOUND = 15.0  # seconds: SIGTERM to exit, a liveness bound


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


def worker_pids(server_pid: int) -> list[int]:
    """The job workers of a server (their command line ends with the server's pid)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if b"quiver.jobs.worker" in argv and argv[-1] == str(server_pid).encode():
            found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of a process's own threads (utime + stime; not its children's)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:13])
    return ticks / os.sysconf("SC_CLK_TCK")


def http(server: Any, timeout: float) -> httpx.Client:
    """A client of ``server`` with its own timeout."""
    return httpx.Client(base_url=server.url, timeout=timeout)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


def leftovers(repo: Path) -> list[str]:
    """Half-written files: model staging folders and temporary outputs."""
    found = [p.name for p in (repo / "models").rglob(".staging-*")]
    for folder in (repo / "outputs", repo / "data"):
        found += [p.name for p in folder.rglob("*.tmp")]
    return found


def model_names(repo: Path) -> list[str]:
    from quiver.store import FeatureStore

    with FeatureStore(repo_path=repo) as store:
        return [m.name for m in store.list_models()]


@pytest.fixture(scope="module")
def base(new_demo_server: Callable[[], Any]) -> Any:
    """A server over a fresh demo repo with large entity tables registered as sources."""
    server = new_demo_server()
    data = server.repo / "data"
    start = datetime(2025, 6, 1, tzinfo=UTC)
    times = pa.array(
        [start + timedelta(minutes=i) for i in range(BIG_ROWS)], pa.timestamp("us", tz="UTC")
    )
    keys = pa.array([i % 300 + 1 for i in range(BIG_ROWS)], pa.int64())
    pq.write_table(pa.table({"customer_id": keys, "event_timestamp": times}), data / "big.parquet")
    # No join key column: the join would answer 422 if it ran first.
    pq.write_table(pa.table({"other_id": keys, "event_timestamp": times}), data / "nokey.parquet")
    small = pa.table({"other_id": keys[:5], "event_timestamp": times[:5]})
    pq.write_table(small, data / "nokey_small.parquet")
    pacsv.write_csv(
        pa.table({"other_id": keys[:5000], "event_timestamp": times[:5000]}), data / "nokey.csv"
    )
    with server.client() as client:
        for name in ("big", "nokey", "nokey_small"):
            source = {"name": name, "type": "file", "path": f"data/{name}.parquet"}
            response = client.post("/api/v1/data-sources", json=source)
            assert response.status_code == 201, response.text
    return server


@pytest.fixture
def client(base: Any) -> Iterator[httpx.Client]:
    with base.client() as c:
        yield c


@pytest.fixture(scope="module")
def model(base: Any) -> str:
    """A small trained model (for batch predictions)."""
    with base.client() as client:
        response = client.post("/api/v1/models", json=training("small", n_estimators=5, n_jobs=1))
    assert response.status_code == 201, response.text
    return str(response.json()["model_id"])


# -- rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entity",
    [
        {"entity_source": "nokey"},
        {"entity_path": "data/nokey.parquet"},
        {"entity_path": "data/nokey.csv"},  # counted by a scan that stops past the limit
    ],
)
def test_an_entity_table_over_the_inline_limit_is_refused_before_the_join(
    client: httpx.Client, base: Any, entity: dict[str, str]
) -> None:
    body = {"features": ["customer_demographics:age"], **entity}
    error = assert_error(client.post(HISTORICAL, json=body), 413, "payload_too_large")
    assert f"more than {base.max_inline_rows} rows" in error["message"]
    assert "server.max_inline_rows" in error["message"]
    # Under the limit, the same kind of table reaches the join, which refuses it (422): the
    # 413 above came first, before the table was read or joined.
    small = {"features": ["customer_demographics:age"], "entity_source": "nokey_small"}
    assert "customer_id" in assert_error(client.post(HISTORICAL, json=small), 422)["message"]


def test_a_file_output_is_bounded_by_max_entity_rows(base: Any, serve_repo: Any) -> None:
    server = serve_repo(base.repo, env={"QUIVER_SERVER__MAX_ENTITY_ROWS": "1000"})
    body = {
        "features": ["customer_demographics:age"],
        "entity_source": "big",
        "output": "parquet",
        "output_path": "outputs/too_big.parquet",
    }
    with server.client() as client:
        error = assert_error(client.post(HISTORICAL, json=body), 413)
    assert "server.max_entity_rows" in error["message"]
    assert not (base.repo / "outputs" / "too_big.parquet").exists()


# -- model size ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framework", "params", "setting"),
    [
        ("lightgbm", {"n_estimators": 100_000_000}, "max_estimators"),
        ("lightgbm", {"num_iterations": 10**6}, "max_estimators"),
        ("lightgbm", {"num_leaves": 10**6}, "max_leaves"),
        ("lightgbm", {"max_depth": 10_000}, "max_depth"),
        ("xgboost", {"n_estimators": 1000, "num_parallel_tree": 100}, "max_estimators"),
        ("xgboost", {"max_leaves": 10**7}, "max_leaves"),
        ("sklearn", {"n_estimators": 10**9}, "max_estimators"),
        ("sklearn", {"max_leaf_nodes": 10**6}, "max_leaves"),
    ],
)
def test_an_oversized_model_is_refused_before_any_work(
    base: Any, framework: str, params: dict[str, Any], setting: str
) -> None:
    before = worker_pids(base.process.pid)
    with http(base, 30.0) as client:
        for url in ("/api/v1/models", "/feast/models"):
            response = client.post(url, json=training(f"huge_{framework}", framework, **params))
            error = assert_error(response, 422, "invalid")
            assert f"server.{setting}" in error["message"]
            assert error["details"]["setting"] == f"server.{setting}"
    assert worker_pids(base.process.pid) == before  # no job was started
    assert f"huge_{framework}" not in model_names(base.repo)


# -- time limits -----------------------------------------------------------------------------


def test_training_past_its_time_limit_is_cancelled(base: Any, serve_repo: Any) -> None:
    server = serve_repo(base.repo, env={**SLOW_ENV, "QUIVER_SERVER__JOB_TIMEOUT_SECONDS": "2"})
    with http(server, 120.0) as client:
        response = client.post("/api/v1/models", json=slow_training("too_slow"))
        error = assert_error(response, 422, "job_timeout")
        assert "server.job_timeout_seconds" in error["message"]
        assert client.get("/api/v1/models/too_slow").status_code == 404
    assert wait_until(lambda: not worker_pids(server.process.pid), 10)  # killed, not idle
    assert leftovers(base.repo) == []


def test_batch_prediction_past_its_time_limit_is_cancelled(
    base: Any, model: str, serve_repo: Any
) -> None:
    server = serve_repo(base.repo, env={"QUIVER_SERVER__JOB_TIMEOUT_SECONDS": "2"})
    body = {
        "model": model,
        "input_source": "big",
        "chunk_rows": 500,  # hundreds of point-in-time joins: far past two seconds
        "output_path": "outputs/cancelled.parquet",
    }
    with http(server, 120.0) as client:
        response = client.post("/api/v1/predictions/batch", json=body)
        assert_error(response, 422, "job_timeout")
        jobs = client.get("/api/v1/predictions/jobs", params={"model": model}).json()["jobs"]
    latest = jobs[0]
    assert latest["status"] == "cancelled", latest
    assert "server.job_timeout_seconds" in latest["error"]
    assert not (base.repo / "outputs" / "cancelled.parquet").exists()
    assert leftovers(base.repo) == []


def test_a_job_whose_client_went_away_is_cancelled(base: Any, serve_repo: Any) -> None:
    """Once the client gives up, the server stops spending CPU on the job."""
    server = serve_repo(base.repo, env=SLOW_ENV)
    pid = server.process.pid
    with http(server, 3.0) as client, pytest.raises(httpx.TimeoutException):
        client.post("/api/v1/models", json=slow_training("abandoned"))
    assert wait_until(lambda: not worker_pids(pid), 20)
    spent = cpu_seconds(pid)
    time.sleep(3.0)
    assert cpu_seconds(pid) - spent < 1.0  # idle: no training thread in the server
    assert "abandoned" not in model_names(base.repo)
    assert leftovers(base.repo) == []


def test_sigterm_stops_the_server_with_a_training_job_running(base: Any, serve_repo: Any) -> None:
    server = serve_repo(base.repo, env=SLOW_ENV)
    pid = server.process.pid
    answers: list[httpx.Response | Exception] = []

    def train() -> None:
        try:
            with http(server, 120.0) as client:
                answers.append(client.post("/api/v1/models", json=slow_training("stopped")))
        except httpx.HTTPError as exc:
            answers.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    assert wait_until(lambda: bool(worker_pids(pid)), 60), "the job never started"
    time.sleep(3.0)  # the worker is importing or training: either way the job is running
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_BOUND)
    except Exception:
        pytest.fail(f"quiver serve did not stop within {STOP_BOUND:g} s of SIGTERM")
    thread.join(30)
    assert answers and isinstance(answers[0], httpx.Response), answers
    assert_error(answers[0], 503, "job_cancelled")
    assert wait_until(lambda: not worker_pids(pid), 10)
    assert leftovers(base.repo) == []
    assert "stopped" not in model_names(base.repo)
