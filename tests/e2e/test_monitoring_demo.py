"""Monitoring on the demo: drift of the churn model, lineage, validate, docs and stats, through
the CLI (subprocesses) and the REST API (``quiver serve`` in a subprocess)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from _cli import quiver
from _http import assert_error
from quiver.store import FeatureStore

pytestmark = pytest.mark.slow  # a demo repo, a trained model and a server: ~40 s of set-up

SPEC: dict[str, Any] = {
    "name": "churn_model",
    "framework": "lightgbm",
    "model_type": "classification",
    "training_data": {
        "entity_df_source": "churn_labels",
        "label_column": "churned",
        "event_timestamp_column": "event_timestamp",
    },
    "features": "churn_prediction_v1",
    "hyperparameters": {"params": {"n_estimators": 20, "n_jobs": 1}},
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The demo, its model trained, materialized once as is and once with monthly charges
    shifted (doubled plus 40)."""
    from e2e.conftest import make_demo_repo

    repo = make_demo_repo(tmp_path_factory.mktemp("monitoring") / "repo")
    with FeatureStore(repo_path=repo) as store:
        version = store.train(SPEC)
        unshifted = datetime.now(UTC)
        store.materialize("2020-01-01", "now")
        path = repo / "data" / "customer_behavior.parquet"
        table = pq.read_table(path)
        charges = pc.add(pc.multiply(table["monthly_charges"], 2.0), 40.0)
        pq.write_table(
            table.set_column(
                table.schema.get_field_index("monthly_charges"), "monthly_charges", charges
            ),
            path,
        )
        shifted = datetime.now(UTC)
        store.materialize("2020-01-01", "now")
    return {"repo": repo, "version": version, "unshifted": unshifted, "shifted": shifted}


def _drift(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["feature"]: f for f in report["features"]}


def test_drift_flags_the_shifted_feature_and_not_the_unshifted(demo: dict[str, Any]) -> None:
    repo = demo["repo"]
    since = demo["unshifted"].isoformat()
    # both runs since the unshifted time: the unshifted control run alone comes first
    proc = quiver("monitor", "drift", "churn_model", "--since", since, "--json", cwd=repo)
    both = _drift(json.loads(proc.stdout))
    assert both["customer_demographics:age"]["status"] == "ok"
    proc = quiver(
        "monitor",
        "drift",
        "churn_model",
        "--since",
        demo["shifted"].isoformat(),
        "--json",
        cwd=repo,
    )
    report = json.loads(proc.stdout)
    shifted = _drift(report)
    charges = shifted["customer_behavior:monthly_charges"]
    assert charges["drifted"] and charges["status"] == "drift" and charges["test"] == "ks"
    assert charges["p_value"] < 0.01 and charges["current_mean"] > charges["training_mean"] + 30
    assert report["most_drifted"] == "customer_behavior:monthly_charges"
    assert "customer_behavior:monthly_charges" in report["drifted"]
    for unshifted in ("customer_demographics:age", "customer_demographics:region"):
        assert shifted[unshifted]["status"] == "ok" and not shifted[unshifted]["drifted"]
    assert shifted["customer_contract:contract_type"]["test"] == "chi2"
    assert report["runs_compared"] == 3  # behavior, demographics, contract (tiles have none)

    # the control: only the unshifted run (before the shift) against training
    with FeatureStore(repo_path=repo) as store:
        from quiver.monitoring.statistics import list_view_statistics

        control = [
            s
            for s in list_view_statistics(store.registry, "customer_behavior")
            if demo["unshifted"] <= s.computed_at < demo["shifted"]
        ]
    assert len(control) == 1
    sample = control[0].features["monthly_charges"]["sample"]
    assert 20 < sum(sample) / len(sample) < 120  # the demo's charges, not shifted

    table = quiver(
        "monitor", "drift", "churn_model", "--since", demo["shifted"].isoformat(), cwd=repo
    )
    assert "Moved most: customer_behavior:monthly_charges" in table.stdout


def test_lineage_of_orders_lists_the_model_and_the_service(demo: dict[str, Any]) -> None:
    proc = quiver("lineage", "customer_behavior:orders", cwd=demo["repo"])
    assert "model churn_model:1 (none): orders" in proc.stdout
    assert "feature service churn_prediction_v1: orders" in proc.stdout
    found = json.loads(quiver("lineage", "customer_behavior", "--json", cwd=demo["repo"]).stdout)
    assert found["model_versions"][0]["model_id"] == "churn_model:1"
    assert "orders" in found["model_versions"][0]["features"]
    bad = quiver("lineage", "customer_behavior:nope", cwd=demo["repo"], ok=False)
    assert bad.returncode != 0 and "has no feature 'nope'" in bad.stderr


def test_validate_passes_on_the_demo(demo: dict[str, Any]) -> None:
    proc = quiver("validate", cwd=demo["repo"])
    assert proc.stdout.startswith("OK: ") and "checks passed" in proc.stdout


