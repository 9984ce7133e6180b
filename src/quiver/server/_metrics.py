"""The server's side of the metrics (:mod:`quiver.monitoring.metrics`): the middleware that
observes the FastAPI routes' requests, and the wiring of a new app."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from quiver.monitoring.metrics import ServerMetrics

__all__ = ["UNMATCHED", "MetricsMiddleware"]

UNMATCHED = "<unmatched>"
"""The route label of requests no route matched (so that a scan of paths adds one series)."""


class MetricsMiddleware:
    """Counts and times every HTTP request by method, route template and status.

    The online fast path (:mod:`quiver.server.fastpath`) observes its own requests with the same
    call, so the middleware stays out of it.
    """

    fast_path_exempt = True

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            self.metrics.observe_request(
                scope["method"], template, status, time.perf_counter() - start
            )
