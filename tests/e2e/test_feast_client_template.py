"""Feast's own client, over HTTP, on Feast's own template (``feast init``): ``Map``, ``Struct`` and
``Json`` features, on-demand feature views and feature services that include one, against
``quiver serve``, judged by Feast itself.

The template is applied unchanged to Quiver (``quiver apply``), materialized and served by
``quiver serve``. The same Feast client code then runs twice in the Feast environment: once with
``online_store: {type: remote}`` pointing at Quiver, once on Feast's own SQLite online store
(``feast materialize`` up to the same instant); each pushes the same fresh row through Feast's
``push`` (which Feast's client sends to ``/write-to-online-store``) and reads the same features.
The two ``to_dict()`` answers must be equal.
"""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from _feast import feast_cli, feast_python, run_feast
from e2e.conftest import Server, run_cli, start_server

pytestmark = pytest.mark.slow

CLIENT = """
import json
from datetime import datetime, timezone
import pandas as pd
from feast import FeatureStore
from feast.data_source import PushMode

store = FeatureStore(repo_path=".")
now = datetime.fromisoformat(@NOW@)
fresh = pd.DataFrame({
    "driver_id": [1001, 1002],
    "event_timestamp": [now, now],
    "created": [now, now],
    "conv_rate": [0.5, 0.25],
    "acc_rate": [0.75, 0.125],
    "avg_daily_trips": [12, 34],
    "driver_metadata": [{"vehicle_type": "van", "rating": "4.9"}, {"vehicle_type": "bike"}],
    "driver_config": ['{"max_distance_km": 5, "zones": ["north", "east"]}', '{"a": null}'],
    "driver_profile": [{"name": "ann", "age": "30"}, {"name": "bob", "age": "41"}],
})
store.push("driver_stats_push_source", fresh, to=PushMode.ONLINE)
rows = [
    {"driver_id": d, "val_to_add": 10 * i, "val_to_add_2": 100 * i}
    for i, d in enumerate([1001, 1002, 1003, 1005, 4242])
]
keys = [{"driver_id": r["driver_id"]} for r in rows]
typed = ["driver_metadata", "driver_config", "driver_profile"]
out = {}
out["typed"] = store.get_online_features(
    [f"driver_hourly_stats:{f}" for f in ["conv_rate", *typed]], keys).to_dict()
out["typed_fresh"] = store.get_online_features(
    [f"driver_hourly_stats_fresh:{f}" for f in ["conv_rate", *typed]], keys).to_dict()
out["typed_full_names"] = store.get_online_features(
    [f"driver_hourly_stats_fresh:{f}" for f in typed], keys[:2], full_feature_names=True
).to_dict()
out["on_demand"] = store.get_online_features(
    ["driver_hourly_stats:conv_rate", "transformed_conv_rate:conv_rate_plus_val1",
     "transformed_conv_rate:conv_rate_plus_val2"], rows).to_dict()
out["on_demand_alone"] = store.get_online_features(
    ["transformed_conv_rate_fresh:conv_rate_plus_val1"], rows).to_dict()
for name in ["driver_activity_v1", "driver_activity_v2", "driver_activity_v3"]:
    service = store.get_feature_service(name)
    out[name] = store.get_online_features(features=service, entity_rows=rows).to_dict()
print(json.dumps(out, default=str, sort_keys=True))
"""


def _remote_yaml(url: str) -> str:
    return (
        "project: driver_repo\nregistry: data/registry.db\nprovider: local\n"
        f"online_store:\n  type: remote\n  path: {url}\nentity_key_serialization_version: 3\n"
    )


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Feast's client answers against ``quiver serve`` and on Feast's own online store."""
    python = feast_python()
    base = tmp_path_factory.mktemp("feast_template_client")
    feast_cli(python, "init", "driver_repo", cwd=base)
    template = base / "driver_repo" / "feature_repo"
    quiver_repo, feast_repo, client_repo = base / "quiver", base / "feast", base / "client"
    for target in (quiver_repo, feast_repo, client_repo):
        shutil.copytree(template, target)
    now = datetime.now(UTC).replace(microsecond=0)
    run_cli("apply", "--repo", str(quiver_repo))
    run_cli("materialize", "2000-01-01T00:00:00", now.isoformat(), "--repo", str(quiver_repo))
    server: Server = start_server(quiver_repo)
    try:
        (client_repo / "feature_store.yaml").write_text(_remote_yaml(server.url))
        feast_cli(python, "apply", cwd=client_repo)
        feast_cli(python, "apply", cwd=feast_repo)
        feast_cli(python, "materialize", "2000-01-01T00:00:00", now.isoformat(), cwd=feast_repo)
        code = textwrap.dedent(CLIENT).replace("@NOW@", repr(now.isoformat()))
        yield {
            "quiver": run_feast(python, code, cwd=client_repo),
            "feast": run_feast(python, code, cwd=feast_repo),
        }
    finally:
        server.stop()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return False
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize(
    "case",
    [
        "typed",
        "typed_fresh",
        "typed_full_names",
        "on_demand",
        "on_demand_alone",
        "driver_activity_v1",
        "driver_activity_v2",
        "driver_activity_v3",
    ],
)
def test_feast_client_gets_feasts_answer_from_quiver(answers: dict[str, Any], case: str) -> None:
    ours, theirs = answers["quiver"][case], answers["feast"][case]
    assert sorted(ours) == sorted(theirs)
    for name in theirs:
        assert _same(ours[name], theirs[name]), (name, ours[name], theirs[name])


def test_the_answers_hold_what_they_should(answers: dict[str, Any]) -> None:
    """Feast's own answer is not vacuous: the pushed Map, Struct and Json values come back, and
    a feature service with an on-demand view returns all of that view's features."""
    fresh = answers["feast"]["typed_fresh"]
    assert fresh["driver_metadata"][0] == {"vehicle_type": "van", "rating": "4.9"}
    assert fresh["driver_profile"][1] == {"name": "bob", "age": "41"}
    config = fresh["driver_config"][0]  # Feast's client parses a Json value
    assert (json.loads(config) if isinstance(config, str) else config) == {
        "max_distance_km": 5,
        "zones": ["north", "east"],
    }
    for name in ("typed", "on_demand", "driver_activity_v2"):  # from the materialized rows
        assert all(v is not None for v in answers["feast"][name]["conv_rate"][:4]), name
    assert fresh["driver_metadata"][4] is None  # driver 4242: none
    v1 = answers["quiver"]["driver_activity_v1"]
    assert {"conv_rate", "conv_rate_plus_val1", "conv_rate_plus_val2"} <= set(v1)
    assert v1["conv_rate_plus_val2"][1] == pytest.approx(v1["conv_rate"][1] + 100)
