"""Roles, permission policies, and the one decision function.

**Actions**: ``describe``, ``read_online``, ``read_offline``, ``write`` (push, materialize),
``apply`` (create, update, restore registry objects), ``delete``, ``train``, ``promote``,
``predict`` and ``admin`` (keys, permissions, the audit log).

**Built-in roles**, each including the one before:

- ``reader``: describe, read_online, read_offline;
- ``writer``: + write, apply, delete;
- ``ml``: + train, promote, predict;
- ``admin``: every action.

**Permission policies** (stored per project in the registry, applied from YAML with
``quiver permissions apply -f FILE`` or ``POST /api/v1/permissions``) allow or deny actions on
resources selected by kind, name pattern (``fnmatch``) and tags, for principals selected by key
name or role (patterns too; ``"*"`` is everyone)::

    permissions:
      - name: no_pii_for_readers
        effect: deny
        actions: [read_online, read_offline]
        roles: [reader]
        kinds: [feature_view]
        tags: {pii: "true"}

**Precedence** (:func:`decide`): an explicit deny wins; then an explicit allow; then the
principal's roles; anything else is denied. Local calls (the CLI, the SDK without a principal)
are not checked: they run with the repo's own files and credentials.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from quiver.errors import InvalidError, NotFoundError
from quiver.security.tables import permissions

if TYPE_CHECKING:
    from quiver.registry import Registry
    from quiver.security.principal import Principal

__all__ = [
    "ACTIONS",
    "KINDS",
    "ROLES",
    "ROLE_ACTIONS",
    "Decision",
    "Permission",
    "PermissionRecord",
    "PolicyStore",
    "Resource",
    "decide",
    "load_permissions",
    "parse_permission",
]

Action = Literal[
    "describe",
    "read_online",
    "read_offline",
    "write",
    "apply",
    "delete",
    "train",
    "promote",
    "predict",
    "admin",
]
Kind = Literal[
    "project",
    "entity",
    "data_source",
    "feature_view",
    "on_demand_feature_view",
    "feature_service",
    "model",
]

ACTIONS: tuple[str, ...] = Action.__args__  # type: ignore[attr-defined]
KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]

_READER = frozenset({"describe", "read_online", "read_offline"})
_WRITER = _READER | {"write", "apply", "delete"}
_ML = _WRITER | {"train", "promote", "predict"}
ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "reader": _READER,
    "writer": _WRITER,
    "ml": _ML,
    "admin": frozenset(ACTIONS),
}
"""What each built-in role may do on every resource, unless a policy denies it."""

ROLES: tuple[str, ...] = tuple(ROLE_ACTIONS)

_LABELS = {
    "project": "project",
    "entity": "entity",
    "data_source": "data source",
    "feature_view": "feature view",
    "on_demand_feature_view": "on-demand feature view",
    "feature_service": "feature service",
    "model": "model",
}


@dataclass(frozen=True)
class Resource:
    """What an action is on.

    Attributes:
        kind: One of :data:`KINDS`.
        name: The object's name; ``None`` asks about the kind as a whole ("some object of this
            kind"), as a list route does before filtering its items.
        tags: The object's tags (feature views, services, entities and sources have them).
    """

    kind: str
    name: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def label(self) -> str:
        """``feature view 'x'``, or ``feature views`` for the kind as a whole."""
        what = _LABELS.get(self.kind, self.kind)
        if self.name is not None:
            return f"{what} '{self.name}'"
        return "entities" if what == "entity" else f"{what}s"

    def ref(self) -> str:
        """``feature_view:x`` (the audit log's form), or ``feature_view:*``."""
        return f"{self.kind}:{self.name if self.name is not None else '*'}"


class Permission(BaseModel):
    """One permission policy.

    Attributes:
        name: The policy's name (unique in its project).
        effect: ``allow`` grants the actions, ``deny`` refuses them (deny wins).
        actions: The actions, or ``["*"]`` for all.
        principals: Key names (``fnmatch`` patterns) the policy applies to.
        roles: Roles (patterns) the policy applies to; ``"*"`` in either list is everyone.
        kinds: Resource kinds; empty for every kind.
        names: Resource name patterns; empty for every name.
        tags: Tags the resource must all carry (values are patterns: ``"*"`` is any value).
        description: Free text.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    effect: Literal["allow", "deny"] = "allow"
    actions: tuple[Action | Literal["*"], ...]
    principals: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    kinds: tuple[Kind, ...] = ()
    names: tuple[str, ...] = ()
    tags: dict[str, str] = {}
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        from quiver.definitions import NAME_RE

        if not NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a plain identifier (letters, digits, _)")
        return value

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one action (or '*')")
        return value

    @model_validator(mode="after")
    def _who(self) -> Permission:
        if not self.principals and not self.roles:
            raise ValueError(
                "say who the policy applies to: principals (key names) and/or roles "
                "('*' for everyone)"
            )
        return self

    def covers_action(self, action: str) -> bool:
        """Whether the policy names ``action``."""
        return "*" in self.actions or action in self.actions

    def applies_to(self, principal: Principal) -> bool:
        """Whether the policy names ``principal`` (by key name or by one of its roles)."""
        return any(fnmatchcase(principal.name, p) for p in self.principals) or any(
            fnmatchcase(role, pattern) for role in principal.roles for pattern in self.roles
        )

    def selects(self, resource: Resource) -> bool:
        """Whether the policy's resource selector takes ``resource``.

        For the kind as a whole (``name is None``) an allow policy selects it when the kind
        matches (it may allow some object), a deny policy only when it takes every object of
        the kind (no name pattern but ``*``, no tags): a list is then filtered object by object.
        """
        if self.kinds and resource.kind not in self.kinds:
            return False
        if resource.name is None:
            if self.effect == "allow":
                return True
            return (not self.names or "*" in self.names) and not self.tags
        if self.names and not any(fnmatchcase(resource.name, p) for p in self.names):
            return False
        tags = resource.tags
        return all(k in tags and fnmatchcase(str(tags[k]), v) for k, v in self.tags.items())

    def matches(self, principal: Principal, action: str, resource: Resource) -> bool:
        """Whether the policy speaks about this principal, action and resource."""
        return self.covers_action(action) and self.applies_to(principal) and self.selects(resource)

    @property
    def uses_tags(self) -> bool:
        """Whether deciding needs the resource's tags."""
        return bool(self.tags)


@dataclass(frozen=True)
class Decision:
    """The answer of :func:`decide`.

    Attributes:
        allowed: Whether the action may go ahead.
        reason: Why, in words (``denied by permission 'x'``, ``role reader grants it``, ...).
        permission: The deciding policy's name, if a policy decided.
    """

    allowed: bool
    reason: str
    permission: str | None = None


def decide(
    principal: Principal, action: str, resource: Resource, policies: Iterable[Permission]
) -> Decision:
    """May ``principal`` do ``action`` on ``resource``?

    Explicit deny wins; then explicit allow; then the principal's roles; else deny.
    """
    allow: Permission | None = None
    for policy in policies:
        if policy.matches(principal, action, resource):
            if policy.effect == "deny":
                return Decision(False, f"denied by permission '{policy.name}'", policy.name)
            allow = allow or policy
    if allow is not None:
        return Decision(True, f"allowed by permission '{allow.name}'", allow.name)
    for role in sorted(principal.roles):
        if action in ROLE_ACTIONS.get(role, ()):
            return Decision(True, f"role {role} grants {action}")
    roles = ", ".join(sorted(principal.roles)) or "no role"
    return Decision(False, f"{roles} does not grant {action} and no permission allows it")


# -- storage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PermissionRecord:
    """A stored policy with its metadata."""

    permission: Permission
    created_at: datetime
    updated_at: datetime
    updated_by: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict: the policy's fields and its times."""
        return {
            **self.permission.model_dump(mode="json"),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }


def parse_permission(data: Any, where: str = "", number: int | None = None) -> Permission:
    """A :class:`Permission` from its spec, or :class:`InvalidError` naming the problem.

    Args:
        data: The spec.
        where: Where it comes from (a file name), for the message.
        number: Its position in a list, for a policy without a name.
    """
    try:
        return Permission.model_validate(data)
    except ValidationError as exc:
        name = data.get("name") if isinstance(data, dict) else None
        label = f"permission '{name}'" if isinstance(name, str) else "permission"
        if number is not None and not isinstance(name, str):
            label += f" {number}"
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise InvalidError(f"{where}{label} is invalid: {problems}") from None


def _problem(error: Any) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def load_permissions(path: str | Path) -> list[Permission]:
    """The policies of a YAML or JSON file: ``permissions: [...]``, or the list itself.

    Raises:
        InvalidError: the file cannot be read or a policy is invalid (named).
        NotFoundError: no such file.
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"permissions file '{file}' does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidError(f"{file}: cannot be read as YAML or JSON: {exc}") from None
    if isinstance(data, dict) and set(data) == {"permissions"}:
        data = data["permissions"]
    if not isinstance(data, list):
        raise InvalidError(f"{file}: expected 'permissions:' followed by a list of policies")
    specs = [parse_permission(item, f"{file}: ", i + 1) for i, item in enumerate(data)]
    names = [p.name for p in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidError(f"{file}: permission '{dupes[0]}' is defined twice")
    return specs


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class PolicyStore:
    """The permission policies of one project, in the registry.

    Changes go through the registry's project transaction, so they move the project's revision
    and every server of the project picks them up at its next check.
    """

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def records(self) -> list[PermissionRecord]:
        """Every policy of the project, by name."""
        with self.registry.engine.connect() as conn:
            rows = conn.execute(
                sa.select(permissions)
                .where(permissions.c.project == self.registry.project)
                .order_by(permissions.c.name)
            ).all()
        return [
            PermissionRecord(
                Permission.model_validate(json.loads(r.spec)),
                _utc(r.created_at),
                _utc(r.updated_at),
                r.updated_by,
            )
            for r in rows
        ]

    def list(self) -> list[Permission]:
        """Every policy of the project, by name."""
        return [r.permission for r in self.records()]

    def apply(self, policies: Sequence[Permission], *, author: str | None) -> dict[str, str]:
        """Create or update policies (by name) in one transaction.

        Returns:
            ``{name: "created" | "updated" | "unchanged"}``.
        """
        now = datetime.now(UTC)
        project = self.registry.project
        outcome: dict[str, str] = {}
        with self.registry.transaction() as conn:
            for policy in policies:
                text = json.dumps(policy.model_dump(mode="json"), sort_keys=True)
                key = (permissions.c.project == project) & (permissions.c.name == policy.name)
                old = conn.execute(sa.select(permissions.c.spec).where(key)).first()
                if old is None:
                    conn.execute(
                        permissions.insert().values(
                            project=project,
                            name=policy.name,
                            spec=text,
                            created_at=now,
                            updated_at=now,
                            updated_by=author,
                        )
                    )
                    outcome[policy.name] = "created"
                elif old.spec != text:
                    conn.execute(
                        permissions.update()
                        .where(key)
                        .values(spec=text, updated_at=now, updated_by=author)
                    )
                    outcome[policy.name] = "updated"
                else:
                    outcome[policy.name] = "unchanged"
        return outcome

    def delete(self, name: str) -> None:
        """Delete one policy.

        Raises:
            NotFoundError: the project has no policy called ``name``.
        """
        with self.registry.transaction() as conn:
            result = conn.execute(
                permissions.delete().where(
                    permissions.c.project == self.registry.project, permissions.c.name == name
                )
            )
            if result.rowcount == 0:
                raise NotFoundError(
                    f"permission '{name}' does not exist in project '{self.registry.project}'"
                )
