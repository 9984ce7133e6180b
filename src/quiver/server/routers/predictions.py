"""``/api/v1/predictions``: batch and online predictions (owned by the ML issue)."""

from __future__ import annotations

from fastapi import APIRouter

from quiver.server.schemas import ERROR_RESPONSES

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/predictions", tags=["predictions"], responses=ERROR_RESPONSES)
