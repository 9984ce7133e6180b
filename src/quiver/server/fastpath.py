"""The fast path of the online serving routes: raw ASGI in front of FastAPI.

``POST /get-online-features`` (Feast) and ``POST /api/v1/serving/online`` are the API's hot path,
and FastAPI's per-request machinery (its middleware chain, routing, dependency solving, request
and response objects) costs more than the lookup itself. :class:`QuiverAPI` is the FastAPI app
with one addition: its ``__call__`` answers these two routes itself, before the framework, and
keeps every guarantee of the documented routes:

- the app's own middleware (``user_middleware``: :class:`~quiver.server.errors.GuardMiddleware`
  with the body limit (413) and the last-resort JSON 500, and any middleware added later) wraps
  the fast path too;
- the caller is identified by the same :func:`~quiver.server.deps.get_principal`;
- the body is validated by the same pydantic request models, and every error (invalid body,
  :class:`~quiver.errors.QuiverError`, HTTP errors) is answered by the app's registered
  exception handlers, so error bodies are the same;
- the lookup is the same call (:func:`~quiver.server.routers.serving.call_online`), and the
  JSON is the same as the FastAPI routes give (the tests compare them byte for byte).

The FastAPI routes stay in the app: they document the API (OpenAPI) and answer whenever the fast
path steps aside: when dependency overrides are set, under a root path, with FastAPI's own
request body limit, and when FastAPI's OpenTelemetry instrumentation is on (checked at the first
request).
"""

from __future__ import annotations

import inspect
import time
from datetime import datetime, timedelta
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic_core import to_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from quiver.server._convert import check_columns
from quiver.server.compat.feast import EPOCH, STATUS
from quiver.server.deps import get_principal
from quiver.server.routers.serving import call_online
from quiver.server.schemas import FeastOnlineRequest, OnlineRequest

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from quiver.online.serving import OnlineResponse

__all__ = ["FAST_ROUTES", "QuiverAPI", "feast_online_json", "iso_utc", "online_json"]

Route = Callable[["QuiverAPI", bytes, Request], Awaitable[bytes]]

_Model = TypeVar("_Model", bound=BaseModel)
_CONTENT_TYPE = (b"content-type", b"application/json")
_UNSET: Any = object()


class QuiverAPI(FastAPI):
    """FastAPI, with the online serving routes answered by a lean ASGI path (see the module)."""

    _fast: ASGIApp | None = _UNSET

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in FAST_ROUTES:
            fast = self._fast if self._fast is not _UNSET else self._setup_fast_path()
            if fast is not None and not self.dependency_overrides and not scope.get("root_path"):
                scope["app"] = self
                await fast(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _setup_fast_path(self) -> ASGIApp | None:
        """The fast path wrapped in the app's middleware, or ``None`` where it steps aside."""
        if self.middleware_stack is None:
            # Built now as Starlette does at the first request (middleware is then fixed).
            self.middleware_stack = self.build_middleware_stack()
        telemetry = getattr(self, "_native_telemetry", None)
        if (
            self.root_path
            or getattr(self, "max_body_size", None) is not None
            or (telemetry is not None and telemetry.enabled())
        ):
            self._fast = None
            return None
        app: ASGIApp = self._serve
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        self._fast = app
        return app

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)  # a body over the limit: GuardMiddleware answers 413
        if body is None:  # the client went away
            return
        request = Request(scope, receive)
        request._body = body  # request.body() keeps working for anyone who asks
        try:
            await get_principal(request)
            payload = await FAST_ROUTES[scope["path"]](self, body, request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # GuardMiddleware answers 500 and logs the traceback
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(payload)), _CONTENT_TYPE],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    def _handler_for(self, exc: Exception) -> Callable[..., Any] | None:
        """The app's exception handler for ``exc`` as FastAPI's routes would find it.

        Handlers of ``Exception`` (and 500) are left out: on the FastAPI path they sit outside
        GuardMiddleware, which answers unexpected errors first.
        """
        handlers = self.exception_handlers
        if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers:
            return handlers[exc.status_code]
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


async def _read_body(receive: Receive) -> bytes | None:
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


