"""Authentication, authorization and the audit log of the REST API.

- :class:`Gate` holds the app's mode (``auth.mode``), the store's
  :class:`~quiver.security.service.Security` and the audit writer.
- :data:`ROUTES` says, for every route (by operation id), which action on which resource it is:
  :func:`authorize`, installed on the whole app, checks it for every request with the one check
  function (:meth:`Security.check <quiver.security.service.Security.check>`). A route missing
  from the table is for admins only. What a body names (a feature view to push to, a model to
  train) is checked by the store the handlers get: in ``api_key`` mode,
  :class:`~quiver.security.scoped.ScopedStore`, which checks every facade call with the same
  function. The online hot path (:mod:`quiver.server.fastpath`) calls
  :meth:`Security.check_features` itself.
- :class:`AuditMiddleware` writes one audit row per state-changing request and per denied
  (401/403) request, with the principal, the resources, the outcome, a request id (also sent
  back as ``X-Request-ID``) and the client's address. A request that changed something waits
  for its row before the answer goes out. Reads are not audited: the online routes pay nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple

from fastapi import Request

from quiver.errors import UnauthorizedError
from quiver.security.audit import AuditEntry, AuditScope, AuditWriter, request_scope
from quiver.security.principal import ANONYMOUS, Principal
from quiver.server.deps import PrincipalDep

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from quiver.security.service import Security
    from quiver.store import FeatureStore

__all__ = [
    "ROUTES",
    "AuditMiddleware",
    "Gate",
    "RoutePolicy",
    "authorize",
    "check_online",
    "declare_security",
    "require",
    "visible",
]

logger = logging.getLogger("quiver.server")

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_WWW_AUTHENTICATE = (b"www-authenticate", b'Bearer realm="quiver"')
_HELD_LIMIT = 1 << 20
_AUDIT_WAIT_SECONDS = 10.0


class RoutePolicy(NamedTuple):
    """What a route does, for the permission check and the audit log.

    Attributes:
        action: The action checked; ``None`` for a public route (no key needed).
        kind: The kind of resource.
        name: The path parameter that names the resource; ``@project`` for the project;
            ``None`` when the body names it (the scoped store checks it) or for lists.
        audit: Whether every request is written to the audit log (state changes).
    """

    action: str | None
    kind: str = "project"
    name: str | None = None
    audit: bool = False


_PUBLIC = RoutePolicy(None)
_PUBLIC_CALLER = Principal(name="anonymous")
_ADMIN_ONLY = RoutePolicy("admin", "project", "@project", audit=True)


def _registry_routes(kind: str, singular: str, plural: str) -> dict[str, RoutePolicy]:
    return {
        f"list_{plural}": RoutePolicy("describe", kind),
        f"get_{singular}": RoutePolicy("describe", kind, "name"),
        f"{singular}_history": RoutePolicy("describe", kind, "name"),
        f"get_{singular}_version": RoutePolicy("describe", kind, "name"),
        f"create_{singular}": RoutePolicy("apply", kind, audit=True),
        f"update_{singular}": RoutePolicy("apply", kind, "name", audit=True),
        f"restore_{singular}": RoutePolicy("apply", kind, "name", audit=True),
        f"delete_{singular}": RoutePolicy("delete", kind, "name", audit=True),
    }


ROUTES: dict[str, RoutePolicy] = {
    "health": _PUBLIC,
    "ready": _PUBLIC,
    "get_status": RoutePolicy("describe", "project", "@project"),
    "platform_status": RoutePolicy("describe", "project", "@project"),
    **_registry_routes("entity", "entity", "entities"),
    **_registry_routes("data_source", "data_source", "data_sources"),
    **_registry_routes("feature_view", "feature_view", "feature_views"),
    **_registry_routes("feature_service", "feature_service", "feature_services"),
    **_registry_routes(
        "on_demand_feature_view", "on_demand_feature_view", "on_demand_feature_views"
    ),
    "list_features": RoutePolicy("describe", "feature_view"),
    "create_feature": RoutePolicy("apply", "feature_view", audit=True),
    "get_feature": RoutePolicy("describe", "feature_view", "feature_id"),
    "delete_feature": RoutePolicy("apply", "feature_view", "feature_id", audit=True),
    "list_feature_sets": RoutePolicy("describe", "feature_view"),
    "create_feature_set": RoutePolicy("apply", "feature_view", audit=True),
    "get_feature_set": RoutePolicy("describe", "feature_view", "set_id"),
    "delete_feature_set": RoutePolicy("delete", "feature_view", "set_id", audit=True),
    "materialize_feature_set": RoutePolicy("write", "feature_view", "set_id", audit=True),
    "platform_list_feature_views": RoutePolicy("describe", "feature_view"),
    "platform_register_feature_view": RoutePolicy("apply", "feature_view", audit=True),
    "platform_create_feature_service": RoutePolicy("apply", "feature_service", audit=True),
    "get_online_features": RoutePolicy("read_online", "feature_view"),
    "feast_get_online_features": RoutePolicy("read_online", "feature_view"),
    "get_historical_features": RoutePolicy("read_offline", "feature_view"),
    "start_materialization": RoutePolicy("write", "feature_view", audit=True),
    "list_materializations": RoutePolicy("describe", "feature_view"),
    "list_schedules": RoutePolicy("describe", "feature_view"),
    "list_jobs": RoutePolicy("describe", "project", "@project"),
    "get_job": RoutePolicy("describe", "project", "@project"),
    "cancel_job": RoutePolicy("write", "project", "@project", audit=True),
    "feast_materialize": RoutePolicy("write", "feature_view", audit=True),
    "feast_materialize_incremental": RoutePolicy("write", "feature_view", audit=True),
    "push": RoutePolicy("write", "feature_view", audit=True),
    "feast_push": RoutePolicy("write", "feature_view", audit=True),
    "feast_write_to_online_store": RoutePolicy("write", "feature_view", audit=True),
    "list_models": RoutePolicy("describe", "model"),
    "platform_list_models": RoutePolicy("describe", "model"),
    "get_model": RoutePolicy("describe", "model", "name"),
    "list_model_versions": RoutePolicy("describe", "model", "name"),
    "get_model_version": RoutePolicy("describe", "model", "name"),
    "train_model": RoutePolicy("train", "model", audit=True),
    "platform_train_model": RoutePolicy("train", "model", audit=True),
    "set_model_stage": RoutePolicy("promote", "model", "name", audit=True),
    "predict_online": RoutePolicy("predict", "model"),
    "platform_predict_online": RoutePolicy("predict", "model"),
    "predict_batch": RoutePolicy("predict", "model", audit=True),
    "platform_predict_batch": RoutePolicy("predict", "model", audit=True),
    "list_prediction_jobs": RoutePolicy("describe", "model"),
    "get_prediction_job": RoutePolicy("describe", "model"),
    "list_permissions": RoutePolicy("admin", "project", "@project"),
    "get_permission": RoutePolicy("admin", "project", "@project"),
    "apply_permissions": RoutePolicy("admin", "project", "@project", audit=True),
    "put_permission": RoutePolicy("admin", "project", "@project", audit=True),
    "delete_permission": RoutePolicy("admin", "project", "@project", audit=True),
    "list_audit": RoutePolicy("admin", "project", "@project"),
    "metrics": RoutePolicy("describe", "project", "@project"),
    "monitoring_metrics": RoutePolicy("describe", "project", "@project"),
    "monitoring_usage": RoutePolicy("describe", "project", "@project"),
    "get_feature_statistics": RoutePolicy("describe", "feature_view"),
    "get_data_freshness": RoutePolicy("describe", "feature_view"),
    "validate_project": RoutePolicy("describe", "project", "@project"),
    "get_feature_lineage": RoutePolicy("describe", "feature_view", "view"),
    "get_model_drift": RoutePolicy("describe", "model", "name"),
}
"""Every route's action and resource, by operation id (a test holds it complete)."""


