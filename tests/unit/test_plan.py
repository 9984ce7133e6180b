"""plan / apply: the diff, breaking changes, pruning, references, compare-and-swap.

These run against a real SQLite registry in a temp dir (the integration suite repeats the
registry behaviour on PostgreSQL).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.config import build_config
from quiver.definitions import Entity, FeatureService, FeatureView, Field, FileSource
from quiver.errors import (
    BreakingChangeError,
    ConcurrentChangeError,
    InvalidError,
    NotFoundError,
    ReferencedError,
)
from quiver.registry import DefinitionSet, FieldChange, Plan
from quiver.registry.plan import _diff
from quiver.store import FeatureStore

KINDS = ("entity", "data_source", "feature_view", "feature_service")


def _store(tmp: Path, project: str = "test") -> FeatureStore:
    config = build_config(
        {"project": project, "registry": f"sqlite:///{tmp / 'registry.db'}", "repo_path": tmp}
    )
    return FeatureStore(config=config)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeatureStore]:
    with _store(tmp_path) as s:
        yield s


def _fields(**dtypes: str) -> list[Field]:
    return [Field(name=n, dtype=d) for n, d in dtypes.items()]


CUSTOMER = Entity(name="customer", join_keys=["customer_id"])
SOURCE = FileSource(name="orders_source", path="data/orders.parquet")


def _view(**overrides: Any) -> FeatureView:
    args: dict[str, Any] = {
        "name": "orders",
        "entities": ["customer"],
        "schema": _fields(total="int64", amount="float64"),
        "source": "orders_source",
        "ttl": timedelta(days=1),
    }
    args.update(overrides)
    return FeatureView(**args)


def _service(*refs: str) -> FeatureService:
    return FeatureService(name="svc", features=list(refs) or ["orders:*"])


def _base(**view: Any) -> list[Any]:
    return [CUSTOMER, SOURCE, _view(**view), _service()]


def _history_sizes(store: FeatureStore) -> dict[tuple[str, str], int]:
    sizes = {}
    for kind in KINDS:
        for name in store.registry.names(kind):
            sizes[(kind, name)] = len(store.registry.history(kind, name))
    return sizes


def _snapshot(store: FeatureStore) -> dict[str, Any]:
    """Everything a reader can see: current specs and versions, plus history sizes."""
    return {
        "objects": {
            k: [(r.name, r.version, r.spec) for r in store.registry.records(k)] for k in KINDS
        },
        "history": _history_sizes(store),
    }


def _change(plan: Plan, kind: str, name: str) -> Any:
    return next(c for c in plan.changes if c.kind == kind and c.name == name)


# --- the diff ------------------------------------------------------------------------------------


def test_diff_reports_field_level_paths() -> None:
    old = {
        "description": "a",
        "tags": {"x": "1"},
        "features": [{"name": "a", "dtype": "int64"}, {"name": "b", "dtype": "int64"}],
        "entities": ["customer"],
    }
    new = {
        "description": "b",
        "tags": {"x": "1", "y": "2"},
        "features": [{"name": "a", "dtype": "float64"}, {"name": "c", "dtype": "bool"}],
        "entities": ["customer"],
    }
    out: list[FieldChange] = []
    _diff(old, new, "", out)
    assert {(c.path, json.dumps(c.old), json.dumps(c.new)) for c in out} == {
        ("description", '"a"', '"b"'),
        ("tags.y", "null", '"2"'),
        ("features.a.dtype", '"int64"', '"float64"'),
        ("features.b", '{"name": "b", "dtype": "int64"}', "null"),
        ("features.c", "null", '{"name": "c", "dtype": "bool"}'),
    }


def test_diff_of_equal_specs_is_empty() -> None:
    out: list[FieldChange] = []
    spec = _view().to_spec()
    _diff(spec, json.loads(json.dumps(spec)), "", out)
    assert out == []


# --- plan ----------------------------------------------------------------------------------------


def test_plan_of_a_new_repo_creates_everything_and_writes_nothing(store: FeatureStore) -> None:
    plan = store.plan(_base())
    assert [(c.kind, c.name, c.action) for c in plan.changes] == [
        ("entity", "customer", "create"),
        ("data_source", "orders_source", "create"),
        ("feature_view", "orders", "create"),
        ("feature_service", "svc", "create"),
    ]
    assert plan.summary() == {"create": 4, "update": 0, "delete": 0, "unchanged": 0}
    assert plan.breaking == []
    assert _snapshot(store)["history"] == {}
    assert store.list_entities() == []


def test_apply_then_plan_is_unchanged_and_a_second_apply_adds_no_version(
    store: FeatureStore,
) -> None:
    store.apply(_base())
    before = _snapshot(store)
    plan = store.plan(_base())
    assert not plan.has_changes
    assert {c.action for c in plan.changes} == {"unchanged"}
    store.apply(_base())
    assert _snapshot(store) == before


def test_inline_sources_are_applied_as_data_sources(store: FeatureStore) -> None:
    view = _view(source=SOURCE, entities=[CUSTOMER])
    store.apply([CUSTOMER, view])
    assert store.get_data_source("orders_source") == SOURCE
    assert store.get_feature_view("orders").source == "orders_source"
    assert not store.plan([CUSTOMER, view]).has_changes


def test_an_update_lists_its_field_changes(store: FeatureStore) -> None:
    store.apply(_base())
    plan = store.plan(_base(description="new", ttl=timedelta(days=2), tags={"t": "1"}))
    change = _change(plan, "feature_view", "orders")
    assert change.action == "update"
    assert change.base_version == 1
    assert {(f.path, f.old, f.new) for f in change.fields} == {
        ("description", "", "new"),
        ("ttl_seconds", 86400, 172800),
        ("tags.t", None, "1"),
    }
    assert not change.breaking
    assert plan.summary() == {"create": 0, "update": 1, "delete": 0, "unchanged": 3}


@pytest.mark.parametrize(
    ("changes", "breaking_paths"),
    [
        ({"schema": _fields(total="float64", amount="float64")}, ["features.total.dtype"]),
        ({"schema": _fields(total="int64")}, ["features.amount"]),  # svc uses orders:*
        ({"schema": _fields(total="int64", amount="float64", extra="bool")}, []),
        ({"online": False, "owner": "me", "ttl": None}, []),
    ],
    ids=["dtype", "removed-used", "added", "metadata"],
)
def test_breaking_view_changes(
    store: FeatureStore, changes: dict[str, Any], breaking_paths: list[str]
) -> None:
    store.apply(_base())
    plan = store.plan(_base(**changes))
    change = _change(plan, "feature_view", "orders")
    assert change.action == "update"
    assert [f.path for f in change.fields if f.breaking] == breaking_paths
    assert all(f.reason for f in change.fields if f.breaking)


def test_removing_a_feature_no_service_uses_is_not_breaking(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE, _view(), _service("orders:total")])
    plan = store.plan([CUSTOMER, SOURCE, _view(schema=_fields(total="int64"))], prune=False)
    assert plan.breaking == []
    assert plan.has_changes


def test_removing_a_feature_a_service_names_is_refused(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE, _view(), _service("orders:amount")])
    with pytest.raises(
        BreakingChangeError, match=r"removes feature 'amount'.*feature service 'svc' uses it"
    ):
        store.plan([_view(schema=_fields(total="int64"))])


def test_the_breaking_reason_names_the_service(store: FeatureStore) -> None:
    store.apply(_base())
    plan = store.plan(_base(schema=_fields(total="int64")))
    (field,) = [f for f in plan.breaking[0].fields if f.breaking]
    assert "feature service 'svc'" in field.reason


@pytest.mark.parametrize(
    ("entity", "path"),
    [
        (Entity(name="customer", join_keys=["id"]), "join_keys"),
        (Entity(name="customer", join_keys=["customer_id"], value_type="string"), "value_type"),
    ],
)
def test_entity_join_key_changes_are_breaking(
    store: FeatureStore, entity: Entity, path: str
) -> None:
    store.apply(_base())
    plan = store.plan([entity, SOURCE, _view(), _service()])
    assert [(c.name, [f.path for f in c.fields if f.breaking]) for c in plan.breaking] == [
        ("customer", [path])
    ]


def test_changing_a_views_entities_is_breaking(store: FeatureStore) -> None:
    store.apply(_base())
    other = Entity(name="store", join_keys=["store_id"])
    plan = store.plan([CUSTOMER, other, SOURCE, _view(entities=["customer", "store"]), _service()])
    assert [f.path for f in plan.breaking[0].fields if f.breaking] == ["entities"]


def test_a_breaking_apply_is_refused_and_writes_nothing(store: FeatureStore) -> None:
    store.apply(_base())
    before = _snapshot(store)
    edited = [
        *_base(schema=_fields(total="string", amount="float64")),
        Entity(name="new_entity"),
    ]
    with pytest.raises(BreakingChangeError) as info:
        store.apply(edited)
    assert "feature view 'orders'" in info.value.message
    assert "features.total.dtype" in info.value.message
    assert "--allow-breaking" in info.value.message
    assert _snapshot(store) == before  # not even the non-breaking create was written
    store.apply(edited, allow_breaking=True)
    assert store.get_feature_view("orders").feature("total").dtype == "string"
    assert store.get_entity("new_entity").name == "new_entity"


# --- prune, references ---------------------------------------------------------------------------


def test_prune_deletes_objects_missing_from_the_definitions(store: FeatureStore) -> None:
    store.apply([*_base(), Entity(name="unused")])
    additive = store.plan([CUSTOMER], prune=False)
    assert not additive.has_changes
    pruned = store.plan([*_base()], prune=True)
    assert [(c.kind, c.name, c.action) for c in pruned.pending] == [("entity", "unused", "delete")]
    store.apply(pruned)
    assert [e.name for e in store.list_entities()] == ["customer"]
    assert [v.operation for v in store.history("unused")] == ["create", "delete"]


def test_deletes_run_in_reverse_dependency_order(store: FeatureStore) -> None:
    store.apply(_base())
    plan = store.plan([], prune=True)
    assert [(c.kind, c.action) for c in plan.pending] == [
        ("feature_service", "delete"),
        ("feature_view", "delete"),
        ("data_source", "delete"),
        ("entity", "delete"),
    ]
    store.apply(plan)
    assert all(store.registry.count(k) == 0 for k in KINDS)


@pytest.mark.parametrize(
    ("keep", "deleted", "referrer"),
    [
        ([SOURCE, _view(), _service()], "entity 'customer'", "feature view 'orders'"),
        ([CUSTOMER, _view(), _service()], "data source 'orders_source'", "feature view 'orders'"),
        ([CUSTOMER, SOURCE, _service()], "feature view 'orders'", "feature service 'svc'"),
    ],
)
def test_deleting_a_referenced_object_is_refused_naming_the_referrer(
    store: FeatureStore, keep: list[Any], deleted: str, referrer: str
) -> None:
    store.apply(_base())
    before = _snapshot(store)
    with pytest.raises(ReferencedError) as info:
        store.apply(keep, prune=True)
    assert f"cannot delete {deleted}" in info.value.message
    assert referrer in info.value.message
    assert _snapshot(store) == before


def test_store_delete_refuses_while_referenced(store: FeatureStore) -> None:
    store.apply(_base())
    with pytest.raises(ReferencedError, match="feature service 'svc' references it"):
        store.delete("feature_view", "orders")
    store.delete("feature_service", "svc")
    store.delete("feature_view", "orders")
    assert store.registry.names("feature_view") == []
    with pytest.raises(InvalidError, match="unknown kind"):
        store.delete("view", "orders")


# --- validation of the desired state --------------------------------------------------------------


@pytest.mark.parametrize(
    ("objects", "error", "match"),
    [
        ([SOURCE, _view()], NotFoundError, "references entity 'customer', which does not exist"),
        (
            [CUSTOMER, SOURCE, _view(entities=["custmer"])],
            NotFoundError,
            "did you mean 'customer'",
        ),
        ([CUSTOMER, _view()], NotFoundError, "data source 'orders_source', which does not exist"),
        ([CUSTOMER, SOURCE, _service()], NotFoundError, "feature view 'orders', which does not"),
        (
            [CUSTOMER, SOURCE, _view(), _service("orders:totl")],
            NotFoundError,
            "no feature 'totl'; did you mean 'total'",
        ),
        (
            [CUSTOMER, SOURCE, _view(schema=_fields(customer_id="int64", x="int64"))],
            InvalidError,
            "'customer_id' is a join key of its entities and cannot also be a feature",
        ),
        (
            [CUSTOMER, SOURCE, _view(schema=_fields(event_timestamp="timestamp"))],
            InvalidError,
            "timestamp column",
        ),
        (
            [
                CUSTOMER,
                Entity(name="buyer", join_keys=["customer_id"]),
                SOURCE,
                _view(entities=["customer", "buyer"]),
            ],
            InvalidError,
            "share a join key",
        ),
    ],
)
def test_an_inconsistent_state_is_refused(
    store: FeatureStore, objects: list[Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        store.plan(objects)
    with pytest.raises(error, match=match):
        store.apply(objects)
    assert _snapshot(store)["history"] == {}


def test_references_may_point_at_objects_already_registered(store: FeatureStore) -> None:
    store.apply([CUSTOMER, SOURCE])
    store.apply([_view()])  # additive: the entity and source come from the registry
    assert store.get_feature_view("orders") == _view()


@pytest.mark.parametrize("bad", ["features.py", {"name": "customer"}, None, 42])
def test_applying_something_that_is_not_a_definition_is_invalid(
    store: FeatureStore, bad: Any
) -> None:
    # Regression: these raised AttributeError ('str' object has no attribute 'kind').
    with pytest.raises(InvalidError, match="pass Entity, FileSource"):
        store.plan([CUSTOMER, bad])


# --- compare-and-swap and atomicity ---------------------------------------------------------------


def test_applying_a_stale_plan_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    with _store(tmp_path) as alice, _store(tmp_path) as bob:
        alice.apply(_base())
        plan = alice.plan([*_base(description="alice"), Entity(name="other")])
        bob.apply(_base(description="bob"))
        before = _snapshot(alice)
        with pytest.raises(ConcurrentChangeError, match="feature view 'orders' changed"):
            alice.apply(plan)
        assert _snapshot(alice) == before
        assert alice.get_feature_view("orders").description == "bob"
        assert alice.registry.find("entity", "other") is None


def test_a_stale_create_is_refused(tmp_path: Path) -> None:
    with _store(tmp_path) as alice, _store(tmp_path) as bob:
        plan = alice.plan([CUSTOMER])
        bob.apply([Entity(name="customer", description="bob was first")])
        with pytest.raises(ConcurrentChangeError, match="run plan again"):
            alice.apply(plan)
        assert alice.get_entity("customer").description == "bob was first"


def test_a_concurrent_delete_of_a_referenced_object_is_caught(tmp_path: Path) -> None:
    with _store(tmp_path) as alice, _store(tmp_path) as bob:
        alice.apply([CUSTOMER, SOURCE, Entity(name="spare")])
        plan = alice.plan([Entity(name="spare"), SOURCE, _view(entities=["spare"])])
        bob.apply([CUSTOMER, SOURCE], prune=True)  # deletes 'spare'
        with pytest.raises((NotFoundError, ConcurrentChangeError)):
            alice.apply(plan)
        assert alice.registry.find("feature_view", "orders") is None


def test_a_concurrent_use_of_a_removed_feature_is_caught(tmp_path: Path) -> None:
    # Regression: only object-level references were re-checked inside the transaction, so a
    # service created meanwhile could be left pointing at a feature the plan removed, and
    # every later plan of the project then failed.
    with _store(tmp_path) as alice, _store(tmp_path) as bob:
        alice.apply([CUSTOMER, SOURCE, _view()])
        plan = alice.plan([_view(schema=_fields(total="int64"))])
        assert not plan.breaking  # no service used 'amount' when the plan was made
        bob.apply([_service("orders:amount")])
        before = _snapshot(alice)
        with pytest.raises(ConcurrentChangeError, match=r"no feature 'amount'.*run plan again"):
            alice.apply(plan)
        assert _snapshot(alice) == before
        assert alice.plan([CUSTOMER]).has_changes is False  # the registry is still consistent


def test_a_plan_applies_only_to_its_own_project(tmp_path: Path) -> None:
    with _store(tmp_path, "shop") as shop, _store(tmp_path, "ads") as ads:
        plan = shop.plan([CUSTOMER])
        # Regression: a plan made for one project was written into another.
        with pytest.raises(InvalidError, match="made for project 'shop', not 'ads'"):
            ads.apply(plan)
        assert ads.list_entities() == []
        shop.apply(plan)
        assert shop.get_entity("customer") == CUSTOMER


def test_plan_to_dict_is_json(store: FeatureStore) -> None:
    store.apply(_base())
    data = store.plan(_base(schema=_fields(total="float64", amount="float64"))).to_dict()
    text = json.dumps(data)
    assert json.loads(text)["summary"] == {"create": 0, "update": 1, "delete": 0, "unchanged": 3}
    assert data["breaking"] == 1
    view = next(c for c in data["changes"] if c["name"] == "orders")
    assert view["changes"] == [
        {
            "path": "features.total.dtype",
            "old": "int64",
            "new": "float64",
            "breaking": True,
            "reason": "changes a feature's dtype",
        }
    ]


def test_definition_set_rejects_different_objects_with_one_name() -> None:
    defs = DefinitionSet.of([CUSTOMER, CUSTOMER])
    assert len(defs) == 1
    with pytest.raises(InvalidError, match="duplicate entity name 'customer'"):
        defs.add(Entity(name="customer", description="other"))


# --- a model-based property test ------------------------------------------------------------------

_ENTITIES = {"e1": "k1", "e2": "k2"}
_DTYPES = ["int64", "float64", "string", "bool", "list<int64>"]


@st.composite
def _states(draw: st.DrawFn) -> list[Any]:
    """A random, consistent set of definitions over a small universe of names."""
    objects: list[Any] = []
    entities = draw(st.lists(st.sampled_from(sorted(_ENTITIES)), unique=True))
    for name in entities:
        desc = draw(st.sampled_from(["", "x"]))
        objects.append(Entity(name=name, join_keys=[_ENTITIES[name]], description=desc))
    sources = draw(st.lists(st.sampled_from(["s1", "s2"]), unique=True))
    for name in sources:
        objects.append(FileSource(name=name, path=draw(st.sampled_from(["a.parquet", "b.csv"]))))
    views: dict[str, list[str]] = {}
    if entities and sources:
        for name in draw(st.lists(st.sampled_from(["v1", "v2", "v3"]), unique=True)):
            features = draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, unique=True))
            views[name] = features
            objects.append(
                FeatureView(
                    name=name,
                    entities=draw(st.lists(st.sampled_from(entities), min_size=1, unique=True)),
                    schema=[Field(name=f, dtype=draw(st.sampled_from(_DTYPES))) for f in features],
                    source=draw(st.sampled_from(sources)),
                    ttl=draw(st.sampled_from([None, 60, 3600])),
                )
            )
    if views:
        refs = [f"{v}:*" for v in views] + [f"{v}:{f}" for v, fs in views.items() for f in fs]
        for name in draw(st.lists(st.sampled_from(["svc1", "svc2"]), unique=True)):
            objects.append(
                FeatureService(
                    name=name,
                    features=draw(st.lists(st.sampled_from(refs), min_size=1, unique=True)),
                )
            )
    return objects


_project_ids = itertools.count()


@pytest.fixture(scope="module")
def shared_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model_based")


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(_states(), min_size=1, max_size=5))
def test_apply_sequences_match_a_model(shared_registry: Path, states: list[list[Any]]) -> None:
    """After each pruning apply, the registry equals the state; history follows the model."""
    with _store(shared_registry, project=f"p{next(_project_ids)}") as store:
        model: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
        current: dict[tuple[str, str], dict[str, Any]] = {}
        for state in states:
            desired = {(o.kind, o.name): o.to_spec() for o in state}
            plan = store.plan(state, prune=True)
            expected_actions = {}
            for key in set(desired) | set(current):
                old, new = current.get(key), desired.get(key)
                if old is None:
                    expected_actions[key] = "create"
                elif new is None:
                    expected_actions[key] = "delete"
                else:
                    expected_actions[key] = "unchanged" if old == new else "update"
            assert {(c.kind, c.name): c.action for c in plan.changes} == expected_actions
            store.apply(plan, allow_breaking=True)
            for key, action in expected_actions.items():
                if action == "delete":
                    model[key].append(("delete", current[key]))
                elif action != "unchanged":
                    model.setdefault(key, []).append((action, desired[key]))
            current = desired
            for kind in KINDS:
                seen = {(kind, r.name): r.spec for r in store.registry.records(kind)}
                assert seen == {k: v for k, v in current.items() if k[0] == kind}
        for (kind, name), versions in model.items():
            history = store.registry.history(kind, name)
            assert [(v.operation, v.spec) for v in history] == versions
            assert [v.version for v in history] == list(range(1, len(versions) + 1))
