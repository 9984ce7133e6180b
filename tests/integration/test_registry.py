"""The registry on SQLite and on a real PostgreSQL server: reads, history, restore, isolation."""

from __future__ import annotations

import importlib.util
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from _registry import open_store
from _servers import free_port
from quiver.definitions import Entity, FeatureService, FeatureView, Field, FileSource
from quiver.errors import (
    BackendError,
    BreakingChangeError,
    ConcurrentChangeError,
    InvalidError,
    NotFoundError,
)
from quiver.loader import load_definitions
from quiver.registry import Registry
from quiver.store import FeatureStore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KINDS = ("entity", "data_source", "feature_view", "feature_service")


CUSTOMER = Entity(name="customer", join_keys=["customer_id"])
SOURCE = FileSource(name="orders_source", path="data/orders.parquet")


def _view(dtype: str = "int64", **overrides: Any) -> FeatureView:
    args: dict[str, Any] = {
        "name": "orders",
        "entities": ["customer"],
        "schema": [Field(name="total", dtype=dtype), Field(name="amount", dtype="float64")],
        "source": "orders_source",
        "ttl": timedelta(days=1),
    }
    args.update(overrides)
    return FeatureView(**args)


# --- reads ---------------------------------------------------------------------------------------


def test_apply_and_read_back_the_example_repo(store: FeatureStore) -> None:
    defs = load_definitions(FIXTURES / "example_repo.py")
    plan = store.apply(defs)
    assert plan.summary()["create"] == 9
    assert {e.name: e for e in store.list_entities()} == defs.entities
    assert {s.name: s for s in store.list_data_sources()} == defs.data_sources
    assert {v.name: v for v in store.list_feature_views()} == defs.feature_views
    assert {s.name: s for s in store.list_feature_services()} == defs.feature_services
    assert store.get_entity("merchant") == defs.entities["merchant"]
    assert store.get_data_source("payments") == defs.data_sources["payments"]
    assert store.get_feature_view("customer_orders") == defs.feature_views["customer_orders"]
    assert store.get_feature_service("checkout_v1") == defs.feature_services["checkout_v1"]
    assert [v.name for v in store.list_feature_views()] == sorted(defs.feature_views)


def test_the_sdk_opens_a_repo_by_path(registry_url: str, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "quiver.yaml").write_text(
        f"project: sdk\nregistry: {registry_url}\ndefinitions: [features.py]\n"
    )
    (repo / "features.py").write_text((FIXTURES / "example_repo.py").read_text())
    (repo / "scratch.py").write_text("raise RuntimeError('not a definitions file')\n")
    with FeatureStore(repo_path=repo) as store:
        assert store.project == "sdk"
        assert store.repo_path == repo.resolve()
        defs = store.load_definitions()  # the configured paths only
        store.apply(defs, prune=True)
        assert sorted(v.name for v in store.list_feature_views()) == sorted(defs.feature_views)
        assert store.get_entity("customer").join_keys == ["customer_id"]
        assert [v.operation for v in store.history("checkout_v1")] == ["create"]


def test_a_missing_object_is_not_found_with_a_suggestion(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE, _view()])
    with pytest.raises(NotFoundError, match=r"feature view 'order' does not exist.*'orders'"):
        store.get_feature_view("order")
    with pytest.raises(NotFoundError, match="entity 'nobody'"):
        store.get_entity("nobody")
    with pytest.raises(NotFoundError):
        store.get_feature_service("orders")  # names are per kind


def test_state_persists_across_stores_and_migrations_run_once(
    registry_url: str, tmp_path: Path
) -> None:
    with open_store(registry_url, tmp_path) as first:
        first.apply([CUSTOMER, SOURCE, _view()])
    for _ in range(2):
        with open_store(registry_url, tmp_path) as again:
            assert again.get_feature_view("orders") == _view()
            assert len(again.history("orders")) == 1
    engine = sa.create_engine(registry_url)
    try:
        with engine.connect() as conn:
            revisions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            projects = conn.execute(sa.text("SELECT name FROM projects")).all()
    finally:
        engine.dispose()
    assert len(revisions) == 1
    assert [p.name for p in projects] == ["shop"]


def test_projects_are_isolated(registry_url: str, tmp_path: Path) -> None:
    with (
        open_store(registry_url, tmp_path, "shop") as shop,
        open_store(registry_url, tmp_path, "ads") as ads,
    ):
        shop.apply([CUSTOMER, SOURCE, _view()])
        ads.apply([Entity(name="customer", join_keys=["user_id"])])
        assert shop.get_entity("customer").join_keys == ["customer_id"]
        assert ads.get_entity("customer").join_keys == ["user_id"]
        assert ads.list_feature_views() == []
        ads.apply([Entity(name="campaign")], prune=True)  # prunes only its own project
        assert [e.name for e in shop.list_entities()] == ["customer"]
        assert len(shop.history("customer")) == 1


