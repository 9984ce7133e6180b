"""Plan and apply: the diff between definitions and the registry, and writing it.

A plan lists, per object, whether it is created, updated, deleted or unchanged, the field-level
changes of an update, and which changes are **breaking**: a feature's dtype changes, a feature
that a feature service uses is removed, or an entity's join keys (or their type) change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from quiver.definitions import (
    KIND_LABELS,
    VIEW_KINDS,
    Entity,
    FeatureService,
    FeatureView,
    FileSource,
    IcebergSource,
    OnDemandFeatureView,
    did_you_mean,
    object_from_spec,
    parse_feature_ref,
)
from quiver.errors import (
    BreakingChangeError,
    ConcurrentChangeError,
    InvalidError,
    NotFoundError,
    ReferencedError,
)
from quiver.registry._registry import ObjectRecord, Registry

__all__ = ["DefinitionSet", "FieldChange", "ObjectChange", "Plan", "apply_plan", "compute_plan"]

KIND_ORDER = ("entity", "data_source", "feature_view", "on_demand_feature_view", "feature_service")
DEFINITION_TYPES = (  # what a definitions file may declare
    Entity,
    FileSource,
    IcebergSource,
    FeatureView,
    OnDemandFeatureView,
    FeatureService,
)
Action = Literal["create", "update", "delete", "unchanged"]


@dataclass
class DefinitionSet:
    """Definition objects by kind and name, as loaded from a repo or a request."""

    entities: dict[str, Entity] = field(default_factory=dict)
    data_sources: dict[str, FileSource | IcebergSource] = field(default_factory=dict)
    feature_views: dict[str, FeatureView] = field(default_factory=dict)
    feature_services: dict[str, FeatureService] = field(default_factory=dict)
    on_demand_feature_views: dict[str, OnDemandFeatureView] = field(default_factory=dict)

    def by_kind(self, kind: str) -> dict[str, Any]:
        """The objects of one kind."""
        tables: dict[str, dict[str, Any]] = {
            "entity": self.entities,
            "data_source": self.data_sources,
            "feature_view": self.feature_views,
            "on_demand_feature_view": self.on_demand_feature_views,
            "feature_service": self.feature_services,
        }
        return tables[kind]

    def add(self, obj: Any, origin: str = "") -> None:
        """Add one object; inline sources of feature views are registered as data sources.

        Raises:
            InvalidError: when two different objects of one kind share a name.
        """
        where = f" ({origin})" if origin else ""
        if not isinstance(obj, DEFINITION_TYPES):
            raise InvalidError(
                f"cannot apply a {type(obj).__name__} ({obj!r:.60}){where}: pass Entity, "
                "FileSource, IcebergSource, FeatureView, OnDemandFeatureView or FeatureService "
                "objects; load files with FeatureStore.load_definitions(path)"
            )
        if isinstance(obj, FeatureView) and not isinstance(obj.source, str):
            self.add(obj.source, origin)
            obj = obj.normalized()
        kind = obj.kind
        table = self.by_kind(kind)
        existing = table.get(obj.name)
        if existing is not None and existing != obj:
            raise InvalidError(
                f"duplicate {KIND_LABELS[kind]} name '{obj.name}'{where}: two different "
                "definitions share it; rename one"
            )
        table[obj.name] = obj

    @classmethod
    def of(cls, objects: list[Any]) -> DefinitionSet:
        """A set holding ``objects``."""
        result = cls()
        for obj in objects:
            result.add(obj)
        return result

    def all(self) -> list[Any]:
        """Every object, in dependency order."""
        return [obj for kind in KIND_ORDER for obj in self.by_kind(kind).values()]

    def __len__(self) -> int:
        return sum(len(self.by_kind(k)) for k in KIND_ORDER)


@dataclass
class FieldChange:
    """One changed value inside an object's spec."""

    path: str
    old: Any
    new: Any
    breaking: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "path": self.path,
            "old": self.old,
            "new": self.new,
            "breaking": self.breaking,
            "reason": self.reason,
        }


