"""E2E fixtures: a demo repo and ``quiver serve`` running on a free loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

DEMO_CUSTOMERS = 300
MAX_INLINE_ROWS = 1000
MAX_BODY_BYTES = 256 * 1024
STARTUP_TIMEOUT = 60.0


def quiver_command() -> list[str]:
    """How to run the ``quiver`` CLI of this interpreter."""
    exe = Path(sys.executable).with_name("quiver")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from quiver.cli import main; main()"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``quiver ARGS`` and fail with its output if it fails."""
    result = subprocess.run(
        [*quiver_command(), *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )
    if result.returncode != 0:
        raise AssertionError(
            f"quiver {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def make_demo_repo(directory: Path) -> Path:
    """``quiver init --demo``, ``quiver apply``, and a materialization of the whole history."""
    run_cli("init", str(directory), "--demo", "--customers", str(DEMO_CUSTOMERS))
    run_cli("apply", "--repo", str(directory))
    from quiver.store import FeatureStore

    with FeatureStore(repo_path=directory) as store:
        store.materialize(datetime(2020, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC))
    return directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running ``quiver serve``."""

    url: str
    repo: Path
    process: subprocess.Popen[bytes]
    log: Path
    max_inline_rows: int = MAX_INLINE_ROWS
    max_body_bytes: int = MAX_BODY_BYTES

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60.0, **kwargs)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def start_server(repo: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    """Start ``quiver serve`` for ``repo`` and wait until ``/health`` answers."""
    port = free_port()
    log = repo / f"server-{port}.log"
    environ = {
        **os.environ,
        "QUIVER_SERVER__MAX_INLINE_ROWS": str(MAX_INLINE_ROWS),
        "QUIVER_SERVER__MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *quiver_command(),
                "serve",
                "--repo",
                str(repo),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    server = Server(url=f"http://127.0.0.1:{port}", repo=repo, process=process, log=log)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"quiver serve exited ({process.returncode}):\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"quiver serve did not answer in {STARTUP_TIMEOUT}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A materialized demo repo shared by the server tests (read it, do not change it)."""
    return make_demo_repo(tmp_path_factory.mktemp("server") / "repo")


@pytest.fixture(scope="session")
def server(demo_repo: Path) -> Iterator[Server]:
    """``quiver serve`` over the demo repo, for the whole session."""
    srv = start_server(demo_repo)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    """An HTTP client of the session server."""
    with server.client() as c:
        yield c


@pytest.fixture(scope="session")
def new_demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Server]]:
    """Start another server over a fresh demo repo (for tests that may change it freely)."""
    started: list[Server] = []

    def start() -> Server:
        srv = start_server(make_demo_repo(tmp_path_factory.mktemp("server") / "repo"))
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture(scope="session")
def session_serve_repo() -> Iterator[Callable[..., Server]]:
    """Like ``serve_repo``, but the servers run until the session ends (for module fixtures)."""
    started: list[Server] = []

    def start(repo: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
        srv = start_server(repo, *extra, env=env)
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


@pytest.fixture
def serve_repo() -> Iterator[Callable[..., Server]]:
    """Start ``quiver serve`` with extra options over a given repo; stopped after the test."""
    started: list[Server] = []

    def start(repo: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
        srv = start_server(repo, *extra, env=env)
        started.append(srv)
        return srv

    try:
        yield start
    finally:
        for srv in started:
            srv.stop()


def poll_job(
    client: httpx.Client,
    job_id: str,
    until: Callable[[dict[str, Any]], bool],
    bound: float = 120.0,
    pause: float = 0.05,
) -> Any:
    """The job's record (``GET /api/v1/jobs/{id}``) once ``until`` holds, or after ``bound``
    seconds (the caller's assertion then shows the record)."""
    deadline = time.monotonic() + bound
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if until(job) or time.monotonic() > deadline:
            return job
        time.sleep(pause)


def create_key(repo: Path, name: str, role: str, *extra: str) -> str:
    """``quiver keys create NAME --role ROLE`` in ``repo``: the key it prints (once)."""
    import json

    result = run_cli("keys", "create", name, "--role", role, "--json", "--repo", str(repo), *extra)
    return str(json.loads(result.stdout)["key"])


@dataclass
class AuthServer:
    """A ``quiver serve`` with ``auth: api_key`` and one key per built-in role.

    Attributes:
        server: The running server.
        keys: The key of each role; each key is named after its role (``reader``, ...).
    """

    server: Server
    keys: dict[str, str]

    @property
    def repo(self) -> Path:
        return self.server.repo

    def create_key(self, name: str, role: str, *extra: str) -> str:
        """A new key, made by ``quiver keys create`` while the server runs."""
        return create_key(self.repo, name, role, *extra)

    def client(self, role: str | None = None, key: str | None = None) -> httpx.Client:
        """A client sending the key of ``role`` (or ``key``) as ``Authorization: Bearer``."""
        key = key or (self.keys[role] if role else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return self.server.client(headers=headers)


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    """``quiver serve`` over a fresh demo repo with ``QUIVER_AUTH__MODE=api_key`` and keys
    ``reader``, ``writer``, ``ml`` and ``admin`` (tests may change the repo)."""
    repo = make_demo_repo(tmp_path_factory.mktemp("auth") / "repo")
    from quiver.security.permissions import ROLES

    keys = {role: create_key(repo, role, role) for role in ROLES}
    srv = start_server(repo, env={"QUIVER_AUTH__MODE": "api_key"})
    try:
        yield AuthServer(srv, keys)
    finally:
        srv.stop()


@dataclass
class S3:
    """Moto's S3 server: its endpoint, a bucket, and the server settings that use it."""

    endpoint: str
    bucket: str = "quiver-e2e"

    def client(self) -> Any:
        """A boto3 S3 client of the endpoint."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )

    @property
    def env(self) -> dict[str, str]:
        """The ``QUIVER_S3__*`` settings of a server that uses this endpoint (and lets REST
        callers use the bucket: ``server.s3_buckets``)."""
        return {
            "QUIVER_S3__ENDPOINT_URL": self.endpoint,
            "QUIVER_S3__REGION": "us-east-1",
            "QUIVER_S3__ACCESS_KEY_ID": "test",
            "QUIVER_S3__SECRET_ACCESS_KEY": "test",
            "QUIVER_SERVER__S3_BUCKETS": json.dumps([self.bucket]),
        }


@pytest.fixture(scope="session")
def s3() -> Iterator[S3]:
    """Moto's S3 server (real HTTP, the S3 protocol) on a free loopback port, with a bucket."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = S3(endpoint=f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    "moto's S3 server did not start; pip install 'moto[server]'"
                ) from None
            time.sleep(0.1)
    try:
        server.client().create_bucket(Bucket=server.bucket)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=15)
