"""Offline engines for the engine-contract tests: DuckDB, and Spark on a local session."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

OFFLINE_ENGINES = ("duckdb", "spark")
"""The offline engines the engine-contract tests run against (a fixture's ``params``)."""


def start_spark() -> Any:
    """A local Spark session sized for tests: ``local[2]``, 4 shuffle partitions, no UI."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from quiver.offline._spark_sources import SESSION_CONF

    builder = (
        SparkSession.builder.master("local[2]")
        .appName("quiver-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
    )
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def make_offline_engine(kind: str, config: Any, request: pytest.FixtureRequest) -> Any:
    """An offline engine of ``kind`` (``duckdb`` / ``spark``) for ``config``; Spark runs on the
    ``spark_session`` fixture's session."""
    if kind == "spark":
        from quiver.offline.spark import SparkOfflineEngine

        return SparkOfflineEngine(config, session=request.getfixturevalue("spark_session"))
    from quiver.offline import create_offline_engine

    return create_offline_engine(config)


def examples(kind: str, duckdb: int) -> int:
    """Hypothesis examples for an engine: Spark runs a few (each example is several jobs)."""
    return duckdb if kind == "duckdb" else max(3, duckdb // 20)
