"""``/health`` (the process is up) and ``/ready`` (the registry and online store answer)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from quiver.server.deps import StoreDep
from quiver.server.schemas import HealthResponse, ReadyResponse

__all__ = ["readiness", "router"]

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse, operation_id="health", summary="Liveness")
async def health() -> HealthResponse:
    """Answers 200 while the process serves requests."""
    return HealthResponse()


def readiness(store: Any) -> dict[str, str]:
    """Check the registry and the online store; check name -> ``ok`` or the error."""
    checks: dict[str, str] = {}
    try:
        store.registry.count("entity")
        checks["registry"] = "ok"
    except Exception as exc:  # any failure means "not ready", reported, never raised
        checks["registry"] = f"{type(exc).__name__}: {exc}"
    try:
        online = store.online_store
        ping = getattr(online, "ping", None)
        if callable(ping):
            ping()
        checks["online_store"] = "ok"
    except Exception as exc:  # as above
        checks["online_store"] = f"{type(exc).__name__}: {exc}"
    return checks


@router.get(
    "/ready",
    response_model=ReadyResponse,
    operation_id="ready",
    summary="Readiness",
    responses={503: {"model": ReadyResponse, "description": "a backend does not answer"}},
)
def ready(store: StoreDep) -> Any:
    """200 when the registry and the online store answer, else 503 naming the failing check."""
    checks = readiness(store)
    ok = all(v == "ok" for v in checks.values())
    body = ReadyResponse(status="ready" if ok else "unavailable", checks=checks)
    if ok:
        return body
    return JSONResponse(status_code=503, content=body.model_dump())
