"""Smoke tests for the real backend servers started by the fixtures in tests/conftest.py."""

from __future__ import annotations

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import _servers
from _servers import PostgresServer, RedisServer


def test_redis_set_get(redis_url: str, redis_server: RedisServer) -> None:
    assert redis_url == f"redis://127.0.0.1:{redis_server.port}/0"
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        assert client.dbsize() == 0  # flushed before each test
        client.set("quiver:smoke", b"value")
        assert client.get("quiver:smoke") == b"value"
    finally:
        client.close()


def test_redis_is_flushed_between_tests(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.set("quiver:leftover", b"x")  # the next test using redis_url must not see it
    finally:
        client.close()


def test_postgres_select_one(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


def test_postgres_table_roundtrip(postgres_url: str) -> None:
    metadata = sa.MetaData()
    items = sa.Table(
        "items",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
    )
    engine = sa.create_engine(postgres_url)
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(items), [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}])
        with engine.connect() as conn:
            rows = conn.execute(sa.select(items.c.id, items.c.name).order_by(items.c.id)).all()
        assert [tuple(row) for row in rows] == [(1, "a"), (2, "b")]
    finally:
        engine.dispose()


def test_postgres_databases_are_isolated(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    db_name = make_url(postgres_url).database
    assert db_name not in (None, PostgresServer.DEFAULT_DATABASE)
    engine = sa.create_engine(postgres_url)
    default_engine = sa.create_engine(postgres_server.url)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == db_name
            conn.execute(sa.text("CREATE TABLE only_here (x int)"))
        with default_engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "quiver_test"
            found = conn.execute(sa.text("SELECT to_regclass('only_here')")).scalar_one()
            assert found is None
    finally:
        engine.dispose()
        default_engine.dispose()


def test_missing_redis_binary_fails_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_servers.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"apt-get install redis-server"):
        _servers.start_redis()


def test_missing_postgres_binaries_fail_with_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_servers, "PG_BIN_GLOB", "/nonexistent/postgresql/*/bin")
    monkeypatch.setattr(_servers.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"apt-get install postgresql"):
        _servers.start_postgres()
