"""The fast path of the online serving routes: raw ASGI in front of FastAPI.

``POST /get-online-features`` (Feast) and ``POST /api/v1/serving/online`` are the API's hot path,
and FastAPI's per-request machinery (its middleware chain, routing, dependency solving, request
and response objects) costs more than the lookup itself. :class:`QuiverAPI` is the FastAPI app
with one addition: its ``__call__`` answers these two routes itself, before the framework, and
keeps every guarantee of the documented routes:

- the app's own middleware (``user_middleware``: :class:`~quiver.server.errors.GuardMiddleware`
  with the body limit (413) and the last-resort JSON 500, and any middleware added later) wraps
  the fast path too; when it is the default stack (the guard alone), the guard's checks run
  inline, with the same answers;
- the caller is identified by the same :func:`~quiver.server.deps.get_principal`, and with
  ``auth: api_key`` the request is checked by the same
  :meth:`Security.check_features <quiver.security.service.Security.check_features>` (decisions
  cached per principal and request); its 401/403 answers are written to the audit log (the
  :class:`~quiver.server.access.AuditMiddleware` is ``fast_path_exempt``: reads are not
  audited);
- the body is validated by the same pydantic request models (plain JSON of exactly the
  expected types is taken as parsed, which is what the models would give), and every error
  (invalid body, :class:`~quiver.errors.QuiverError`, HTTP errors) is answered by the app's
  registered exception handlers: the same statuses and error JSON;
- the lookup is the same call as :func:`~quiver.server.routers.serving.call_online` makes, and
  a successful response is built by the same :mod:`quiver.server._online_json` functions as the
  FastAPI routes use (the tests compare the two paths).

The app's store and settings (``app.state``) are read once, at the first request.

The FastAPI routes stay in the app: they document the API (OpenAPI) and answer whenever the fast
path steps aside: when dependency overrides are set, under a root path, with FastAPI's own
request body limit, and when FastAPI's OpenTelemetry instrumentation is on (checked at the first
request).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from math import isfinite
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from pydantic_core import from_json
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from quiver.errors import QuiverError
from quiver.monitoring import metrics as _metrics
from quiver.server._answers import Answer, Answers, native_body
from quiver.server._convert import check_columns
from quiver.server._online_json import feast_online_json, online_json
from quiver.server.compat._feast_wire import (
    feast_error_for,
    normalize_entities,
    with_versions,
)
from quiver.server.deps import get_principal
from quiver.server.errors import GuardMiddleware
from quiver.server.routers.serving import INLINE_ONLINE_STORES, call_online
from quiver.server.schemas import OnlineRequest
from quiver.server.schemas_feast import FeastOnlineRequest

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from quiver.monitoring.metrics import ServerMetrics
    from quiver.online.serving import OnlineResponse
    from quiver.security.service import Security
    from quiver.store import FeatureStore


__all__ = ["FAST_OPERATIONS", "FAST_ROUTES", "QuiverAPI"]

Route = Callable[["QuiverAPI", bytes, Request], Awaitable["bytes | Response"]]

_Model = TypeVar("_Model", bound=BaseModel)
_ONLINE = "/api/v1/serving/online"
_FEAST = "/get-online-features"
_CONTENT_TYPE = (b"content-type", b"application/json")
_UNSET: Any = object()
_TOO_LARGE: Any = object()


class QuiverAPI(FastAPI):
    """FastAPI, with the online serving routes answered by a lean ASGI path (see the module)."""

    _fast: ASGIApp | None = _UNSET
    _fast_store: FeatureStore
    _fast_limit: int
    _fast_inline: bool
    _fast_stale: bool
    """``feast_compat.serve_stale``: the Feast route serves expired values as present."""
    _fast_security: Security | None
    _fast_answers: Answers | None = None
    """Answers kept for identical requests (:mod:`quiver.server._answers`)."""
    _guard: GuardMiddleware
    _fast_observed = False
    """Whether the fast path observes its requests itself (the default stack)."""
    _metrics: ServerMetrics | None = None
    """The server's metrics (set by ``create_app`` when they are on)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in FAST_ROUTES:
            fast = self._fast if self._fast is not _UNSET else self._setup_fast_path()
            if fast is not None and not self.dependency_overrides and not scope.get("root_path"):
                scope["app"] = self
                if self._metrics is None or self._fast_observed:
                    await fast(scope, receive, send)
                else:
                    await self._observed(fast, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _observed(self, fast: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """The fast path, counted and timed as the metrics middleware does the other routes."""
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await fast(scope, receive, send_status)
        finally:
            self._metrics.observe_request(  # type: ignore[union-attr]
                "POST", scope["path"], status, time.perf_counter() - start
            )

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
        store = self._fast_store = self.state.store
        self._fast_limit = self.state.settings.max_inline_rows
        self._fast_inline = store.config.online_store.type in INLINE_ONLINE_STORES
        self._fast_stale = store.config.feast_compat.serve_stale
        gate = self.state.gate
        self._fast_security = gate.security if gate.enforce else None
        self._fast_answers = Answers.of(store) if store.config.serving_cache.enabled else None
        # Middleware with nothing to do on the online reads (the audit log) is left out.
        middleware = [m for m in self.user_middleware if not getattr(m.cls, "fast_path_exempt", 0)]
        app: ASGIApp
        if len(middleware) == 1 and middleware[0].cls is GuardMiddleware:
            # The default stack: the guard's checks run inline (same answers, no wrapper calls).
            guard = middleware[0]
            self._guard = GuardMiddleware(self._serve, *guard.args, **guard.kwargs)  # type: ignore[arg-type]
            app = self._serve_guarded if self._metrics is None else self._serve_guarded_observed
        else:
            app = self._serve
            for cls, args, kwargs in reversed(middleware):
                app = cls(app, *args, **kwargs)
        self._fast = app
        self._fast_observed = app == self._serve_guarded_observed
        return app

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fast path inside the app's middleware (which answers 413 and 500)."""
        body = await _read_body(receive, None)
        if body is not None:  # else the client went away
            await _send(scope, receive, send, await self._answer(scope, receive, body))

    async def _serve_guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fast path with :class:`GuardMiddleware`'s checks inline (the default app)."""
        await self._guarded(scope, receive, send)

    async def _serve_guarded_observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        """:meth:`_serve_guarded`, counted and timed for the metrics."""
        start = time.perf_counter()
        status = await self._guarded(scope, receive, send)
        if status is not None:
            self._metrics.observe_request(  # type: ignore[union-attr]
                "POST", scope["path"], status, time.perf_counter() - start
            )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> int | None:
        """Answer with the guard's checks inline; the status sent (``None``: the client went
        away before the request was read)."""
        guard = self._guard
        limit = guard.max_body_bytes
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away
        body = message.get("body", b"")
        if message.get("more_body", False):  # a body in parts: its declared size, then each part
            if guard.declared_too_large(scope):
                await guard.too_large(scope, receive, send)
                return 413
            body = await _read_rest(receive, body, limit)
            if body is None:  # the client went away
                return None
        # One part (the common case): the HTTP parser held it to its Content-Length.
        if body is _TOO_LARGE or len(body) > limit:
            await guard.too_large(scope, receive, send)
            return 413
        try:
            answer = await self._answer(scope, receive, body)
        except Exception as exc:  # nothing was sent yet
            answer = guard.internal_error(scope, exc)
        if type(answer) is bytes:  # as _send() does, inline
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"%d" % len(answer)), _CONTENT_TYPE],
                }
            )
            await send({"type": "http.response.body", "body": answer})
            return 200
        await answer(scope, receive, send)  # type: ignore[operator]
        return answer.status_code  # type: ignore[union-attr]

    async def _answer(self, scope: Scope, receive: Receive, body: bytes) -> bytes | Response:
        """The JSON body of a successful answer, or the app's error response."""
        request = Request(scope, receive)
        request._body = body  # request.body() keeps working for anyone who asks
        try:
            await get_principal(request)
            return await FAST_ROUTES[scope["path"]](self, body, request)
        except Exception as exc:
            handler = self._handler_for(exc)
            if handler is None:
                raise  # an unexpected error: a 500 (GuardMiddleware logs the traceback)
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            if response.status_code in (401, 403):
                self.state.gate.record_denial(scope, exc, FAST_OPERATIONS[scope["path"]])
                if response.status_code == 401:
                    response.headers["www-authenticate"] = 'Bearer realm="quiver"'
            return response

    def _handler_for(self, exc: Exception) -> Callable[..., Any] | None:
        """The app's exception handler for ``exc`` as FastAPI's routes would find it.

        Handlers of ``Exception`` (and 500) are left out: on the FastAPI path they sit outside
        GuardMiddleware, which answers unexpected errors first.
        """
        handlers = self.exception_handlers
        if isinstance(exc, StarletteHTTPException) and exc.status_code != 500:
            found = handlers.get(exc.status_code)
            if found is not None:
                return found
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