@dataclass
class ObjectChange:
    """What a plan does to one object."""

    kind: str
    name: str
    action: Action
    old_spec: dict[str, Any] | None
    new_spec: dict[str, Any] | None
    new_hash: str | None
    base_version: int | None
    fields: list[FieldChange] = field(default_factory=list)

    @property
    def breaking(self) -> bool:
        """Whether any field change is breaking."""
        return any(f.breaking for f in self.fields)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "breaking": self.breaking,
            "base_version": self.base_version,
            "changes": [f.to_dict() for f in self.fields],
        }


@dataclass
class Plan:
    """The diff between definitions and the registry."""

    project: str
    changes: list[ObjectChange]

    @property
    def pending(self) -> list[ObjectChange]:
        """The changes that write something."""
        return [c for c in self.changes if c.action != "unchanged"]

    @property
    def has_changes(self) -> bool:
        """Whether applying writes anything."""
        return bool(self.pending)

    @property
    def breaking(self) -> list[ObjectChange]:
        """The changes with a breaking field change."""
        return [c for c in self.changes if c.breaking]

    def summary(self) -> dict[str, int]:
        """Counts per action."""
        out = {"create": 0, "update": 0, "delete": 0, "unchanged": 0}
        for c in self.changes:
            out[c.action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "project": self.project,
            "summary": self.summary(),
            "breaking": len(self.breaking),
            "changes": [c.to_dict() for c in self.changes],
        }


def references_of(kind: str, spec: dict[str, Any]) -> set[tuple[str, str]]:
    """The (kind, name) pairs an object's spec refers to."""
    refs: set[tuple[str, str]] = set()
    if kind == "feature_view":
        refs.update(("entity", e) for e in spec.get("entities", []))
        source = spec.get("source")
        if isinstance(source, str):
            refs.add(("data_source", source))
        if spec.get("source_query"):
            from quiver.features.sql import parse_query

            query = parse_query(spec["source_query"], None)
            refs.update(("data_source", t) for t in query.tables)
    elif kind == "feature_service":
        refs.update(("feature_view", parse_feature_ref(r)[0]) for r in spec.get("features", []))
    elif kind == "on_demand_feature_view":
        refs.update(("feature_view", v) for v in spec.get("sources", []))
    return refs


def ref_kind(kind: str) -> str:
    """The kind as :func:`references_of` names it: on-demand and plain feature views share
    one namespace of names (``view:feature``), so both are ``feature_view`` there."""
    return "feature_view" if kind in VIEW_KINDS else kind


def validate_state(state: DefinitionSet) -> None:
    """Check references and cross-object rules of a complete desired state.

    Raises:
        NotFoundError: a reference to a missing entity, source, view or feature.
        InvalidError: a join key also declared as a feature, and similar clashes.
    """
    for view in state.feature_views.values():
        keys: list[str] = []
        for ename in view.entities:
            entity = state.entities.get(ename)
            if entity is None:
                raise NotFoundError(
                    f"feature view '{view.name}' references entity '{ename}', which does not exist"
                    + did_you_mean(ename, list(state.entities))
                )
            keys.extend(entity.join_keys)
        if len(set(keys)) != len(keys):
            raise InvalidError(
                f"feature view '{view.name}': its entities share a join key ({keys}); "
                "use entities with distinct join keys"
            )
        if view.source_name not in state.data_sources:
            raise NotFoundError(
                f"feature view '{view.name}' references data source '{view.source_name}', "
                "which does not exist" + did_you_mean(view.source_name, list(state.data_sources))
            )
        source = state.data_sources[view.source_name]
        for _, name in references_of("feature_view", {"source_query": view.source_query}):
            if name not in state.data_sources:
                raise NotFoundError(
                    f"the source query of feature view '{view.name}' reads '{name}', which is "
                    "not a registered data source" + did_you_mean(name, list(state.data_sources))
                )
        for fld in view.features:
            if fld.name in keys:
                raise InvalidError(
                    f"feature view '{view.name}': '{fld.name}' is a join key of its entities and "
                    "cannot also be a feature; remove it from the schema"
                )
            if fld.name in (source.timestamp_field, source.created_timestamp_field):
                raise InvalidError(
                    f"feature view '{view.name}': '{fld.name}' is the timestamp column of source "
                    f"'{source.name}' and cannot also be a feature"
                )
    _validate_on_demand(state)
    for service in state.feature_services.values():
        for ref in service.features:
            vname, fname = parse_feature_ref(ref)
            used: Any = state.feature_views.get(vname) or state.on_demand_feature_views.get(vname)
            if used is None:
                raise NotFoundError(
                    f"feature service '{service.name}' references feature view '{vname}', which "
                    "does not exist"
                    + did_you_mean(vname, [*state.feature_views, *state.on_demand_feature_views])
                )
            if fname != "*" and fname not in used.feature_names:
                raise NotFoundError(
                    f"feature service '{service.name}': feature view '{vname}' has no feature "
                    f"'{fname}'" + did_you_mean(fname, used.feature_names)
                )


