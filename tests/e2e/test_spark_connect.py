"""The Spark engine over Spark Connect (``offline_engine: {type: spark, remote: sc://...}``):
a real Spark Connect server (pyspark's own ``SparkConnectServer``, ``local[2]``) on a free
loopback port, and a client process that knows only its address. Its training set and its
materialized online values equal DuckDB's on the same repo."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from _servers import free_port
from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.config import load_config

T0 = datetime(2024, 5, 1, tzinfo=UTC)

customer = Entity(name="customer", join_keys=["customer_id"])
orders_src = FileSource(
    name="orders_src",
    path="data/orders.parquet",
    timestamp_field="ts",
    created_timestamp_field="created",
)
orders = FeatureView(
    name="orders",
    entities=["customer"],
    source="orders_src",
    ttl=timedelta(hours=6),
    schema=[
        Field(name="amount", dtype="float64"),
        Field(name="note", dtype="string"),
        Field(name="doubled", dtype="float64", transformation="amount * 2"),
    ],
)
# The same rows without a TTL: read online long after their event times.
latest = orders.model_copy(update={"name": "latest", "ttl": None})

CLIENT = """
import sys
import pyarrow.parquet as pq
from quiver import FeatureStore
from quiver.config import load_config

root, remote, out, refs, view = sys.argv[1:6]
config = load_config(root, offline_engine={"type": "spark", "remote": remote})
assert config.offline_engine.remote == remote
with FeatureStore(config=config) as store:
    entity = pq.read_table(f"{root}/entity.parquet")
    pq.write_table(store.get_historical_features(entity, [refs]).to_arrow(), out)
    store.materialize("2024-04-01", "2024-06-01", views=[view])
"""


def duckdb_side(root: Path, refs: str, view: str) -> pa.Table:
    """The training set of ``refs`` on DuckDB, after materializing ``view`` (as the client)."""
    with FeatureStore(config=load_config(root)) as store:
        entity = pq.read_table(root / "entity.parquet")
        expected = store.get_historical_features(entity, [refs]).to_arrow()
        store.materialize("2024-04-01", "2024-06-01", views=[view])
    return expected


def connect_side(root: Path, remote: str, refs: str, view: str) -> pa.Table:
    """The same from a client process that knows only the Spark Connect server's address."""
    out = root / "spark.parquet"
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, str(root), remote, str(out), refs, view],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return pq.read_table(out)


def _pyspark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark Connect server (``local[2]``, UTC) on a free loopback port: its ``sc://`` URL."""
    home = _pyspark_home()
    port = free_port()
    log = tmp_path_factory.mktemp("spark-connect") / "server.log"
    env = dict(os.environ, SPARK_HOME=str(home), SPARK_CONNECT_MODE="0")
    env["PYSPARK_PYTHON"] = sys.executable
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                "bash",
                str(home / "bin" / "spark-submit"),
                "--class",
                "org.apache.spark.sql.connect.service.SparkConnectServer",
                "--name",
                "quiver-connect-test",
                "--master",
                "local[2]",
                "--driver-memory",
                "1g",
                "--conf",
                f"spark.connect.grpc.binding.port={port}",
                "--conf",
                "spark.connect.grpc.binding.address=127.0.0.1",
                "--conf",
                "spark.ui.enabled=false",
                "--conf",
                "spark.sql.shuffle.partitions=4",
                "--conf",
                "spark.sql.session.timeZone=UTC",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240

        while True:
            if proc.poll() is not None:
                pytest.fail(f"the Spark Connect server exited:\n{log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"no Spark Connect server on {port}:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield f"sc://127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _repo(root: Path) -> None:
    (root / "data").mkdir(parents=True)
    n = 48
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([i % 6 for i in range(n)], pa.int64()),
                "ts": pa.array(
                    [T0 + timedelta(hours=(i // 2) % 16) for i in range(n)],
                    pa.timestamp("us", tz="UTC"),
                ),
                "created": pa.array(
                    [T0 + timedelta(minutes=i % 3) for i in range(n)], pa.timestamp("us", tz="UTC")
                ),
                "amount": pa.array([None if i % 7 == 0 else i * 1.25 for i in range(n)]),
                "note": pa.array([f"n{i}" for i in range(n)]),
            }
        ),
        root / "data" / "orders.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "customer_id": pa.array([i % 8 for i in range(30)], pa.int64()),
                "event_timestamp": pa.array(
                    [T0 + timedelta(hours=i % 20 - 1) for i in range(30)],
                    pa.timestamp("us", tz="UTC"),
                ),
            }
        ),
        root / "entity.parquet",
    )
    with FeatureStore(config=load_config(root)) as store:
        store.apply([customer, orders_src, orders, latest])


def _online(root: Path) -> dict[str, list[object]]:
    with FeatureStore(config=load_config(root)) as store:
        rows = [{"customer_id": i} for i in range(8)]
        return store.get_online_features(["latest:*"], rows).to_dict()


def test_spark_connect_matches_duckdb(tmp_path: Path, connect_server: str) -> None:
    duck_root, spark_root = tmp_path / "duck", tmp_path / "spark"
    _repo(duck_root)
    _repo(spark_root)

    expected = duckdb_side(duck_root, "orders:*", "latest")
    got = connect_side(spark_root, connect_server, "orders:*", "latest")
    assert got.schema.equals(expected.schema), (got.schema, expected.schema)
    assert got.equals(expected)
    assert got.column("doubled").null_count < got.num_rows
    online = _online(duck_root)
    assert any(v is not None for v in online["doubled"])
    assert _online(spark_root) == online
