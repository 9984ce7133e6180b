"""API keys: ``qk_<id>_<secret>``, stored as the SHA-256 of the secret.

A key is made of a public id (16 hex digits, the row's primary key, used to find the row) and a
secret of 256 random bits from :mod:`secrets`. The registry keeps the id, the name, the role,
the project scope, the times and ``sha256(secret)``; the whole key is shown once, when it is
created. Verifying a key is one lookup by id and a constant-time comparison of the hashes
(:func:`hmac.compare_digest`). A fast hash is enough because the secret is random, not a
password: there is nothing to guess from a dictionary.

Keys are shared by every project of a registry database; ``--project`` limits one to a project.
Creating or revoking a key moves every project's revision, so running servers see it within
their next registry check.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.errors import ConflictError, InvalidError, NotFoundError, UnauthorizedError
from quiver.security.permissions import ROLES
from quiver.security.tables import api_keys

if TYPE_CHECKING:
    from quiver.registry import Registry

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "KeyStore",
    "NewKey",
    "hash_secret",
    "parse_duration",
    "parse_expires",
    "parse_time",
    "split_key",
]

KEY_PREFIX = "qk_"
_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,62}$")
_PROJECT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_DURATION_RE = re.compile(r"^\s*(\d{1,6})\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class ApiKey:
    """A stored API key (never its secret).

    Attributes:
        key_id: The public id (the part of the key after ``qk_``, before the secret).
        name: The key's name; requests made with it act as a principal of that name.
        role: ``reader``, ``writer``, ``ml`` or ``admin``.
        project: The only project the key may be used for; ``None`` for every project.
        created_at: When it was created (UTC).
        created_by: Who created it.
        expires_at: When it stops working; ``None`` for never.
        revoked_at: When it was revoked; ``None`` while it is not.
        revoked_by: Who revoked it.
    """

    key_id: str
    name: str
    role: str
    project: str | None
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None

    def status(self, now: datetime | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC)):
            return "expired"
        return "active"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (no secret: the registry has none)."""
        return {
            "name": self.name,
            "key_id": self.key_id,
            "role": self.role,
            "project": self.project,
            "status": self.status(),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revoked_by": self.revoked_by,
        }

    @classmethod
    def from_row(cls, row: Any) -> ApiKey:
        """The key of an ``api_keys`` row."""
        return cls(
            key_id=row.key_id,
            name=row.name,
            role=row.role,
            project=row.project,
            created_at=_utc(row.created_at),  # type: ignore[arg-type]
            created_by=row.created_by,
            expires_at=_utc(row.expires_at),
            revoked_at=_utc(row.revoked_at),
            revoked_by=row.revoked_by,
        )


@dataclass(frozen=True)
class NewKey:
    """A key just created: the only time its secret exists outside the caller's hands."""

    key: str
    record: ApiKey


def hash_secret(secret: str) -> str:
    """The stored form of a key's secret: its SHA-256, as 64 hex digits."""
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str]:
    """``(key_id, secret)`` of ``qk_<id>_<secret>``.

    Raises:
        UnauthorizedError: the text is not an API key of that form.
    """
    if key.startswith(KEY_PREFIX):
        key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
        if sep and _ID_RE.match(key_id) and _SECRET_RE.match(secret):
            return key_id, secret
    raise UnauthorizedError(
        "the API key is malformed; keys look like qk_<16 hex digits>_<43 characters>, as "
        "printed by 'quiver keys create'"
    )


def parse_expires(text: str | None, now: datetime | None = None) -> datetime | None:
    """When a key made now with ``--expires TEXT`` expires.

    Args:
        text: ``90d``, ``12h``, ``30m``, ``2w``; an ISO date or time (UTC if naive); ``never``
            or ``None`` for no expiry.
        now: The current time (default: now, UTC).

    Raises:
        InvalidError: anything else, or a time in the past.
    """
    if text is None or text.strip().lower() in ("", "never", "none"):
        return None
    now = now or datetime.now(UTC)
    duration = parse_duration(text, "--expires")
    if duration is not None:
        return now + duration
    when = parse_time(text, "--expires")
    if when <= now:
        raise InvalidError(f"--expires {text!r} is in the past")
    return when


def parse_duration(text: str, what: str) -> timedelta | None:
    """``30m``, ``12h``, ``90d``, ``2w`` as a duration; ``None`` for text of another form.

    Raises:
        InvalidError: a zero duration (``what`` names the option).
    """
    match = _DURATION_RE.match(text)
    if match is None:
        return None
    amount = int(match.group(1))
    if amount == 0:
        raise InvalidError(f"{what} must be a positive duration, e.g. 90d")
    return timedelta(**{_UNITS[match.group(2)]: amount})