def _validate_on_demand(state: DefinitionSet) -> None:
    """Check on-demand views: their sources exist, names are unique among views, and their
    inputs (the sources' features and the request fields) neither clash nor miss."""
    for odfv in state.on_demand_feature_views.values():
        label = f"on-demand feature view '{odfv.name}'"
        if odfv.name in state.feature_views:
            raise InvalidError(
                f"{label} has the name of a feature view; views of both kinds share one "
                "namespace (view:feature): rename one"
            )
        inputs: dict[str, str] = {}
        for vname in odfv.sources:
            view = state.feature_views.get(vname)
            if view is None:
                raise NotFoundError(
                    f"{label} reads feature view '{vname}', which does not exist"
                    + did_you_mean(vname, list(state.feature_views))
                )
            for fname in view.feature_names:
                if fname in inputs:
                    raise InvalidError(
                        f"{label}: feature '{fname}' is in both '{inputs[fname]}' and "
                        f"'{vname}'; an input is named by its feature name, so use views "
                        "without a clash"
                    )
                inputs[fname] = f"feature view '{vname}'"
        for req in odfv.request_fields:
            if req.name in inputs:
                raise InvalidError(
                    f"{label}: request field '{req.name}' has the name of a feature of "
                    f"{inputs[req.name]}; rename it"
                )
            inputs[req.name] = "the request"
        if odfv.mode == "sql":
            from quiver.features.sql import parse_expression

            for out in odfv.features:
                expr = parse_expression(out.transformation or "", f"{label}: '{out.name}'")
                for c in expr.columns:
                    if c not in inputs:
                        raise InvalidError(
                            f"{label}: the transformation of '{out.name}' reads '{c}', which is "
                            "neither a feature of its sources nor a request field"
                            + did_you_mean(c, list(inputs))
                        )