async def _send(scope: Scope, receive: Receive, send: Send, answer: bytes | Response) -> None:
    if type(answer) is not bytes:
        await answer(scope, receive, send)  # type: ignore[operator]
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"%d" % len(answer)), _CONTENT_TYPE],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def _read_body(receive: Receive, limit: int | None) -> Any:
    """The request body; ``None`` if the client went away, ``_TOO_LARGE`` past ``limit``."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        return await _read_rest(receive, body, limit)
    return _TOO_LARGE if limit is not None and len(body) > limit else body


async def _read_rest(receive: Receive, first: bytes, limit: int | None) -> Any:
    """The rest of a body sent in parts after its ``first``; as :func:`_read_body` answers."""
    chunks = [first]
    size = len(first)
    more = True
    while more:
        if limit is not None and size > limit:
            return _TOO_LARGE
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    return _TOO_LARGE if limit is not None and size > limit else b"".join(chunks)


def _parse(model: type[_Model], body: bytes) -> _Model:
    """The request model from the body; invalid input raises FastAPI's validation error (an
    empty body is a missing one, as FastAPI says: a 422, where malformed JSON is a 400)."""
    if not body:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = [
            {**err, "loc": ("body", *err["loc"])}
            for err in exc.errors(include_url=False, include_input=False)
        ]
        raise RequestValidationError(errors) from None


# -- the two routes ----------------------------------------------------------------------------


class _Lookup(NamedTuple):
    entities: dict[str, list[Any]]
    features: list[str] | None
    feature_service: str | None
    full_feature_names: bool
    feature_sets: list[str] | None  # the specification's shape (OnlineRequest only)
    use_defaults: bool
    versions: bool  # include_feature_view_version_metadata (FeastOnlineRequest only)


_new_tuple = tuple.__new__
_SCALARS = frozenset({str, int, bool, type(None)})
_NUMBERS = _SCALARS | {float}  # finite floats only
_STR_ONLY = frozenset({str})
_ONLINE_FIELDS = frozenset(OnlineRequest.model_fields)


def _plain(data: dict[str, Any], fields: frozenset[str] | None) -> bool:
    """Whether parsed JSON holds exactly the request's types (``fields``: the only keys
    allowed, ``None`` for any), so that the pydantic model would take it as it is."""
    if fields is not None and not data.keys() <= fields:
        return False
    entities = data.get("entities")
    if type(entities) is not dict:
        return False
    for column in entities.values():
        if type(column) is not list:
            return False
        kinds = set(map(type, column))
        if not kinds <= _SCALARS and not (
            kinds <= _NUMBERS and all(isfinite(v) for v in column if type(v) is float)
        ):
            return False
    features = data.get("features")
    if features is not None and (
        type(features) is not list or not set(map(type, features)) <= _STR_ONLY
    ):
        return False
    service = data.get("feature_service")
    if service is not None and type(service) is not str:
        return False
    sets = data.get("feature_sets")
    if sets is not None and (type(sets) is not list or not set(map(type, sets)) <= _STR_ONLY):
        return False
    return (
        type(data.get("full_feature_names", False)) is bool
        and type(data.get("use_defaults", False)) is bool
        and type(data.get("include_feature_view_version_metadata", False)) is bool
    )


def _lookup_request(model: type[OnlineRequest | FeastOnlineRequest], body: bytes) -> _Lookup:
    """The request's fields from its JSON body.

    JSON of exactly the expected types is taken as parsed; anything else goes through the
    pydantic model, which gives the same values (after coercion) or FastAPI's 422.
    """
    try:
        data = from_json(body)
    except ValueError:
        data = None
    native = model is OnlineRequest
    if type(data) is dict and _plain(data, _ONLINE_FIELDS if native else None):
        fields = (
            data["entities"],
            data.get("features"),
            data.get("feature_service"),
            data.get("full_feature_names", False),
            data.get("feature_sets") if native else None,
            data.get("use_defaults", False) if native else False,
            False if native else data.get("include_feature_view_version_metadata", False),
        )
    else:
        req = _parse(model, body)
        fields = (
            req.entities,
            req.features,
            req.feature_service,
            req.full_feature_names,
            getattr(req, "feature_sets", None),
            getattr(req, "use_defaults", False),
            getattr(req, "include_feature_view_version_metadata", False),
        )
    return _new_tuple(_Lookup, fields)  # skips the NamedTuple's Python-level constructor


def _check(app: QuiverAPI, req: _Lookup, request: Request) -> None:
    """The request's permission check, as the FastAPI routes make it (``auth: api_key``)."""
    if app._fast_security is not None:
        principal = request.scope["state"]["principal"]
        app._fast_security.check_features(
            principal, "read_online", req.features, req.feature_service
        )


