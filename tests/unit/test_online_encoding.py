"""Entity-key and row encoding of the online stores, the view layout, and the response shape."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.definitions import Entity, FeatureView, Field, FileSource
from quiver.errors import InvalidError
from quiver.materialize import parse_time
from quiver.online.encoding import (
    NO_CREATED,
    KeyEncoder,
    RowCodec,
    ViewLayout,
    datetime_to_us,
    prepare_write,
    us_to_datetime,
)
from quiver.online.serving import OnlineGroup, OnlineResponse
from quiver.types import arrow_type

INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
TEXT = st.text(max_size=12)
KEY_VALUES = {"int64": INT64, "int32": INT32, "string": TEXT, "bool": st.booleans()}
US = st.integers(datetime_to_us(datetime(1900, 1, 1)), datetime_to_us(datetime(2200, 1, 1)))


def _key_strategy(dtypes: tuple[str, ...]) -> st.SearchStrategy[tuple]:
    return st.tuples(*[KEY_VALUES.get(d, US) for d in dtypes])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["int64", "int32", "string", "bool", "timestamp"]), min_size=1, max_size=3
    )
    .map(tuple)
    .flatmap(lambda d: st.tuples(st.just(d), st.lists(_key_strategy(d), min_size=1, max_size=8)))
)
def test_key_encoding_round_trips_and_is_injective(case: tuple) -> None:
    dtypes, keys = case
    enc = KeyEncoder(dtypes)
    encoded = [enc.encode(k) for k in keys]
    assert [enc.decode(b) for b in encoded] == keys
    # Distinct keys never share bytes (the store's primary key / Redis key).
    assert len(set(encoded)) == len(set(keys))
    columns = [list(col) for col in zip(*keys, strict=True)]
    assert enc.encode_columns(columns) == encoded
    arrays = [
        pa.array(col, type=_physical_arrow(d)) for col, d in zip(columns, dtypes, strict=True)
    ]
    assert enc.encode_arrow(arrays) == encoded


def _physical_arrow(dtype: str) -> pa.DataType:
    return pa.int64() if dtype == "timestamp" else arrow_type(dtype)


def test_timestamp_keys_from_arrow_match_python_microseconds() -> None:
    when = datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=UTC)
    enc = KeyEncoder(["timestamp"])
    arrow = pa.array([when], type=pa.timestamp("ns"))  # naive nanoseconds = UTC
    assert enc.encode_arrow([arrow]) == [enc.encode([datetime_to_us(when)])]


FEATURE_DTYPES = [
    "int32",
    "int64",
    "float32",
    "float64",
    "string",
    "bool",
    "timestamp",
    "list<int64>",
    "list<string>",
    "list<float64>",
    "list<timestamp>",
]


def _value(dtype: str) -> st.SearchStrategy:
    base = {
        "int32": INT32,
        "int64": INT64,
        "float32": st.floats(width=32, allow_nan=False),
        "float64": st.floats(allow_nan=False),
        "string": TEXT,
        "bool": st.booleans(),
        "timestamp": US.map(us_to_datetime),
    }
    if dtype.startswith("list<"):
        return st.none() | st.lists(st.none() | base[dtype[5:-1]], max_size=4)
    return st.none() | base[dtype]


@st.composite
def _rows(draw: st.DrawFn) -> tuple[list[str], list[list], list[int], list[int]]:
    dtypes = draw(st.lists(st.sampled_from(FEATURE_DTYPES), min_size=1, max_size=70))
    n = draw(st.integers(1, 5))
    columns = [draw(st.lists(_value(d), min_size=n, max_size=n)) for d in dtypes]
    events = draw(st.lists(US, min_size=n, max_size=n))
    created = draw(st.lists(US | st.just(NO_CREATED), min_size=n, max_size=n))
    return dtypes, columns, events, created


@settings(max_examples=150, deadline=None)
@given(_rows())
def test_row_codec_round_trips_every_dtype_and_null(case: tuple) -> None:
    dtypes, columns, events, created = case
    codec = RowCodec(dtypes)
    arrays = [pa.array(c, type=arrow_type(d)) for c, d in zip(columns, dtypes, strict=True)]
    encoded = codec.encode_arrow(arrays, events, created)
    for i, data in enumerate(encoded):
        event, created_us, values = codec.decode(data)
        assert (event, created_us) == (events[i], created[i])
        expected = [arrays[j][i].as_py() for j in range(len(dtypes))]
        assert values == expected


def test_row_header_orders_like_the_timestamps() -> None:
    codec = RowCodec(["int64"])
    pairs = [(-5, NO_CREATED), (-5, 0), (0, 3), (7, -1), (7, 9), (2**62, NO_CREATED)]
    encoded = codec.encode_arrow(
        [pa.array([1] * len(pairs))], [p[0] for p in pairs], [p[1] for p in pairs]
    )
    headers = [e[: RowCodec.HEADER] for e in encoded]
    assert headers == sorted(headers)


def _view(features: list[Field], ttl: timedelta | None = None) -> FeatureView:
    return FeatureView(
        name="v",
        entities=["customer"],
        features=features,
        source=FileSource(name="s", path="x.parquet"),
        ttl=ttl,
    )


CUSTOMER = Entity(name="customer", join_keys=["customer_id"])


def test_layout_version_follows_the_schema_only() -> None:
    a = ViewLayout.from_view("p", _view([Field(name="x", dtype="int64")]), [CUSTOMER])
    same = ViewLayout.from_view(
        "p", _view([Field(name="x", dtype="int64", description="d")], timedelta(days=1)), [CUSTOMER]
    )
    added = ViewLayout.from_view(
        "p", _view([Field(name="x", dtype="int64"), Field(name="y", dtype="string")]), [CUSTOMER]
    )
    retyped = ViewLayout.from_view("p", _view([Field(name="x", dtype="float64")]), [CUSTOMER])
    string_key = Entity(name="customer", join_keys=["customer_id"], value_type="string")
    rekeyed = ViewLayout.from_view("p", _view([Field(name="x", dtype="int64")]), [string_key])
    assert a.version == same.version
    assert len({a.version, added.version, retyped.version, rekeyed.version}) == 4
    assert same.ttl_us == 86_400 * 10**6 and a.ttl_us is None


def test_prepare_write_checks_columns_and_nulls() -> None:
    layout = ViewLayout.from_view("p", _view([Field(name="x", dtype="float64")]), [CUSTOMER])
    ts = pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 2, type=arrow_type("timestamp"))
    good = pa.table({"customer_id": [1, 2], "x": [1.0, float("nan")], "event_timestamp": ts})
    cols = prepare_write(layout, good)
    assert cols.created_us == [NO_CREATED, NO_CREATED]
    assert cols.features[0].to_pylist() == [1.0, None]  # NaN is stored as null everywhere
    with pytest.raises(InvalidError, match="lack the column"):
        prepare_write(layout, good.drop_columns(["x"]))
    with pytest.raises(InvalidError, match="nulls in 'customer_id'"):
        prepare_write(layout, good.set_column(0, "customer_id", pa.array([1, None])))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-31", datetime(2024, 1, 31, tzinfo=UTC)),
        ("2024-01-31T12:00:00Z", datetime(2024, 1, 31, 12, tzinfo=UTC)),
        ("2024-01-31T14:00:00+02:00", datetime(2024, 1, 31, 12, tzinfo=UTC)),
        (datetime(2024, 1, 31, 12), datetime(2024, 1, 31, 12, tzinfo=UTC)),
    ],
)
def test_parse_time(text: object, expected: datetime) -> None:
    assert parse_time(text, "start") == expected  # type: ignore[arg-type]


def test_parse_time_rejects_garbage() -> None:
    with pytest.raises(InvalidError, match="start 'yesterday' is not a time"):
        parse_time("yesterday", "start")
    assert abs(parse_time("now") - datetime.now(UTC)) < timedelta(seconds=5)


def test_online_response_shapes() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    response = OnlineResponse(
        feature_names=["x", "s"],
        join_keys=["customer_id"],
        entity_columns={"customer_id": [1, 2]},
        groups=[
            OnlineGroup(
                ("x", "s"),
                ["present", "not_found"],
                [datetime_to_us(when), None],
                [(1.5, "a"), None],
            )
        ],
        dtypes={"x": "float64", "s": "string"},
        key_dtypes={"customer_id": "int64"},
    )
    assert response.to_dict() == {"customer_id": [1, 2], "x": [1.5, None], "s": ["a", None]}
    assert response.event_timestamps == {"x": [when, None], "s": [when, None]}
    assert response.statuses == {"x": ["present", "not_found"], "s": ["present", "not_found"]}
    assert response.event_us == {
        "x": [datetime_to_us(when), None],
        "s": [datetime_to_us(when), None],
    }
    table = response.to_arrow()
    assert table.schema.types == [pa.int64(), pa.float64(), pa.string()]
    frame = response.to_pandas()
    assert list(frame.columns) == ["customer_id", "x", "s"]
    assert math.isnan(frame["x"][1])
    assert len(response) == 2