def _parse(model: type[_Model], body: bytes) -> _Model:
    """The request model from the body; invalid input raises FastAPI's validation error."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {**err, "loc": ("body", *err["loc"])}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise RequestValidationError(errors) from None


def _json(content: Any) -> bytes:
    # The same serialization as quiver.server.routers.serving.json_response.
    return to_json(content, inf_nan_mode="null", fallback=str)


# -- the two routes ----------------------------------------------------------------------------


async def _online_route(app: QuiverAPI, body: bytes, request: Request) -> bytes:
    start = time.perf_counter()
    req = _parse(OnlineRequest, body)
    state = app.state
    n = check_columns(req.entities, state.settings.max_inline_rows)
    result = await call_online(
        state.store,
        features=req.features,
        entity_rows=req.entities,
        feature_service=req.feature_service,
        full_feature_names=req.full_feature_names,
    )
    return online_json(result, n, req.feature_service, start)


async def _feast_route(app: QuiverAPI, body: bytes, request: Request) -> bytes:
    req = _parse(FeastOnlineRequest, body)
    state = app.state
    n = check_columns(req.entities, state.settings.max_inline_rows)
    result = await call_online(
        state.store,
        features=req.features,
        entity_rows=req.entities,
        feature_service=req.feature_service,
        full_feature_names=req.full_feature_names,
    )
    return feast_online_json(result, n)


FAST_ROUTES: dict[str, Route] = {
    "/api/v1/serving/online": _online_route,
    "/get-online-features": _feast_route,
}
"""The paths (``POST``) the fast path answers."""


# -- responses built from the result lists -----------------------------------------------------
#
# The features of one view share their status and event-time lists in an OnlineResponse, so
# each conversion below runs once per view (keyed by the list's identity), not per feature.

_NAIVE_EPOCH = datetime(1970, 1, 1)


def iso_utc(us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC with ``Z``, exactly as pydantic's JSON
    writes a UTC datetime (``2024-05-01T12:00:00Z``, ``...:00.250000Z``)."""
    return (_NAIVE_EPOCH + timedelta(microseconds=us)).isoformat() + "Z"


def _iso_times(
    names: list[str], event_us: dict[str, list[int | None]], missing: str | None
) -> dict[str, list[str | None]]:
    """Output name -> event times as ISO strings (``missing`` where there is none)."""
    converted: dict[int, list[str | None]] = {}
    out: dict[str, list[str | None]] = {}
    for name in names:
        raw = event_us[name]
        found = converted.get(id(raw))
        if found is None:
            found = converted[id(raw)] = [missing if v is None else iso_utc(v) for v in raw]
        out[name] = found
    return out


def online_json(result: OnlineResponse, n: int, feature_service: str | None, start: float) -> bytes:
    """The body of ``POST /api/v1/serving/online`` (``OnlineResponseOut``).

    Args:
        result: The lookup's result.
        n: The number of entity rows.
        feature_service: The requested feature service (echoed in the metadata).
        start: ``time.perf_counter()`` when the request began (for ``latency_ms``).
    """
    keys, names = result.join_keys, result.feature_names
    ent, val, sta = result.entity_columns, result.values, result.statuses
    times = _iso_times(names, result.event_us, None)
    rows = []
    for i in range(n):
        values, statuses, stamps = {}, {}, {}
        for f in names:
            values[f] = val[f][i]
            statuses[f] = sta[f][i]
            stamps[f] = times[f][i]
        rows.append(
            {
                "entity": {k: ent[k][i] for k in keys},
                "values": values,
                "statuses": statuses,
                "event_timestamps": stamps,
            }
        )
    return _json(
        {
            "feature_names": names,
            "join_keys": keys,
            "results": rows,
            "metadata": {
                "latency_ms": round((time.perf_counter() - start) * 1000, 3),
                "feature_service": feature_service,
            },
        }
    )


def feast_online_json(result: OnlineResponse, n: int) -> bytes:
    """The body of Feast's ``POST /get-online-features`` (``FeastOnlineResponse``).

    Args:
        result: The lookup's result.
        n: The number of entity rows.
    """
    present, epoch = ["PRESENT"] * n, [EPOCH] * n
    vectors: list[dict[str, Any]] = [
        {"values": result.entity_columns[key], "statuses": present, "event_timestamps": epoch}
        for key in result.join_keys
    ]
    names, values, statuses = result.feature_names, result.values, result.statuses
    times = _iso_times(names, result.event_us, EPOCH)
    converted: dict[int, list[str]] = {}
    for name in names:
        raw = statuses[name]
        feast = converted.get(id(raw))
        if feast is None:
            feast = converted[id(raw)] = [STATUS.get(s, "NOT_FOUND") for s in raw]
        vectors.append({"values": values[name], "statuses": feast, "event_timestamps": times[name]})
    return _json({"metadata": {"feature_names": [*result.join_keys, *names]}, "results": vectors})
