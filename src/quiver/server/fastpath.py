"""A lean path for the online serving routes, the API's hot path.

FastAPI's per-request machinery (dependency solving, body handling, response validation)
costs more than the online lookup itself. The two online routes are therefore also installed
as plain Starlette routes in front of the router: they run the same :func:`get_principal`
check, validate the body with the same pydantic model (errors become the same 422), and call
the same handler as the documented FastAPI route, which stays in the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.routing import Route

from quiver.server.deps import get_principal

if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from starlette.responses import Response

__all__ = ["install_fast_routes"]

Handler = Callable[[Any, "Request"], Awaitable["Response"]]


def _endpoint(model: type[BaseModel], handler: Handler) -> Callable[..., Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        await get_principal(request)
        raw = await request.body()
        try:
            body = model.model_validate_json(raw)
        except ValidationError as exc:
            errors = [
                {**err, "loc": ("body", *err["loc"])}
                for err in exc.errors(include_url=False, include_input=False)
            ]
            raise RequestValidationError(errors) from None
        return await handler(body, request)

    return endpoint


def install_fast_routes(app: FastAPI) -> None:
    """Put the lean online routes first in ``app``'s router."""
    from quiver.server.compat.feast import get_online_features as feast_online
    from quiver.server.routers.serving import online
    from quiver.server.schemas import FeastOnlineRequest, OnlineRequest

    fast = [
        Route("/api/v1/serving/online", _endpoint(OnlineRequest, online), methods=["POST"]),
        Route(
            "/get-online-features", _endpoint(FeastOnlineRequest, feast_online), methods=["POST"]
        ),
    ]
    app.router.routes[0:0] = fast
