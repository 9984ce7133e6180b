"""``quiver training-set`` run as a subprocess on the demo repo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest


def quiver(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quiver", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "repo"
    done = quiver("init", str(root), "--demo", "--customers", "60", cwd=root.parent)
    assert done.returncode == 0, done.stderr
    done = quiver("apply", cwd=root)
    assert done.returncode == 0, done.stderr
    return root


def test_training_set_from_label_source_and_service(demo: Path) -> None:
    done = quiver(
        "training-set",
        "--entities",
        "churn_labels",
        "--service",
        "churn_prediction_v1",
        "--out",
        "out/train.parquet",
        cwd=demo,
    )
    assert done.returncode == 0, done.stderr
    table = pq.read_table(demo / "out" / "train.parquet")
    labels = pq.read_table(demo / "data" / "churn_labels.parquet")
    assert table.num_rows == labels.num_rows
    assert table.column_names[: labels.num_columns] == labels.column_names
    assert "tenure_months" in table.column_names and "contract_type" in table.column_names
    line = done.stdout.strip()
    assert "\n" not in line
    assert f"Wrote {labels.num_rows:,} rows x {table.num_columns} columns" in line
    assert "tenure_months 0.0%" in line


def test_training_set_from_file_with_refs_and_json(demo: Path, tmp_path: Path) -> None:
    done = quiver(
        "training-set",
        "-e",
        str(demo / "data" / "churn_labels.parquet"),
        "-o",
        str(tmp_path / "t.parquet"),
        "--features",
        "customer_behavior:orders",
        "customer_demographics:age,customer_contract:contract_type",
        "--full-feature-names",
        "--json",
        cwd=demo,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["columns"][-3:] == [
        "customer_behavior__orders",
        "customer_demographics__age",
        "customer_contract__contract_type",
    ]
    assert set(summary["null_rates"]) == set(summary["columns"][-3:])
    assert pq.read_metadata(tmp_path / "t.parquet").num_rows == summary["rows"]


def test_training_set_errors_are_one_line(demo: Path, tmp_path: Path) -> None:
    done = quiver(
        "training-set",
        "-e",
        "churn_labels",
        "-o",
        str(tmp_path / "x.parquet"),
        "-f",
        "customer_behavior:order",
        cwd=demo,
    )
    assert done.returncode == 1
    assert "did you mean 'orders'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.parquet").exists()
    done = quiver("training-set", "-e", "churn_labels", "-o", str(tmp_path / "x.parquet"), cwd=demo)
    assert done.returncode == 1 and "--service" in done.stderr
