"""``offline_engine`` settings: DuckDB or Spark, from quiver.yaml or ``QUIVER_*`` variables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from quiver.config import OfflineEngineConfig, SparkOfflineEngineConfig, load_config
from quiver.errors import ConfigError, MissingExtraError
from quiver.offline import ENGINES, create_offline_engine


def test_spark_settings_from_yaml(tmp_path: Path) -> None:
    (tmp_path / "quiver.yaml").write_text(
        "offline_engine:\n  type: spark\n  master: local[2]\n"
        "  conf: {spark.sql.shuffle.partitions: '4'}\n"
    )
    cfg = load_config(tmp_path)
    assert isinstance(cfg.offline_engine, SparkOfflineEngineConfig)
    assert cfg.offline_engine.master == "local[2]"
    assert cfg.offline_engine.conf == {"spark.sql.shuffle.partitions": "4"}
    assert cfg.offline_engine.remote is None
    assert "spark" in ENGINES


def test_default_and_untyped_section_are_duckdb(tmp_path: Path) -> None:
    assert isinstance(load_config(tmp_path).offline_engine, OfflineEngineConfig)
    (tmp_path / "quiver.yaml").write_text("offline_engine:\n  threads: 2\n")
    cfg = load_config(tmp_path)
    assert isinstance(cfg.offline_engine, OfflineEngineConfig)
    assert cfg.offline_engine.threads == 2


def test_env_switches_to_spark_over_a_duckdb_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "quiver.yaml").write_text("offline_engine:\n  type: duckdb\n  threads: 2\n")
    monkeypatch.setenv("QUIVER_OFFLINE_ENGINE__TYPE", "spark")
    monkeypatch.setenv("QUIVER_OFFLINE_ENGINE__MASTER", "local[1]")
    cfg = load_config(tmp_path)
    assert isinstance(cfg.offline_engine, SparkOfflineEngineConfig)
    assert cfg.offline_engine.master == "local[1]"


def test_bad_spark_settings_are_named(tmp_path: Path) -> None:
    (tmp_path / "quiver.yaml").write_text("offline_engine:\n  type: spark\n  mastr: local\n")
    with pytest.raises(ConfigError, match=r"unknown key 'offline_engine.mastr'.*master"):
        load_config(tmp_path)
    (tmp_path / "quiver.yaml").write_text("offline_engine:\n  type: spark\n  remote: host:15002\n")
    with pytest.raises(ConfigError, match=r"offline_engine.remote"):
        load_config(tmp_path)
    (tmp_path / "quiver.yaml").write_text("offline_engine:\n  type: flink\n")
    with pytest.raises(ConfigError, match=r"offline_engine"):
        load_config(tmp_path)


def test_missing_pyspark_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "quiver.yaml").write_text("offline_engine:\n  type: spark\n")
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(MissingExtraError, match=r"spark"):
        create_offline_engine(load_config(tmp_path))


@pytest.mark.parametrize(
    "settings",
    [
        {"type": "spark", "master": "spark://cluster:7077"},
        {"type": "spark", "remote": "sc://spark.example.com:15002"},
    ],
)
def test_a_remote_cluster_needs_a_shared_staging_dir(tmp_path: Path, settings: dict) -> None:
    with pytest.raises(ConfigError, match=r"offline_engine.staging_dir must be set"):
        create_offline_engine(load_config(tmp_path, offline_engine=settings))
    cfg = load_config(tmp_path, offline_engine={**settings, "staging_dir": "s3a://bucket/x"})
    with pytest.raises(ConfigError, match=r"staging_dir must be a directory path"):
        create_offline_engine(cfg)
