"""The registry: definitions per project with version history, and plan/apply."""

from quiver.registry._registry import ObjectRecord, Registry, VersionRecord, current_user
from quiver.registry.plan import (
    DefinitionSet,
    FieldChange,
    ObjectChange,
    Plan,
    apply_plan,
    compute_plan,
)

__all__ = [
    "DefinitionSet",
    "FieldChange",
    "ObjectChange",
    "ObjectRecord",
    "Plan",
    "Registry",
    "VersionRecord",
    "apply_plan",
    "compute_plan",
    "current_user",
]
