"""The CLI with computed features: apply, training-set and get-online (request fields as
``-e key=value``) give the same values."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from _cli import quiver
from _computed import computed_definitions, write_behavior

FEATURES = computed_definitions(
    """
import pandas as pd
from quiver import Entity, FeatureService, FeatureView, Field, FileSource
from quiver import OnDemandFeatureView, RequestSource, on_demand_feature_view
""",
    "behavior:age",
)


def _run(repo: Path, *args: str) -> str:
    return quiver(*args, cwd=repo).stdout


def test_cli_training_set_and_get_online_agree(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "quiver.yaml").write_text("project: computed\ndefinitions: [features.py]\n")
    (repo / "features.py").write_text(textwrap.dedent(FEATURES))
    write_behavior(repo / "data")
    pd.DataFrame(
        {
            "customer_id": [1, 2],
            "event_timestamp": pd.to_datetime(["2024-06-01", "2024-06-01"], utc=True),
            "bonus": [0.5, 1.0],
        }
    ).to_parquet(repo / "data" / "entities.parquet")
    _run(repo, "apply")
    out = repo / "data" / "training.parquet"
    _run(
        repo,
        "training-set",
        "--entities",
        "data/entities.parquet",
        "--service",
        "svc",
        "--out",
        str(out),
    )
    training = pq.read_table(out).to_pylist()
    _run(repo, "materialize", "2023-01-01", "2025-01-01")
    online = json.loads(
        _run(
            repo,
            "get-online",
            "--service",
            "svc",
            "-e",
            "customer_id=1,bonus=0.5",
            "-e",
            "customer_id=2,bonus=1.0",
            "--json",
        )
    )
    for i, row in enumerate(training):
        for name in ("age", "score", "orders_per_year"):
            assert online[name][i] == row[name], (name, online[name][i], row[name])
    assert [r["score"] for r in training] == [6.5, 9.0]
