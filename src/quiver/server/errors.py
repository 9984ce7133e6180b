"""Errors as JSON: ``{"error": {"type", "message", "details"}}`` with the right status.

- :class:`~quiver.errors.QuiverError` -> its ``status_code`` (401, 403, 404, 409, 413, 422, 503).
- ``RequestValidationError``: a body that is not JSON -> 400; wrong types -> 422; both with
  pydantic's details.
- Starlette's ``HTTPException`` (unknown route 404, wrong method 405 with every method the path
  takes in ``Allow``) -> the same body.
- Anything else -> 500 with a request id; the traceback goes to the server log only.

:class:`GuardMiddleware` bounds the request body size (413) and catches what no handler did,
so the error is logged once and never reaches the client as a stack trace.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match

from quiver.errors import QuiverError

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["GuardMiddleware", "error_response", "install_error_handlers"]

logger = logging.getLogger("quiver.server")

_HTTP_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "too_many_requests",
}


def error_response(
    status: int,
    type_: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """A JSON error response in the API's one error shape."""
    try:
        safe = jsonable_encoder(details)
    except Exception:  # details that cannot be encoded must not turn a 4xx into a 500
        safe = str(details)
    return JSONResponse(
        status_code=status,
        content={"error": {"type": type_, "message": message, "details": safe}},
        headers=headers,
    )


async def _quiver_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, QuiverError)
    if exc.status_code >= 500:
        logger.warning("%s: %s", type(exc).__name__, exc.message, exc_info=exc.__cause__)
    return error_response(exc.status_code, exc.error_type, exc.message, exc.details)


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    details = []
    for err in errors:
        item: dict[str, Any] = {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        ctx = err.get("ctx")
        if ctx:
            item["ctx"] = {
                k: v if isinstance(v, int | float | bool) else str(v) for k, v in ctx.items()
            }
        details.append(item)
    shown = "; ".join(f"{_loc(d['loc'])}: {d['msg']}" for d in details[:5])
    more = f" (and {len(details) - 5} more)" if len(details) > 5 else ""
    if any(d["type"] == "json_invalid" for d in details):  # not JSON at all: malformed syntax
        return error_response(
            400, "bad_request", f"the request body is not valid JSON: {shown}{more}", details
        )
    return error_response(422, "invalid", f"invalid request: {shown}{more}", details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404 and exc.detail in ("Not Found", None):
        message = f"no route {request.method} {request.url.path}; the routes are listed at /docs"
    headers = getattr(exc, "headers", None)
    if status == 405:
        allowed = ", ".join(allowed_methods(request))
        headers = {**(headers or {}), "Allow": allowed}
        message = f"{request.method} is not allowed on {request.url.path}; it takes {allowed}"
    elif status != 404 or exc.detail not in ("Not Found", None):
        message = str(exc.detail)
    return error_response(status, _HTTP_TYPES.get(status, "http_error"), message, headers=headers)


_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on the request's path (for ``Allow``).

    FastAPI keeps one route per method and path, and Starlette's 405 names only the methods of
    the first route that matched the path; this asks the app's routes about each method.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHOD_ORDER
        if any(r.matches({**request.scope, "method": method})[0] == Match.FULL for r in routes)
    ]


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return _internal(request.method, request.url.path, exc)


def _internal(method: str, path: str, exc: BaseException) -> JSONResponse:
    request_id = uuid.uuid4().hex[:12]
    logger.error("unexpected error %s in %s %s", request_id, method, path, exc_info=exc)
    return error_response(
        500,
        "internal",
        f"internal server error (request id {request_id}); the server log has the details",
        {"request_id": request_id},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the JSON error handlers on ``app``."""
    app.add_exception_handler(QuiverError, _quiver_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


class GuardMiddleware:
    """Pure ASGI middleware: a request body limit (413) and a last-resort 500 handler.

    Args:
        app: The wrapped application.
        max_body_bytes: The largest request body accepted.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.declared_too_large(scope):
            await self.too_large(scope, receive, send)
            return
        limit = self.max_body_bytes
        started = False
        received = 0

        async def guarded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise StarletteHTTPException(413, detail=self._too_large_message())
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, tracking_send)
        except StarletteHTTPException as exc:
            if started or exc.status_code != 413:
                raise
            await self.too_large(scope, receive, send)
        except Exception as exc:
            if started:
                raise
            await self.internal_error(scope, exc)(scope, receive, send)

    def declared_too_large(self, scope: Scope) -> bool:
        """Whether the request's ``Content-Length`` is over the limit."""
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    return int(value) > self.max_body_bytes
                except ValueError:
                    return False
        return False

    def internal_error(self, scope: Scope, exc: BaseException) -> JSONResponse:
        """The 500 answer to an unexpected error (logged with its traceback and a request id)."""
        return _internal(scope.get("method", ""), scope.get("path", ""), exc)

    def _too_large_message(self) -> str:
        return (
            f"the request body is larger than the limit of {self.max_body_bytes} bytes "
            "(server.max_body_bytes); send fewer rows, or reference a file or data source"
        )

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 (the body is over the limit)."""
        response = error_response(
            413,
            "payload_too_large",
            self._too_large_message(),
            {"max_body_bytes": self.max_body_bytes},
        )
        await response(scope, receive, send)
