"""``/api/v1/validate``: the checks of ``quiver validate`` (:mod:`quiver.monitoring.validate`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from quiver.server.deps import StoreDep
from quiver.server.schemas import ERROR_RESPONSES, _Out

__all__ = ["ValidationOut", "router"]

router = APIRouter(prefix="/api/v1/validate", tags=["status"], responses=ERROR_RESPONSES)


class ValidationFailureOut(_Out):
    """One failed check."""

    object: str
    check: str
    message: str
    fix: str
    line: str


class ValidationOut(_Out):
    """The outcome of the checks (``ok`` false when any failed; the answer is still a 200)."""

    ok: bool
    checks: int
    failures: list[ValidationFailureOut]


@router.get("", response_model=ValidationOut, operation_id="validate_project", summary="Validate")
def validate_project(store: StoreDep) -> dict[str, Any]:
    """Registry and online store reachable, definitions consistent, every view's source readable
    with its declared columns and types."""
    from quiver.monitoring.service import validate

    return validate(store).to_dict()
