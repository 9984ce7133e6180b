"""Validation rules: definitions, and the vectorised check against a brute-force Python oracle."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver import Aggregation, FeatureView, Field, ValidationRules, ViewValidation
from quiver.errors import DataValidationError, InvalidError
from quiver.quality import validation_plan, value_failures


def view(*fields: Field, policy: str = "reject", checks: list[str] | None = None) -> FeatureView:
    return FeatureView(
        name="v",
        entities=["customer"],
        source="src",
        features=list(fields),
        validation={"policy": policy, "checks": checks or []},
    )


# -- definitions ---------------------------------------------------------------------------------


def test_plain_specs_are_unchanged() -> None:
    plain = view(Field(name="a", dtype="int64"))
    spec = plain.to_spec()
    assert "validation" not in spec
    assert set(spec["features"][0]) == {"name", "dtype", "description", "tags"}


def test_rules_round_trip_through_the_spec() -> None:
    v = view(
        Field(name="a", dtype="int64", validation_rules={"min_value": 0, "max_value": 9}),
        Field(
            name="s",
            dtype="string",
            validation_rules=ValidationRules(not_null=True, regex="[a-z]+"),
            allowed_values=["ab", "cd"],
            default_value="ab",
        ),
        policy="drop",
        checks=["a < 5 OR s = 'cd'"],
    )
    spec = v.to_spec()
    assert spec["features"][0]["validation_rules"] == {"min_value": 0, "max_value": 9}
    assert spec["features"][1]["validation_rules"] == {"not_null": True, "regex": "[a-z]+"}
    assert spec["validation"] == {"policy": "drop", "checks": ["a < 5 OR s = 'cd'"]}
    assert FeatureView.from_spec(spec) == v
    assert FeatureView.from_spec(spec).spec_hash() == v.spec_hash()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "string", "validation_rules": {"min_value": 0}}, "numeric dtype"),
        ({"dtype": "int64", "validation_rules": {"regex": "a"}}, "regex needs a string"),
        ({"dtype": "int64", "validation_rules": {"min_value": 5, "max_value": 1}}, "greater"),
        ({"dtype": "float64", "validation_rules": {"min_value": float("nan")}}, "finite"),
        ({"dtype": "int64", "validation_rules": {"min_value": True}}, "not a bool"),
        ({"dtype": "string", "validation_rules": {"regex": "("}}, "not a valid pattern"),
        ({"dtype": "int64", "validation_rules": {"max_valu": 1}}, "max_valu"),
        ({"dtype": "int32", "validation_rules": {"max_value": 2**31}}, "outside the range"),
        ({"dtype": "int64", "allowed_values": []}, "empty"),
        ({"dtype": "int64", "allowed_values": ["x"]}, "not a int64"),
        ({"dtype": "bool", "allowed_values": [1]}, "not a bool"),
        ({"dtype": "list<int64>", "allowed_values": [1]}, "number, string or bool"),
        ({"dtype": "int64", "default_value": "zero"}, "default_value 'zero' is not a int64"),
        ({"dtype": "int64", "default_value": 1.5}, "not a int64"),
        (
            {"dtype": "int64", "default_value": -1, "validation_rules": {"min_value": 0}},
            "fails its own rule min_value",
        ),
        (
            {"dtype": "string", "default_value": "zz", "allowed_values": ["a"]},
            "fails its own rule allowed_values",
        ),
    ],
)
def test_bad_rules_are_refused_at_definition(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidError, match=re.escape(message)):
        Field(name="f", **kwargs)


def test_view_checks_are_sandboxed_and_read_only_features() -> None:
    with pytest.raises(InvalidError, match="read_csv"):
        view(Field(name="a", dtype="int64"), checks=["(SELECT 1 FROM read_csv('x')) = 1"])
    with pytest.raises(InvalidError, match="getenv"):
        view(Field(name="a", dtype="int64"), checks=["getenv('HOME') = 'x'"])
    with pytest.raises(InvalidError, match="reads 'b', which is not a feature"):
        view(Field(name="a", dtype="int64"), checks=["b > 1"])
    with pytest.raises(InvalidError, match="policy"):
        view(Field(name="a", dtype="int64"), policy="ignore")
    ok = view(Field(name="a", dtype="int64"), checks=["a < 10", "event_timestamp IS NOT NULL"])
    assert ok.validation == ViewValidation(checks=["a < 10", "event_timestamp IS NOT NULL"])


def test_rules_on_views_with_aggregations_are_refused() -> None:
    with pytest.raises(InvalidError, match="not supported on views with aggregations"):
        FeatureView(
            name="agg",
            entities=["customer"],
            source="src",
            features=[Field(name="amount", dtype="float64", validation_rules={"min_value": 0})],
            aggregations=[Aggregation(function="count", time_window=timedelta(days=1))],
        )


def test_empty_rules_are_no_rules() -> None:
    f = Field(name="a", dtype="int64", validation_rules={"not_null": False})
    assert f.validation_rules is None
    assert validation_plan(view(f)) is None


def test_reject_names_feature_rule_and_sample_keys() -> None:
    v = view(Field(name="orders", dtype="int64", validation_rules={"min_value": 0}))
    plan = validation_plan(v)
    assert plan is not None
    rows = pa.table({"customer_id": list(range(10)), "orders": [-1] * 7 + [1, 2, 3]})
    with pytest.raises(DataValidationError) as info:
        plan.evaluate(rows, ["customer_id"])
    err = info.value
    assert "feature 'orders' fails min_value for 7 row(s)" in err.message
    assert "customer_id=0" in err.message
    assert err.details["failures"] == {"orders:min_value": 7}
    assert err.details["samples"]["orders:min_value"] == [{"customer_id": i} for i in range(5)]
    assert err.status_code == 422 and err.error_type == "validation_failed"


# -- the property: the DuckDB check equals a Python oracle ---------------------------------------

INTS = st.one_of(st.none(), st.integers(-50, 50))
FLOATS = st.one_of(st.none(), st.floats(-60, 60), st.sampled_from([math.nan, math.inf, -math.inf]))
WORDS = st.one_of(st.none(), st.sampled_from(["", "a", "ab", "abc", "b1", "zz", "A", "a'b"]))
PATTERNS = ["[a-z]+", "a.*", "(ab|zz)", "[a-z][0-9]?", "a'b"]
CHECKS = {
    # check -> Python oracle (None: the SQL expression is NULL, which passes)
    "i <= 20 OR s = 'zz'": lambda r: _or(_cmp(r["i"], lambda v: v <= 20), _eq(r["s"], "zz")),
    "x > i": lambda r: (
        None
        if r["x"] is None or r["i"] is None
        else (not math.isnan(r["x"]) and r["x"] > r["i"]) or (math.isnan(r["x"]))
    ),
}


def _cmp(value: Any, test: Any) -> bool | None:
    return None if value is None else bool(test(value))


def _eq(value: Any, other: Any) -> bool | None:
    return None if value is None else value == other


def _or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    if a is None or b is None:
        return None
    return False


@st.composite
def rules_and_rows(draw: st.DrawFn) -> tuple[FeatureView, list[dict[str, Any]]]:
    lo = draw(st.one_of(st.none(), st.integers(-40, 10)))
    hi = draw(st.one_of(st.none(), st.integers(10, 40)))
    i_rules = {"min_value": lo, "max_value": hi, "not_null": draw(st.booleans())}
    x_rules = {
        "min_value": draw(st.one_of(st.none(), st.floats(-40, 0))),
        "max_value": draw(st.one_of(st.none(), st.floats(0.5, 40))),
        "not_null": draw(st.booleans()),
    }
    s_rules = {
        "regex": draw(st.one_of(st.none(), st.sampled_from(PATTERNS))),
        "not_null": draw(st.booleans()),
    }
    i_allowed = draw(st.one_of(st.none(), st.lists(st.integers(-50, 50), min_size=1, max_size=6)))
    s_allowed = draw(st.one_of(st.none(), st.lists(WORDS.filter(bool), min_size=1, max_size=3)))
    checks = draw(st.lists(st.sampled_from(sorted(CHECKS)), unique=True, max_size=2))
    policy = draw(st.sampled_from(["reject", "drop", "warn"]))
    v = view(
        Field(name="i", dtype="int64", validation_rules=i_rules, allowed_values=i_allowed),
        Field(name="x", dtype="float64", validation_rules=x_rules),
        Field(name="s", dtype="string", validation_rules=s_rules, allowed_values=s_allowed),
        policy=policy,
        checks=checks,
    )
    rows = draw(st.lists(st.fixed_dictionaries({"i": INTS, "x": FLOATS, "s": WORDS}), max_size=40))
    return v, [{"k": n, **r} for n, r in enumerate(rows)]


def oracle(v: FeatureView, rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Brute force: rule key -> the keys of the rows that fail it."""
    failing: dict[str, list[int]] = {}
    for row in rows:
        for f in v.features:
            for rule in value_failures(f, row[f.name]):
                failing.setdefault(f"{f.name}:{rule}", []).append(row["k"])
        for text in v.validation.checks:
            if CHECKS[text](row) is False:
                failing.setdefault(f"check:{text}", []).append(row["k"])
    return failing


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rules_and_rows())
def test_check_matches_the_python_oracle(case: tuple[FeatureView, list[dict[str, Any]]]) -> None:
    v, rows = case
    plan = validation_plan(v)
    table = pa.table(
        {
            "k": pa.array([r["k"] for r in rows], pa.int64()),
            "i": pa.array([r["i"] for r in rows], pa.int64()),
            "x": pa.array([r["x"] for r in rows], pa.float64()),
            "s": pa.array([r["s"] for r in rows], pa.string()),
        }
    )
    expected = oracle(v, rows)
    bad_keys = sorted({k for keys in expected.values() for k in keys})
    if plan is None:
        assert not expected
        return
    kept, counts = plan.check(table, ["k"])
    assert counts.failures == {key: len(keys) for key, keys in expected.items()}
    assert counts.rows_checked == len(rows)
    assert counts.rows_invalid == len(bad_keys)
    for key, keys in expected.items():
        assert counts.samples[key] == [{"k": k} for k in keys[:5]]
    if v.validation.policy == "drop":
        assert kept["k"].to_pylist() == [r["k"] for r in rows if r["k"] not in bad_keys]
        assert counts.rows_dropped == len(bad_keys)
    elif v.validation.policy == "warn":
        assert kept["k"].to_pylist() == [r["k"] for r in rows]
        assert counts.rows_dropped == 0
    if v.validation.policy == "reject" and bad_keys:
        with pytest.raises(DataValidationError):
            plan.evaluate(table, ["k"])
    else:
        assert plan.evaluate(table, ["k"])[1].rows_invalid == len(bad_keys)
