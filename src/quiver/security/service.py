"""API keys, permissions and the audit log of one store, with the caches serving needs.

:class:`Security` is made once per :class:`~quiver.store.FeatureStore` (``store.security``).
The REST server, the CLI and :class:`~quiver.security.scoped.ScopedStore` all go through it:

- :meth:`Security.authenticate` turns an API key into a :class:`Principal` (verified keys are
  cached until the registry changes);
- :meth:`Security.check` is the one permission check (decisions cached per principal);
  :meth:`check_features`, :meth:`check_plan` and :meth:`check_views` apply it to what a
  request names;
- the key and permission changes (:meth:`create_key`, :meth:`revoke_key`,
  :meth:`apply_permissions`, :meth:`delete_permission`) are audited.

The caches are dropped whenever the registry changes: at once for this process's own commits,
and within a second for other processes' (every key or permission change moves the registry's
revision; :meth:`refresh` reads it, the server every half second). So a key revoked with
``quiver keys revoke`` is refused by a running server within a second.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

from quiver.errors import ForbiddenError
from quiver.security.audit import (
    AuditEntry,
    audited,
    hostname,
    local_channel,
    logger,
)
from quiver.security.keys import ApiKey, KeyStore, NewKey
from quiver.security.permissions import Decision, Permission, PolicyStore, Resource, decide
from quiver.security.principal import Principal, current_principal, local_principal

if TYPE_CHECKING:
    from quiver.registry import Plan
    from quiver.security.audit import AuditLog
    from quiver.store import FeatureStore

__all__ = ["REFRESH_SECONDS", "Security"]

REFRESH_SECONDS = 1.0
"""How old the last registry check may be before a check reads the revision itself."""
_MAX_KEYS = 10_000
_REGISTRY_KINDS = frozenset(
    {"entity", "data_source", "feature_view", "on_demand_feature_view", "feature_service"}
)

_Denial = tuple[str, dict[str, Any]]


class Security:
    """The security services of one store.

    Args:
        store: The feature store (its registry holds keys, policies and the audit log).
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.project = store.project
        self.mode = store.config.auth.mode
        registry = store.registry
        self.registry = registry
        self.keys = KeyStore(registry)
        self.policies = PolicyStore(registry)
        self.audit: AuditLog = store.audit_log
        self._lock = threading.Lock()
        self._principals: dict[str, tuple[Principal, float]] = {}
        self._policies: list[Permission] | None = None
        self._uses_tags = False
        self._tags: dict[tuple[str, str], Mapping[str, str]] = {}
        self._decisions: dict[int, tuple[Principal, dict[Any, _Denial | None]]] = {}
        self._revision = registry.revision()
        self._checked = time.monotonic()
        ref = weakref.ref(self)

        def _on_commit(_conn: Any) -> None:
            me = ref()
            if me is not None:
                me.clear()

        from sqlalchemy import event

        event.listen(registry.engine, "commit", _on_commit)

    def close(self) -> None:
        """Release the audit log's connections."""
        self.audit.close()

    # -- freshness ------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget verified keys, policies, tags and decisions (the registry changed)."""
        self._principals = {}
        self._policies = None
        self._tags = {}
        self._decisions = {}

    def refresh(self) -> None:
        """Read the registry's revision now; clear the caches if another process moved it."""
        self._checked = time.monotonic()
        try:
            revision = self.registry.revision()
        except Exception:  # unreachable: keep the caches (verified keys stay verified)
            return
        if revision != self._revision:
            self._revision = revision
            self.clear()

    def _fresh(self) -> None:
        if time.monotonic() - self._checked >= REFRESH_SECONDS:
            self.refresh()

    # -- authentication -------------------------------------------------------------------------

    def authenticate(self, key: str) -> Principal:
        """The principal of an API key (verified keys are cached until the registry changes).

        Raises:
            UnauthorizedError: malformed, unknown, wrong secret, revoked or expired (named).
            ForbiddenError: the key is limited to another project.
        """
        self._fresh()
        cached = self._principals.get(key)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        record = self.keys.verify(key)
        if record.project is not None and record.project != self.project:
            raise ForbiddenError(
                f"API key '{record.name}' is for project '{record.project}', not '{self.project}'",
                details={"key_id": record.key_id, "name": record.name, "project": record.project},
            )
        principal = Principal(
            name=record.name,
            roles=frozenset({record.role}),
            authenticated=True,
            key_id=record.key_id,
            project=record.project,
        )
        expires = record.expires_at.timestamp() if record.expires_at else float("inf")
        principals = self._principals
        if len(principals) >= _MAX_KEYS:
            principals = self._principals = {}
        principals[key] = (principal, expires)
        return principal

    # -- authorization --------------------------------------------------------------------------

    def _policy_list(self) -> list[Permission]:
        policies = self._policies
        if policies is None:
            policies = self.policies.list()
            self._uses_tags = any(p.uses_tags for p in policies)
            self._policies = policies
        return policies

    def _tags_of(self, kind: str, name: str) -> Mapping[str, str]:
        if kind not in _REGISTRY_KINDS:
            return {}
        key = (kind, name)
        tags = self._tags.get(key)
        if tags is None:
            record = self.registry.find_record(kind, name)
            tags = dict(record.spec.get("tags") or {}) if record is not None else {}
            self._tags[key] = tags
        return tags

    def decide(
        self,
        principal: Principal,
        action: str,
        kind: str,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Decision:
        """The decision for ``principal`` doing ``action`` on one resource (not cached).

        ``tags``: the resource's tags; looked up in the registry when a policy needs them.
        """
        if principal.local:
            return Decision(True, "local user")
        policies = self._policy_list()
        if tags is None and name is not None and self._uses_tags:
            tags = self._tags_of(kind, name)
        return decide(principal, action, Resource(kind, name, tags or {}), policies)

    def _decisions_of(self, principal: Principal) -> dict[Any, _Denial | None]:
        entry = self._decisions.get(id(principal))
        if entry is None or entry[0] is not principal:
            entry = self._decisions[id(principal)] = (principal, {})
        return entry[1]

    def _denial(
        self, principal: Principal, action: str, resource: Resource, decision: Decision
    ) -> _Denial:
        message = f"{principal.describe()} may not {action} {resource.label()}: {decision.reason}"
        details = {
            "principal": principal.name,
            "action": action,
            "resource": resource.ref(),
            "permission": decision.permission,
        }
        return message, details

    def check(
        self,
        principal: Principal,
        action: str,
        kind: str,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """The one permission check: raise :class:`ForbiddenError` unless allowed.

        Decisions without explicit ``tags`` are cached per principal until the registry
        changes. The error names the principal, the action, the resource and the reason.
        """
        if principal.local:
            return
        self._fresh()
        denial: _Denial | None
        if tags is None:
            decisions = self._decisions_of(principal)
            key = (action, kind, name)
            if key in decisions:
                denial = decisions[key]
            else:
                denial = self._decide_denial(principal, action, kind, name, None)
                decisions[key] = denial
        else:
            denial = self._decide_denial(principal, action, kind, name, tags)
        if denial is not None:
            self._refuse(denial)

    def _decide_denial(
        self,
        principal: Principal,
        action: str,
        kind: str,
        name: str | None,
        tags: Mapping[str, str] | None,
    ) -> _Denial | None:
        decision = self.decide(principal, action, kind, name, tags)
        if decision.allowed:
            return None
        return self._denial(principal, action, Resource(kind, name, tags or {}), decision)

    def _refuse(self, denial: _Denial) -> NoReturn:
        raise ForbiddenError(denial[0], details=denial[1])

    def record_refusal(self, exc: ForbiddenError) -> None:
        """Write a refusal of a local call (an SDK principal's) to the audit log; REST
        requests write their own."""
        details = exc.details if isinstance(exc.details, dict) else {}
        principal = current_principal()
        entry = AuditEntry(
            project=self.project,
            principal=str(details.get("principal") or (principal and principal.name) or "?"),
            key_id=principal.key_id if principal is not None else None,
            action=str(details.get("action") or "check"),
            resource=str(details.get("resource") or ""),
            outcome=exc.error_type,
            channel=local_channel(),
            client=hostname(),
            message=exc.message,
        )
        try:
            self.audit.append(entry)
        except Exception as err:  # the refusal stands; the gap is logged
            logger.warning("audit row not written (%s): %s", err, entry.to_dict())

    def allowed(self, principal: Principal, action: str, kind: str, name: str) -> bool:
        """Whether :meth:`check` would pass (for filtering lists)."""
        try:
            self.check(principal, action, kind, name)
        except ForbiddenError:
            return False
        return True

    def check_features(
        self,
        principal: Principal,
        action: str,
        features: Sequence[str] | None,
        feature_service: str | None,
    ) -> None:
        """Check ``action`` (``read_online``, ``read_offline``) on a feature service and on
        every feature view the request reads; a denied view is named in the 403.

        Cached per principal and request (the serving hot path checks in a dict lookup).
        """
        if principal.local:
            return
        self._fresh()
        if isinstance(features, str):
            features = [features]
        decisions = self._decisions_of(principal)
        key: Any = ("features", action, feature_service, features and tuple(features))
        try:
            denial = decisions[key]
        except KeyError:
            denial = decisions[key] = self._features_denial(
                principal, action, features, feature_service
            )
        except TypeError:  # unhashable input (the store refuses it): decided, not cached
            denial = self._features_denial(principal, action, features, feature_service)
        if denial is not None:
            self._refuse(denial)

    def _features_denial(
        self,
        principal: Principal,
        action: str,
        features: Sequence[str] | None,
        feature_service: str | None,
    ) -> _Denial | None:
        if feature_service is not None:
            denial = self._decide_denial(
                principal, action, "feature_service", feature_service, None
            )
            if denial is not None:
                return denial
        for kind, name, tags in self._views_read(features, feature_service):
            denial = self._decide_denial(principal, action, kind, name, tags)
            if denial is not None:
                if feature_service is not None:
                    message, details = denial
                    message += f" (feature service '{feature_service}' reads it)"
                    return message, {**details, "feature_service": feature_service}
                return denial
        return None

    def _views_read(
        self, features: Sequence[str] | None, feature_service: str | None
    ) -> list[tuple[str, str, Mapping[str, str]]]:
        """``(kind, name, tags)`` of every view a request reads: its feature views, and its
        on-demand views with the feature views they compute from."""
        from quiver.features.computed import split_references
        from quiver.selection import resolve_features

        views: list[tuple[str, str, Mapping[str, str]]] = []
        computed = split_references(self.registry, features, feature_service, True)
        if computed is None:
            selections = self.store.resolve_features(features, feature_service)
        else:
            for out in computed.outputs:
                if out.on_demand is not None:
                    views.append(("on_demand_feature_view", out.view, out.on_demand.tags))
            selections = resolve_features(self.registry, list(computed.base_refs))
        views += [("feature_view", s.view.name, s.view.tags) for s in selections]
        return views

    def check_plan(self, principal: Principal, plan: Plan) -> None:
        """Check every change of a plan: ``apply`` for creates and updates (with the old and
        the new tags), ``delete`` for deletions."""
        for change in plan.pending:
            action = "delete" if change.action == "delete" else "apply"
            for spec in (change.old_spec, change.new_spec):
                if spec is not None:
                    tags = dict(spec.get("tags") or {})
                    self.check(principal, action, change.kind, change.name, tags)

    def check_views(self, principal: Principal, action: str, views: Sequence[str] | None) -> None:
        """Check ``action`` on each named feature view (``None``: every view of the project)."""
        names = views if views is not None else self.registry.names("feature_view")
        for name in names:
            self.check(principal, action, "feature_view", name)

    # -- audited changes --------------------------------------------------------------------

    def _actor(self) -> Principal:
        return current_principal() or local_principal()

    def create_key(
        self,
        name: str,
        role: str,
        *,
        project: str | None = None,
        expires_at: datetime | None = None,
    ) -> NewKey:
        """Create an API key (audited as ``create_key``); see :meth:`KeyStore.create`."""
        with audited(self.audit, "create_key", f"api_key:{name}"):
            return self.keys.create(
                name, role, project=project, expires_at=expires_at, created_by=self._actor().name
            )

    def revoke_key(self, name: str) -> ApiKey:
        """Revoke an API key (audited as ``revoke_key``); see :meth:`KeyStore.revoke`."""
        with audited(self.audit, "revoke_key", f"api_key:{name}"):
            return self.keys.revoke(name, revoked_by=self._actor().name)

    def apply_permissions(self, policies: Sequence[Permission]) -> dict[str, str]:
        """Create or update policies (audited as ``apply_permissions``)."""
        refs = [f"permission:{p.name}" for p in policies]
        with audited(self.audit, "apply_permissions", *refs):
            return self.policies.apply(policies, author=self._actor().name)

    def delete_permission(self, name: str) -> None:
        """Delete a policy (audited as ``delete_permission``)."""
        with audited(self.audit, "delete_permission", f"permission:{name}"):
            self.policies.delete(name)