def route_policy(scope: Scope) -> tuple[str | None, RoutePolicy | None]:
    """The matched route's operation id and policy (``None`` before routing or unknown)."""
    operation = getattr(scope.get("route"), "operation_id", None)
    return operation, ROUTES.get(operation) if operation is not None else None


class Gate:
    """The REST API's security for one store.

    Args:
        store: The store the app serves.
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.enforce = store.config.auth.mode == "api_key"

    @cached_property
    def security(self) -> Security:
        """The store's security services (opened on first use: the registry may be down
        when the app starts)."""
        return self.store.security

    @cached_property
    def writer(self) -> AuditWriter:
        """The background writer of audit rows."""
        return AuditWriter(self.store.audit_log)

    def refresh(self) -> None:
        """Drop cached keys and decisions if the registry changed (the server's watcher)."""
        if self.enforce:
            self.security.refresh()

    def close(self) -> None:
        """Write the queued audit rows."""
        writer = self.__dict__.get("writer")
        if writer is not None:
            writer.close()

    def principal_of(self, scope: Scope) -> Principal:
        """Who sends this request: :data:`ANONYMOUS` with ``auth: none``, else the principal of
        its API key.

        Raises:
            UnauthorizedError: no key, two different keys, or a bad, revoked or expired one.
            ForbiddenError: the key is limited to another project.
        """
        if not self.enforce:
            return ANONYMOUS
        _, policy = route_policy(scope)
        if policy is not None and policy.action is None:
            return _PUBLIC_CALLER  # a probe: no key needed
        return self.security.authenticate(_api_key(scope))

    def record(
        self,
        scope: Scope,
        status: int,
        error: dict[str, Any] | None,
        operation: str | None = None,
    ) -> Any:
        """Queue the audit row of a request; returns the write's future.

        Args:
            scope: The request.
            status: The answer's status.
            error: The answer's ``error`` object, if it is an error.
            operation: The route's operation id (default: the matched route's).
        """
        state = scope.get("state") or {}
        operation = operation or route_policy(scope)[0]
        principal: Principal | None = state.get("principal")
        details = (error or {}).get("details")
        details = details if isinstance(details, dict) else {}
        audit: AuditScope | None = state.get("quiver.audit")
        resource = details.get("resource") if status == 403 else None
        if not resource:
            resources = audit.resources if audit is not None else []
            resource = ",".join(resources) or state.get("quiver.resource", "")
        client = scope.get("client")
        entry = AuditEntry(
            project=self.store.project,
            principal=principal.name if principal else str(details.get("name") or "anonymous"),
            key_id=principal.key_id if principal else details.get("key_id"),
            action=operation or f"{scope.get('method')} {scope.get('path')}",
            outcome="ok" if status < 400 else str((error or {}).get("type") or f"http_{status}"),
            resource=str(resource),
            status=status,
            request_id=audit.request_id if audit is not None else _request_id(scope),
            client=client[0] if client else None,
            method=scope.get("method"),
            path=scope.get("path"),
            message=(error or {}).get("message") if status >= 400 else None,
        )
        return self.writer.submit(entry)

    def record_denial(self, scope: Scope, exc: Any, operation: str) -> None:
        """Audit a 401/403 answered outside :class:`AuditMiddleware` (the online fast path)."""
        error = {"type": exc.error_type, "message": exc.message, "details": exc.details}
        self.record(scope, exc.status_code, error, operation)


def _header(scope: Scope, name: bytes) -> list[bytes]:
    return [v for k, v in scope["headers"] if k == name]


def _api_key(scope: Scope) -> str:
    """The API key of a request (``Authorization: Bearer`` or ``X-API-Key``), in one pass over
    the headers (this runs on the online hot path).

    Raises:
        UnauthorizedError: none, another scheme, or two different keys.
    """
    key: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if value[:7].lower() != b"bearer " and value.strip().lower() != b"bearer":
                scheme = value.decode("latin-1").strip().partition(" ")[0]
                raise UnauthorizedError(
                    f"the Authorization header uses the '{scheme}' scheme; send "
                    "'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                    details={"reason": "scheme"},
                )
            token = value[7:].strip()
        elif name == b"x-api-key":
            token = value.strip()
        else:
            continue
        if key is None:
            key = token
        elif token != key:
            raise UnauthorizedError(
                "the request carries two different API keys; send one",
                details={"reason": "ambiguous"},
            )
    if key is None:
        raise UnauthorizedError(
            "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
            "(keys are made with 'quiver keys create')",
            details={"reason": "missing"},
        )
    return key.decode("latin-1")


def _request_id(scope: Scope) -> str:
    """The client's ``X-Request-ID`` if it is a sane token, else a new id."""
    for value in _header(scope, b"x-request-id"):
        text = value.decode("latin-1").strip()
        if _REQUEST_ID_RE.match(text):
            return text
    return uuid.uuid4().hex[:16]


async def authorize(request: Request, principal: PrincipalDep) -> None:
    """The app-wide dependency: the route's permission check (see :data:`ROUTES`).

    The caller is identified by :func:`~quiver.server.deps.get_principal` (public routes need
    no key); with ``auth: api_key`` the route's action is checked on the resource its path
    names (or on its kind), and the handlers get a :class:`~quiver.security.scoped.ScopedStore`
    that checks what the body names.
    """
    scope = request.scope
    _, policy = route_policy(scope)
    gate: Gate = request.app.state.gate
    if not gate.enforce or (policy is not None and policy.action is None):
        return
    policy = policy or _ADMIN_ONLY
    name: str | None = None
    if policy.name == "@project":
        name = gate.store.project
    elif policy.name is not None:
        name = str(scope.get("path_params", {}).get(policy.name, ""))
        if policy.kind == "model" or policy.name == "feature_id":  # model:version, set:feature
            name = name.split(":", 1)[0]
    state = scope["state"]
    if name is not None:
        state["quiver.resource"] = f"{policy.kind}:{name}"
    assert policy.action is not None
    gate.security.check(principal, policy.action, policy.kind, name)
    from quiver.security.scoped import ScopedStore

    state["quiver.store"] = ScopedStore(gate.store, principal)


def check_online(request: Request, features: Any, feature_service: str | None) -> None:
    """``read_online`` on what an online request reads (the FastAPI online routes; the fast
    path makes the same check itself)."""
    gate: Gate = request.app.state.gate
    if gate.enforce:
        principal = request.scope["state"]["principal"]
        gate.security.check_features(principal, "read_online", features, feature_service)


def declare_security(app: Any, gate: Gate) -> None:
    """With ``auth: api_key``, declare in the OpenAPI document the two ways to send a key (so
    Swagger UI's "Authorize" works) and that every route but the public ones needs one."""
    if not gate.enforce:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key made with 'quiver keys create'",
            }
            schemes["apiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    if not isinstance(operation, dict) or "operationId" not in operation:
                        continue
                    rule = ROUTES.get(operation["operationId"])
                    if rule is None or rule.action is not None:
                        operation["security"] = [{"bearer": []}, {"apiKey": []}]
        document: dict[str, Any] = app.openapi_schema
        return document

    app.openapi = openapi


def visible(store: Any, kind: str, items: list[Any], name: Callable[[Any], str]) -> list[Any]:
    """The items of a list route the caller may describe (all of them with ``auth: none``)."""
    check = getattr(store, "visible", None)
    return check(kind, items, name) if check is not None else items


def require(store: Any, action: str, kind: str, name: str) -> None:
    """Check ``action`` on one resource for the caller (nothing with ``auth: none``)."""
    check = getattr(store, "check", None)
    if check is not None:
        check(action, kind, name)


class AuditMiddleware:
    """Pure ASGI middleware: the audit row of every state-changing or denied request.

    The answer of a request that changed something is held until its row is committed; other
    answers pass through (with ``X-Request-ID``). The online fast path skips this middleware
    (``fast_path_exempt``): its reads are not audited, and it records its own denials.

    Args:
        app: The wrapped application.
        gate: The app's :class:`Gate`.
    """

    fast_path_exempt = True

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        audit = AuditScope(request_id=_request_id(scope))
        scope.setdefault("state", {})["quiver.audit"] = audit
        request_id = (b"x-request-id", audit.request_id.encode())  # type: ignore[union-attr]
        held: list[Message] | None = None
        size = 0
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal held, size, status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), request_id]
                if status == 401:
                    headers.append(_WWW_AUTHENTICATE)
                message = {**message, "headers": headers}
                if status in (401, 403) or _audited(scope):
                    held = [message]
                    return
            elif held is not None and message["type"] == "http.response.body":
                held.append(message)
                size += len(message.get("body", b""))
                if message.get("more_body", False) and size <= _HELD_LIMIT:
                    return
                messages, held = held, None
                await self._record(scope, status, messages)
                for m in messages:
                    await send(m)
                return
            await send(message)

        with request_scope(audit):
            await self.app(scope, receive, send_wrapper)

    async def _record(self, scope: Scope, status: int, messages: list[Message]) -> None:
        error = _error_of(messages) if status >= 400 else None
        try:
            future = self.gate.record(scope, status, error)
            if _audited(scope):
                await asyncio.wait_for(asyncio.wrap_future(future), _AUDIT_WAIT_SECONDS)
        except Exception as exc:  # the answer stands; the writer logged the row
            logger.error("audit row of %s %s: %s", scope.get("method"), scope.get("path"), exc)


def _audited(scope: Scope) -> bool:
    _, policy = route_policy(scope)
    return policy is not None and policy.audit


def _error_of(messages: list[Message]) -> dict[str, Any] | None:
    """The ``error`` object of a JSON error answer (``None`` if it is not one)."""
    import json

    body = b"".join(m.get("body", b"") for m in messages[1:])
    with contextlib.suppress(ValueError):
        data = json.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return data["error"]
    return None
