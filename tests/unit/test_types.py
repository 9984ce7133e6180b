"""Dtypes: canonical spelling, validation, and the mapping to and from Arrow types."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.errors import InvalidError, QuiverError
from quiver.types import SCALAR_DTYPES, arrow_type, dtype_from_arrow, is_list, normalize_dtype

ALL_DTYPES = [*SCALAR_DTYPES, *(f"list<{d}>" for d in SCALAR_DTYPES)]

EXPECTED_ARROW = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def test_the_supported_scalar_dtypes_are_the_issue_list() -> None:
    assert set(SCALAR_DTYPES) == {
        "int32",
        "int64",
        "float32",
        "float64",
        "string",
        "bool",
        "timestamp",
    }


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_canonical_dtypes_normalize_to_themselves(dtype: str) -> None:
    assert normalize_dtype(dtype) == dtype
    assert is_list(dtype) == dtype.startswith("list<")


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("INT64", "int64"),
        (" int32 ", "int32"),
        ("int", "int64"),
        ("integer", "int64"),
        ("long", "int64"),
        ("float", "float64"),
        ("double", "float64"),
        ("str", "string"),
        ("varchar", "string"),
        ("boolean", "bool"),
        ("datetime", "timestamp"),
        ("list[int64]", "list<int64>"),
        ("LIST<String>", "list<string>"),
        ("array<double>", "list<float64>"),
        ("list < bool >", "list<bool>"),
    ],
)
def test_aliases_and_spellings_normalize(spelling: str, canonical: str) -> None:
    assert normalize_dtype(spelling) == canonical


@pytest.mark.parametrize(
    "bad",
    [
        "int128",
        "decimal",
        "",
        "list<>",
        "list<list<int64>>",
        "list<int64",
        "map<int64, string>",
        "struct<>",
        "struct<a: int64, a: string>",
        "list<map<string, int64>>",
        "map<string, json>",
        "struct<a: json>",
        "map<string, int64",
        "struct<a int64>",
        "struct<a: int64,>",
        "int64; DROP TABLE x",
        "list<foo>",
    ],
)
def test_unknown_dtypes_are_rejected_with_the_allowed_list(bad: str) -> None:
    with pytest.raises(InvalidError) as info:
        normalize_dtype(bad)
    assert "unknown dtype" in info.value.message
    assert "int64" in info.value.message and "list<...>" in info.value.message


@pytest.mark.parametrize("bad", [None, 64, ["int64"], b"int64"])
def test_non_string_dtypes_are_rejected(bad: object) -> None:
    with pytest.raises(InvalidError, match="dtype must be a string"):
        normalize_dtype(bad)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_arrow_type_round_trips(dtype: str) -> None:
    arrow = arrow_type(dtype)
    if is_list(dtype):
        assert arrow == pa.list_(EXPECTED_ARROW[dtype[5:-1]])
    else:
        assert arrow == EXPECTED_ARROW[dtype]
    assert dtype_from_arrow(arrow) == dtype


def test_timestamps_are_utc_microseconds() -> None:
    arrow = arrow_type("timestamp")
    assert arrow.unit == "us"
    assert arrow.tz == "UTC"


def test_arrow_type_accepts_every_spelling_normalize_accepts() -> None:
    # Regression: arrow_type("int") raised KeyError instead of normalizing the alias.
    assert arrow_type("int") == pa.int64()
    assert arrow_type("list[str]") == pa.list_(pa.string())


def test_arrow_type_of_an_unknown_dtype_is_an_invalid_error() -> None:
    with pytest.raises(InvalidError, match="unknown dtype 'money'"):
        arrow_type("money")


@pytest.mark.parametrize(
    ("arrow", "dtype"),
    [
        (pa.int8(), "int32"),
        (pa.int16(), "int32"),
        (pa.uint8(), "int32"),
        (pa.uint16(), "int32"),
        (pa.uint32(), "int64"),
        (pa.uint64(), "int64"),
        (pa.float16(), "float32"),
        (pa.decimal128(10, 2), "float64"),
        (pa.large_string(), "string"),
        (pa.dictionary(pa.int32(), pa.string()), "string"),
        (pa.null(), "string"),
        (pa.date32(), "timestamp"),
        (pa.timestamp("ns"), "timestamp"),
        (pa.timestamp("s", tz="Europe/Paris"), "timestamp"),
        (pa.large_list(pa.int64()), "list<int64>"),
        (pa.list_(pa.timestamp("ms")), "list<timestamp>"),
    ],
)
def test_dtype_from_arrow_picks_the_closest_dtype(arrow: pa.DataType, dtype: str) -> None:
    assert dtype_from_arrow(arrow) == dtype


@pytest.mark.parametrize(
    "arrow",
    [
        pa.struct([]),
        pa.map_(pa.int64(), pa.int64()),
        pa.list_(pa.struct([("a", pa.int64())])),
        pa.binary(),
    ],
)
def test_dtype_from_arrow_rejects_types_without_a_dtype(arrow: pa.DataType) -> None:
    with pytest.raises(QuiverError, match="has no Quiver dtype"):
        dtype_from_arrow(arrow)


_SCALAR_SPELLINGS = st.sampled_from(
    [*SCALAR_DTYPES, "int", "integer", "long", "float", "double", "str", "varchar", "boolean"]
)


@st.composite
def _spellings(draw: st.DrawFn) -> str:
    scalar = draw(_SCALAR_SPELLINGS)
    scalar = "".join(c.upper() if draw(st.booleans()) else c for c in scalar)
    pad = st.sampled_from(["", " ", "  "])
    if draw(st.booleans()):
        word = draw(st.sampled_from(["list", "LIST", "array", "List"]))
        left, right = draw(st.sampled_from([("<", ">"), ("[", "]")]))
        scalar = f"{word}{draw(pad)}{left}{draw(pad)}{scalar}{draw(pad)}{right}"
    return f"{draw(pad)}{scalar}{draw(pad)}"


@settings(max_examples=200, deadline=None)
@given(_spellings())
def test_normalize_is_canonical_and_idempotent(spelling: str) -> None:
    canonical = normalize_dtype(spelling)
    assert canonical in ALL_DTYPES
    assert normalize_dtype(canonical) == canonical
    assert arrow_type(spelling) == arrow_type(canonical)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_normalize_accepts_exactly_the_dtype_grammar(text: str) -> None:
    try:
        canonical = normalize_dtype(text)
    except InvalidError:
        return
    # Whatever is accepted is a canonical dtype and round-trips through Arrow.
    assert canonical in ALL_DTYPES
    assert dtype_from_arrow(arrow_type(canonical)) == canonical
