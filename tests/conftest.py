"""Shared pytest fixtures."""

from __future__ import annotations

import re
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `tests/_servers.py` importable however pytest imports this conftest (rootdir or package).
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from _servers import (  # noqa: E402
    MotoServer,
    PostgresServer,
    RedisServer,
    start_moto,
    start_postgres,
    start_redis,
)

# --- Backend servers (real redis-server / PostgreSQL, see tests/_servers.py) ------------------
# Session-scoped and lazy: a server starts only when a test first asks for it, and is stopped at
# the end of the session. If the binary is missing, tests using it fail with install advice.


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port (no persistence)."""
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session server, flushed before the test."""
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's AWS server (S3, DynamoDB) on a free loopback port, in its own process."""
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dynamodb_settings(moto_server: MotoServer) -> dict[str, object]:
    """``online_store`` settings of a DynamoDB store on the moto server, with a table prefix
    of its own (tables of other tests stay out of sight)."""
    return {
        "type": "dynamodb",
        "endpoint_url": moto_server.endpoint,
        "region": MotoServer.REGION,
        "access_key_id": "test",
        "secret_access_key": "test",
        "table_prefix": f"t{uuid.uuid4().hex[:8]}.",
    }


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on a free loopback port (trust auth, db ``quiver_test``)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://...``) of a fresh, empty database for this test."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    yield url
    try:
        postgres_server.drop_database(name)
    except Exception as exc:  # cleanup only: the whole cluster is removed at session end
        warnings.warn(f"could not drop test database {name}: {exc}", stacklevel=1)


# --- A local Spark session (one JVM per test process), for the Spark offline engine -----------


@pytest.fixture(scope="session")
def spark_session() -> Iterator[object]:
    """A local Spark session (``local[2]``, 4 shuffle partitions, UTC), one per test process;
    engines built on it (``_engines.make_offline_engine``) do not stop it."""
    from _engines import start_spark

    session = start_spark()
    try:
        yield session
    finally:
        session.stop()
