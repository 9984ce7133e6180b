"""Feast's own template (``feast init``, run now with the real Feast 0.67) applied unchanged by
``quiver apply``, then Quiver's historical and online answers compared with Feast's own on the
same data (Feast's DuckDB offline store, which keeps rows with no match in the TTL window)."""

from __future__ import annotations

import math
import shutil
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from _feast import feast_cli, feast_python, run_feast
from e2e.conftest import run_cli

pytestmark = pytest.mark.slow

FEATURES = [
    "driver_hourly_stats:conv_rate",
    "driver_hourly_stats:acc_rate",
    "driver_hourly_stats:avg_daily_trips",
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The template as ``feast init`` writes it, and a copy Feast itself runs on (DuckDB)."""
    python = feast_python()
    base = tmp_path_factory.mktemp("feast_template")
    feast_cli(python, "init", "driver_repo", cwd=base)
    repo = base / "driver_repo" / "feature_repo"
    feast_repo = base / "feast_side"
    shutil.copytree(repo, feast_repo)
    config = (feast_repo / "feature_store.yaml").read_text()
    (feast_repo / "feature_store.yaml").write_text(config + "offline_store:\n    type: duckdb\n")
    return python, repo, feast_repo


def _close(a: Any, b: Any) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)):
        return (a is None or a != a) and (b is None or b != b)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    return bool(a == b)


def test_template_applies_unchanged(template: tuple[Path, Path, Path]) -> None:
    _python, repo, _ = template
    before = (repo / "feature_definitions.py").read_text()
    result = run_cli("apply", "--repo", str(repo))
    assert (repo / "feature_definitions.py").read_text() == before
    for name in (
        "driver_hourly_stats",
        "driver_hourly_stats_fresh",
        "transformed_conv_rate",
        "driver_activity_v1",
        "driver_stats_push_source",
        "driver_quality_labels",
    ):
        assert name in result.stdout, result.stdout
    for ignored in ("'provider' is ignored", "'entity_key_serialization_version' is ignored"):
        assert ignored in result.stderr, result.stderr


def test_historical_and_online_match_feast(template: tuple[Path, Path, Path]) -> None:
    python, repo, feast_repo = template
    run_cli("apply", "--repo", str(repo))
    stats = pd.read_parquet(repo / "data" / "driver_stats.parquet")
    last = stats["event_timestamp"].max().to_pydatetime()
    entity_df = pd.DataFrame(
        {
            "driver_id": [1001, 1002, 1003, 1004, 1005, 1001, 1003],
            "event_timestamp": [last - timedelta(hours=h) for h in (0, 5, 12, 30, 2, 80, 500)],
        }
    )
    entity_df.to_parquet(feast_repo / "entity_df.parquet")
    now = datetime.now(UTC).replace(microsecond=0)
    code = f"""
        import json
        from datetime import datetime, timezone
        import pandas as pd
        from feast import FeatureStore
        store = FeatureStore(repo_path=".")
        entity_df = pd.read_parquet("entity_df.parquet")
        hist = store.get_historical_features(entity_df=entity_df, features={FEATURES!r}).to_df()
        hist = hist.sort_values(["driver_id", "event_timestamp"])
        store.materialize(datetime(2000, 1, 1, tzinfo=timezone.utc),
                          datetime.fromisoformat({now.isoformat()!r}))
        online = store.get_online_features(
            features={FEATURES!r}, entity_rows=[{{"driver_id": d}} for d in range(1001, 1006)]
        ).to_dict()
        rows = json.loads(hist.to_json(orient="records", date_format="iso"))
        print(json.dumps({{"hist": rows, "online": online}}))
    """
    feast_cli(python, "apply", cwd=feast_repo)
    feast = run_feast(python, textwrap.dedent(code), cwd=feast_repo)

    from quiver.store import FeatureStore

    with FeatureStore(repo_path=repo) as store:
        ours = store.get_historical_features(entity_df, FEATURES).to_pandas()
        ours = ours.sort_values(["driver_id", "event_timestamp"])
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), now)
        online = store.get_online_features(
            FEATURES, [{"driver_id": d} for d in range(1001, 1006)]
        ).to_dict()
    ours_rows = ours.to_dict(orient="records")
    present = [r["conv_rate"] for r in feast["hist"] if r["conv_rate"] is not None]
    assert 0 < len(present) < len(entity_df)  # both found values, and both TTL misses
    assert len(ours_rows) == len(feast["hist"]) == len(entity_df)
    for mine, theirs in zip(ours_rows, feast["hist"], strict=True):
        assert mine["driver_id"] == theirs["driver_id"]
        for ref in FEATURES:
            name = ref.split(":")[1]
            value = mine[name]
            value = None if value is pd.NA or value is None else value
            assert _close(value, theirs[name]), (mine, theirs)
    for ref in FEATURES:
        name = ref.split(":")[1]
        assert len(online[name]) == 5
        for a, b in zip(online[name], feast["online"][name], strict=True):
            assert _close(a, b), (name, online[name], feast["online"][name])


def test_feast_sdk_calls_work_on_quiver(template: tuple[Path, Path, Path]) -> None:
    """The template's ``test_workflow.py`` calls, with Feast's names, on Quiver's FeatureStore."""
    _python, repo, _ = template
    run_cli("apply", "--repo", str(repo))
    from quiver.compat.feast import PushMode
    from quiver.store import FeatureStore

    now = datetime.now(UTC).replace(microsecond=0)
    with FeatureStore(repo_path=repo) as store:
        store.materialize(start_date=now - timedelta(days=3), end_date=now)
        store.materialize_incremental(end_date=now, feature_views=["driver_hourly_stats"])
        assert {v.name for v in store.list_on_demand_feature_views()} == {
            "transformed_conv_rate",
            "transformed_conv_rate_fresh",
        }
        service = store.get_feature_service("driver_activity_v1")
        entity_df = pd.DataFrame(
            {
                "driver_id": [1001, 1002],
                "event_timestamp": [now - timedelta(hours=2)] * 2,
                "val_to_add": [1, 2],
                "val_to_add_2": [10, 20],
            }
        )
        training = store.get_historical_features(entity_df=entity_df, features=service).to_df()
        assert {"conv_rate", "conv_rate_plus_val1", "conv_rate_plus_val2"} <= set(training)
        row = {"driver_id": 1001, "val_to_add": 1000, "val_to_add_2": 2000}
        online = store.get_online_features(features=service, entity_rows=[row]).to_dict()
        assert online["conv_rate_plus_val1"][0] == pytest.approx(online["conv_rate"][0] + 1000)
        assert list(store.get_online_features(FEATURES, [{"driver_id": 1001}]).to_df())
        fresh = pd.DataFrame(
            {
                "driver_id": [1001],
                "event_timestamp": [now],
                "created": [now],
                "conv_rate": [1.0],
                "acc_rate": [1.0],
                "avg_daily_trips": [1000],
                "driver_metadata": [{"vehicle_type": "van"}],
                "driver_config": ['{"max_distance_km": 5}'],
                "driver_profile": [{"name": "x", "age": "30"}],
            }
        )
        assert store.push("driver_stats_push_source", fresh, to=PushMode.ONLINE) == 1
        refs = ["driver_hourly_stats_fresh:avg_daily_trips"]
        assert store.get_online_features(refs, [{"driver_id": 1001}]).to_dict()[
            "avg_daily_trips"
        ] == [1000]
        assert store.write_to_online_store("driver_hourly_stats", fresh) == 1
        got = store.get_online_features(FEATURES, [{"driver_id": 1001}]).to_dict()
        assert got["avg_daily_trips"] == [1000]


def test_import_feast_writes_an_equivalent_quiver_repo(
    template: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _python, repo, _ = template
    out = tmp_path / "quiver_repo"
    run_cli("apply", "--repo", str(repo))
    result = run_cli("import-feast", str(repo), str(out))
    assert "3 feature view(s)" in result.stdout and "2 on demand feature view(s)" in result.stdout
    assert (out / "data" / "driver_stats.parquet").exists()
    applied = run_cli("apply", "--repo", str(out))
    assert "12 created" in applied.stdout
    from quiver.store import FeatureStore

    with FeatureStore(repo_path=out) as imported, FeatureStore(repo_path=repo) as original:
        for kind in ("entity", "data_source", "feature_view", "feature_service"):
            assert imported.registry.names(kind) == original.registry.names(kind)
        for name in imported.registry.names("feature_view"):
            mine, theirs = imported.get_feature_view(name), original.get_feature_view(name)
            assert mine.features == theirs.features and mine.ttl == theirs.ttl
