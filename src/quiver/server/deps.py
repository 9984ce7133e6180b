"""Request dependencies: the store, the server settings and the caller's identity.

Every route depends on :func:`~quiver.server.access.authorize` (``create_app`` installs it on
the whole app), which identifies the caller with :func:`get_principal` and checks the route's
permission; the online fast path (:mod:`quiver.server.fastpath`) calls :func:`get_principal`
too, so it stays the one place where a caller is identified.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from quiver.config import ServerConfig
from quiver.security.principal import ANONYMOUS, Principal, set_principal
from quiver.store import FeatureStore

__all__ = [
    "ANONYMOUS",
    "Principal",
    "PrincipalDep",
    "SettingsDep",
    "StoreDep",
    "get_principal",
    "get_settings",
    "get_store",
]


async def get_principal(request: Request) -> Principal:
    """Identify the caller of a request (once per request).

    With ``auth: none`` every caller is :data:`~quiver.security.principal.ANONYMOUS` (an
    admin); with ``auth: api_key`` the ``Authorization: Bearer <key>`` or ``X-API-Key`` header
    is verified (:meth:`Security.authenticate <quiver.security.service.Security.authenticate>`).
    The principal is kept in ``request.state.principal`` (the audit log reads it) and acts for
    the rest of the request (the registry history's author).

    Raises:
        UnauthorizedError: no key, or a bad, revoked or expired one (401).
        ForbiddenError: a key limited to another project (403).
    """
    # The scope's state dict, which request.state wraps (cheaper than building the State
    # object on the lean online path).
    state = request.scope.setdefault("state", {})
    principal: Principal | None = state.get("principal")
    if principal is None:
        principal = state["principal"] = request.app.state.gate.principal_of(request.scope)
        set_principal(principal)
    return principal


async def get_store(request: Request) -> Any:
    """The app's :class:`~quiver.store.FeatureStore`; with ``auth: api_key``, that store
    acting as the caller (:class:`~quiver.security.scoped.ScopedStore`), which checks every
    call."""
    scoped = request.scope.get("state", {}).get("quiver.store")
    store: FeatureStore = scoped if scoped is not None else request.app.state.store
    return store


async def get_settings(request: Request) -> ServerConfig:
    """The app's :class:`~quiver.config.ServerConfig` (limits of inline payloads)."""
    settings: ServerConfig = request.app.state.settings
    return settings


PrincipalDep = Annotated[Principal, Depends(get_principal)]
StoreDep = Annotated[FeatureStore, Depends(get_store)]
SettingsDep = Annotated[ServerConfig, Depends(get_settings)]
