"""Map, struct and json dtypes: spelling, Arrow types, physical values, pushed Python values."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver import Entity, FeatureView, Field, FileSource
from quiver.errors import InvalidError
from quiver.online._nested import nested_array
from quiver.online.encoding import (
    MAX_JSON_DEPTH,
    MAX_NESTED_BYTES,
    RowCodec,
    arrow_to_physical,
    check_nested,
    python_converter,
)
from quiver.types import (
    MAX_NESTING,
    SCALAR_DTYPES,
    arrow_type,
    contains_timestamp,
    dtype_from_arrow,
    normalize_dtype,
    struct_fields,
)

WHEN = datetime(2024, 5, 1, 12, 0, 0, 250, tzinfo=UTC)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("map<string,int64>", "map<string, int64>"),
        ("MAP[str, double]", "map<string, float64>"),
        ("map<varchar, list<timestamp>>", "map<string, list<timestamp>>"),
        ("struct<name:string,age:string>", "struct<name: string, age: string>"),
        ("Struct < a : int , b : struct<c: bool> >", "struct<a: int64, b: struct<c: bool>>"),
        ("struct<m: map<string, struct<x: float>>>", "struct<m: map<string, struct<x: float64>>>"),
        ("JSON", "json"),
        ("struct<timestamp: int64, json: string>", "struct<timestamp: int64, json: string>"),
    ],
)
def test_nested_spellings_normalize(spelling: str, canonical: str) -> None:
    assert normalize_dtype(spelling) == canonical
    assert normalize_dtype(canonical) == canonical


def test_nesting_is_bounded() -> None:
    ok = "map<string, " * MAX_NESTING + "int64" + ">" * MAX_NESTING
    assert normalize_dtype(ok) == ok
    deeper = "map<string, " + ok + ">"
    with pytest.raises(InvalidError, match="nested deeper"):
        normalize_dtype(deeper)
    with pytest.raises(InvalidError, match="longer than"):
        normalize_dtype("struct<" + ", ".join(f"f{i}: int64" for i in range(300)) + ">")


def test_arrow_types_of_nested_dtypes() -> None:
    assert arrow_type("map<string, int64>") == pa.map_(pa.string(), pa.int64())
    assert arrow_type("struct<a: string, b: list<int32>>") == pa.struct(
        [("a", pa.string()), ("b", pa.list_(pa.int32()))]
    )
    assert arrow_type("json") == pa.string()
    assert dtype_from_arrow(pa.json_()) == "json"
    assert dtype_from_arrow(pa.map_(pa.large_string(), pa.int8())) == "map<string, int32>"
    assert struct_fields("struct<a: map<string, int64>, b: struct<c: bool, d: string>>") == (
        ("a", "map<string, int64>"),
        ("b", "struct<c: bool, d: string>"),
    )
    assert contains_timestamp("struct<a: map<string, list<timestamp>>>")
    assert not contains_timestamp("struct<timestamp: int64>")


def test_json_and_nested_types_cannot_be_join_keys() -> None:
    for dtype in ("json", "map<string, int64>", "struct<a: int64>"):
        with pytest.raises(InvalidError, match="cannot be a join key"):
            Entity(name="e", join_keys=["k"], value_type=dtype)


def test_feast_template_view_can_be_defined() -> None:
    """Feast's template ``driver_hourly_stats`` with its Map, Json and Struct columns."""
    view = FeatureView(
        name="driver_hourly_stats",
        entities=[Entity(name="driver", join_keys=["driver_id"])],
        schema=[
            Field(name="conv_rate", dtype="float32"),
            Field(name="acc_rate", dtype="float32"),
            Field(name="avg_daily_trips", dtype="int64"),
            Field(name="driver_metadata", dtype="map<string, string>"),
            Field(name="driver_config", dtype="json"),
            Field(name="driver_profile", dtype="struct<name: string, age: string>"),
        ],
        source=FileSource(name="s", path="data/driver_stats.parquet", timestamp_field="ts"),
    )
    again = FeatureView.from_spec(view.to_spec())
    assert again == view
    assert again.features[5].dtype == "struct<name: string, age: string>"


# -- a random dtype and a value of it, for round trips ----------------------------------------


