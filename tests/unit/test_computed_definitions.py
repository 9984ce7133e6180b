"""Computed feature definitions: SQL transformations and on-demand views, as Python, YAML and
REST JSON, and their versions in the registry."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from _computed import computed_definitions, write_behavior
from quiver import Entity, FeatureView, Field, FileSource, InvalidError
from quiver.definitions import OnDemandFeatureView, RequestSource, object_from_spec
from quiver.features.on_demand import on_demand_feature_view, run_on_demand
from quiver.loader import load_definitions
from quiver.registry import DefinitionSet
from quiver.store import FeatureStore

PY = computed_definitions(
    """
import pandas as pd
from datetime import timedelta
from quiver import Entity, FeatureService, FeatureView, Field, FileSource
from quiver.definitions import RequestSource
from quiver.features.on_demand import OnDemandFeatureView, on_demand_feature_view
""",
    "behavior:orders",
    "# comments and formatting do not make a new version",
)

YAML = """
entities:
  - {name: customer, join_keys: [customer_id]}
data_sources:
  - {name: behavior_source, type: file, path: data/behavior.parquet}
feature_views:
  - name: behavior
    entities: [customer]
    source: behavior_source
    features:
      - {name: orders, dtype: int64}
      - name: age
        dtype: int64
        transformation: "date_diff('year', date_of_birth, event_timestamp)"
on_demand_feature_views:
  - name: scored
    sources: [behavior]
    request_sources:
      - {name: req, fields: [{name: bonus, dtype: float64}]}
    features: [{name: score, dtype: float64}]
    udf: |
      def scored(df):
          return pd.DataFrame({"score": df["orders"] * 2 + df["bonus"]})
  - name: ratio
    sources: [behavior]
    features:
      - {name: orders_per_year, dtype: float64, transformation: "orders / NULLIF(age, 0)"}
feature_services:
  - {name: svc, features: ["behavior:orders", "scored:score", "ratio:*"]}