def _kept(app: QuiverAPI, path: str, body: bytes, request: Request) -> Answer | None:
    """The kept answer of an identical request (:mod:`quiver.server._answers`), checked."""
    answers = app._fast_answers
    if answers is None:
        return None
    began = time.perf_counter()
    answer = answers.get(path, body)
    if answer is not None:
        _check(app, answer.req, request)
        answers.served(answer)
        if _metrics.RETRIEVAL is not None:
            _metrics.RETRIEVAL(time.perf_counter() - began)
    return answer


async def _lookup(
    app: QuiverAPI, req: _Lookup, request: Request, stale: bool = False
) -> tuple[OnlineResponse, int]:
    """Check the request as the FastAPI routes do, and make the same call to the store
    (:func:`~quiver.server.routers.serving.call_online`): its result and rows (``stale``:
    expired values served as present, Feast's answer)."""
    _check(app, req, request)
    entities = req.entities
    # One join key with 1..limit values passes check_columns: skip its general checks.
    n = len(next(iter(entities.values()))) if len(entities) == 1 else 0
    if not 0 < n <= app._fast_limit:
        n = check_columns(entities, app._fast_limit)
    if app._fast_inline:
        began = time.perf_counter()
        result = app._fast_store.get_online_features(
            req.features,
            entities,
            feature_service=req.feature_service,
            full_feature_names=req.full_feature_names,
            use_defaults=req.use_defaults,
            serve_stale=stale,
        )
        if _metrics.RETRIEVAL is not None:
            _metrics.RETRIEVAL(time.perf_counter() - began)
    else:  # timed by call_online
        result = await call_online(
            app._fast_store,
            features=req.features,
            entity_rows=entities,
            feature_service=req.feature_service,
            full_feature_names=req.full_feature_names,
            use_defaults=req.use_defaults,
            serve_stale=stale,
        )
    return result, n