def _dtypes(depth: int = 0) -> st.SearchStrategy[str]:
    scalars = st.sampled_from([*SCALAR_DTYPES, *(f"list<{d}>" for d in SCALAR_DTYPES)])
    if depth >= 3:
        return scalars
    inner = st.deferred(lambda: _dtypes(depth + 1))
    maps = inner.map(lambda d: f"map<string, {d}>")
    structs = st.lists(inner, min_size=1, max_size=3).map(
        lambda ds: "struct<" + ", ".join(f"f{i}: {d}" for i, d in enumerate(ds)) + ">"
    )
    return st.one_of(scalars, maps, structs)


_KEYS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)


def _values(dtype: str) -> st.SearchStrategy[object]:
    if dtype.startswith("list<"):
        return st.lists(st.one_of(st.none(), _values(dtype[5:-1])), max_size=3)
    if dtype.startswith("map<"):
        inner = dtype[len("map<string, ") : -1]
        return st.dictionaries(_KEYS, st.one_of(st.none(), _values(inner)), max_size=3)
    if dtype.startswith("struct<"):
        return st.fixed_dictionaries(
            {n: st.one_of(st.none(), _values(d)) for n, d in struct_fields(dtype)}
        )
    return {
        "int32": st.integers(-(2**31), 2**31 - 1),
        "int64": st.integers(-(2**63), 2**63 - 1),
        "float32": st.just(0.5),
        "float64": st.floats(allow_nan=False, allow_infinity=False),
        "string": st.text(max_size=5),
        "bool": st.booleans(),
        "timestamp": st.datetimes(
            min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
        ),
    }[dtype]


@st.composite
def _typed_values(draw: st.DrawFn) -> tuple[str, list[object]]:
    dtype = draw(_dtypes())
    values = draw(st.lists(st.one_of(st.none(), _values(dtype)), min_size=1, max_size=4))
    return dtype, values


@settings(max_examples=150, deadline=None)
@given(_typed_values())
def test_values_round_trip_through_arrow_and_the_physical_form(
    typed: tuple[str, list[object]],
) -> None:
    dtype, values = typed
    assert normalize_dtype(dtype) == dtype
    assert dtype_from_arrow(arrow_type(dtype)) == dtype
    arr = pa.array(values, type=arrow_type(dtype))
    physical = arrow_to_physical(arr, dtype)
    if dtype.startswith(("map<", "struct<")):
        convert = python_converter(dtype)
        assert convert is not None
        decoded = [None if p is None else convert(p) for p in physical]
        assert decoded == arr.to_pylist(maps_as_pydicts="strict")
        # The pushed Python values read the same.
        assert nested_array(values, dtype, "c").equals(arr)
        # Redis's row codec carries them too.
        codec = RowCodec([dtype])
        rows = codec.encode_arrow(
            [pa.array(physical, pa.string())], [0] * len(values), [0] * len(values)
        )
        assert [codec.decode(r)[2][0] for r in rows] == decoded


def test_timestamps_inside_structs_and_maps_come_back_as_datetimes() -> None:
    dtype = "struct<at: timestamp, seen: map<string, list<timestamp>>>"
    value = {"at": WHEN, "seen": {"é": [WHEN, None], "x": None}}
    arr = pa.array([value, None], type=arrow_type(dtype))
    physical = arrow_to_physical(arr, dtype)
    assert json.loads(physical[0])["at"] == int(WHEN.timestamp()) * 1_000_000 + 250
    convert = python_converter(dtype)
    assert convert is not None
    assert convert(physical[0]) == value
    assert physical[1] is None


def test_json_values_are_checked_and_made_compact() -> None:
    assert check_nested(['{ "a" : [1, 2] }', None, '"é"'], "json", "f") == [
        '{"a":[1,2]}',
        None,
        '"é"',
    ]
    with pytest.raises(InvalidError, match=r"feature 'x' .*not JSON"):
        check_nested(["{nope"], "json", "feature 'x'")
    deep = "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)
    with pytest.raises(InvalidError, match="deeper than"):
        check_nested([deep], "json", "f")
    very_deep = "[" * 200_000 + "]" * 200_000  # beyond the parser's own recursion limit
    with pytest.raises(InvalidError, match="deeper than"):
        check_nested([very_deep], "json", "f")
    ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert check_nested([ok], "json", "f") == [ok]
    huge = json.dumps("x" * MAX_NESTED_BYTES)
    with pytest.raises(InvalidError, match="more than"):
        check_nested([huge], "json", "f")
    with pytest.raises(InvalidError, match="more than"):
        check_nested([json.dumps({"a": "x" * MAX_NESTED_BYTES})], "map<string, string>", "f")


