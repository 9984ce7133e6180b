"""``/metrics`` and ``/monitoring/metrics``: Prometheus' text format (see
:mod:`quiver.monitoring.metrics`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from quiver.server.deps import StoreDep
from quiver.server.schemas import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(tags=["monitoring"], responses=ERROR_RESPONSES)

_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format 0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


async def _page(store: StoreDep) -> Response:
    from quiver.monitoring.metrics import exposition

    body, content_type = await run_in_threadpool(
        exposition, store, store.config.monitoring.metric_prefix
    )
    return Response(body, media_type=content_type)


@router.get(
    "/metrics",
    response_model=str,
    response_class=Response,
    responses=_TEXT,
    operation_id="metrics",
    summary="Prometheus metrics",
)
async def metrics(store: StoreDep) -> Response:
    """Requests, latencies, feature retrieval, materialization, freshness, cache and job metrics
    in Prometheus' text format (every worker's totals)."""
    return await _page(store)


@router.get(
    "/monitoring/metrics",
    response_model=str,
    response_class=Response,
    responses=_TEXT,
    operation_id="monitoring_metrics",
    summary="Prometheus metrics (the specification's path)",
)
async def monitoring_metrics(store: StoreDep) -> Response:
    """The same page as ``/metrics``."""
    return await _page(store)
