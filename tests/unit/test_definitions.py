"""Definition models: validation on construction, canonical specs, feature references."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from quiver.definitions import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    IcebergSource,
    object_from_spec,
    parse_feature_ref,
    validate_name,
)
from quiver.errors import InvalidError, NotFoundError, QuiverError
from quiver.types import SCALAR_DTYPES

ALL_DTYPES = [*SCALAR_DTYPES, *(f"list<{d}>" for d in SCALAR_DTYPES)]

# Names that are not plain identifiers: SQL metacharacters, whitespace, unicode, bad lengths.
BAD_NAMES = [
    "",
    " ",
    "a b",
    "a;b",
    "a'b",
    'a"b',
    "a`b",
    "a-b",
    "a.b",
    "a/b",
    "a\\b",
    "a--",
    "a/*b*/",
    "x); DROP TABLE objects; --",
    "1abc",
    "café",
    "a\tb",
    "abc\n",  # regression: NAME_RE ended in '$', which also matches before a final newline
    "\nabc",
    "a\x00b",
    "a" * 64,
]


def _view(**overrides: Any) -> FeatureView:
    args: dict[str, Any] = {
        "name": "orders",
        "entities": ["customer"],
        "schema": [Field(name="total", dtype="int64")],
        "source": "orders_source",
    }
    args.update(overrides)
    return FeatureView(**args)


def _plain_identifier(value: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value) is not None and len(value) <= 63


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "_", "_private", "customer_id", "A1", "x" * 63])
def test_plain_identifiers_are_accepted(name: str) -> None:
    assert validate_name(name) == name
    assert Entity(name=name).name == name


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_that_are_not_plain_identifiers_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidError, match="not a plain identifier"):
        validate_name(bad, "entity name")


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=70),
        st.text(alphabet="abcXYZ_019 ;'\"\n\t-.", max_size=70),
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,70}", fullmatch=True),
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}\n", fullmatch=True),
    )
)
def test_validate_name_agrees_with_a_brute_force_oracle(value: str) -> None:
    try:
        validate_name(value)
        accepted = True
    except InvalidError:
        accepted = False
    assert accepted == _plain_identifier(value)


_NAME_SLOTS: dict[str, Callable[[str], object]] = {
    "entity name": lambda n: Entity(name=n),
    "join key": lambda n: Entity(name="e", join_keys=[n]),
    "field name": lambda n: Field(name=n, dtype="int64"),
    "source name": lambda n: FileSource(name=n, path="x.parquet"),
    "timestamp field": lambda n: FileSource(name="s", path="x.parquet", timestamp_field=n),
    "created field": lambda n: FileSource(name="s", path="x", created_timestamp_field=n),
    "mapping source column": lambda n: FileSource(name="s", path="x", field_mapping={n: "a"}),
    "mapping target": lambda n: FileSource(name="s", path="x", field_mapping={"a": n}),
    "iceberg table": lambda n: IcebergSource(name="s", table=f"ns.{n}"),
    "iceberg namespace": lambda n: IcebergSource(name="s", table=f"{n}.t"),
    "iceberg catalog": lambda n: IcebergSource(name="s", table="ns.t", catalog=n),
    "view name": lambda n: _view(name=n),
    "view entity": lambda n: _view(entities=[n]),
    "view source": lambda n: _view(source=n),
    "view feature": lambda n: _view(schema=[{"name": n, "dtype": "int64"}]),
    "service name": lambda n: FeatureService(name=n, features=["v:a"]),
    "service view ref": lambda n: FeatureService(name="s", features=[f"{n}:a"]),
    "service feature ref": lambda n: FeatureService(name="s", features=[f"v:{n}"]),
}


@pytest.mark.parametrize("slot", sorted(_NAME_SLOTS))
@pytest.mark.parametrize("bad", ["a b", "a;b", "a'b", 'a"b', "abc\n", "1a", ""])
def test_every_name_slot_rejects_non_identifiers(slot: str, bad: str) -> None:
    if slot.endswith("ref") and bad in ("", "abc\n"):
        pytest.skip("references are trimmed, and empty parts are tested with parse_feature_ref")
    with pytest.raises(InvalidError):
        _NAME_SLOTS[slot](bad)


# --- errors --------------------------------------------------------------------------------------


def test_validation_errors_are_quiver_errors_not_pydantic_ones() -> None:
    with pytest.raises(InvalidError) as info:
        Entity(name="customer", value_type="money")
    assert not isinstance(info.value, ValidationError)
    assert isinstance(info.value, QuiverError)
    assert info.value.message.startswith("entity 'customer' is invalid")
    assert "money" in info.value.message
    assert info.value.details and info.value.details[0]["loc"] == ("value_type",)


def test_from_spec_errors_name_the_object_and_every_problem() -> None:
    with pytest.raises(InvalidError) as info:
        FeatureView.from_spec({"name": "v", "entities": [], "features": [], "onlin": True})
    message = info.value.message
    assert message.startswith("feature view 'v' is invalid")
    assert "source: Field required" in message
    assert "onlin: Extra inputs are not permitted" in message


@pytest.mark.parametrize(
    ("build", "key"),
    [
        (lambda: Entity(name="e", joinkeys=["a"]), "joinkeys"),
        (lambda: Field(name="a", dtype="int64", dtpye="x"), "dtpye"),
        (lambda: FileSource(name="s", path="x", timestamp="ts"), "timestamp"),
        (lambda: _view(ttl_second=5), "ttl_second"),
        (lambda: FeatureService(name="s", features=["v:a"], feature=["v:b"]), "feature"),
    ],
)
def test_a_typo_in_a_key_is_an_error_naming_it(build: Callable[[], object], key: str) -> None:
    with pytest.raises(InvalidError, match=f"{key}: Extra inputs are not permitted"):
        build()


def test_definitions_are_frozen() -> None:
    entity = Entity(name="customer")
    with pytest.raises(ValidationError):
        entity.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Entity(name="e", join_keys=5), "join_keys: Input should be a valid list"),
        (lambda: _view(entities=5), "entities: Input should be a valid list"),
        (lambda: FileSource(name="s", path="x", field_mapping=["a"]), "field_mapping"),
        (lambda: FileSource(name="s", path="x", field_mapping="a"), "field_mapping"),
        (lambda: _view(ttl=float("inf")), "not a usable number of seconds"),
        (lambda: _view(ttl=10**20), "not a usable number of seconds"),
        (lambda: _view(ttl=timedelta.max), "too large"),
        (lambda: _view(source={"type": "kafka", "name": "k"}), "unknown data source type"),
        (
            lambda: object_from_spec("data_source", {"type": "kafka", "name": "k"}),
            "unknown type 'kafka'; use 'file' or 'iceberg'",
        ),
    ],
)
def test_values_of_the_wrong_type_are_invalid_errors(
    build: Callable[[], object], match: str
) -> None:
    # Regression: these raised TypeError, AttributeError or OverflowError from inside pydantic.
    with pytest.raises(InvalidError, match=match) as info:
        build()
    assert "tagged-union" not in info.value.message


# --- entities ------------------------------------------------------------------------------------


def test_entity_defaults() -> None:
    entity = Entity(name="customer")
    assert entity.join_keys == ["customer"]
    assert entity.value_type == "int64"
    assert (entity.description, entity.tags, entity.owner) == ("", {}, "")


def test_entity_accepts_a_single_join_key_string_and_dtype_aliases() -> None:
    entity = Entity(name="merchant", join_keys="merchant_id", value_type="str")
    assert entity.join_keys == ["merchant_id"]
    assert entity.value_type == "string"
    assert entity == Entity(name="merchant", join_keys=["merchant_id"], value_type="string")


def test_entity_rejects_a_repeated_join_key() -> None:
    with pytest.raises(InvalidError, match="lists a join key twice"):
        Entity(name="e", join_keys=["a", "a"])


@pytest.mark.parametrize("dtype", ["float32", "float64", "list<int64>"])
def test_entity_join_keys_cannot_be_floats_or_lists(dtype: str) -> None:
    with pytest.raises(InvalidError, match="cannot be a join key"):
        Entity(name="e", value_type=dtype)


def test_entity_rejects_non_string_tags() -> None:
    with pytest.raises(InvalidError, match="tags"):
        Entity(name="e", tags={"a": 1})


# --- fields --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_field_accepts_every_supported_dtype(dtype: str) -> None:
    assert Field(name="f", dtype=dtype).dtype == dtype


def test_field_with_an_unknown_dtype_names_the_field_and_the_dtype() -> None:
    with pytest.raises(InvalidError) as info:
        Field(name="amount", dtype="money")
    assert "field 'amount'" in info.value.message
    assert "unknown dtype 'money'" in info.value.message


def test_an_unknown_dtype_inside_a_view_spec_is_rejected() -> None:
    with pytest.raises(InvalidError, match="unknown dtype 'decimal'"):
        FeatureView.from_spec(
            {
                "name": "v",
                "entities": ["e"],
                "features": [{"name": "a", "dtype": "decimal"}],
                "source": "s",
            }
        )


# --- sources -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("data/x.parquet", "parquet"),
        ("data/x.CSV", "csv"),
        ("data/x.csv.gz", "csv"),
        ("data/dir/", "parquet"),
        ("s3://bucket/prefix/*.csv", "csv"),
        ("s3://bucket/table/", "parquet"),
    ],
)
def test_file_source_infers_the_format_from_the_path(path: str, fmt: str) -> None:
    assert FileSource(name="s", path=path).format == fmt


def test_file_source_explicit_format_wins() -> None:
    assert FileSource(name="s", path="data/x.txt", format="csv").format == "csv"


def test_file_source_defaults() -> None:
    source = FileSource(name="s", path="x.parquet")
    assert source.type == "file"
    assert source.timestamp_field == "event_timestamp"
    assert source.created_timestamp_field is None
    assert source.field_mapping == {}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"path": "x.orc", "format": "orc"}, "format"),
        ({"path": "  "}, "path must not be empty"),
        ({"path": "data/a\x00b.parquet"}, "contains a NUL character"),
        ({"path": "data/" + "n" * 256}, "name longer than 255 bytes"),
        ({}, "path: Field required"),
    ],
)
def test_file_source_rejects_bad_input(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidError, match=match):
        FileSource(name="s", **kwargs)


def test_field_mapping_maps_source_columns_to_feature_names() -> None:
    source = FileSource(name="s", path="x", field_mapping={"raw_rating": "rating"})
    assert source.column_for("rating") == "raw_rating"
    assert source.column_for("other") == "other"


def test_iceberg_source() -> None:
    source = IcebergSource(name="pay", table="finance.payments")
    assert (source.type, source.catalog, source.table) == ("iceberg", "default", "finance.payments")
    assert IcebergSource(name="p", table="a.b.c", catalog="lake").catalog == "lake"
    with pytest.raises(InvalidError, match=r"namespace\.table"):
        IcebergSource(name="pay", table="payments")


def test_object_from_spec_picks_the_source_type() -> None:
    file_spec = FileSource(name="s", path="x.csv").to_spec()
    ice_spec = IcebergSource(name="i", table="a.b").to_spec()
    assert isinstance(object_from_spec("data_source", file_spec), FileSource)
    assert isinstance(object_from_spec("data_source", ice_spec), IcebergSource)


# --- feature views -------------------------------------------------------------------------------


def test_schema_and_features_are_the_same_argument() -> None:
    fields = [Field(name="a", dtype="int64")]
    assert _view(schema=fields) == FeatureView(
        name="orders", entities=["customer"], features=fields, source="orders_source"
    )


def test_view_accepts_entity_objects_and_inline_sources() -> None:
    customer = Entity(name="customer", join_keys=["customer_id"])
    source = FileSource(name="orders_source", path="data/orders.parquet")
    view = _view(entities=customer, source=source)
    assert view.entities == ["customer"]
    assert view.source == source
    assert view.source_name == "orders_source"
    assert view.normalized().source == "orders_source"
    assert view.normalized() == _view()


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [
        (timedelta(days=2), timedelta(days=2)),
        (3600, timedelta(hours=1)),
        (1.5, timedelta(seconds=1.5)),
        ("PT1H", timedelta(hours=1)),
        (None, None),
        (0, None),
        (timedelta(0), None),
    ],
)
def test_ttl_forms(ttl: Any, expected: timedelta | None) -> None:
    assert _view(ttl=ttl).ttl == expected


def test_ttl_seconds_is_the_json_alias_of_ttl() -> None:
    assert _view(ttl_seconds=60).ttl == timedelta(seconds=60)
    assert _view(ttl_seconds=60) == _view(ttl=timedelta(minutes=1))


@pytest.mark.parametrize("ttl", [-1, -0.5, timedelta(days=-1), timedelta(microseconds=-1), "-PT1S"])
def test_negative_ttl_is_rejected(ttl: Any) -> None:
    # Regression: a negative timedelta was silently turned into "no TTL".
    with pytest.raises(InvalidError, match="ttl must not be negative"):
        _view(ttl=ttl)


@pytest.mark.parametrize("ttl", [True, False])
def test_bool_ttl_is_rejected(ttl: bool) -> None:
    # Regression: ttl=True meant one second and ttl=False meant no TTL.
    with pytest.raises(InvalidError, match="not a bool"):
        _view(ttl=ttl)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"entities": []}, "needs at least one entity"),
        ({"entities": ["customer", "customer"]}, "lists an entity twice"),
        (
            {"schema": [Field(name="a", dtype="int64"), Field(name="a", dtype="string")]},
            "declares feature 'a' twice",
        ),
        ({"online": "maybe"}, "online"),
    ],
)
def test_view_rejects_bad_input(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidError, match=match):
        _view(**overrides)


def test_view_feature_lookup_suggests_the_nearest_name() -> None:
    view = _view(schema=[Field(name="total_orders", dtype="int64")])
    assert view.feature("total_orders").dtype == "int64"
    with pytest.raises(NotFoundError, match="did you mean 'total_orders'"):
        view.feature("total_order")


def test_view_selection_gives_feature_references() -> None:
    view = _view(schema=[Field(name="a", dtype="int64"), Field(name="b", dtype="bool")])
    assert view[["a", "b"]] == ["orders:a", "orders:b"]
    assert view["a"] == ["orders:a"]
    with pytest.raises(NotFoundError):
        view[["c"]]


# --- feature references and services --------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("view:feature", ("view", "feature")),
        ("view:*", ("view", "*")),
        ("view", ("view", "*")),
        ("  view:feature ", ("view", "feature")),
    ],
)
def test_parse_feature_ref(ref: str, parsed: tuple[str, str]) -> None:
    assert parse_feature_ref(ref) == parsed


@pytest.mark.parametrize(
    "ref", ["", "   ", ":a", "v:", "v:a:b", "v: a", "v;x:a", "v:a'--", "*:a", None, 3]
)
def test_malformed_feature_refs_are_rejected(ref: Any) -> None:
    with pytest.raises(InvalidError, match="must be 'view:feature' or 'view:\\*'"):
        parse_feature_ref(ref)


def test_service_normalizes_views_selections_and_strings() -> None:
    view = _view(schema=[Field(name="a", dtype="int64"), Field(name="b", dtype="int64")])
    other = _view(name="other")
    service = FeatureService(name="svc", features=[view[["a"]], other, "third", "fourth:x"])
    assert service.features == ["orders:a", "other:*", "third:*", "fourth:x"]
    assert service.view_names == ["orders", "other", "third", "fourth"]
    assert FeatureService(name="svc", features=other).features == ["other:*"]


@pytest.mark.parametrize(
    ("features", "match"),
    [
        ([], "at least one feature reference"),
        (["v:a", "v:a"], "same feature reference twice"),
        (["v", "v:*"], "same feature reference twice"),
        (["v:a b"], "not a plain identifier"),
    ],
)
def test_service_rejects_bad_references(features: list[str], match: str) -> None:
    with pytest.raises(InvalidError, match=match):
        FeatureService(name="svc", features=features)


# --- specs ---------------------------------------------------------------------------------------


def test_view_spec_is_the_rest_json_shape() -> None:
    view = _view(ttl=timedelta(days=1), tags={"team": "a"}, owner="me", description="d")
    spec = view.to_spec()
    assert set(spec) == {
        "name",
        "entities",
        "features",
        "source",
        "ttl_seconds",
        "online",
        "description",
        "tags",
        "owner",
    }
    assert spec["ttl_seconds"] == 86400 and isinstance(spec["ttl_seconds"], int)
    assert spec["features"] == [{"name": "total", "dtype": "int64", "description": "", "tags": {}}]
    assert _view().to_spec()["ttl_seconds"] is None
    assert _view(ttl=1.5).to_spec()["ttl_seconds"] == 1.5


@pytest.mark.parametrize(
    "obj",
    [
        Entity(name="customer", join_keys=["customer_id"], tags={"a": "b"}, owner="o"),
        FileSource(name="s", path="x.csv", created_timestamp_field="c", field_mapping={"a": "b"}),
        IcebergSource(name="i", table="ns.t", catalog="lake"),
        _view(ttl=timedelta(hours=3), online=False),
        _view(source=FileSource(name="inline", path="data/x.parquet")),
        FeatureService(name="svc", features=["orders:total", "other:*"], description="d"),
    ],
    ids=lambda o: type(o).__name__,
)
def test_spec_round_trips_through_json(obj: Any) -> None:
    spec = obj.to_spec()
    back = type(obj).from_spec(json.loads(json.dumps(spec)))
    assert back == obj
    assert back.spec_hash() == obj.spec_hash()


def test_spec_hash_changes_with_content_and_ignores_key_order() -> None:
    a = Entity(name="e", tags={"x": "1", "y": "2"})
    b = Entity(name="e", tags={"y": "2", "x": "1"})
    assert a.spec_hash() == b.spec_hash()
    assert len(a.spec_hash()) == 64
    assert Entity(name="e", description="changed").spec_hash() != a.spec_hash()


_names = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
_text = st.text(max_size=20)


@st.composite
def _views(draw: st.DrawFn) -> FeatureView:
    feature_names = draw(st.lists(_names, min_size=1, max_size=6, unique=True))
    fields = [
        Field(
            name=n,
            dtype=draw(st.sampled_from(ALL_DTYPES)),
            description=draw(_text),
            tags=draw(st.dictionaries(_names, _text, max_size=2)),
        )
        for n in feature_names
    ]
    ttl = draw(
        st.one_of(
            st.none(),
            st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=365 * 200)),
            st.integers(min_value=0, max_value=10**9),
        )
    )
    return FeatureView(
        name=draw(_names),
        entities=draw(st.lists(_names, min_size=1, max_size=3, unique=True)),
        schema=fields,
        source=draw(_names),
        ttl=ttl,
        online=draw(st.booleans()),
        description=draw(_text),
        tags=draw(st.dictionaries(_names, _text, max_size=3)),
        owner=draw(_text),
    )


@settings(max_examples=100, deadline=None)
@given(_views())
def test_any_valid_view_round_trips_through_its_json_spec(view: FeatureView) -> None:
    text = json.dumps(view.to_spec())
    back = FeatureView.from_spec(json.loads(text))
    assert back == view
    assert back.to_spec() == view.to_spec()
    assert back.spec_hash() == view.spec_hash()


# --- static typing -------------------------------------------------------------------------------

_TYPED_USAGE = """
from datetime import timedelta