def test_specs_are_stored_intact(store: FeatureStore) -> None:
    entity = Entity(
        name="k" * 63,
        description="Ünïcödé — \"quotes\" 'and' ; semicolons -- /* */ \n newlines \x00 \x01",
        tags={"ключ": "值", "a": ""},
        owner="o'brien@example.com",
    )
    store.apply([entity])
    assert store.get_entity("k" * 63) == entity


# --- history -------------------------------------------------------------------------------------


def test_every_changing_apply_adds_a_version(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUIVER_USER", "env_user")
    store.apply([CUSTOMER, SOURCE, _view()], author="alice")
    store.apply([CUSTOMER, SOURCE, _view()], author="alice")  # no change, no version
    store.apply([_view(description="v2")], author="bob")
    store.apply([_view(dtype="float64", description="v2")], allow_breaking=True)
    store.apply([CUSTOMER, SOURCE], prune=True, author="carol")
    history = store.history("orders")
    assert [(v.version, v.operation, v.author) for v in history] == [
        (1, "create", "alice"),
        (2, "update", "bob"),
        (3, "update", "env_user"),
        (4, "delete", "carol"),
    ]
    assert FeatureView.from_spec(history[0].spec) == _view()
    assert FeatureView.from_spec(history[1].spec) == _view(description="v2")
    assert history[2].spec_hash == _view(dtype="float64", description="v2").spec_hash()
    assert history[3].spec == history[2].spec  # a deletion records the last spec
    times = [v.created_at for v in history]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in times)
    assert times == sorted(times)
    assert history[1].to_dict()["author"] == "bob"
    with pytest.raises(NotFoundError, match="does not exist"):
        store.get_feature_view("orders")
    with pytest.raises(NotFoundError, match="no history"):
        store.registry.history("feature_view", "never_existed")


def test_describe_reports_the_current_version(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE, _view()], author="alice")
    store.apply([_view(description="second")], author="bob")
    info = store.describe("orders")
    assert info["kind"] == "feature_view"
    assert info["version"] == 2
    assert info["updated_by"] == "bob"
    assert info["spec"] == _view(description="second").to_spec()
    assert info["spec_hash"] == _view(description="second").spec_hash()
    assert info["created_at"] <= info["updated_at"]


def test_a_name_used_by_two_kinds_needs_a_kind(store: FeatureStore) -> None:
    store.apply([CUSTOMER, FileSource(name="customer", path="c.parquet")])
    with pytest.raises(InvalidError, match=r"names several objects.*--kind"):
        store.describe("customer")
    with pytest.raises(InvalidError, match="--kind"):
        store.history("customer")
    assert store.describe("customer", kind="data_source")["spec"]["path"] == "c.parquet"
    assert store.history("customer", kind="entity")[0].operation == "create"
    with pytest.raises(InvalidError, match="unknown kind 'view'"):
        store.describe("customer", kind="view")
    with pytest.raises(NotFoundError, match=r"no object called 'custmer'.*'customer'"):
        store.describe("custmer")


# --- restore -------------------------------------------------------------------------------------


def test_restore_writes_a_new_version_equal_to_the_old_spec(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE, _view()])
    store.apply([_view(description="v2", ttl=None)])
    store.apply([_view(description="v3")])
    plan = store.restore("orders", 1, author="dora")
    assert [(c.name, c.action) for c in plan.pending] == [("orders", "update")]
    history = store.history("orders")
    assert [(v.version, v.operation) for v in history][-1] == (4, "update")
    assert history[-1].spec == history[0].spec
    assert history[-1].author == "dora"
    assert store.get_feature_view("orders") == _view()
    assert not store.restore("orders", 4).has_changes  # already equal: no new version
    assert len(store.history("orders")) == 4


def test_a_breaking_restore_needs_allow_breaking(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE, _view()])
    store.apply([_view(dtype="string")], allow_breaking=True)
    with pytest.raises(BreakingChangeError, match=r"features\.total\.dtype"):
        store.restore("orders", 1)
    assert len(store.history("orders")) == 2
    store.restore("orders", 1, allow_breaking=True)
    assert store.get_feature_view("orders").feature("total").dtype == "int64"


def test_restore_recreates_a_deleted_object(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE, _view()])
    store.apply([CUSTOMER, SOURCE], prune=True)
    with pytest.raises(NotFoundError, match=r"version 2 .* is its deletion.*restore version 1"):
        # Regression: restoring the deletion itself silently recreated the object.
        store.restore("orders", 2)
    assert store.registry.find("feature_view", "orders") is None
    store.restore("orders", 1)
    assert store.get_feature_view("orders") == _view()
    assert [v.operation for v in store.history("orders")] == ["create", "delete", "create"]


def test_restore_of_a_missing_version_lists_the_versions(store: FeatureStore) -> None:
    store.apply([CUSTOMER])
    with pytest.raises(NotFoundError, match="has no version 7; versions are 1"):
        store.restore("customer", 7)
    with pytest.raises(NotFoundError, match="no object called 'ghost'"):
        store.restore("ghost", 1)