"""


def _defs(tmp_path: Path, name: str, text: str) -> DefinitionSet:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_definitions(path)


def test_yaml_and_python_definitions_of_computed_features_are_equal(tmp_path: Path) -> None:
    python = _defs(tmp_path, "defs.py", PY)
    from_yaml = _defs(tmp_path, "defs.yaml", YAML)
    assert python == from_yaml
    for kind in ("feature_view", "on_demand_feature_view", "feature_service"):
        for name, obj in python.by_kind(kind).items():
            twin = from_yaml.by_kind(kind)[name]
            assert twin.to_spec() == obj.to_spec()
            assert twin.spec_hash() == obj.spec_hash()


def test_the_spec_holds_the_function_source_and_its_hash() -> None:
    @on_demand_feature_view(sources=["behavior"], schema=[Field(name="x", dtype="int64")])
    def doubled(df: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame({"x": df["orders"] * 2})

    spec = doubled.to_spec()
    assert spec["udf_name"] == "doubled"
    assert spec["udf"].startswith("def doubled(df: pd.DataFrame) -> pd.DataFrame:")
    assert "@on_demand_feature_view" not in spec["udf"]
    import hashlib

    assert spec["udf_hash"] == hashlib.sha256(spec["udf"].encode()).hexdigest()
    rebuilt = object_from_spec("on_demand_feature_view", spec)
    assert rebuilt == doubled
    out = run_on_demand(rebuilt, pa.table({"orders": [1, None, 3]}))
    assert out.column("x").to_pylist() == [2, None, 6]


def test_a_plain_field_spec_is_unchanged_by_the_transformation_key() -> None:
    assert Field(name="a", dtype="int64").model_dump(mode="json") == {
        "name": "a",
        "dtype": "int64",
        "description": "",
        "tags": {},
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"udf": "def f(df):\n    return helper(df)\n"},
            "uses 'helper', which is not defined when it is rebuilt",
        ),
        ({"udf": "def f(df)\n    return df\n"}, "syntax error"),
        ({"udf": "x = 1\ndef f(df):\n    return df\n"}, "one function"),
        ({"udf": ""}, "needs a function"),
        (
            {"mode": "sql", "udf": "def f(df):\n    return df\n"},
            "mode 'sql' takes no 'udf'",
        ),
    ],
)
def test_bad_on_demand_views_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidError, match=message):
        OnDemandFeatureView(
            name="v", sources=["behavior"], schema=[Field(name="x", dtype="int64")], **kwargs
        )


def test_an_on_demand_sql_expression_goes_through_the_sandbox() -> None:
    with pytest.raises(InvalidError, match="function 'read_csv' is not allowed"):
        OnDemandFeatureView(
            name="v",
            sources=["behavior"],
            schema=[Field(name="x", dtype="int64", transformation="read_csv('/etc/passwd')")],
        )


def _repo(tmp_path: Path) -> FeatureStore:
    (tmp_path / "data").mkdir()
    write_behavior(tmp_path / "data")
    return FeatureStore(repo_path=tmp_path)


def test_a_changed_function_is_a_new_version(tmp_path: Path) -> None:
    store = _repo(tmp_path)
    defs = _defs(tmp_path, "defs.py", PY)
    store.apply(defs)
    assert [v.version for v in store.history("scored")] == [1]
    changed = PY.replace('df["orders"] * 2', 'df["orders"] * 3')
    plan = store.plan(_defs(tmp_path, "defs2.py", changed))
    update = [c for c in plan.pending if c.name == "scored"]
    assert update and update[0].action == "update"
    assert {f.path for f in update[0].fields} == {"udf", "udf_hash"}
    store.apply(plan)
    history = store.history("scored")
    assert [v.version for v in history] == [1, 2]
    assert history[0].spec["udf_hash"] != history[1].spec["udf_hash"]
    assert "* 3" in history[1].spec["udf"]
    # the same function, reformatted, is not a change
    same = changed.replace("# comments and formatting do not make a new version", "")
    assert not store.plan(_defs(tmp_path, "defs3.py", same)).has_changes
    store.close()


def test_apply_refuses_a_transformation_of_a_missing_column(tmp_path: Path) -> None:
    store = _repo(tmp_path)
    customer = Entity(name="customer", join_keys=["customer_id"])
    view = FeatureView(
        name="behavior",
        entities=[customer],
        source=FileSource(name="behavior_source", path="data/behavior.parquet"),
        schema=[Field(name="x", dtype="int64", transformation="orders + date_of_brith")],
    )
    with pytest.raises(
        InvalidError, match=r"reads column 'date_of_brith'.*did you mean 'date_of_birth'"
    ):
        store.plan([customer, view])
    store.close()


def test_apply_checks_the_inputs_of_on_demand_views(tmp_path: Path) -> None:
    store = _repo(tmp_path)
    defs = _defs(tmp_path, "defs.py", PY.replace("orders / NULLIF(age, 0)", "orderz / 2"))
    with pytest.raises(InvalidError, match=r"reads 'orderz'.*did you mean 'orders'"):
        store.plan(defs)
    missing = OnDemandFeatureView(
        name="m", sources=["nope"], schema=[Field(name="x", dtype="int64", transformation="1")]
    )
    from quiver.errors import NotFoundError

    with pytest.raises(NotFoundError, match="reads feature view 'nope'"):
        store.plan([missing])
    store.close()


def test_deleting_a_view_an_on_demand_view_reads_is_refused(tmp_path: Path) -> None:
    store = _repo(tmp_path)
    store.apply(_defs(tmp_path, "defs.py", PY))
    from quiver.errors import ReferencedError

    with pytest.raises(ReferencedError, match=r"on-demand feature view 'ratio'|feature service"):
        store.delete("feature_view", "behavior")
    with pytest.raises(ReferencedError, match="feature service 'svc'"):
        store.delete("on_demand_feature_view", "ratio")
    store.close()


def test_request_source_objects_move_to_request_sources() -> None:
    view = OnDemandFeatureView(
        name="v",
        sources=[RequestSource(name="r", schema=[Field(name="amount", dtype="float64")]), "b"],
        schema=[Field(name="x", dtype="float64", transformation="amount * 2")],
    )
    assert view.sources == ["b"]
    assert view.mode == "sql"
    assert [f.name for f in view.request_fields] == ["amount"]


def test_rules_on_fields_computed_or_sent_at_read_time_are_refused() -> None:
    """Validation rules apply at materialization and push; on an on-demand output or a request
    field they would never be checked, so they are refused by name, not accepted silently."""
    ruled = Field(name="x", dtype="int64", validation_rules={"min_value": 0})
    with pytest.raises(InvalidError, match="field 'x' declares validation_rules"):
        OnDemandFeatureView(
            name="v", sources=["behavior"], schema=[ruled], udf="def f(df):\n    return df\n"
        )
    with pytest.raises(InvalidError, match="field 'x' declares allowed_values"):
        RequestSource(name="r", schema=[Field(name="x", dtype="int64", allowed_values=[1, 2])])
    with pytest.raises(InvalidError, match="default_value"):
        RequestSource(name="r", schema=[Field(name="x", dtype="int64", default_value=1)])
