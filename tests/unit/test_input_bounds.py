"""Client input at the edges of what the stores accept: numbers, times, paths, Unicode.

Each case here once reached a backend unchecked and came back as a 500 from the REST API
(SQLite's "Python int too large to convert to SQLite INTEGER", ``datetime`` overflow, ENAMETOOLONG,
a lone surrogate that no encoder accepts). The core now answers with a
:class:`~quiver.errors.QuiverError` and leaves the stored state as it was.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.errors import InvalidError, NotFoundError
from quiver.ml.registry import MAX_VERSION, ModelRegistry, ModelVersion, parse_model_id
from quiver.ml.spec import TrainingSpec
from quiver.server._convert import as_utc, check_path_text, iceberg_ref, inline_table
from quiver.server.schemas import StrictJSONRequest

HUGE = [2**31, 2**63, 2**70, -(2**70), 0, -1]


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, registry_url: str) -> str:
    """The registry database behind ``models``: the SQLite one of conftest, then PostgreSQL."""
    return registry_url if request.param == "sqlite" else request.getfixturevalue("postgres_url")


@pytest.fixture
def models(models: ModelRegistry, add_bare_version: Callable[..., ModelVersion]) -> ModelRegistry:
    """The model registry of conftest with ``churn`` versions 1 (production) and 2."""
    for _ in range(2):
        add_bare_version(models, "churn")
    models.set_stage("churn", 1, "production")
    return models


def _stages(models: ModelRegistry) -> dict[int, str]:
    return {v.version: v.stage for v in models.versions("churn")}


@pytest.mark.parametrize("version", HUGE)
def test_stage_of_a_version_out_of_range_is_not_found(models: ModelRegistry, version: int) -> None:
    before = _stages(models)
    with pytest.raises(NotFoundError, match=rf"model 'churn' has no version {version}; versions"):
        models.set_stage("churn", version, "production")
    with pytest.raises(NotFoundError, match=r"model 'ghost' does not exist"):
        models.set_stage("ghost", version, "staging")
    assert _stages(models) == before


def test_largest_version_is_a_plain_not_found(models: ModelRegistry) -> None:
    with pytest.raises(NotFoundError, match=rf"no version {MAX_VERSION}"):
        models.set_stage("churn", MAX_VERSION, "staging")


def test_jobs_of_a_version_out_of_range(models: ModelRegistry) -> None:
    assert models.list_jobs(f"churn:{2**70}") == []
    assert models.list_jobs(f"churn:{MAX_VERSION + 1}") == []
    assert models.list_jobs("churn", limit=2**70) == []
    with pytest.raises(InvalidError, match="limit must be at least 1"):
        models.list_jobs("churn", limit=0)


def test_model_ids_with_absurd_version_numbers() -> None:
    assert parse_model_id("m:" + "9" * 30) == ("m", int("9" * 30))
    # Past 4300 digits int() itself refuses: such an id is malformed, not a crash.
    for text in ("m:" + "9" * 31, "m:" + "9" * 5000):
        with pytest.raises(InvalidError, match="is not a model id"):
            parse_model_id(text)


def test_names_with_nul_are_not_found(models: ModelRegistry) -> None:
    """PostgreSQL refuses NUL in text parameters; no stored name holds one anyway."""
    from quiver.definitions import Entity
    from quiver.registry import DefinitionSet, apply_plan, compute_plan

    registry = models.registry
    entity = Entity(name="customer", join_keys=["id"])
    apply_plan(
        registry, compute_plan(registry, DefinitionSet.of([entity]), prune=False), author=None
    )
    name = "cust\x00omer"
    assert registry.find_record("entity", name) is None
    assert registry.kinds_of(name) == [] and registry.history_kinds_of(name) == []
    with pytest.raises(NotFoundError, match="does not exist"):
        registry.get_record("entity", name)
    with pytest.raises(NotFoundError, match="has no history"):
        registry.history("entity", name)
    with pytest.raises(NotFoundError, match="does not exist"):
        models.get_job("job\x00")
    assert registry.find_record("entity", "customer") is not None


# --- times -------------------------------------------------------------------------------------

BASE_SPEC: dict[str, Any] = {
    "name": "m",
    "framework": "lightgbm",
    "model_type": "classification",
    "training_data": {"entity_df_source": "labels", "label_column": "y"},
}


@pytest.mark.parametrize(
    ("field", "value"),
    [("start_date", "0001-01-01T00:00:00+01:00"), ("end_date", "9999-12-31T23:59:59-01:00")],
)
def test_training_dates_out_of_range(field: str, value: str) -> None:
    data = dict(BASE_SPEC["training_data"], **{field: value})
    with pytest.raises(InvalidError, match=rf"training_data.{field}:.*out of range"):
        TrainingSpec.parse(dict(BASE_SPEC, training_data=data))
    # the same instant in range is fine
    TrainingSpec.parse(dict(BASE_SPEC, training_data=dict(data, **{field: value[:19] + "Z"})))


@pytest.mark.parametrize("seed", [-1, 2**32, 2**70])
def test_training_random_state_range(seed: int) -> None:
    with pytest.raises(InvalidError, match="random_state"):
        TrainingSpec.parse(dict(BASE_SPEC, random_state=seed))
    assert TrainingSpec.parse(dict(BASE_SPEC, random_state=2**32 - 1)).random_state == 2**32 - 1


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_US = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)
LAST_US = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(microseconds=1)


def _utc_micros(value: datetime) -> int:
    """The oracle: microseconds since the epoch by integer arithmetic (never overflows)."""
    naive = value.replace(tzinfo=None)
    offset = value.utcoffset() or timedelta(0)
    local = (naive - datetime(1970, 1, 1)) // timedelta(microseconds=1)
    return local - offset // timedelta(microseconds=1)


offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda m: timezone(timedelta(minutes=m))
)
edge_times = st.one_of(
    st.datetimes(max_value=datetime(1, 1, 3)),
    st.datetimes(min_value=datetime(9999, 12, 29)),
    st.datetimes(),
)


@settings(max_examples=200, deadline=None)
@given(edge_times, st.one_of(st.none(), offsets))
def test_as_utc_converts_or_refuses(naive: datetime, tz: timezone | None) -> None:
    value = naive if tz is None else naive.replace(tzinfo=tz)
    micros = _utc_micros(value)
    if FIRST_US <= micros <= LAST_US:
        out = as_utc(value)
        assert out.tzinfo is UTC and (out - EPOCH) // timedelta(microseconds=1) == micros
    else:
        with pytest.raises(InvalidError, match="out of range"):
            as_utc(value)


@settings(max_examples=200, deadline=None)
@given(edge_times, offsets)
def test_inline_timestamps_convert_or_refuse(naive: datetime, tz: timezone) -> None:
    text = naive.replace(tzinfo=tz).isoformat()
    micros = _utc_micros(naive.replace(tzinfo=tz))
    if FIRST_US <= micros <= LAST_US:
        table = inline_table(["k", "ts"], [[1, text]], 10, "ts")
        assert table["ts"].type == pa.timestamp("us", tz="UTC")
        assert table["ts"].cast(pa.int64())[0].as_py() == micros
        table.to_pylist()  # every value is a Python datetime again
    else:
        with pytest.raises(InvalidError, match="column 'ts'"):
            inline_table(["k", "ts"], [[1, text]], 10, "ts")


# --- paths and table names ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("data/x\x00.parquet", "NUL"),
        ("a" * 256 + "/x.parquet", "longer than 255 bytes"),
        ("data/" + "é" * 128, "longer than 255 bytes"),  # 256 bytes in UTF-8
        ("a/" * 2100, "longer than 4096 bytes"),
    ],
)
def test_path_text_no_file_system_takes(path: str, needle: str) -> None:
    with pytest.raises(InvalidError, match=needle):
        check_path_text(path, "entity_path")


def test_ordinary_path_text_passes() -> None:
    for path in ("data/x.parquet", "a" * 255 + "/b", "s3://bucket/key", "../x", "~/x", "*"):
        assert check_path_text(path, "p") == path


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("ns.t", "iceberg:ns.t"),
        ("iceberg:ns.t", "iceberg:ns.t"),
        ("iceberg://cat/ns.sub.t", "iceberg:cat/ns.sub.t"),
        ("  cat/ns.t ", "iceberg:cat/ns.t"),
    ],
)
def test_iceberg_refs(text: str, ref: str) -> None:
    assert iceberg_ref(text, "output_table") == ref


@pytest.mark.parametrize(
    "text", ["", "t", "ns.", ".t", "ns.t-1", "a/b/ns.t", "ns." + "t" * 64, "x" * 64 + "/ns.t"]
)
def test_bad_iceberg_refs(text: str) -> None:
    with pytest.raises(InvalidError, match="is not an Iceberg table"):
        iceberg_ref(text, "output_table")


# --- Unicode -----------------------------------------------------------------------------------


def _parse(body: bytes) -> Any:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    request = StrictJSONRequest({"type": "http", "method": "POST", "headers": []}, receive)
    return asyncio.run(request.json())


# Any character, with UTF-16 surrogates (which st.characters() rarely draws) mixed in.
chars = st.characters() | st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff", "\\"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(chars),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(chars, max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


def _valid_unicode(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_bodies_with_lone_surrogates_are_invalid_json(value: Any) -> None:
    body = json.dumps(value).encode()  # ensure_ascii: every surrogate is an escape
    decoded = json.loads(body)  # (a high and a low surrogate in a row decode to one character)
    if _valid_unicode(decoded):
        assert _parse(body) == decoded
    else:
        with pytest.raises(json.JSONDecodeError, match="lone UTF-16 surrogate"):
            _parse(body)


def test_surrogate_pairs_and_escaped_backslashes_pass() -> None:
    assert _parse(b'{"e": "\\ud83d\\ude00"}') == {"e": "\U0001f600"}
    assert _parse(b'{"e": "\\\\ud800"}') == {"e": "\\ud800"}
    with pytest.raises(json.JSONDecodeError):
        _parse(b'{"\\udc00": 1}')
