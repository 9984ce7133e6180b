"""``/api/v1/models``: the model registry (owned by the ML issue; routes are added there)."""

from __future__ import annotations

from fastapi import APIRouter

from quiver.server.schemas import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/models", tags=["models"], responses=ERROR_RESPONSES)
