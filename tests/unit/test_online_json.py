"""The online routes' JSON bodies: the pieces-assembled Feast body equals the general one.

``feast_online_json`` writes the body of one entity row from encoded pieces (one orjson call per
view, split at its commas) instead of encoding a dict per feature. Hypothesis draws responses
with every kind of value (strings with commas and quotes, NaN, times, lists, ints past 64 bits)
and holds the two ways to the same bytes, and both to what pydantic's models would write.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.online.serving import EXPIRED, NOT_FOUND, PRESENT, OnlineGroup, OnlineResponse
from quiver.server._online_json import _feast_one, dumps, feast_content, feast_online_json
from quiver.server.schemas_feast import FeastOnlineResponse

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from([",", '"', "\\", '","', "a,b", "\u2028", "\x00", "é,ü"]),
    st.datetimes(timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=-5))])),
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
)
TIMES = st.one_of(st.none(), st.integers(min_value=0, max_value=2**52))


@st.composite
def responses(draw: st.DrawFn) -> OnlineResponse:
    """A one-row response of 0-3 views with 1-4 features each (statuses as serving gives them)."""
    key = draw(st.one_of(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(max_size=5)))
    groups = []
    for v in range(draw(st.integers(min_value=0, max_value=3))):
        names = tuple(f"v{v}_f{i}" for i in range(draw(st.integers(min_value=1, max_value=4))))
        status = draw(st.sampled_from([PRESENT, NOT_FOUND, EXPIRED]))
        event = None if status == NOT_FOUND else draw(TIMES.filter(lambda t: t is not None))
        row = tuple(draw(VALUES) for _ in names) if status == PRESENT else None
        groups.append(OnlineGroup(names, [status], [event], [row]))
    names = [n for g in groups for n in g.names]
    return OnlineResponse(
        names,
        ["customer_id"],
        {"customer_id": [key]},
        groups,
        dict.fromkeys(names, "string"),
        {"customer_id": "int64"},
    )


@settings(max_examples=400, deadline=None)
@given(responses())
def test_one_row_body_is_the_general_body(response: OnlineResponse) -> None:
    general = dumps(feast_content(response, 1))
    try:
        assembled = _feast_one(response)
    except orjson.JSONEncodeError:  # an int past 64 bits: the general way answers
        assert feast_online_json(response, 1) == general
        return
    assert assembled == general
    assert feast_online_json(response, 1) == general
    # And it is what the documented response model says.
    FeastOnlineResponse.model_validate(json.loads(assembled))


def test_values_with_commas_are_encoded_one_by_one() -> None:
    row = ("a,b", 1.5, '"x",', [1, 2], None)
    response = OnlineResponse(
        ["s", "f", "q", "l", "n"],
        ["id"],
        {"id": [7]},
        [OnlineGroup(("s", "f", "q", "l", "n"), [PRESENT], [0], [row])],
        {},
        {},
    )
    body = json.loads(_feast_one(response))
    assert [r["values"] for r in body["results"]] == [
        [7],
        ["a,b"],
        [1.5],
        ['"x",'],
        [[1, 2]],
        [None],
    ]
    assert body["metadata"]["feature_names"] == ["id", "s", "f", "q", "l", "n"]


@pytest.mark.parametrize("rows", [0, 2])
def test_other_row_counts_take_the_general_way(rows: int) -> None:
    group = OnlineGroup(("x",), [PRESENT] * rows, [0] * rows, [(1.0,)] * rows)
    response = OnlineResponse(["x"], ["id"], {"id": list(range(rows))}, [group], {}, {})
    body: dict[str, Any] = json.loads(feast_online_json(response, rows))
    assert body["results"][1]["values"] == [1.0] * rows
    assert body["results"][1]["event_timestamps"] == ["1970-01-01T00:00:00Z"] * rows


def test_naive_and_aware_times_are_utc() -> None:
    naive = datetime(2024, 5, 1, 12)
    aware = datetime(2024, 5, 1, 7, tzinfo=timezone(timedelta(hours=-5)))
    group = OnlineGroup(("a", "b"), [PRESENT], [0], [(naive, aware)])
    response = OnlineResponse(["a", "b"], ["id"], {"id": [1]}, [group], {}, {})
    body = json.loads(_feast_one(response))
    assert body["results"][1]["values"] == ["2024-05-01T12:00:00Z"]
    assert body["results"][2]["values"] == ["2024-05-01T07:00:00-05:00"]
