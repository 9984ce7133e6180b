"""``/api/v1/permissions`` and ``/api/v1/audit``: permission policies and the audit log.

Admins only (the ``admin`` action on the project). Policies are listed, applied (created or
updated by name) and deleted one at a time; the audit log is only read: no route changes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from quiver.errors import InvalidError, NotFoundError
from quiver.security.audit import MAX_LIMIT
from quiver.security.permissions import Permission
from quiver.server.schemas import ERROR_RESPONSES, IsoDateTime, StrictJSONRoute

__all__ = ["router"]

router = APIRouter(
    prefix="/api/v1",
    tags=["security"],
    responses=ERROR_RESPONSES,
    route_class=StrictJSONRoute,
)


class PermissionOut(Permission):
    """A stored permission policy."""

    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None


class PermissionListOut(BaseModel):
    """Every permission policy of the project, by name."""

    items: list[PermissionOut]
    count: int


class PermissionsIn(BaseModel):
    """Policies to create or update (by name), in one transaction."""

    permissions: list[Permission] = Field(min_length=1)


class ApplyOut(BaseModel):
    """What applying did to each policy."""

    results: dict[str, Literal["created", "updated", "unchanged"]]


class DeletedOut(BaseModel):
    """The policy deleted."""

    deleted: str


class AuditEntryOut(BaseModel):
    """One row of the audit log."""

    created_at: datetime
    principal: str
    key_id: str | None = None
    channel: str = Field(description="rest, cli or sdk")
    action: str = Field(description="the route's operation id, or the CLI/SDK operation")
    resource: str = Field(description="kind:name (several comma-separated)")
    outcome: str = Field(description="ok, or the error type")
    status: int | None = None
    request_id: str | None = None
    client: str | None = None
    method: str | None = None
    path: str | None = None
    message: str | None = None
    project: str


class AuditListOut(BaseModel):
    """Audit rows, newest first."""

    items: list[AuditEntryOut]
    count: int


def _security(request: Request) -> Any:
    return request.app.state.gate.security


@router.get(
    "/permissions",
    response_model=PermissionListOut,
    operation_id="list_permissions",
    summary="List permission policies",
)
def list_permissions(request: Request) -> dict[str, Any]:
    """Every policy of the project (admins only)."""
    items = [r.to_dict() for r in _security(request).policies.records()]
    return {"items": items, "count": len(items)}


@router.get(
    "/permissions/{name}",
    response_model=PermissionOut,
    operation_id="get_permission",
    summary="Get a permission policy",
)
def get_permission(name: str, request: Request) -> dict[str, Any]:
    """One policy (admins only)."""
    for record in _security(request).policies.records():
        if record.permission.name == name:
            return record.to_dict()
    raise NotFoundError(f"permission '{name}' does not exist")


@router.post(
    "/permissions",
    response_model=ApplyOut,
    operation_id="apply_permissions",
    summary="Create or update permission policies",
)
def apply_permissions(body: PermissionsIn, request: Request) -> dict[str, Any]:
    """Create or update policies by name, all in one transaction (admins only); running
    servers apply them within a second."""
    names = [p.name for p in body.permissions]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidError(f"permission '{dupes[0]}' is given twice")
    return {"results": _security(request).apply_permissions(body.permissions)}


@router.put(
    "/permissions/{name}",
    response_model=ApplyOut,
    operation_id="put_permission",
    summary="Create or update a permission policy",
)
def put_permission(name: str, body: Permission, request: Request) -> dict[str, Any]:
    """Create or update the policy ``name`` (admins only)."""
    if body.name != name:
        raise InvalidError(f"the body names permission '{body.name}' but the path names '{name}'")
    return {"results": _security(request).apply_permissions([body])}


@router.delete(
    "/permissions/{name}",
    response_model=DeletedOut,
    operation_id="delete_permission",
    summary="Delete a permission policy",
)
def delete_permission(name: str, request: Request) -> dict[str, Any]:
    """Delete the policy ``name`` (admins only)."""
    _security(request).delete_permission(name)
    return {"deleted": name}


@router.get(
    "/audit",
    response_model=AuditListOut,
    operation_id="list_audit",
    summary="Read the audit log",
)
def list_audit(
    request: Request,
    since: Annotated[
        IsoDateTime | None,
        Query(description="only rows at or after this time (ISO 8601; without an offset, UTC)"),
    ] = None,
    principal: Annotated[str | None, Query(description="only this principal's rows")] = None,
    resource: Annotated[
        str | None, Query(description="only rows whose resource contains this text")
    ] = None,
    action: Annotated[str | None, Query(description="only this action")] = None,
    outcome: Annotated[str | None, Query(description="ok, or an error type")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> dict[str, Any]:
    """Audit rows of the project, newest first (admins only). The log is append-only: no
    route changes or deletes it."""
    from quiver.server._convert import as_utc

    gate = request.app.state.gate
    gate.writer.flush()  # rows of answers already sent are in
    rows = gate.store.audit_log.query(
        since=as_utc(since) if since is not None else None,
        principal=principal,
        resource=resource,
        action=action,
        outcome=outcome,
        limit=limit,
    )
    items = [r.to_dict() for r in rows]
    return {"items": items, "count": len(items)}
