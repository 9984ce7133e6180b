"""Feature and label encoding: fitted on training rows, stored, reused unchanged."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.errors import InvalidError
from quiver.ml.encoding import Encoding, LabelEncoding

FEATURES = [
    ("n", "v:n", "int64"),
    ("x", "v:x", "float64"),
    ("b", "v:b", "bool"),
    ("c", "v:c", "string"),
]


def _table(n: list, x: list, b: list, c: list) -> pa.Table:
    return pa.table(
        {
            "n": pa.array(n, pa.int64()),
            "x": pa.array(x, pa.float64()),
            "b": pa.array(b, pa.bool_()),
            "c": pa.array(c, pa.string()),
        }
    )


TRAIN = _table(
    [1, 2, 3, None], [0.5, None, 1.5, 2.5], [True, True, False, None], ["a", "b", "a", None]
)


def test_fit_learns_categories_and_defaults() -> None:
    enc = Encoding.fit(TRAIN, FEATURES)
    by = {f.name: f for f in enc.features}
    assert by["c"].categories == ["a", "b"]
    assert by["c"].default == "a"
    assert by["n"].default == 2
    assert by["x"].default == 1.5
    assert by["b"].default is True
    assert enc.columns == ["n", "x", "b", "c"]
    assert enc.categorical_indices == [3]


def test_ordinal_keeps_missing_as_nan() -> None:
    enc = Encoding.fit(TRAIN, FEATURES)
    m = enc.encode(_table([7, None], [None, 1.0], [None, False], ["b", "zzz"]))
    assert m[0, 0] == 7 and math.isnan(m[1, 0])
    assert math.isnan(m[0, 1]) and m[1, 1] == 1.0
    assert math.isnan(m[0, 2]) and m[1, 2] == 0.0
    assert m[0, 3] == 1.0 and math.isnan(m[1, 3])  # unseen category -> missing


def test_impute_fills_defaults() -> None:
    enc = Encoding.fit(TRAIN, FEATURES, impute=True)
    m = enc.encode(_table([None], [None], [None], [None]))
    assert m.tolist() == [[2.0, 1.5, 1.0, 0.0]]


def test_onehot_columns() -> None:
    enc = Encoding.fit(TRAIN, FEATURES, scheme="onehot", impute=True)
    assert enc.columns == ["n", "x", "b", "c=a", "c=b"]
    assert enc.categorical_indices == []
    m = enc.encode(_table([1, 1], [1.0, 1.0], [True, True], ["b", "zzz"]))
    assert m[0, 3:].tolist() == [0.0, 1.0]
    assert m[1, 3:].tolist() == [1.0, 0.0]  # unseen -> the training mode when imputing


def test_round_trip_through_json() -> None:
    label = LabelEncoding(column="y", dtype="string", classes=["no", "yes"])
    enc = Encoding.fit(TRAIN, FEATURES, scheme="onehot", impute=True, label=label)
    again = Encoding.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert again.to_dict() == enc.to_dict()
    probe = _table([5, None], [None, 2.0], [False, None], ["a", "q"])
    np.testing.assert_array_equal(again.encode(probe), enc.encode(probe))


def test_missing_column_and_malformed() -> None:
    enc = Encoding.fit(TRAIN, FEATURES)
    with pytest.raises(InvalidError, match=r"lacks feature column"):
        enc.encode(TRAIN.drop(["c"]))
    with pytest.raises(InvalidError, match=r"malformed"):
        Encoding.from_dict({"scheme": "ordinal"})


def test_list_features_are_refused() -> None:
    table = pa.table({"l": pa.array([[1], [2]], pa.list_(pa.int64()))})
    with pytest.raises(InvalidError, match=r"scalar features"):
        Encoding.fit(table, [("l", "v:l", "list<int64>")])


def test_timestamps_encode_as_epoch_seconds() -> None:
    when = datetime(2025, 1, 1, tzinfo=UTC)
    table = pa.table({"t": pa.array([when, None], pa.timestamp("us", tz="UTC"))})
    enc = Encoding.fit(table, [("t", "v:t", "timestamp")], impute=True)
    assert enc.features[0].default == when.isoformat()
    assert enc.encode(table).tolist() == [[when.timestamp()], [when.timestamp()]]


def test_table_from_values_checks_types() -> None:
    enc = Encoding.fit(TRAIN, FEATURES)
    table = enc.table_from_values([{"n": 3, "x": 1, "b": True, "c": "a"}])
    assert table.schema.field("x").type == pa.float64()
    with pytest.raises(InvalidError, match=r"feature 'n' expects int64"):
        enc.table_from_values([{"n": "three", "x": 1.0, "b": True, "c": "a"}])


def test_labels() -> None:
    label = LabelEncoding(column="y", dtype="string", classes=["a", "b", "c"])
    codes = label.encode(pa.chunked_array([["c", "a", "b"]]))
    assert codes.tolist() == [2, 0, 1]
    assert label.decode(np.array([1, 2])).to_pylist() == ["b", "c"]
    with pytest.raises(InvalidError, match=r"not among its classes"):
        label.encode(pa.array(["d"]))
    regression = LabelEncoding(column="y", dtype="float64")
    assert regression.encode(pa.array([1, 2])).tolist() == [1.0, 2.0]
    with pytest.raises(InvalidError, match=r"no classes"):
        regression.decode(np.array([0]))


# -- property: the vectorized encoder agrees with a row-by-row oracle -------------------------

_ints = st.one_of(st.none(), st.integers(-1000, 1000))
_floats = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False))
_bools = st.one_of(st.none(), st.booleans())
_cats = st.one_of(st.none(), st.sampled_from(["red", "green", "blue", "cyan"]))
_rows = st.lists(st.tuples(_ints, _floats, _bools, _cats), min_size=1, max_size=30)


def _oracle(enc: Encoding, rows: list[tuple]) -> list[list[float]]:
    out = []
    for row in rows:
        values = []
        for f, v in zip(enc.features, row, strict=True):
            if f.kind == "categorical":
                cats = f.categories or []
                code = cats.index(v) if v in cats else None
                if code is None and enc.impute:
                    code = cats.index(f.default) if f.default in cats else None
                if enc.scheme == "onehot":
                    values.extend(1.0 if code == k else 0.0 for k in range(len(cats)))
                else:
                    values.append(math.nan if code is None else float(code))
                continue
            if v is None:
                if enc.impute:
                    d = f.default
                    values.append(0.0 if d is None else float(d))
                else:
                    values.append(math.nan)
            else:
                values.append(float(v))
        out.append(values)
    return out


@settings(max_examples=150, deadline=None)
@given(
    train=_rows,
    probe=_rows,
    scheme=st.sampled_from(["ordinal", "onehot"]),
    impute=st.booleans(),
)
def test_encoding_matches_oracle(train: list, probe: list, scheme: str, impute: bool) -> None:
    enc = Encoding.fit(
        _table(*map(list, zip(*train, strict=True))), FEATURES, scheme=scheme, impute=impute
    )
    got = enc.encode(_table(*map(list, zip(*probe, strict=True))))
    want = np.array(_oracle(enc, probe), dtype=float).reshape(got.shape)
    np.testing.assert_array_equal(got, want)
