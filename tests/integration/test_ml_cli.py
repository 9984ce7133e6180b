"""The model CLI: train with progress, models list/describe/promote/jobs, predict batch/online."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from quiver.cli import app
from quiver.demo import FEATURES_TEMPLATE, generate_demo_data
from quiver.store import FeatureStore

SPEC = {
    "name": "churn_cli",
    "framework": "xgboost",
    "model_type": "classification",
    "training_data": {"entity_df_source": "churn_labels", "label_column": "churned"},
    "features": "churn_prediction_v1",
    "hyperparameters": {"params": {"n_estimators": 20, "n_jobs": 1}},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("ml_cli")
    generate_demo_data(root / "data", customers=300, seed=5)
    (root / "features.py").write_text(FEATURES_TEMPLATE)
    (root / "quiver.yaml").write_text("project: ml_cli\ndefinitions: [features.py]\n")
    with FeatureStore(repo_path=root) as store:
        store.apply(store.load_definitions(), prune=True)
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    yield root


def run(repo: Path, *args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--repo", str(repo)])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_train_list_describe_promote(repo: Path) -> None:
    out = run(repo, "train", str(repo / "spec.yaml"))
    assert "Trained churn_cli:1" in out and "roc_auc" in out
    listed = json.loads(run(repo, "models", "list", "--json"))
    assert [m["name"] for m in listed] == ["churn_cli"]
    described = json.loads(run(repo, "models", "describe", "churn_cli:1", "--json"))
    assert described["lineage"]["feature_service"]["name"] == "churn_prediction_v1"
    assert "Feature views" in run(repo, "models", "describe", "churn_cli")
    assert "production" in run(repo, "models", "promote", "churn_cli", "1", "production")
    assert (
        json.loads(run(repo, "models", "describe", "churn_cli", "--json"))["stage"] == "production"
    )


def test_predict_batch_and_online(repo: Path) -> None:
    if "churn_cli" not in run(repo, "models", "list"):
        run(repo, "train", str(repo / "spec.yaml"))
    out_file = repo / "out" / "scores.parquet"
    job = json.loads(
        run(
            repo,
            "predict",
            "batch",
            "churn_cli",
            "--input",
            "churn_labels",
            "--output",
            str(out_file),
            "--prediction-column",
            "p",
            "--json",
        )
    )
    labels = pq.read_table(repo / "data" / "churn_labels.parquet")
    assert job["rows"] == labels.num_rows == pq.read_table(out_file).num_rows
    assert "p_class" in pq.read_table(out_file).column_names
    text = run(repo, "predict", "batch", "churn_cli", "-i", "churn_labels", "-o", str(out_file))
    assert "Wrote" in text
    jobs = json.loads(run(repo, "models", "jobs", "churn_cli", "--json"))
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"completed"}
    answer = json.loads(
        run(
            repo,
            "predict",
            "online",
            "churn_cli",
            "--features",
            json.dumps({"tenure_months": 2, "contract_type": "month-to-month"}),
            "--use-defaults",
            "--json",
        )
    )
    assert 0.0 <= answer["predictions"][0]["prediction"] <= 1.0
    table = run(repo, "predict", "online", "churn_cli", "-e", "customer_id=1", "--use-defaults")
    assert "customer_id=1" in table


def test_errors_are_one_line(repo: Path) -> None:
    bad = repo / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "hyperparameters": {"params": {"max_dept": 2}}}))
    result = subprocess.run(
        [sys.executable, "-c", "from quiver.cli import main; main()", "train", str(bad)],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: unknown hyperparameter 'max_dept'"), result.stderr
    assert "Traceback" not in result.stderr


def test_predict_batch_missing_features_options(repo: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if "churn_cli" not in run(repo, "models", "list"):
        run(repo, "train", str(repo / "spec.yaml"))
    labels = pq.read_table(repo / "data" / "churn_labels.parquet")
    when = labels["event_timestamp"][0].as_py().isoformat()
    rows = pa.table({"customer_id": [1, 999_999], "event_timestamp": [when, when]})
    pacsv.write_csv(rows, repo / "missing.csv")
    out_file = repo / "out" / "missing.parquet"
    args = ["predict", "batch", "churn_cli", "-i", str(repo / "missing.csv"), "-o", str(out_file)]
    flagged = run(repo, *args)
    assert "1 rows had missing features (flagged in features_missing)" in flagged
    assert pq.read_table(out_file)["features_missing"].to_pylist() == [False, True]
    refused = CliRunner().invoke(app, [*args, "--missing", "refuse", "--repo", str(repo)])
    assert refused.exit_code == 1  # main() prints it as one line (test_errors_are_one_line)
    assert "customer_id=999999" in str(refused.exception)
    job = json.loads(run(repo, *args, "--missing", "defaults", "--json"))
    assert (job["status"], job["rows_missing_features"]) == ("completed", 1)
    bad = CliRunner().invoke(app, [*args, "--missing", "never", "--repo", str(repo)])
    assert bad.exit_code == 2
