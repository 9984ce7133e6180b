"""quiver.client: the seed helpers over a materialized demo repo."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from quiver import client
from quiver.store import FeatureStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    from e2e.conftest import make_demo_repo

    repo: Path = make_demo_repo(tmp_path_factory.mktemp("client") / "repo")
    return FeatureStore(repo_path=repo)


def test_helpers_match_the_store(store: FeatureStore) -> None:
    refs = client.get_feature_service_features("churn_prediction_v1", store=store)
    assert "customer_demographics:age" in refs and all(not r.endswith(":*") for r in refs)
    request = {
        f.name: 1.0
        for v in store.list_all_feature_views()
        for f in getattr(v, "request_fields", [])
    }
    got = client.get_features_for_prediction(1, request_data=request, store=store)
    native = store.get_online_features(
        feature_service="churn_prediction_v1", entity_rows=[{"customer_id": 1, **request}]
    ).to_dict()
    assert got == {k: v[0] for k, v in native.items()}
    reports = client.validate_features(
        [{"customer_id": 1, **request}, {"customer_id": 10**9, **request}], store=store
    )
    assert reports[1]["valid"] is False and "age" in reports[1]["missing"]
    assert reports[0]["row"] == 0 and "age" not in reports[0]["missing"]
    entity_df = pd.DataFrame(
        {
            "customer_id": [1, 2],
            "event_timestamp": [datetime(2026, 1, 1, tzinfo=UTC)] * 2,
            **{k: [v, v] for k, v in request.items()},
        }
    )
    training = client.get_training_features(entity_df, store=store)
    assert len(training) == 2 and "age" in training
