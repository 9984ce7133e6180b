"""Quiver's errors.

Every error Quiver raises on purpose is a :class:`QuiverError`. The tree is small on
purpose; callers catch the branch they can act on:

    QuiverError
    ├── NotFoundError              an object, file or key does not exist           (HTTP 404)
    ├── ConflictError              the request clashes with the current state       (HTTP 409)
    │   ├── ReferencedError        deleting an object that another still uses
    │   ├── BreakingChangeError    an apply with breaking changes, not allowed
    │   └── ConcurrentChangeError  the registry changed since the plan was made
    ├── InvalidError               bad input: definitions, config, requests        (HTTP 422)
    │   ├── ConfigError            quiver.yaml / QUIVER_* settings
    │   ├── DefinitionError        a definitions file that cannot be loaded
    │   ├── DataValidationError    rows fail a view's validation rules (policy reject)
    │   └── JobTimeoutError        a job ran past its time limit and was cancelled
    ├── UnauthorizedError          no API key, or a bad, revoked or expired one    (HTTP 401)
    ├── ForbiddenError             the caller may not do this (a role, a           (HTTP 403)
    │                              permission, or a path outside the file roots)
    ├── PayloadTooLargeError       a request above the configured limit            (HTTP 413)
    └── BackendError               a store, engine or registry failed              (HTTP 503)
        ├── MissingExtraError      an optional dependency is not installed
        └── JobCancelledError      the server stopped while a job ran

Backend exceptions (DuckDB, SQLAlchemy, redis-py, ...) are translated at the boundary with
``raise QuiverError(...) from exc`` so the original stays attached for debugging.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BreakingChangeError",
    "ConcurrentChangeError",
    "ConfigError",
    "ConflictError",
    "DataValidationError",
    "DefinitionError",
    "ForbiddenError",
    "InvalidError",
    "JobCancelledError",
    "JobTimeoutError",
    "MissingExtraError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QuiverError",
    "ReferencedError",
    "UnauthorizedError",
]


class QuiverError(Exception):
    """Base class of every error Quiver raises on purpose.

    Attributes:
        message: A one-line message that names the object and says what to do.
        details: Optional structured details (for the REST API's ``error.details``).
    """

    status_code: int = 500
    error_type: str = "quiver_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __str__(self) -> str:
        return self.message


class NotFoundError(QuiverError):
    """An object, file or key does not exist."""

    status_code = 404
    error_type = "not_found"


class ConflictError(QuiverError):
    """The request clashes with the current state."""

    status_code = 409
    error_type = "conflict"


class ReferencedError(ConflictError):
    """An object cannot be deleted because another object references it."""

    error_type = "referenced"


class BreakingChangeError(ConflictError):
    """An apply contains breaking changes and they were not explicitly allowed."""

    error_type = "breaking_change"


class ConcurrentChangeError(ConflictError):
    """The registry changed between plan and apply."""

    error_type = "concurrent_change"


class InvalidError(QuiverError):
    """Bad input: a definition, a config value or a request."""

    status_code = 422
    error_type = "invalid"


class ConfigError(InvalidError):
    """``quiver.yaml`` or a ``QUIVER_*`` variable is invalid."""

    error_type = "config"


class DefinitionError(InvalidError):
    """A definitions file (Python, YAML or JSON) cannot be loaded."""

    error_type = "definition"


class DataValidationError(InvalidError):
    """Rows fail a feature view's validation rules and its policy is ``reject``.

    ``details`` holds the view, the counts per rule (``feature:rule``) and a sample of the
    failing rows' join keys per rule.
    """

    error_type = "validation_failed"


class JobTimeoutError(InvalidError):
    """A job (training, batch prediction) ran past its time limit and was cancelled."""

    error_type = "job_timeout"


class UnauthorizedError(QuiverError):
    """No API key was given, or the key is unknown, malformed, revoked or expired."""

    status_code = 401
    error_type = "unauthorized"


class ForbiddenError(QuiverError):
    """The caller is known but may not do this (a role or a permission denies it)."""

    status_code = 403
    error_type = "forbidden"


class PayloadTooLargeError(QuiverError):
    """A request is larger than the configured limit."""

    status_code = 413
    error_type = "payload_too_large"


class BackendError(QuiverError):
    """A store, an engine or the registry database failed."""

    status_code = 503
    error_type = "backend"


class MissingExtraError(BackendError):
    """An optional dependency is not installed."""

    error_type = "missing_extra"

    def __init__(self, package: str, extra: str, feature: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed; "
            f"install it with: pip install 'quiver[{extra}]'"
        )


class JobCancelledError(BackendError):
    """A job was cancelled before it finished because the server is stopping."""

    error_type = "job_cancelled"


def require(module: str, extra: str, feature: str) -> Any:
    """Import an optional dependency, or raise :class:`MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module.split(".")[0], extra, feature) from exc
