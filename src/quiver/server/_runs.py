"""Reading materialization runs for the status, discovery and materialization routes."""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from datetime import datetime
from typing import Any

__all__ = ["as_datetime", "last_runs", "pick", "run_dict", "watermarks"]


def run_dict(run: Any) -> dict[str, Any]:
    """A materialization run as a JSON-compatible dict."""
    if isinstance(run, dict):
        return dict(run)
    if hasattr(run, "to_dict"):
        return dict(run.to_dict())
    if is_dataclass(run) and not isinstance(run, type):
        return asdict(run)
    return dict(vars(run))


def pick(run: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` that ``run`` has (run records name their fields differently)."""
    for name in names:
        if run.get(name) is not None:
            return run[name]
    return None


def last_runs(registry: Any) -> dict[str, dict[str, Any]]:
    """The latest materialization run of each view, by view name ({} before any run)."""
    try:
        from quiver.registry.runs import last_run_per_view
    except ImportError:
        return {}
    found = last_run_per_view(registry)
    items = found.values() if isinstance(found, dict) else found
    out: dict[str, dict[str, Any]] = {}
    for run in items:
        d = run_dict(run)
        view = pick(d, "view", "feature_view", "view_name")
        if view is not None:
            out[str(view)] = d
    return out


def as_datetime(value: Any) -> datetime | None:
    """A datetime from a datetime or an ISO string (``None`` stays ``None``)."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def watermarks(registry: Any) -> dict[str, datetime]:
    """Each view's materialization watermark: online values cover event times before it."""
    try:
        from quiver.registry.runs import list_watermarks
    except ImportError:
        return {}
    return dict(list_watermarks(registry))