def parse_time(text: str, what: str) -> datetime:
    """An ISO date or time, in UTC (naive is taken as UTC).

    Raises:
        InvalidError: not ISO 8601 (``what`` names the option).
    """
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidError(
            f"{what} {text!r} is neither a duration (30m, 12h, 90d, 2w) nor an ISO date"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class KeyStore:
    """The API keys of a registry database.

    Args:
        registry: The registry whose database holds the keys (shared by its projects).
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def create(
        self,
        name: str,
        role: str,
        *,
        project: str | None = None,
        expires_at: datetime | None = None,
        created_by: str | None = None,
    ) -> NewKey:
        """Create a key and return it with its secret (which is not kept).

        Raises:
            InvalidError: a bad name, role or project.
            ConflictError: a key of that name exists and is not revoked.
        """
        if not _NAME_RE.match(name):
            raise InvalidError(
                f"key name {name!r} is not valid: use letters, digits and _ . @ - "
                "(at most 63 characters)"
            )
        if role not in ROLES:
            raise InvalidError(f"unknown role '{role}'; roles are {', '.join(ROLES)}")
        if project is not None and not _PROJECT_RE.match(project):
            raise InvalidError(f"project {project!r} is not a plain identifier")
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)  # 256 bits
        now = datetime.now(UTC)
        record = ApiKey(key_id, name, role, project, now, created_by, expires_at, None, None)
        with self.registry.global_transaction() as conn:
            existing = conn.execute(
                sa.select(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            ).first()
            if existing is not None:
                old = ApiKey.from_row(existing)
                raise ConflictError(
                    f"API key '{name}' exists ({old.status()}); revoke it first with "
                    f"'quiver keys revoke {name}', or choose another name",
                    details={"name": name},
                )
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    name=name,
                    role=role,
                    project=project,
                    secret_hash=hash_secret(secret),
                    created_at=now,
                    created_by=created_by,
                    expires_at=expires_at,
                )
            )
        return NewKey(key=f"{KEY_PREFIX}{key_id}_{secret}", record=record)

    def list(self) -> list[ApiKey]:
        """Every key, revoked ones included, by name then creation time."""
        with self.registry.engine.connect() as conn:
            rows = conn.execute(
                sa.select(api_keys).order_by(api_keys.c.name, api_keys.c.created_at)
            ).all()
        return [ApiKey.from_row(r) for r in rows]

    def revoke(self, name: str, *, revoked_by: str | None = None) -> ApiKey:
        """Revoke the key called ``name``; requests with it are refused from then on.

        Raises:
            NotFoundError: no key of that name that is not revoked yet.
        """
        now = datetime.now(UTC)
        with self.registry.global_transaction() as conn:
            row = conn.execute(
                sa.select(api_keys).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            ).first()
            if row is None:
                revoked = conn.execute(
                    sa.select(api_keys.c.key_id).where(api_keys.c.name == name)
                ).first()
                state = "is revoked already" if revoked else "does not exist"
                raise NotFoundError(f"API key '{name}' {state}; see 'quiver keys list'")
            conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == row.key_id)
                .values(revoked_at=now, revoked_by=revoked_by)
            )
        key = ApiKey.from_row(row)
        return ApiKey(**{**key.__dict__, "revoked_at": now, "revoked_by": revoked_by})

    def verify(self, key: str, now: datetime | None = None) -> ApiKey:
        """The stored key that ``key`` is, if it may be used now.

        Raises:
            UnauthorizedError: malformed, unknown or wrong secret ("not valid"), revoked or
                expired (each named; revoked and expired only once the secret matched).
        """
        key_id, secret = split_key(key)
        with self.registry.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        # Compare even without a row, so an unknown id costs the same as a wrong secret.
        stored = row.secret_hash if row is not None else "0" * 64
        if not hmac.compare_digest(hash_secret(secret), stored) or row is None:
            raise UnauthorizedError("the API key is not valid (unknown id or wrong secret)")
        record = ApiKey.from_row(row)
        if record.revoked_at is not None:
            raise UnauthorizedError(
                f"API key '{record.name}' was revoked at {record.revoked_at.isoformat()}",
                details={"reason": "revoked", "key_id": key_id, "name": record.name},
            )
        if record.expires_at is not None and record.expires_at <= (now or datetime.now(UTC)):
            raise UnauthorizedError(
                f"API key '{record.name}' expired at {record.expires_at.isoformat()}",
                details={"reason": "expired", "key_id": key_id, "name": record.name},
            )
        return record