def test_pushed_python_values_are_checked_against_the_dtype() -> None:
    dtype = "struct<name: string, age: int64, tags: map<string, float64>>"
    arr = nested_array([{"name": "a", "tags": {"k": 1}}, None, '{"age": 3}'], dtype, "col")
    assert arr.to_pylist(maps_as_pydicts="strict") == [
        {"name": "a", "age": None, "tags": {"k": 1.0}},
        None,
        {"name": None, "age": 3, "tags": None},
    ]
    bad = [
        ({"nme": "a"}, "unknown struct field"),
        ({"age": "3"}, "expected an integer"),
        ({"age": True}, "expected an integer"),
        ({"tags": {"k": "x"}}, "expected a number"),
        ({"tags": [1]}, "values are objects"),
        ("not json", "values are objects"),
        (5, "values are objects"),
    ]
    for value, message in bad:
        with pytest.raises(InvalidError, match=message):
            nested_array([value], dtype, "col")
    with pytest.raises(InvalidError, match="map keys are strings"):
        nested_array([{1: 2}], "map<string, int64>", "col")
    assert nested_array(
        [{"t": "2024-05-01T12:00:00.000250+00:00"}], "map<string, timestamp>", "c"
    ).to_pylist(maps_as_pydicts="strict") == [{"t": WHEN}]


def test_pushed_json_values_any_json_a_string_is_json_text() -> None:
    arr = nested_array([{"a": [1, None]}, [1, "é"], '{"b": true}', 3, None], "json", "c")
    assert arr.to_pylist() == ['{"a":[1,null]}', '[1,"é"]', '{"b":true}', "3", None]
    with pytest.raises(InvalidError, match="not JSON"):
        nested_array(["{"], "json", "c")
    nested: object = []
    for _ in range(MAX_JSON_DEPTH + 5):
        nested = [nested]
    with pytest.raises(InvalidError, match="deeper than"):
        nested_array([nested], "json", "c")


def test_yaml_json_and_python_definitions_of_nested_dtypes_are_equal(tmp_path: Path) -> None:
    from quiver.loader import load_definitions

    spec = {
        "entities": [{"name": "driver", "join_keys": ["driver_id"]}],
        "data_sources": [
            {"name": "s", "type": "file", "path": "data/d.parquet", "timestamp_field": "ts"}
        ],
        "feature_views": [
            {
                "name": "drivers",
                "entities": ["driver"],
                "source": "s",
                "features": [
                    {"name": "meta", "dtype": "MAP[str, string]"},
                    {"name": "config", "dtype": "Json"},
                    {"name": "profile", "dtype": "struct<name:string,age:string>"},
                ],
            }
        ],
    }
    (tmp_path / "repo.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "repo.json").write_text(json.dumps(spec))
    from_yaml = load_definitions(tmp_path / "repo.yaml")
    from_json = load_definitions(tmp_path / "repo.json")
    assert from_yaml == from_json
    (view,) = from_yaml.feature_views.values()
    assert [f.dtype for f in view.features] == [
        "map<string, string>",
        "json",
        "struct<name: string, age: string>",
    ]


def test_feast_type_names_on_the_platform_routes() -> None:
    from quiver.server.compat.platform import platform_dtype

    assert platform_dtype("Map") == "map<string, string>"
    assert platform_dtype("Json") == "json"
    # the platform's own names (FeatureValueType), any case
    assert platform_dtype("int64") == "int64" and platform_dtype("FLOAT64") == "float64"
    assert platform_dtype("unix_timestamp") == "timestamp"
    assert platform_dtype("array_string") == "list<string>"
    assert platform_dtype("ARRAY_FLOAT32") == "list<float32>"
    assert platform_dtype("Array(Int64)") == "list<int64>"
