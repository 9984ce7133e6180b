"""Who is acting: the principal of a REST request or of a local call.

A REST request's principal comes from its API key (or is :data:`ANONYMOUS` with ``auth: none``);
a CLI command or an SDK call acts as the local user, the repo's owner, unless a principal is given
(:meth:`~quiver.store.FeatureStore.as_principal`). The acting principal is kept in a context
variable for the duration of the request or call, so the registry history's author and the audit
log name it without every function passing it along.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

__all__ = [
    "ANONYMOUS",
    "Principal",
    "acting_as",
    "current_principal",
    "local_channel",
    "local_principal",
    "os_user",
    "set_local_channel",
]


@dataclass(frozen=True, eq=False)
class Principal:
    """Who is calling.

    Compared by identity: caches keep decisions per principal object, and the server hands out
    one object per verified key.

    Attributes:
        name: The caller's name (the API key's name, or the OS user for local calls).
        roles: The roles granted (``reader``, ``writer``, ``ml``, ``admin``).
        authenticated: Whether the identity was proven (by an API key).
        key_id: The id of the API key used, for the audit log.
        project: The project the key is limited to (``None``: every project of the registry).
        local: The repo's owner on this machine (CLI and SDK without a principal): permission
            policies do not apply, as the files themselves are within reach.
    """

    name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    authenticated: bool = False
    key_id: str | None = None
    project: str | None = None
    local: bool = False

    def describe(self) -> str:
        """``'alice' (role reader)`` for messages."""
        roles = ", ".join(sorted(self.roles)) or "none"
        return f"'{self.name}' (role{'s' if len(self.roles) > 1 else ''} {roles})"


ANONYMOUS = Principal(name="anonymous", roles=frozenset({"admin"}))
"""The caller of a server with ``auth: none``: anyone who can reach it may do everything."""


def os_user() -> str:
    """The local user: ``QUIVER_USER``, else the OS user."""
    try:
        return os.environ.get("QUIVER_USER") or getpass.getuser()
    except Exception:  # pragma: no cover - no user database in some containers
        return "unknown"


def local_principal() -> Principal:
    """The repo's owner on this machine: an admin named after the OS user (see :func:`os_user`)."""
    return Principal(name=os_user(), roles=frozenset({"admin"}), local=True)


_acting: ContextVar[Principal | None] = ContextVar("quiver_principal", default=None)


def current_principal() -> Principal | None:
    """The principal acting in this request or call, or ``None`` (a local call)."""
    return _acting.get()


def set_principal(principal: Principal | None) -> None:
    """Make ``principal`` the acting one for the rest of the current context (a request task)."""
    _acting.set(principal)


@contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    """Act as ``principal`` inside the block (history authors, audit rows)."""
    token = _acting.set(principal)
    try:
        yield principal
    finally:
        _acting.reset(token)


_local_channel = ["sdk"]


def set_local_channel(channel: str) -> None:
    """Name the channel of local operations in this process (the CLI sets ``cli``)."""
    _local_channel[0] = channel


def local_channel() -> str:
    """The channel of local operations in this process: ``sdk``, or ``cli`` in the CLI."""
    return _local_channel[0]