def _diff(old: Any, new: Any, path: str, out: list[FieldChange]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            _diff(old.get(key), new.get(key), f"{path}.{key}" if path else key, out)
        return
    if (
        isinstance(old, list)
        and isinstance(new, list)
        and all(isinstance(x, dict) and "name" in x for x in old + new)
    ):
        olds = {x["name"]: x for x in old}
        news = {x["name"]: x for x in new}
        for name in list(olds) + [n for n in news if n not in olds]:
            _diff(olds.get(name), news.get(name), f"{path}.{name}", out)
        return
    if old != new:
        out.append(FieldChange(path=path, old=old, new=new))


def _mark_breaking(
    change: ObjectChange, state: DefinitionSet, entities_before: dict[str, dict[str, Any]]
) -> None:
    for fc in change.fields:
        if change.kind == "entity" and fc.path in ("join_keys", "value_type"):
            fc.breaking, fc.reason = True, "changes the entity's join keys"
        elif change.kind in VIEW_KINDS:
            parts = fc.path.split(".")
            if parts[0] == "features" and len(parts) == 3 and parts[2] == "dtype":
                fc.breaking, fc.reason = True, "changes a feature's dtype"
            elif parts[0] == "features" and len(parts) == 2 and fc.new is None:
                users = [
                    s.name
                    for s in state.feature_services.values()
                    if f"{change.name}:{parts[1]}" in s.features or f"{change.name}:*" in s.features
                ]
                if users:
                    fc.breaking = True
                    fc.reason = "removes a feature used by feature service " + ", ".join(
                        f"'{u}'" for u in users
                    )
            elif parts[0] == "entities" and change.kind == "feature_view":
                fc.breaking, fc.reason = True, "changes the view's entities (join keys)"


def compute_plan(registry: Registry, definitions: DefinitionSet, *, prune: bool) -> Plan:
    """The diff that applying ``definitions`` would write.

    Args:
        registry: The registry to compare with.
        definitions: The desired objects.
        prune: Whether objects missing from ``definitions`` are deleted (the whole repo is the
            desired state) or left alone (the definitions add to the registry).

    Raises:
        NotFoundError, InvalidError: the resulting state would be inconsistent.
        ReferencedError: a deletion would leave another object referencing a missing one.
    """
    snapshot = registry.snapshot()  # one statement: one consistent state
    current: dict[str, dict[str, ObjectRecord]] = {
        kind: {r.name: r for r in snapshot.get(kind, [])} for kind in KIND_ORDER
    }
    state = DefinitionSet()
    for kind in KIND_ORDER:
        desired = definitions.by_kind(kind)
        table = state.by_kind(kind)
        if not prune:
            for name, existing in current[kind].items():
                table[name] = existing.obj
        table.update(desired)

    changes: list[ObjectChange] = []
    deleted: list[ObjectChange] = []
    for kind in KIND_ORDER:
        desired = state.by_kind(kind)
        for name, obj in desired.items():
            record = current[kind].get(name)
            spec = obj.to_spec()
            if record is None:
                changes.append(
                    ObjectChange(kind, name, "create", None, spec, obj.spec_hash(), None)
                )
            elif record.spec_hash == obj.spec_hash() and record.spec == spec:
                changes.append(
                    ObjectChange(kind, name, "unchanged", record.spec, spec, None, record.version)
                )
            else:
                fields: list[FieldChange] = []
                _diff(record.spec, spec, "", fields)
                changes.append(
                    ObjectChange(
                        kind,
                        name,
                        "update",
                        record.spec,
                        spec,
                        obj.spec_hash(),
                        record.version,
                        fields,
                    )
                )
        for name, record in current[kind].items():
            if name not in desired:
                change = ObjectChange(kind, name, "delete", record.spec, None, None, record.version)
                deleted.append(change)

    for change in deleted:
        for kind in KIND_ORDER:
            for other in state.by_kind(kind).values():
                if (ref_kind(change.kind), change.name) in references_of(kind, other.to_spec()):
                    raise ReferencedError(
                        f"cannot delete {KIND_LABELS[change.kind]} '{change.name}': "
                        f"{KIND_LABELS[kind]} '{other.name}' still references it; delete or "
                        "change that first"
                    )
    _check_removed_features_in_use(
        state, {**current["feature_view"], **current["on_demand_feature_view"]}
    )
    validate_state(state)
    entities_before = {n: r.spec for n, r in current["entity"].items()}
    for change in changes:
        if change.action == "update":
            _mark_breaking(change, state, entities_before)
    # Deletions go last, in reverse dependency order.
    deleted.sort(key=lambda c: -KIND_ORDER.index(c.kind))
    return Plan(project=registry.project, changes=changes + deleted)


def _check_removed_features_in_use(
    state: DefinitionSet, current_views: dict[str, ObjectRecord]
) -> None:
    """Refuse a plan that removes a feature a feature service names explicitly.

    Such a plan would leave the service pointing at nothing, so even ``allow_breaking`` cannot
    apply it; the message says which service to change in the same apply.
    """
    for service in state.feature_services.values():
        for ref in service.features:
            vname, fname = parse_feature_ref(ref)
            view: Any = state.feature_views.get(vname) or state.on_demand_feature_views.get(vname)
            record = current_views.get(vname)
            if view is None or record is None or fname == "*" or fname in view.feature_names:
                continue
            if any(f.get("name") == fname for f in record.spec.get("features", [])):
                raise BreakingChangeError(
                    f"breaking change: the plan removes feature '{fname}' from feature view "
                    f"'{vname}', but feature service '{service.name}' uses it; remove "
                    f"'{ref}' from the service in the same apply"
                )


def apply_plan(
    registry: Registry,
    plan: Plan,
    *,
    allow_breaking: bool = False,
    author: str | None = None,
    message: str | None = None,
) -> Plan:
    """Write every pending change of ``plan`` in one transaction.

    Raises:
        BreakingChangeError: the plan has breaking changes and ``allow_breaking`` is false.
        ConcurrentChangeError: an object changed in the registry after the plan was made.
        ReferencedError: a concurrent change left a reference dangling.
    """
    if plan.project != registry.project:
        raise InvalidError(
            f"the plan was made for project '{plan.project}', not '{registry.project}'; "
            "plan again against this project"
        )
    if plan.breaking and not allow_breaking:
        lines = [
            f"{KIND_LABELS[c.kind]} '{c.name}': "
            + "; ".join(f"{f.path} ({f.reason})" for f in c.fields if f.breaking)
            for c in plan.breaking
        ]
        raise BreakingChangeError(
            "the plan has breaking changes: "
            + " | ".join(lines)
            + "; apply again with --allow-breaking (REST: ?allow_breaking=true) to accept them",
            details=[c.to_dict() for c in plan.breaking],
        )
    if not plan.has_changes:
        return plan
    with registry.transaction() as conn:
        for change in plan.pending:
            registry.write_object(
                conn,
                change.kind,
                change.name,
                change.new_spec,
                base_version=change.base_version,
                operation=change.action,
                author=author,
                spec_hash=change.new_hash,
                message=message,
            )
        _check_references(registry, plan, conn)
        _check_state(registry, conn)
    return plan


def _check_references(registry: Registry, plan: Plan, conn: Any) -> None:
    """Re-check, inside the transaction, that no written change left a reference dangling."""
    for change in plan.pending:
        if change.action == "delete":
            users = registry.referrers(ref_kind(change.kind), change.name, conn)
            if users:
                k, n = users[0]
                raise ReferencedError(
                    f"cannot delete {KIND_LABELS[change.kind]} '{change.name}': "
                    f"{KIND_LABELS[k]} '{n}' references it (changed concurrently); run plan again"
                )
        elif change.new_spec is not None:
            for kind, name in references_of(change.kind, change.new_spec):
                kinds = (
                    VIEW_KINDS
                    if kind == "feature_view" and change.kind == "feature_service"
                    else (kind,)
                )
                if all(registry.find_record(k, name, conn) is None for k in kinds):
                    raise NotFoundError(
                        f"{KIND_LABELS[change.kind]} '{change.name}' references "
                        f"{KIND_LABELS[kind]} '{name}', which was deleted concurrently; "
                        "run plan again"
                    )


def _check_state(registry: Registry, conn: Any) -> None:
    """Validate the whole state being committed, inside the transaction.

    The plan was validated when it was made; anything that fails now was changed by another
    writer since (e.g. a feature service now uses a feature this plan removes).
    """
    state = DefinitionSet()
    for kind in KIND_ORDER:
        table = state.by_kind(kind)
        for record in registry.records(kind, conn):
            table[record.name] = record.obj
    try:
        validate_state(state)
    except (InvalidError, NotFoundError) as exc:
        raise ConcurrentChangeError(
            f"the registry changed since the plan was made: {exc.message}; run plan again"
        ) from exc


def spec_object(kind: str, spec: dict[str, Any]) -> Any:
    """Build an object from a stored spec (re-exported for callers of this module)."""
    return object_from_spec(kind, spec)
