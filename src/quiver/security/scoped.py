"""A feature store acting as one principal: :meth:`FeatureStore.as_principal`.

Every facade call is checked with :meth:`Security.check <quiver.security.service.Security.check>`
(the same check as the REST API's) and then made on the underlying store as that principal, so
the registry history and the audit log name it. Lists show only what the principal may
describe. Everything else (``config``, ``registry``, ``plan``, ...) is the underlying store's.

This is the REST API's store in ``auth: api_key`` mode, and the SDK's way to act for someone
(a service that holds an API key, a notebook run for a user). It is not a sandbox: code with
the repo's files and registry URL can always open the store itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from quiver.errors import ForbiddenError
from quiver.security.audit import current_scope
from quiver.security.principal import Principal, acting_as

if TYPE_CHECKING:
    from quiver.registry import Plan
    from quiver.store import FeatureStore

__all__ = ["ScopedStore"]


def _model_name(model: str) -> str:
    """The model's name in a model id ``name:version`` (or the name itself)."""
    return str(model).split(":", 1)[0].strip()


class ScopedStore:
    """The facade of ``store``, each call checked for ``principal`` and made as it.

    Args:
        store: The underlying feature store (it owns the backends; closing this does not
            close it).
        principal: Who is acting.
    """

    def __init__(self, store: FeatureStore, principal: Principal) -> None:
        self._store = store
        self.principal = principal
        self._security = store.security

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def __enter__(self) -> ScopedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        """Nothing to release: the underlying store owns the connections."""

    @contextmanager
    def _acting(self) -> Iterator[None]:
        with acting_as(self.principal):
            yield

    def check(
        self,
        action: str,
        kind: str,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Raise :class:`~quiver.errors.ForbiddenError` unless the principal may do ``action``
        on the resource (the one check: :meth:`Security.check`)."""
        self._checked(self._security.check, action, kind, name, tags)

    def _checked(self, check: Callable[..., None], *args: Any) -> None:
        """Run one of :class:`Security`'s checks for the principal; a refusal outside a REST
        request (which logs its own) is written to the audit log."""
        try:
            check(self.principal, *args)
        except ForbiddenError as exc:
            if current_scope() is None:
                self._security.record_refusal(exc)
            raise

    def visible(self, kind: str, items: list[Any], name: Callable[[Any], str]) -> list[Any]:
        """The ``items`` (of ``kind``, named by ``name(item)``) the principal may describe."""
        security, principal = self._security, self.principal
        return [i for i in items if security.allowed(principal, "describe", kind, name(i))]

    def _check_source(self, value: Any) -> None:
        """``read_offline`` on ``value`` if it names a registered data source."""
        if isinstance(value, str) and self._store.registry.find_record("data_source", value):
            self.check("read_offline", "data_source", value)

    # -- definitions ----------------------------------------------------------------------

    def apply(
        self,
        objects: Any,
        *,
        prune: bool = False,
        allow_breaking: bool = False,
        author: str | None = None,
    ) -> Plan:
        """:meth:`FeatureStore.apply`, after ``apply`` / ``delete`` checks on every change."""
        from quiver.registry import Plan

        plan = objects if isinstance(objects, Plan) else self._store.plan(objects, prune=prune)
        self._checked(self._security.check_plan, plan)
        with self._acting():
            return self._store.apply(plan, allow_breaking=allow_breaking, author=author)

    def delete(self, kind: str, name: str, *, author: str | None = None) -> Plan:
        """:meth:`FeatureStore.delete`, after a ``delete`` check."""
        self.check("delete", kind, name)
        with self._acting():
            return self._store.delete(kind, name, author=author)

    def restore(self, name: str, version: int, kind: str | None = None, **options: Any) -> Plan:
        """:meth:`FeatureStore.restore`, after an ``apply`` check (current and restored tags)."""
        kind = self._store.resolve_kind(name, kind, history=True)
        self.check("apply", kind, name)
        for old in self._store.registry.history(kind, name):
            if old.version == version:
                tags = dict(old.spec.get("tags") or {})
                self.check("apply", kind, name, tags)
        with self._acting():
            return self._store.restore(name, version, kind, **options)

    def list_entities(self) -> list[Any]:
        """The entities the principal may describe."""
        return self.visible("entity", self._store.list_entities(), lambda o: o.name)

    def list_data_sources(self) -> list[Any]:
        """The data sources the principal may describe."""
        return self.visible("data_source", self._store.list_data_sources(), lambda o: o.name)

    def list_feature_views(self) -> list[Any]:
        """The feature views the principal may describe."""
        return self.visible("feature_view", self._store.list_feature_views(), lambda o: o.name)

    def list_feature_services(self) -> list[Any]:
        """The feature services the principal may describe."""
        items = self._store.list_feature_services()
        return self.visible("feature_service", items, lambda o: o.name)

    def get_entity(self, name: str) -> Any:
        """:meth:`FeatureStore.get_entity`, after a ``describe`` check."""
        self.check("describe", "entity", name)
        return self._store.get_entity(name)

    def get_data_source(self, name: str) -> Any:
        """:meth:`FeatureStore.get_data_source`, after a ``describe`` check."""
        self.check("describe", "data_source", name)
        return self._store.get_data_source(name)

    def get_feature_view(self, name: str) -> Any:
        """:meth:`FeatureStore.get_feature_view`, after a ``describe`` check."""
        self.check("describe", "feature_view", name)
        return self._store.get_feature_view(name)

    def get_feature_service(self, name: str) -> Any:
        """:meth:`FeatureStore.get_feature_service`, after a ``describe`` check."""
        self.check("describe", "feature_service", name)
        return self._store.get_feature_service(name)

    def describe(self, name: str, kind: str | None = None) -> dict[str, Any]:
        """:meth:`FeatureStore.describe`, after a ``describe`` check."""
        kind = self._store.resolve_kind(name, kind)
        self.check("describe", kind, name)
        return self._store.describe(name, kind)

    def history(self, name: str, kind: str | None = None) -> list[Any]:
        """:meth:`FeatureStore.history`, after a ``describe`` check."""
        kind = self._store.resolve_kind(name, kind, history=True)
        self.check("describe", kind, name)
        return self._store.history(name, kind)

    # -- features -------------------------------------------------------------------------

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | None = None,
        *,
        feature_service: str | None = None,
        **options: Any,
    ) -> Any:
        """:meth:`FeatureStore.get_historical_features`, after ``read_offline`` checks on the
        service, every view it reads, and the entity table if it is a registered source."""
        self._checked(self._security.check_features, "read_offline", features, feature_service)
        self._check_source(entity_df)
        return self._store.get_historical_features(
            entity_df, features, feature_service=feature_service, **options
        )

    def get_online_features(
        self,
        features: Sequence[str] | None = None,
        entity_rows: Any = None,
        *,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        use_defaults: bool = False,
    ) -> Any:
        """:meth:`FeatureStore.get_online_features`, after ``read_online`` checks."""
        self._checked(self._security.check_features, "read_online", features, feature_service)
        return self._store.get_online_features(
            features,
            entity_rows,
            feature_service=feature_service,
            full_feature_names=full_feature_names,
            use_defaults=use_defaults,
        )

    def materialize(
        self, start: Any, end: Any, views: Sequence[str] | None = None, **kw: Any
    ) -> Any:
        """:meth:`FeatureStore.materialize`, after ``write`` checks on the views."""
        self._checked(self._security.check_views, "write", views)
        with self._acting():
            return self._store.materialize(start, end, views, **kw)

    def materialize_incremental(
        self, end: Any, views: Sequence[str] | None = None, **kw: Any
    ) -> Any:
        """:meth:`FeatureStore.materialize_incremental`, after ``write`` checks on the views."""
        self._checked(self._security.check_views, "write", views)
        with self._acting():
            return self._store.materialize_incremental(end, views, **kw)

    def push(self, view: str, rows: Any, to: Any = "online") -> int:
        """:meth:`FeatureStore.push`, after a ``write`` check on the view."""
        self.check("write", "feature_view", view)
        with self._acting():
            return self._store.push(view, rows, to=to)

    # -- models ---------------------------------------------------------------------------

    def train(self, spec: Any, **options: Any) -> Any:
        """:meth:`FeatureStore.train`, after ``train`` on the model and ``read_offline`` on
        its features and labels."""
        from quiver.ml.spec import TrainingSpec

        parsed = TrainingSpec.parse(spec)
        self.check("train", "model", parsed.name)
        self._checked(
            self._security.check_features, "read_offline", parsed.feature_refs, parsed.service_name
        )
        self._check_source(parsed.training_data.entity_df_source)
        with self._acting():
            return self._store.train(parsed, **options)

    def list_models(self) -> list[Any]:
        """The models the principal may describe."""
        return self.visible("model", self._store.list_models(), lambda m: m.name)

    def get_model(self, model: str, version: int | None = None, stage: str | None = None) -> Any:
        """:meth:`FeatureStore.get_model`, after a ``describe`` check."""
        self.check("describe", "model", _model_name(model))
        return self._store.get_model(model, version, stage)

    def promote(self, model: str, version: int, stage: str) -> Any:
        """:meth:`FeatureStore.promote`, after a ``promote`` check."""
        self.check("promote", "model", _model_name(model))
        with self._acting():
            return self._store.promote(model, version, stage)

    def predict_batch(self, model: str, input: Any, output: Any, **options: Any) -> Any:
        """:meth:`FeatureStore.predict_batch`, after ``predict`` on the model and
        ``read_offline`` on the input if it is a registered source."""
        self.check("predict", "model", _model_name(model))
        self._check_source(input)
        with self._acting():
            return self._store.predict_batch(model, input, output, **options)

    def predict_online(self, model: str, **options: Any) -> Any:
        """:meth:`FeatureStore.predict_online`, after a ``predict`` check."""
        self.check("predict", "model", _model_name(model))
        return self._store.predict_online(model, **options)