def test_validate_fails_with_one_line_per_failure(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    quiver("init", str(repo), "--demo", "--customers", "20", cwd=tmp_path)
    quiver("apply", cwd=repo)
    (repo / "data" / "customer_contract.parquet").unlink()
    proc = quiver("validate", cwd=repo, ok=False)
    assert proc.returncode == 1
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("feature view 'customer_contract': ")
    assert "fix: write the data of source 'customer_contract_source'" in lines[0]
    assert lines[-1].startswith("1 of ")


def test_docs_writes_the_catalogue(demo: dict[str, Any]) -> None:
    out = demo["repo"] / "docs" / "FEATURES.md"
    quiver("docs", "--output-file", str(out), cwd=demo["repo"])
    text = out.read_text()
    assert text.startswith("# Feature catalogue: project ")
    assert "## Entities" in text and "| `customer` | customer_id | int64 |" in text
    assert "### `customer_behavior`" in text and "- owner: growth@example.com" in text
    row = next(line for line in text.splitlines() if line.startswith("| `orders` |"))
    assert "| int64 | Orders placed in the last 30 days. |" in row
    assert "service `churn_prediction_v1`" in row and "model `churn_model:1`" in row
    assert "null 0.0%" in row and "mean " in row
    assert "- watermark: " in text and "### `customer_derived_features`" in text


def test_stats_command(demo: dict[str, Any]) -> None:
    proc = quiver("stats", "customer_demographics", "--days", "7", cwd=demo["repo"])
    assert "customer_demographics" in proc.stdout and "region" in proc.stdout
    data = json.loads(quiver("stats", "customer_behavior", "--json", cwd=demo["repo"]).stdout)
    assert data["latest"]["features"]["orders"]["dtype"] == "int64"
    assert len(data["runs"]) >= 3


@pytest.fixture(scope="module")
def api(demo: dict[str, Any]) -> Iterator[httpx.Client]:
    from e2e.conftest import start_server

    server = start_server(demo["repo"])
    try:
        with server.client() as client:
            yield client
    finally:
        server.stop()


def test_rest_statistics_and_freshness(api: httpx.Client) -> None:
    body = api.get("/monitoring/statistics", params={"days": 7}).json()
    behavior = body["views"]["customer_behavior"]
    assert behavior["latest"]["features"]["monthly_charges"]["quantiles"]["p50"] > 0
    assert "sample" not in behavior["latest"]["features"]["monthly_charges"]
    one = api.get("/monitoring/statistics", params={"view": "customer_contract", "limit": 1})
    assert list(one.json()["views"]) == ["customer_contract"]
    assert len(one.json()["views"]["customer_contract"]["runs"]) == 1
    assert_error(api.get("/monitoring/statistics", params={"days": -1}), 422)
    assert_error(api.get("/monitoring/statistics", params={"days": "week"}), 422)
    assert_error(api.get("/monitoring/statistics", params={"view": "nope"}), 404)
    fresh = api.get("/monitoring/data-freshness").json()
    by_view = {v["view"]: v for v in fresh["views"]}
    assert by_view["customer_behavior"]["lag_seconds"] == 0
    assert by_view["customer_behavior"]["age_seconds"] >= 0
    assert_error(api.get("/monitoring/data-freshness", params={"probe_source": "1"}), 422)


def test_rest_drift_lineage_validate_and_model_filter(
    api: httpx.Client, demo: dict[str, Any]
) -> None:
    since = demo["shifted"].isoformat()
    drift = api.get("/api/v1/models/churn_model/drift", params={"since": since}).json()
    assert drift["most_drifted"] == "customer_behavior:monthly_charges"
    assert drift["model_id"] == "churn_model:1"
    assert_error(api.get("/api/v1/models/nope/drift"), 404)
    assert_error(api.get("/api/v1/models/churn_model/drift", params={"since": "12"}), 422)

    lineage = api.get("/api/v1/features/customer_behavior/orders/lineage").json()
    assert [m["model_id"] for m in lineage["model_versions"]] == ["churn_model:1"]
    assert [s["name"] for s in lineage["feature_services"]] == ["churn_prediction_v1"]
    assert_error(api.get("/api/v1/features/customer_behavior/nope/lineage"), 404)
    assert_error(api.get("/api/v1/features/nope/orders/lineage"), 404)
    assert_error(api.get("/api/v1/features/bad-name/orders/lineage"), 422)

    assert api.get("/api/v1/validate").json() == {"ok": True, "checks": 11, "failures": []}

    models = api.get("/api/v1/models", params={"feature_view": "customer_behavior"}).json()
    assert [m["name"] for m in models["models"]] == ["churn_model"]
    none = api.get("/api/v1/models", params={"feature_view": "nope"}).json()
    assert none == {"models": [], "count": 0}


def test_drift_scores_in_the_metrics(demo: dict[str, Any]) -> None:
    """Each materialization checked the model again; the metrics serve the stored scores."""
    from prometheus_client.parser import text_string_to_metric_families

    from quiver.monitoring.metrics import exposition

    with FeatureStore(repo_path=demo["repo"]) as store:
        body, _ = exposition(store, "quiver")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    psi = {s.labels["feature"]: s.value for s in families["quiver_feature_drift_psi"].samples}
    flagged = {s.labels["feature"]: s.value for s in families["quiver_feature_drifted"].samples}
    assert {s.labels["model"] for s in families["quiver_feature_drift_psi"].samples} == {
        "churn_model"
    }
    charges = "customer_behavior:monthly_charges"
    assert psi[charges] == max(psi.values())  # the shifted feature moved most
    assert flagged[charges] == 1.0
    assert flagged["customer_demographics:age"] == 0.0
    assert "quiver_jobs" in families
