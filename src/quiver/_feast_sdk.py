"""Feast's SDK names on :class:`~quiver.store.FeatureStore`, as aliases of Quiver's own.

The table of Feast call -> Quiver call is in ``docs/feast-migration.md``. Quiver's methods take
Feast's arguments through the helpers here (``start_date``/``end_date``/``feature_views``,
FeatureService objects as ``features``, ``to="online_and_offline"``, push source names); the
methods Feast has and Quiver names otherwise are :class:`FeastSDK`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError

if TYPE_CHECKING:
    from quiver.definitions import FeatureView
    from quiver.registry import Registry

__all__ = ["FeastSDK", "feast_range", "feast_service", "push_mode"]

_TO = {"online": "online", "offline": "offline", "online_and_offline": "both", "both": "both"}


def feast_service(features: Any, feature_service: str | None) -> tuple[Any, str | None]:
    """Feast passes a FeatureService object as ``features``: its name as ``feature_service``."""
    if features is None or isinstance(features, (list, tuple)):
        return features, feature_service
    from quiver.definitions import FeatureService

    if isinstance(features, FeatureService):
        return None, features.name
    return features, feature_service


def feast_range(start: Any, end: Any, views: Any, feast: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``start``, ``end`` and ``views`` from Quiver's or Feast's names (``start_date``,
    ``end_date``, ``feature_views``)."""
    unknown = set(feast) - {"start_date", "end_date", "feature_views"}
    if unknown:
        raise InvalidError(f"unexpected argument {sorted(unknown)[0]!r}")
    if "start_date" in feast or start is not None:
        start = _when(start, feast.get("start_date"), "start (start_date)")
    end = _when(end, feast.get("end_date"), "end (end_date)")
    return start, end, views if views is not None else feast.get("feature_views")


def push_mode(to: Any) -> str:
    """Quiver's push mode from Quiver's, Feast's (``online_and_offline``) or a ``PushMode``."""
    mode = _TO.get(getattr(to, "value", to))
    if mode is None:
        raise InvalidError(
            f"push: to={to!r} must be 'online', 'offline' or 'both' (Feast: 'online_and_offline')"
        )
    return mode


def _when(value: Any, alias: Any, what: str) -> Any:
    if value is not None and alias is not None:
        raise InvalidError(f"give {what} once (Quiver's name or Feast's, not both)")
    if value is None and alias is None:
        raise InvalidError(f"{what} is required")
    return value if value is not None else alias


class FeastSDK:
    """The methods Feast's ``FeatureStore`` has under names Quiver does not use."""

    @property
    def registry(self) -> Registry:  # pragma: no cover
        raise NotImplementedError

    def push(self, view: str, rows: Any, to: Any = "online") -> int:  # pragma: no cover
        raise NotImplementedError

    def list_feature_views(self) -> list[FeatureView]:  # pragma: no cover
        raise NotImplementedError

    def write_to_online_store(
        self, feature_view_name: str, df: Any, allow_registry_cache: bool = True, **_: Any
    ) -> int:
        """Feast's ``write_to_online_store``: ``push(view, df, to="online")``."""
        return self.push(feature_view_name, df, to="online")

    def write_to_offline_store(
        self, feature_view_name: str, df: Any, allow_registry_cache: bool = True, **_: Any
    ) -> int:
        """Feast's ``write_to_offline_store``: ``push(view, df, to="offline")``."""
        return self.push(feature_view_name, df, to="offline")

    def list_on_demand_feature_views(self) -> list[Any]:
        """Every on-demand feature view of the project."""
        return list(self.registry.list("on_demand_feature_view"))

    def get_on_demand_feature_view(self, name: str) -> Any:
        """One on-demand feature view, or raise NotFoundError."""
        return self.registry.get("on_demand_feature_view", name)

    def list_all_feature_views(self) -> list[Any]:
        """Feature views and on-demand feature views."""
        return [*self.list_feature_views(), *self.list_on_demand_feature_views()]
