"""The raw ASGI fast path of the two online routes answers exactly as the FastAPI routes do.

The app is driven in process (Starlette's TestClient: the real ASGI app, no mocks); the same
request goes once through the fast path and once through the documented FastAPI route (a
dependency override makes the fast path step aside), and the answers are compared. Over real
HTTP, ``test_server_errors.py`` and ``test_server_serving.py`` already go through the fast path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import to_json

from quiver.config import ServerConfig
from quiver.server import create_app
from quiver.server._online_json import dumps, iso_utc
from quiver.server.deps import get_principal
from quiver.server.fastpath import FAST_ROUTES, QuiverAPI, _lookup_request
from quiver.server.schemas import OnlineRequest
from quiver.server.schemas_feast import FeastOnlineRequest
from quiver.store import FeatureStore

ROUTES = sorted(FAST_ROUTES)
LIMITS = ServerConfig(max_inline_rows=50, max_body_bytes=4096)
BEHAVIOR = ["customer_behavior:tenure_months", "customer_behavior:monthly_charges"]
ALL_VIEWS = [
    *BEHAVIOR,
    "customer_demographics:age",
    "customer_demographics:region",
    "customer_contract:paperless_billing",
]


@pytest.fixture(scope="module")
def store(demo_repo: Path) -> Iterator[FeatureStore]:
    with FeatureStore(repo_path=demo_repo) as s:
        yield s


@pytest.fixture(scope="module")
def app(store: FeatureStore) -> QuiverAPI:
    built = create_app(store, settings=LIMITS)
    assert isinstance(built, QuiverAPI)
    return built


@pytest.fixture(scope="module")
def client(app: QuiverAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def through_fastapi(app: QuiverAPI, client: TestClient, path: str, body: Any) -> Any:
    """The answer of the documented FastAPI route (an override makes the fast path step aside)."""
    app.dependency_overrides[get_principal] = get_principal
    try:
        return client.post(path, content=_raw(body), headers={"content-type": "application/json"})
    finally:
        app.dependency_overrides.clear()


def _raw(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def _without_latency(content: bytes) -> bytes:
    return re.sub(rb'"latency_ms":[-+.e0-9]+', b'"latency_ms":0', content)


REQUESTS: list[Any] = [
    {"features": BEHAVIOR, "entities": {"customer_id": [1]}},
    {"features": ALL_VIEWS, "entities": {"customer_id": [7]}},
    {"features": ALL_VIEWS, "entities": {"customer_id": [3, 999_999, 3, 12]}},
    {"features": ALL_VIEWS, "entities": {"customer_id": [5]}, "full_feature_names": True},
    {"feature_service": "churn_prediction_v1", "entities": {"customer_id": [2, 4]}},
    {"features": ["customer_demographics:*"], "entities": {"customer_id": [999_999]}},
    {"features": None, "feature_service": None, "entities": {"customer_id": [8]}},
]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("body", REQUESTS)
def test_the_fast_path_answers_as_the_fastapi_route(
    app: QuiverAPI, client: TestClient, path: str, body: Any
) -> None:
    fast = client.post(path, content=_raw(body), headers={"content-type": "application/json"})
    slow = through_fastapi(app, client, path, body)
    assert fast.status_code == slow.status_code, (fast.text, slow.text)
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    assert _without_latency(fast.content) == _without_latency(slow.content)


ERRORS: list[tuple[Any, int]] = [
    ({"features": ["customer_behavior:nope"], "entities": {"customer_id": [1]}}, 404),
    ({"features": ["nope:x"], "entities": {"customer_id": [1]}}, 404),
    ({"features": BEHAVIOR, "entities": {"customer_id": ["1"]}}, 422),
    ({"features": BEHAVIOR, "entities": {"customer_id": [2**70]}}, 422),
    ({"features": BEHAVIOR, "entities": {"customer_id": [True]}}, 422),
    ({"features": BEHAVIOR, "entities": {"customer_id": [1.5]}}, 422),
    ({"features": BEHAVIOR, "entities": {}}, 422),
    ({"features": BEHAVIOR, "entities": {"customer_id": []}}, 422),
    ({"features": BEHAVIOR, "entities": {"customer_id": [1], "x": [1, 2]}}, 422),
    ({"features": BEHAVIOR, "entities": {"customer_id": list(range(51))}}, 413),
    ({"features": BEHAVIOR, "feature_service": "churn_prediction_v1", "entities": {"a": [1]}}, 422),
]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(("body", "status"), ERRORS)
def test_errors_of_the_core_are_the_same(
    app: QuiverAPI, client: TestClient, path: str, body: Any, status: int
) -> None:
    fast = client.post(path, json=body)
    slow = through_fastapi(app, client, path, body)
    if path == "/get-online-features" and body["entities"] == {"customer_id": ["1"]}:
        status = 200  # Feast's wire protocol: "1" is coerced to the int64 join key
    assert fast.status_code == slow.status_code == status, (fast.text, slow.text)
    assert fast.json() == slow.json()
    if status == 200:
        return
    if path == "/get-online-features":  # Feast's error: a JSON string of module, class, message
        assert set(json.loads(fast.json())) == {"module", "class", "message"}
    else:
        assert set(fast.json()["error"]) == {"type", "message", "details"}


SPEC_REQUESTS: list[tuple[Any, int]] = [
    (
        {
            "feature_sets": ["customer_behavior"],
            "entities": {"customer": [1, 999_999]},
            "features": ["orders", "tenure_months"],
        },
        200,
    ),
    (
        {
            "feature_sets": ["customer_behavior", "customer_demographics"],
            "entities": {"customer_id": [3]},
        },
        200,
    ),
    ({"feature_sets": ["nope"], "entities": {"customer": [1]}}, 404),
    ({"feature_sets": ["customer_behavior"], "entities": {"user": [1]}}, 422),
    (
        {"feature_sets": ["customer_behavior"], "features": ["x"], "entities": {"customer": [1]}},
        422,
    ),
    (
        {"feature_sets": ["customer_behavior"], "feature_service": "churn_prediction_v1"}
        | {"entities": {"customer": [1]}},
        422,
    ),
    ({"feature_sets": [1], "entities": {"customer": [1]}}, 422),
    ({"feature_sets": ["customer_behavior"], "entities": {"customer": list(range(51))}}, 413),
]


@pytest.mark.parametrize(("body", "status"), SPEC_REQUESTS)
def test_the_specification_shape_is_the_same_on_both_paths(
    app: QuiverAPI, client: TestClient, body: Any, status: int
) -> None:
    path = "/api/v1/serving/online"
    fast = client.post(path, json=body)
    slow = through_fastapi(app, client, path, body)
    assert fast.status_code == slow.status_code == status, (fast.text, slow.text)
    assert _without_latency(fast.content) == _without_latency(slow.content)
    if status == 200:
        assert set(fast.json()) == {"features", "metadata"}


INVALID: list[bytes] = [
    b'{"features": [',
    b"[1, 2]",
    b'{"features": "x", "entities": [1, 2]}',
    b'{"features": [1], "entities": {"customer_id": [1]}}',
    b'{"entities": {"customer_id": 1}}',
    b'{"entities": {"customer_id": [{"a": 1}]}}',
    b'{"entities": {"customer_id": [1]}, "full_feature_names": "maybe"}',
    b"",
]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("body", INVALID)
def test_invalid_bodies_get_the_same_error_with_pydantic_details(
    app: QuiverAPI, client: TestClient, path: str, body: bytes
) -> None:
    fast = client.post(path, content=body, headers={"content-type": "application/json"})
    slow = through_fastapi(app, client, path, body)
    status, type_ = (400, "bad_request") if body == b'{"features": [' else (422, "invalid")
    assert fast.status_code == slow.status_code == status, (fast.text, slow.text)
    if path == "/get-online-features":  # Feast's error: pydantic's details in the message
        detail = json.loads(fast.json())
        assert detail["class"] == "FeastError" and "body" in detail["message"]
        return
    error = fast.json()["error"]
    assert error["type"] == type_ and error["details"]
    assert all(d["loc"][0] == "body" for d in error["details"])


def test_extra_fields_follow_each_model(client: TestClient) -> None:
    body = {"features": BEHAVIOR, "entities": {"customer_id": [1]}, "project": "x"}
    assert client.post("/get-online-features", json=body).status_code == 200  # Feast: ignored
    error = client.post("/api/v1/serving/online", json=body).json()["error"]
    assert error["type"] == "invalid" and error["details"][0]["loc"] == ["body", "project"]


@pytest.mark.parametrize("path", ROUTES)
def test_bodies_over_the_limit_are_413_declared_or_streamed(client: TestClient, path: str) -> None:
    big = b'{"entities": {"customer_id": [' + b"1," * LIMITS.max_body_bytes + b"1]}}"
    declared = client.post(path, content=big, headers={"content-type": "application/json"})
    streamed = client.post(
        path, content=iter([big[:1000], big[1000:]]), headers={"content-type": "application/json"}
    )
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        error = response.json()["error"]
        assert error["type"] == "payload_too_large"
        assert error["details"] == {"max_body_bytes": LIMITS.max_body_bytes}


def test_unexpected_errors_are_a_json_500(
    store: FeatureStore, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(store, "get_online_features", broken)
    for path in ROUTES:
        response = client.post(path, json={"entities": {"customer_id": [1]}})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["type"] == "internal" and "boom" not in response.text
        assert error["details"]["request_id"] in error["message"]


def test_middleware_and_the_principal_apply_to_the_fast_path(demo_repo: Path) -> None:
    """Middleware added to the app wraps the fast path, which runs get_principal."""
    seen: list[Any] = []

    class Spy:
        def __init__(self, app: Any) -> None:
            self.app = app

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)
            seen.append((scope["path"], scope.get("state", {}).get("principal")))

    with FeatureStore(repo_path=demo_repo) as store:
        app = create_app(store)
        app.add_middleware(Spy)
        with TestClient(app) as client:
            for path in ROUTES:
                body = {"features": BEHAVIOR, "entities": {"customer_id": [1]}}
                assert client.post(path, json=body).is_success
    assert [path for path, _ in seen] == ROUTES
    assert all(principal is not None and principal.name == "anonymous" for _, principal in seen)


def test_get_principal_sets_request_state_principal(app: QuiverAPI) -> None:
    """The one auth hook records the caller where the audit log will read it."""
    import asyncio

    from starlette.requests import Request

    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [], "app": app})
    principal = asyncio.run(get_principal(request))
    assert principal.name == "anonymous"
    assert request.state.principal is principal
    # An existing state (uvicorn's lifespan state copy) is kept and extended.
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "state": {"x": 1}}
    request = Request({**scope, "app": app})
    asyncio.run(get_principal(request))
    assert request.state.x == 1 and request.state.principal is principal


def test_the_fast_path_steps_aside_for_dependency_overrides(
    app: QuiverAPI, client: TestClient
) -> None:
    """An override of get_principal (how tests and plugins replace auth) is honoured."""
    from quiver.errors import InvalidError

    async def refuse() -> Any:
        raise InvalidError("no entry")

    app.dependency_overrides[get_principal] = refuse
    try:
        for path in ROUTES:
            response = client.post(path, json={"entities": {"customer_id": [1]}})
            assert response.status_code == 422 and "no entry" in response.text
    finally:
        app.dependency_overrides.clear()


def test_the_fast_path_is_on(app: QuiverAPI, client: TestClient) -> None:
    client.post(ROUTES[0], json={"features": BEHAVIOR, "entities": {"customer_id": [1]}})
    assert callable(app._fast)  # built at the first request: not stepping aside


def test_other_methods_and_paths_fall_through(client: TestClient) -> None:
    assert client.get("/get-online-features").status_code == 405
    assert client.post("/get-online-features/", json={}).status_code in (307, 404, 422)
    assert client.get("/health").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "/get-online-features" in schema["paths"]
    assert "/api/v1/serving/online" in schema["paths"]


# -- the pieces, against what they stand for ---------------------------------------------------

_MIN_US = -62135596800 * 10**6  # 0001-01-01
_MAX_US = 253402300800 * 10**6 - 1  # 9999-12-31T23:59:59.999999


@settings(max_examples=300, deadline=None)
@given(st.integers(_MIN_US, _MAX_US) | st.sampled_from([0, -1, 1, 10**6, _MIN_US, _MAX_US]))
def test_event_times_are_written_as_pydantic_writes_datetimes(us: int) -> None:
    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    assert iso_utc(us) == json.loads(to_json(when))
    assert iso_utc(us) == json.loads(to_json(when))  # again, from the cache
    assert dumps([when]) == b"[" + to_json(when) + b"]"


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_dumps_writes_what_pydantic_writes(value: Any) -> None:
    # Same JSON values (the float exponent may be spelled 1e16 or 1e+16): NaN and infinities
    # as null, integers of any size.
    assert json.loads(dumps(value)) == json.loads(to_json(value, inf_nan_mode="null"))


_bodies = st.fixed_dictionaries(
    {},
    optional={
        "entities": st.dictionaries(st.text(max_size=4), st.lists(_scalars, max_size=3))
        | _json_values,
        "features": st.none() | st.lists(st.text(max_size=6), max_size=3) | _json_values,
        "feature_service": st.none() | st.text(max_size=4) | _json_values,
        "full_feature_names": st.booleans() | _json_values,
        "feature_sets": st.none() | st.lists(st.text(max_size=6), max_size=3) | _json_values,
        "use_defaults": st.booleans() | _json_values,
        "include_feature_view_version_metadata": st.booleans() | _json_values,
        "extra": _json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(body=_bodies, model=st.sampled_from([OnlineRequest, FeastOnlineRequest]))
def test_plain_json_is_read_as_the_model_reads_it(body: dict[str, Any], model: Any) -> None:
    raw = to_json(body, inf_nan_mode="constants")
    try:
        expected = model.model_validate_json(raw)
    except ValueError:
        with pytest.raises(RequestValidationError):
            _lookup_request(model, raw)
        return
    got = _lookup_request(model, raw)
    want = (
        expected.entities,
        expected.features,
        expected.feature_service,
        expected.full_feature_names,
        getattr(expected, "feature_sets", None),  # the specification's shape (native only)
        getattr(expected, "use_defaults", False),  # Feast's request has no such option
        getattr(expected, "include_feature_view_version_metadata", False),  # Feast's only
    )
    assert _same(tuple(got), want), (got, want)


def _same(a: Any, b: Any) -> bool:
    """Equal, with the same types all the way down (``1 == True == 1.0`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and a != a:
        return b != b
    return bool(a == b)


def test_server_entry_point_freezes_start_up(
    demo_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server's factory moves start-up objects out of the collector's reach (no ~50 ms
    full collections walking them while serving); create_app alone, a library call, does not."""
    import gc

    from quiver.server.app import app_from_env

    monkeypatch.setenv("QUIVER_REPO", str(demo_repo))
    gc.unfreeze()
    try:
        create_app(FeatureStore(repo_path=demo_repo)).state.store.close()
        assert gc.get_freeze_count() == 0
        app = app_from_env()
        assert gc.get_freeze_count() > 0
        app.state.store.close()
    finally:
        gc.unfreeze()