async def _online_route(app: QuiverAPI, body: bytes, request: Request) -> bytes:
    start = time.perf_counter_ns()
    kept = _kept(app, _ONLINE, body, request)
    if kept is not None:
        return native_body(kept, start)
    req = _lookup_request(OnlineRequest, body)
    if req.feature_sets is not None:
        return await _spec_online(app, req, request, start)
    answers = app._fast_answers
    noted = None if answers is None else answers.before_read(req)
    result, n = await _lookup(app, req, request)
    answer = online_json(result, n, req.feature_service, start)
    if noted is not None:
        answers.keep(_ONLINE, body, req, n, noted, result, answer, native=True)  # type: ignore[union-attr]
    return answer


async def _spec_online(app: QuiverAPI, req: _Lookup, request: Request, start: int) -> bytes:
    """The specification's shape (``feature_sets``), as the FastAPI route answers it."""
    from quiver.server._spec_serving import spec_online

    security = app._fast_security

    def check(refs: list[str]) -> None:
        if security is not None:
            principal = request.scope["state"]["principal"]
            security.check_features(principal, "read_online", refs, None)

    return await spec_online(app._fast_store, app._fast_limit, req, check, call_online, start)


async def _feast_route(app: QuiverAPI, body: bytes, request: Request) -> bytes | Response:
    """Feast's lookup; the wire details (entity coercion, version metadata, Feast's error
    format) are :mod:`quiver.server.compat._feast_wire`'s, as on the FastAPI route."""
    try:
        kept = _kept(app, _FEAST, body, request)
        if kept is not None:
            return kept.head
        req = _lookup_request(FeastOnlineRequest, body)
        answers = app._fast_answers
        noted = None if answers is None else answers.before_read(req)
        try:
            result, n = await _lookup(app, req, request, app._fast_stale)
        except QuiverError as exc:
            fixed = (
                None
                if exc.status_code in (401, 403)
                else normalize_entities(app._fast_store, req.entities)
            )
            if fixed is None:
                raise
            fixed_req = req._replace(entities=fixed)
            result, n = await _lookup(app, fixed_req, request, app._fast_stale)
            noted = None  # answered for other entity values than the body's
        if req.versions:
            return with_versions(app._fast_store, result, n, req.features, req.feature_service)
        answer = feast_online_json(result, n)
        if noted is not None:
            answers.keep(_FEAST, body, req, n, noted, result, answer, native=False)  # type: ignore[union-attr]
        return answer
    except (QuiverError, RequestValidationError) as exc:
        response = await feast_error_for(request, exc)
        if response is None:
            raise
        return response


FAST_ROUTES: dict[str, Route] = {
    _ONLINE: _online_route,
    _FEAST: _feast_route,
}
"""The paths (``POST``) the fast path answers."""

FAST_OPERATIONS = {
    "/api/v1/serving/online": "get_online_features",
    "/get-online-features": "feast_get_online_features",
}
"""The operation ids of the fast routes (the audit log's action for their denials)."""
