"""``/feast`` model and prediction routes of the platform API (owned by the ML issue)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(prefix="/feast", tags=["feast-platform"])
