"""Request dependencies: the store, the server settings and the caller's identity.

Every route depends on :func:`get_principal` (``create_app`` installs it on the whole app), so
authentication and authorization are added in that one function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from quiver.config import ServerConfig
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


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes:
        name: The caller's name (``anonymous`` until API keys exist).
        roles: The roles granted (an anonymous caller may do everything today).
        authenticated: Whether the identity was proven (by an API key).
        key_id: The id of the API key used, for the audit log.
    """

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    authenticated: bool = False
    key_id: str | None = None


ANONYMOUS = Principal(name="anonymous", roles=frozenset({"admin"}))
"""The caller while the API has no authentication."""


async def get_principal(request: Request) -> Principal:
    """Identify the caller of a request; every route runs this first.

    Today every caller is :data:`ANONYMOUS`. API keys plug in here: read the
    ``Authorization: Bearer <key>`` (or ``X-API-Key``) header, look the key's hash up in the
    registry, raise :class:`~quiver.errors.QuiverError` subclasses for 401/403, and return a
    :class:`Principal` with the key's roles. Routes that need a permission take
    ``principal: PrincipalDep`` and check its roles; the audit log reads
    ``request.state.principal``. The lean online routes (:mod:`quiver.server.fastpath`) call
    this function too, so it stays the one place.
    """
    # request.state.principal, written to the scope's state dict that request.state wraps
    # (cheaper than building the State object on the lean online path).
    request.scope.setdefault("state", {})["principal"] = ANONYMOUS
    return ANONYMOUS


async def get_store(request: Request) -> FeatureStore:
    """The app's :class:`~quiver.store.FeatureStore`."""
    store: FeatureStore = request.app.state.store
    return store


async def get_settings(request: Request) -> ServerConfig:
    """The app's :class:`~quiver.config.ServerConfig` (limits of inline payloads)."""
    settings: ServerConfig = request.app.state.settings
    return settings


PrincipalDep = Annotated[Principal, Depends(get_principal)]
StoreDep = Annotated[FeatureStore, Depends(get_store)]
SettingsDep = Annotated[ServerConfig, Depends(get_settings)]