def test_restore_refuses_when_a_reference_is_gone(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE, _view()])
    store.apply([CUSTOMER, SOURCE, _view(entities=["customer"], description="x")])
    store.apply([Entity(name="other")], prune=True)
    with pytest.raises(NotFoundError, match="entity 'customer'"):
        store.restore("orders", 1)


# --- atomicity and errors ------------------------------------------------------------------------


def test_a_refused_apply_leaves_the_previous_state(registry_url: str, tmp_path: Path) -> None:
    with open_store(registry_url, tmp_path) as alice, open_store(registry_url, tmp_path) as bob:
        alice.apply([CUSTOMER, SOURCE, _view()])
        stale = alice.plan(
            [Entity(name="a_new_entity"), CUSTOMER, SOURCE, _view(description="alice")]
        )
        bob.apply([_view(description="bob")])
        with pytest.raises(ConcurrentChangeError):
            alice.apply(stale)
        assert alice.registry.find("entity", "a_new_entity") is None
        assert alice.get_feature_view("orders").description == "bob"
        assert [v.version for v in alice.history("orders")] == [1, 2]


def test_service_features_survive_the_round_trip(store: FeatureStore) -> None:
    view = _view()
    service = FeatureService(name="svc", features=[view[["total"]], "orders:amount"])
    store.apply([CUSTOMER, SOURCE, view, service])
    assert store.get_feature_service("svc").features == ["orders:total", "orders:amount"]


def test_an_unreachable_postgres_is_a_one_line_backend_error(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://quiver:s3cret@127.0.0.1:{free_port()}/nope"
    with pytest.raises(BackendError) as info:
        Registry(url, "shop")
    message = info.value.message
    assert message.startswith("cannot open the registry at postgresql+psycopg://quiver:***@")
    assert "s3cret" not in message
    assert "\n" not in message  # regression: the driver's hint came on a second line
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)


@pytest.mark.parametrize("url", ["nonsense", "foo://x"])
def test_an_invalid_registry_url_is_a_config_error(tmp_path: Path, url: str) -> None:
    from quiver.errors import ConfigError

    with pytest.raises(ConfigError, match="not a valid SQLAlchemy URL"):
        Registry(url, "shop")


def test_a_url_whose_driver_is_missing_names_the_driver(tmp_path: Path) -> None:
    # Regression: any missing driver was reported as "needs the 'psycopg' package".
    if importlib.util.find_spec("MySQLdb") is not None:  # pragma: no cover
        pytest.skip("mysqlclient is installed")
    with pytest.raises(BackendError, match="database driver 'MySQLdb'"):
        Registry("mysql://u@127.0.0.1/db", "shop")


def test_timestamps_are_utc(store: FeatureStore) -> None:
    store.apply([CUSTOMER])
    record = store.registry.get_record("entity", "customer")
    assert record.created_at.tzinfo is not None
    assert record.created_at.astimezone(UTC) == record.created_at


def test_the_revision_moves_with_every_write_of_any_process(
    store: FeatureStore, registry_url: str, tmp_path: Path
) -> None:
    registry = store.registry
    first = registry.revision()
    assert registry.revision() == first  # read again on the kept connection: no write, no move
    with open_store(registry_url, tmp_path) as other:  # another process's registry, in effect
        other.apply([CUSTOMER])
    second = registry.revision()
    assert second > first
    store.apply([SOURCE])  # this store's own write
    assert registry.revision() > second


def test_the_revision_survives_a_broken_connection(store: FeatureStore) -> None:
    registry = store.registry
    before = registry.revision()
    registry._reads.connection.close()  # as a database restart leaves it
    assert registry.revision() == before  # read again on a new connection
    registry.close()
    assert registry._reads.connection is None


def test_an_unreadable_revision_is_a_backend_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry(url, "shop")
    registry.revision()
    registry.close()
    (tmp_path / "registry.db").unlink()
    (tmp_path / "registry.db").mkdir()  # no database there any more
    with pytest.raises(BackendError, match="reading the registry at sqlite:///"):
        registry.revision()


def test_a_plan_reads_one_consistent_registry_state(
    store: FeatureStore, registry_url: str, tmp_path: Path
) -> None:
    """Regression: plan read the registry kind by kind, so another process's apply landing
    between two reads showed its view without its entity ("feature view 'view_1' references
    entity 'entity_1', which does not exist"), and a concurrent `quiver apply` failed."""
    store.apply([CUSTOMER, SOURCE])
    team = Entity(name="team", join_keys=["team_id"])
    team_view = _view(name="team_orders", entities=["team"])
    selects = 0

    def another_process_applies(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        nonlocal selects
        if statement.lstrip().upper().startswith("SELECT") and "FROM objects" in statement:
            selects += 1
            if selects == 2:  # after the first read of the plan, before the next one
                with open_store(registry_url, tmp_path) as other:
                    other.apply([team, team_view])

    engine = store.registry.engine
    sa.event.listen(engine, "before_cursor_execute", another_process_applies)
    try:
        plan = store.plan([_view()])
    finally:
        sa.event.remove(engine, "before_cursor_execute", another_process_applies)
    assert [c.name for c in plan.pending] == ["orders"]