from quiver import Entity, FeatureService, FeatureView, Field, FileSource

customer = Entity(name="customer", join_keys=["customer_id"])
source = FileSource(name="orders", path="data/orders.parquet")
by_schema = FeatureView(
    name="orders",
    entities=[customer],
    schema=[Field(name="total", dtype="int64")],
    source=source,
    ttl=timedelta(days=1),
)
by_features = FeatureView(
    name="orders", entities=["customer"], features=[Field(name="a", dtype="int64")], source="s"
)
by_json_alias = FeatureView(
    name="v", entities="customer", features=[{"name": "a", "dtype": "int64"}], source="s",
    ttl_seconds=60,
)
service = FeatureService(name="svc", features=[by_schema, by_features[["a"]], "orders:total"])
typo = FeatureView(name="v", entities=["c"], schema=[], source="s", tll=5)
"""


@pytest.mark.slow
def test_mypy_accepts_feature_views_as_users_write_them(tmp_path: Path) -> None:
    """Regression: the pydantic mypy plugin rejected ``FeatureView(schema=[...])``."""
    pytest.importorskip("mypy")
    root = Path(__file__).resolve().parents[2]
    module = tmp_path / "user_features.py"
    module.write_text(_TYPED_USAGE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(root / "pyproject.toml"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--follow-imports=silent",
            str(module),
        ],
        env={**os.environ, "MYPYPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, proc.stdout + proc.stderr
    assert 'Unexpected keyword argument "tll" for "FeatureView"' in errors[0]


def test_a_view_may_have_no_features_yet() -> None:
    # A feature set (POST /api/v1/feature-sets) is created before its features are added.
    view = _view(schema=[])
    assert view.feature_names == []
    assert FeatureView.from_spec(view.to_spec()) == view
