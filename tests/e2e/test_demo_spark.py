"""The demo on the Spark offline engine, by environment alone, gives DuckDB's output.

``QUIVER_OFFLINE_ENGINE__TYPE=spark`` (a local Spark, ``local[2]``) against the default DuckDB,
on the same demo repo and files, through the ``quiver`` CLI as a user runs it:

- ``quiver training-set``: the same Parquet file, value by value (the demo's service has plain
  views, a SQL transformation, windowed aggregations and on-demand features);
- ``quiver materialize``: the same online store, table by table (plain views exactly; the
  tiles of windowed aggregations as the values ``quiver get-online`` reads from them);
- ``quiver predict batch``: the same predictions.

Each Spark command starts its own JVM, so this test takes minutes.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from _cli import cli_env, quiver_command

pytestmark = pytest.mark.slow
CUSTOMERS = 40
SERVICE = "churn_prediction_v1"
END = "2030-01-01T00:00:00+00:00"  # after every demo event: both engines see all of them
SPARK = {
    "QUIVER_OFFLINE_ENGINE__TYPE": "spark",
    "QUIVER_OFFLINE_ENGINE__MASTER": "local[2]",
    "QUIVER_OFFLINE_ENGINE__CONF": json.dumps(
        {"spark.sql.shuffle.partitions": "4", "spark.ui.enabled": "false"}
    ),
}


def run(repo: Path, engine: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``quiver ARGS`` with the given offline engine and its own online store file."""
    extra = SPARK if engine == "spark" else {}
    env = cli_env(QUIVER_ONLINE_STORE__PATH=f"data/online_{engine}.db", **extra)
    proc = subprocess.run(
        [*quiver_command(), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,  # a JVM start and Spark jobs on a busy 2-core machine
        check=False,
    )
    assert proc.returncode == 0, f"quiver {' '.join(args)} ({engine}):\n{proc.stderr}"
    return proc


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_same_parquet(a: Path, b: Path) -> None:
    ta, tb = pq.read_table(a), pq.read_table(b)
    assert ta.schema == tb.schema
    assert ta.num_rows == tb.num_rows > 0
    for name in ta.column_names:
        pairs = zip(ta.column(name).to_pylist(), tb.column(name).to_pylist(), strict=True)
        for i, (x, y) in enumerate(pairs):
            assert same(x, y), f"{a.name} column {name} row {i}: duckdb {x!r}, spark {y!r}"


def plain_tables(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The online store's tables of plain views (``ts``/``cts`` columns), every row, sorted."""
    conn = sqlite3.connect(path)
    try:
        out = {}
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")')]
            if "ts" in cols and "cts" in cols:
                out[name] = sorted(conn.execute(f'SELECT * FROM "{name}"').fetchall())
        return out
    finally:
        conn.close()


def test_demo_training_materialize_predict_on_spark_equal_duckdb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "demo"
    subprocess.run(
        [*quiver_command(), "init", str(repo), "--demo", "--customers", str(CUSTOMERS)],
        env=cli_env(),
        capture_output=True,
        check=True,
        timeout=300,
    )
    from quiver.config import load_config

    for name, value in SPARK.items():  # the variables do choose Spark (not a silent no-op)
        monkeypatch.setenv(name, value)
    engine = load_config(repo).offline_engine
    assert engine.type == "spark" and engine.master == "local[2]", engine
    assert engine.conf["spark.sql.shuffle.partitions"] == "4"
    for name in SPARK:
        monkeypatch.delenv(name)
    run(repo, "duckdb", "apply")
    run(repo, "duckdb", "train", "churn_model.yaml")
    run(repo, "duckdb", "models", "promote", "churn_model", "1", "production")

    for engine in ("duckdb", "spark"):
        run(
            repo,
            engine,
            "training-set",
            "--entities",
            "churn_labels",
            "--service",
            SERVICE,
            "--out",
            f"data/training_{engine}.parquet",
        )
        run(repo, engine, "materialize", "2020-01-01", END)
        run(
            repo,
            engine,
            "predict",
            "batch",
            "churn_model",
            "--input",
            "churn_labels",
            "--output",
            f"data/predictions_{engine}.parquet",
        )

    data = repo / "data"
    assert_same_parquet(data / "training_duckdb.parquet", data / "training_spark.parquet")
    assert_same_parquet(data / "predictions_duckdb.parquet", data / "predictions_spark.parquet")

    plain = {e: plain_tables(data / f"online_{e}.db") for e in ("duckdb", "spark")}
    assert plain["duckdb"] and all(plain["duckdb"].values())
    assert plain["spark"] == plain["duckdb"]

    # Every online feature of the service, plain and aggregated (read from the tiles), for
    # every customer: the same values and statuses. Both reads in the same hour (the tile size).
    entities = [a for k in [*range(1, CUSTOMERS + 1), 999_999] for a in ("-e", f"customer_id={k}")]
    for _ in range(3):
        hour = time.gmtime().tm_hour
        reads = {
            e: json.loads(
                run(repo, e, "get-online", "--service", SERVICE, *entities, "--json").stdout
            )
            for e in ("duckdb", "spark")
        }
        if time.gmtime().tm_hour == hour:
            break
    assert same(reads["spark"], reads["duckdb"]), (reads["spark"], reads["duckdb"])
    assert "present" in json.dumps(reads["duckdb"]).lower()
