"""Validation rules and policies at push (SDK) and at materialization, on both online stores;
defaults on online reads. Every refusal is checked to leave the stored values as they were."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
from quiver.errors import DataValidationError
from quiver.registry.runs import list_runs

NOW = datetime.now(UTC).replace(microsecond=0)
TS = pa.timestamp("us", tz="UTC")

customer = Entity(name="customer", join_keys=["customer_id"])
source = FileSource(name="src", path="data/src.parquet", timestamp_field="ts")

GOOD = {"orders": 3, "charge": 20.0, "plan": "a", "code": "AB"}
BAD = {  # a value breaking each rule -> the rule's key in the counts
    "min_value": ({"orders": -5}, "orders:min_value"),
    "max_value": ({"charge": 500.0}, "charge:max_value"),
    "allowed_values": ({"plan": "z"}, "plan:allowed_values"),
    "regex": ({"code": "x1"}, "code:regex"),
    "not_null": ({"orders": None}, "orders:not_null"),
    "check": ({"orders": 2000}, "check:orders <= 1000"),
}


def fields() -> list[Field]:
    return [
        Field(
            name="orders",
            dtype="int64",
            validation_rules={"min_value": 0, "not_null": True},
            default_value=0,
        ),
        Field(name="charge", dtype="float64", validation_rules={"max_value": 100}),
        Field(name="plan", dtype="string", allowed_values=["a", "b"], default_value="a"),
        Field(name="code", dtype="string", validation_rules={"regex": "[A-Z]{2}"}),
    ]


def policy_view(name: str, policy: str) -> FeatureView:
    return FeatureView(
        name=name,
        entities=[customer],
        features=fields(),
        source=source,
        validation={"policy": policy, "checks": ["orders <= 1000"]},
    )


VIEWS = {p: policy_view(f"v_{p}", p) for p in ("reject", "drop", "warn")}


def source_rows(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array([r["customer_id"] for r in rows], pa.int64()),
            "ts": pa.array([r.get("ts", NOW - timedelta(hours=1)) for r in rows], TS),
            "orders": pa.array([r["orders"] for r in rows], pa.int64()),
            "charge": pa.array([r["charge"] for r in rows], pa.float64()),
            "plan": pa.array([r["plan"] for r in rows], pa.string()),
            "code": pa.array([r["code"] for r in rows], pa.string()),
        }
    )


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeatureStore]:
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    online: dict[str, Any] = {"type": "sqlite", "path": "data/online.db"}
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        online = {"type": "redis", "url": url, "key_prefix": f"q{uuid.uuid4().hex[:6]}"}
    config = {"project": "quality", "definitions": [], "online_store": online}
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    rows = [{"customer_id": k, **GOOD, "orders": k} for k in (1, 2, 3)]
    pq.write_table(source_rows(rows), root / "data" / "src.parquet")
    s = FeatureStore(root)
    s.apply([customer, source, *VIEWS.values()])
    s.materialize(NOW - timedelta(days=1), NOW)
    yield s
    s.close()


def stored(store: FeatureStore, view: str, keys: tuple[int, ...] = (1, 2, 3)) -> dict[str, Any]:
    res = store.get_online_features([f"{view}:*"], [{"customer_id": k} for k in keys])
    return {**res.to_dict(), "statuses": res.statuses["orders"]}


def pushed(key: int, **changes: Any) -> dict[str, Any]:
    return {"customer_id": key, **GOOD, **changes}


# -- push ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", sorted(BAD))
def test_reject_refuses_the_whole_push_and_keeps_the_stored_values(
    store: FeatureStore, rule: str
) -> None:
    change, key = BAD[rule]
    before = stored(store, "v_reject")
    with pytest.raises(DataValidationError) as info:
        store.push("v_reject", [pushed(2, orders=7), pushed(1, **change)], to="both")
    assert info.value.details["failures"] == {key: 1}
    assert info.value.details["samples"][key] == [{"customer_id": 1}]
    feature, _, name = key.partition(":")
    assert name in info.value.message and "customer_id=1" in info.value.message
    if feature != "check":
        assert f"feature '{feature}'" in info.value.message
    assert stored(store, "v_reject") == before  # neither the good nor the bad row was written
    assert not (store.repo_path / "data" / "_pushed").exists()  # nor appended offline


@pytest.mark.parametrize("rule", sorted(BAD))
def test_drop_leaves_out_the_bad_rows_and_counts_them(store: FeatureStore, rule: str) -> None:
    change, key = BAD[rule]
    before = stored(store, "v_drop")
    written = store.push("v_drop", [pushed(2, orders=7), pushed(1, **change)])
    assert int(written) == 1
    assert written.validation is not None
    counts = written.validation.to_dict()
    assert (counts["rows_checked"], counts["rows_invalid"], counts["rows_dropped"]) == (2, 1, 1)
    assert counts["failures"] == {key: 1}
    after = stored(store, "v_drop")
    assert after["orders"][0] == before["orders"][0]  # key 1: unchanged
    assert after["orders"][1] == 7  # key 2: written


@pytest.mark.parametrize("rule", sorted(BAD))
def test_warn_writes_the_bad_rows_and_counts_them(store: FeatureStore, rule: str) -> None:
    change, key = BAD[rule]
    written = store.push("v_warn", [pushed(2, orders=7), pushed(1, **change)])
    assert int(written) == 2
    assert written.validation is not None
    assert written.validation.failures == {key: 1}
    assert (written.validation.rows_invalid, written.validation.rows_dropped) == (1, 0)
    after = stored(store, "v_warn")
    assert after["orders"][1] == 7
    expected = {**GOOD, **change}
    assert after["orders"][0] == expected["orders"] and after["plan"][0] == expected["plan"]


def test_valid_pushes_are_written_with_counts(store: FeatureStore) -> None:
    written = store.push("v_reject", [pushed(1, orders=0, charge=100.0, plan="b")])
    assert int(written) == 1 and written.validation is not None
    assert written.validation.to_dict()["rows_invalid"] == 0
    assert stored(store, "v_reject")["orders"][0] == 0


def test_drop_keeps_offline_rows_aligned(store: FeatureStore) -> None:
    store.push(
        "v_drop",
        [pushed(5, orders=-1), pushed(6, orders=6), pushed(7, plan="q")],
        to="offline",
    )
    table = store.get_historical_features(
        pa.table(
            {
                "customer_id": pa.array([5, 6, 7], pa.int64()),
                "event_timestamp": pa.array([datetime.now(UTC) + timedelta(minutes=1)] * 3, TS),
            }
        ),
        ["v_drop:orders"],
    ).to_arrow()
    assert table["orders"].to_pylist() == [None, 6, None]


# -- materialization -----------------------------------------------------------------------------


def write_source(store: FeatureStore, bad: dict[str, Any]) -> None:
    rows = [{"customer_id": k, **GOOD, "orders": 10 + k, "ts": NOW} for k in (1, 2, 3)]
    rows.append({"customer_id": 4, **GOOD, **bad, "ts": NOW})
    pq.write_table(source_rows(rows), store.repo_path / "data" / "src.parquet")


@pytest.mark.parametrize("rule", sorted(BAD))
def test_materialize_reject_fails_and_writes_nothing(store: FeatureStore, rule: str) -> None:
    change, key = BAD[rule]
    write_source(store, change)
    before = stored(store, "v_reject", (1, 2, 3, 4))
    with pytest.raises(DataValidationError) as info:
        store.materialize(NOW - timedelta(days=1), NOW + timedelta(minutes=1), ["v_reject"])
    assert "materialization of feature view 'v_reject' refused" in info.value.message
    assert info.value.details["samples"][key] == [{"customer_id": 4}]
    assert stored(store, "v_reject", (1, 2, 3, 4)) == before
    run = list_runs(store.registry, "v_reject", limit=1)[0]
    assert run.status == "failed" and run.rows_written == 0
    assert run.rows_invalid == 1 and run.validation is not None
    assert run.validation["failures"] == {key: 1}


@pytest.mark.parametrize("rule", sorted(BAD))
def test_materialize_drop_and_warn_count_in_the_run(store: FeatureStore, rule: str) -> None:
    change, key = BAD[rule]
    write_source(store, change)
    end = NOW + timedelta(minutes=1)
    drop, warn = store.materialize(NOW - timedelta(days=1), end, ["v_drop", "v_warn"])
    assert (drop.status, drop.rows_written, drop.rows_invalid, drop.rows_dropped) == (
        "succeeded",
        3,
        1,
        1,
    )
    assert (warn.rows_written, warn.rows_invalid, warn.rows_dropped) == (4, 1, 0)
    assert drop.validation is not None and drop.validation["failures"] == {key: 1}
    recorded = list_runs(store.registry, "v_drop", limit=1)[0]
    assert (recorded.rows_invalid, recorded.rows_dropped) == (1, 1)
    assert recorded.validation == drop.validation
    assert stored(store, "v_drop", (1, 4))["statuses"] == ["present", "not_found"]
    assert stored(store, "v_warn", (1, 4))["statuses"] == ["present", "present"]


@pytest.mark.parametrize("hold", [0, 200, 64 * 2**20])
def test_materialize_reject_of_valid_rows_writes_every_batch(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch, hold: int
) -> None:
    import quiver.materialize as materialize
    import quiver.offline.duckdb as engine

    monkeypatch.setattr(engine, "PULL_BATCH_ROWS", 7)  # many batches
    monkeypatch.setattr(materialize, "HOLD_BYTES", hold)  # 0: all spilled, 200: some held
    rows = [{"customer_id": k, **GOOD, "orders": k, "ts": NOW} for k in range(1, 101)]
    pq.write_table(source_rows(rows), store.repo_path / "data" / "src.parquet")
    (run,) = store.materialize(NOW - timedelta(days=1), NOW + timedelta(minutes=1), ["v_reject"])
    assert (run.status, run.rows_written, run.rows_invalid) == ("succeeded", 100, 0)
    keys = tuple(range(1, 101))
    assert stored(store, "v_reject", keys)["orders"] == list(keys)


def test_materialize_reject_after_a_spill_writes_nothing(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import quiver.materialize as materialize
    import quiver.offline.duckdb as engine

    monkeypatch.setattr(engine, "PULL_BATCH_ROWS", 7)
    monkeypatch.setattr(materialize, "HOLD_BYTES", 0)
    rows = [{"customer_id": k, **GOOD, "orders": 100 + k, "ts": NOW} for k in range(1, 60)]
    rows[45]["orders"] = -3  # in a late batch, after earlier ones were spilled
    pq.write_table(source_rows(rows), store.repo_path / "data" / "src.parquet")
    before = stored(store, "v_reject", tuple(range(1, 60)))
    with pytest.raises(DataValidationError, match="customer_id=46"):
        store.materialize(NOW - timedelta(days=1), NOW + timedelta(minutes=1), ["v_reject"])
    assert stored(store, "v_reject", tuple(range(1, 60))) == before


# -- defaults ------------------------------------------------------------------------------------


def test_use_defaults_fills_missing_values(store: FeatureStore) -> None:
    rows = [{"customer_id": 1}, {"customer_id": 99}]
    plain = store.get_online_features(["v_warn:orders", "v_warn:plan", "v_warn:code"], rows)
    assert plain.to_dict()["orders"] == [1, None]
    filled = store.get_online_features(
        ["v_warn:orders", "v_warn:plan", "v_warn:code"], rows, use_defaults=True
    )
    assert filled.to_dict() == {
        "customer_id": [1, 99],
        "orders": [1, 0],
        "plan": ["a", "a"],
        "code": ["AB", None],  # no default declared
    }
    assert filled.statuses["orders"] == ["present", "not_found"]  # the status still says why


def test_use_defaults_leaves_the_serving_cache_as_it_was(tmp_path: Path) -> None:
    root = tmp_path / "cached"
    (root / "data").mkdir(parents=True)
    config = {
        "project": "quality",
        "definitions": [],
        "online_store": {"type": "sqlite", "path": "data/online.db"},
        "serving_cache": {"enabled": True},
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    pq.write_table(source_rows([{"customer_id": 1, **GOOD}]), root / "data" / "src.parquet")
    with FeatureStore(root) as s:
        s.apply([customer, source, VIEWS["warn"]])
        s.materialize(NOW - timedelta(days=1), NOW)
        rows = [{"customer_id": 1}, {"customer_id": 99}]
        for _ in range(2):  # the second read of each comes from the cache
            assert s.get_online_features(["v_warn:orders"], rows).to_dict()["orders"] == [3, None]
            filled = s.get_online_features(["v_warn:orders"], rows, use_defaults=True)
            assert filled.to_dict()["orders"] == [3, 0]
        assert filled.cache_hit


def test_a_push_to_several_views_writes_none_when_one_refuses(store: FeatureStore) -> None:
    """Feast's /push of a source feeding several views (push_many): every view's rows are
    checked before any is written, so the warn view keeps its values when the reject one
    refuses (they used to be written view by view)."""
    from quiver.online.serving import push_many

    rows = [pushed(2, orders=7), pushed(1, orders=-5)]
    before = {v: stored(store, v) for v in ("v_warn", "v_reject")}
    with pytest.raises(DataValidationError):
        push_many(store, [("v_warn", rows), ("v_reject", rows)], to="both")
    assert {v: stored(store, v) for v in ("v_warn", "v_reject")} == before
    assert not (store.repo_path / "data" / "_pushed").exists()
    written = push_many(store, [("v_warn", rows[:1]), ("v_reject", rows[:1])])
    assert [int(w) for w in written] == [1, 1]
    assert stored(store, "v_warn")["orders"][1] == stored(store, "v_reject")["orders"][1] == 7
