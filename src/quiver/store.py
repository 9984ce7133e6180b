"""FeatureStore: the one facade over the registry, the offline engine and the online store.

The CLI, the SDK and the REST API all call it. Each method is thin: the work lives in the
registry, the engines and the services it delegates to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from quiver.config import RepoConfig, load_config
from quiver.definitions import KIND_LABELS, did_you_mean, object_from_spec
from quiver.errors import InvalidError, NotFoundError
from quiver.registry import (
    DefinitionSet,
    Plan,
    Registry,
    VersionRecord,
    apply_plan,
    compute_plan,
    current_user,
)

if TYPE_CHECKING:
    from types import ModuleType

    from quiver.definitions import Entity, FeatureService, FeatureView, FileSource, IcebergSource
    from quiver.features.computed import OnDemandSelection
    from quiver.security.audit import AuditLog, AuditScope
    from quiver.security.principal import Principal
    from quiver.security.scoped import ScopedStore
    from quiver.security.service import Security
    from quiver.selection import ViewSelection

from quiver._feast_sdk import FeastSDK, feast_range, feast_service, push_mode

__all__ = ["FeatureStore"]

KINDS = ("entity", "data_source", "feature_view", "on_demand_feature_view", "feature_service")


class FeatureStore(FeastSDK):
    """A feature repository: its config, registry, offline engine and online store.

    Feast's SDK names and arguments work too (``docs/feast-migration.md``).

    Args:
        repo_path: The repository root holding ``quiver.yaml`` (default: the current directory).
        config: A ready :class:`RepoConfig`; when given, ``repo_path`` is ignored.

    Example:
        >>> store = FeatureStore(repo_path="my_repo")          # doctest: +SKIP
        >>> store.apply(store.load_definitions())               # doctest: +SKIP
    """

    def __init__(self, repo_path: str | Path | None = None, config: RepoConfig | None = None):
        self.config = config if config is not None else load_config(repo_path or ".")

    @property
    def project(self) -> str:
        """The project name."""
        return self.config.project

    @property
    def repo_path(self) -> Path:
        """The repository root."""
        return self.config.repo_path

    @cached_property
    def registry(self) -> Registry:
        """The registry (opened on first use)."""
        return Registry(self.config.registry_url, self.config.project)

    @cached_property
    def offline_engine(self) -> Any:
        """The offline engine chosen by ``offline_engine.type`` (created on first use)."""
        from quiver.offline import create_offline_engine

        return create_offline_engine(self.config)

    @cached_property
    def online_store(self) -> Any:
        """The online store chosen by ``online_store.type`` (created on first use)."""
        from quiver.online import create_online_store

        return create_online_store(self.config)

    @cached_property
    def audit_log(self) -> AuditLog:
        """The audit log (:mod:`quiver.security.audit`), on its own database engine."""
        from quiver.security.audit import AuditLog

        return AuditLog(self.registry)

    @cached_property
    def security(self) -> Security:
        """API keys, permissions and the audit log (:mod:`quiver.security.service`)."""
        from quiver.security.service import Security

        return Security(self)

    def as_principal(
        self, principal: Principal | None = None, *, api_key: str | None = None
    ) -> ScopedStore:
        """This store acting as ``principal``: every call is checked against its roles and the
        project's permissions, and recorded as its (history author, audit log).

        Args:
            principal: Who acts (a :class:`~quiver.security.principal.Principal`).
            api_key: Or an API key (``qk_...``), verified like the REST API's.

        Raises:
            UnauthorizedError: the API key is not valid, revoked or expired.
            InvalidError: neither or both given.
        """
        from quiver.security.scoped import ScopedStore

        if (principal is None) == (api_key is None):
            raise InvalidError("give either a principal or an api_key")
        if api_key is not None:
            principal = self.security.authenticate(api_key)
        assert principal is not None
        return ScopedStore(self, principal)

    @contextmanager
    def _audited(self, action: str, *resources: str) -> Iterator[AuditScope]:
        """Audit a change (:func:`quiver.security.audit.audited`)."""
        from quiver.security.audit import audited

        with audited(self.audit_log, action, *resources) as scope:
            yield scope

    def close(self) -> None:
        """Release database connections and store clients."""
        for name in ("security", "audit_log", "registry", "online_store", "offline_engine"):
            backend = self.__dict__.pop(name, None)
            if backend is not None and hasattr(backend, "close"):
                backend.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- definitions ----------------------------------------------------------------------------

    def load_definitions(self, path: str | Path | None = None) -> DefinitionSet:
        """Load definitions from ``path``, or from the repo's configured definition paths."""
        from quiver.loader import load_definitions

        paths: list[str | Path] = [path] if path is not None else list(self.config.definitions)
        return load_definitions(paths, base=self.repo_path)

    @staticmethod
    def _as_set(objects: DefinitionSet | Sequence[Any] | Any) -> DefinitionSet:
        if isinstance(objects, DefinitionSet):
            return objects
        if not isinstance(objects, (list, tuple)):
            objects = [objects]
        return DefinitionSet.of(list(objects))

    def plan(self, objects: DefinitionSet | Sequence[Any] | Any, *, prune: bool = False) -> Plan:
        """Show what applying ``objects`` would change, without writing.

        Args:
            objects: Definition objects, or a :class:`DefinitionSet`.
            prune: Delete registry objects that ``objects`` does not contain.

        Raises:
            InvalidError: invalid definitions, e.g. a transformation reading a column that its
                view's source does not have.
        """
        from quiver.features.transformations import check_plan_columns

        definitions = self._as_set(objects)
        plan = compute_plan(self.registry, definitions, prune=prune)
        check_plan_columns(
            self.config,
            plan.changes,
            lambda name: (
                definitions.data_sources.get(name) or self.registry.find("data_source", name)
            ),
        )
        return plan

    def apply(
        self,
        objects: DefinitionSet | Sequence[Any] | Any | Plan,
        *,
        prune: bool = False,
        allow_breaking: bool = False,
        author: str | None = None,
    ) -> Plan:
        """Write definitions to the registry in one transaction and return the applied plan.

        Args:
            objects: Definition objects, a :class:`DefinitionSet`, or a :class:`Plan` from
                :meth:`plan` (then the registry must not have changed since: compare-and-swap).
            prune: Delete registry objects that ``objects`` does not contain.
            allow_breaking: Accept breaking changes (dtype changes, removed features in use,
                changed join keys).
            author: Recorded in the history; defaults to ``QUIVER_USER`` or the OS user.

        Raises:
            BreakingChangeError: breaking changes without ``allow_breaking``.
            ReferencedError: a deletion of an object another one uses.
            ConcurrentChangeError: the registry changed since the plan was made.
        """
        plan = objects if isinstance(objects, Plan) else self.plan(objects, prune=prune)
        with self._audited("apply", *(f"{c.kind}:{c.name}" for c in plan.pending)):
            applied = apply_plan(
                self.registry, plan, allow_breaking=allow_breaking, author=author or current_user()
            )
        self._prepare_online(applied)
        return applied

    def _prepare_online(self, plan: Plan) -> None:
        """Let the online store prepare the online views an apply created or changed (the
        DynamoDB store creates their tables).

        Raises:
            BackendError: the store failed; the definitions stay applied.
        """
        from quiver.errors import BackendError
        from quiver.online import PREPARING_STORES
        from quiver.online.encoding import ViewLayout

        if self.config.online_store.type not in PREPARING_STORES:
            return  # SQLite and Redis need nothing (and apply works without their extras)
        names = [
            c.name
            for c in plan.changes
            if c.kind == "feature_view"
            and c.action in ("create", "update")
            and (c.new_spec or {}).get("online", True)
        ]
        layouts = []
        for name in names:
            view = self.registry.find("feature_view", name)
            if view is not None and view.online:
                entities = [self.registry.get("entity", e) for e in view.entities]
                layouts.append(ViewLayout.from_view(self.project, view, entities))
        if not layouts:
            return
        try:
            self.online_store.prepare_views(layouts)
        except BackendError as exc:
            raise BackendError(
                f"the definitions were applied, but the online store could not prepare "
                f"feature view(s) {', '.join(names)}: {exc.message} (it tries again on the "
                "first write)"
            ) from exc

    def delete(self, kind: str, name: str, *, author: str | None = None) -> Plan:
        """Delete one object; refused while another object references it."""
        self._check_kind(kind)
        with self._audited("delete", f"{kind}:{name}"):
            return self._delete(kind, name, author)

    def _delete(self, kind: str, name: str, author: str | None) -> Plan:
        from quiver.registry.plan import ObjectChange

        record = self.registry.get_record(kind, name)
        with self.registry.transaction() as conn:
            from quiver.registry.plan import ref_kind

            users = self.registry.referrers(ref_kind(kind), name, conn)
            if users:
                from quiver.errors import ReferencedError

                k, n = users[0]
                raise ReferencedError(
                    f"cannot delete {KIND_LABELS[kind]} '{name}': {KIND_LABELS[k]} '{n}' "
                    "references it; delete or change that first",
                    details={"referrers": [{"kind": k, "name": n} for k, n in users]},
                )
            self.registry.write_object(
                conn,
                kind,
                name,
                None,
                base_version=record.version,
                operation="delete",
                author=author or current_user(),
            )
        change = ObjectChange(kind, name, "delete", record.spec, None, None, record.version)
        return Plan(project=self.project, changes=[change])

    # -- reads ----------------------------------------------------------------------------------

    def list_entities(self) -> list[Entity]:
        """Every entity of the project."""
        return self.registry.list("entity")

    def list_data_sources(self) -> list[FileSource | IcebergSource]:
        """Every data source of the project."""
        return self.registry.list("data_source")

    def list_feature_views(self) -> list[FeatureView]:
        """Every feature view of the project."""
        return self.registry.list("feature_view")

    def list_feature_services(self) -> list[FeatureService]:
        """Every feature service of the project."""
        return self.registry.list("feature_service")

    def get_entity(self, name: str) -> Entity:
        """One entity, or raise :class:`NotFoundError`."""
        return self.registry.get("entity", name)

    def get_data_source(self, name: str) -> FileSource | IcebergSource:
        """One data source, or raise :class:`NotFoundError`."""
        return self.registry.get("data_source", name)

    def get_feature_view(self, name: str) -> FeatureView:
        """One feature view, or raise :class:`NotFoundError`."""
        return self.registry.get("feature_view", name)

    def get_feature_service(self, name: str) -> FeatureService:
        """One feature service, or raise :class:`NotFoundError`."""
        return self.registry.get("feature_service", name)

    def resolve_kind(self, name: str, kind: str | None = None, *, history: bool = False) -> str:
        """The kind of the object called ``name`` (which must be unambiguous).

        Raises:
            NotFoundError: nothing is called ``name``.
            InvalidError: several kinds have an object called ``name`` and ``kind`` is not given.
        """
        if kind is not None:
            self._check_kind(kind)
            return kind
        kinds = self.registry.history_kinds_of(name) if history else self.registry.kinds_of(name)
        if not kinds:
            every = [n for k in KINDS for n in self.registry.names(k)]
            raise NotFoundError(
                f"no object called '{name}' in project '{self.project}'" + did_you_mean(name, every)
            )
        if len(kinds) > 1:
            raise InvalidError(
                f"'{name}' names several objects ({', '.join(KIND_LABELS[k] for k in kinds)}); "
                "say which with --kind"
            )
        return kinds[0]

    @staticmethod
    def _check_kind(kind: str) -> None:
        if kind not in KINDS:
            raise InvalidError(f"unknown kind '{kind}'; use one of {', '.join(KINDS)}")

    def describe(self, name: str, kind: str | None = None) -> dict[str, Any]:
        """The spec and metadata of one object, as a JSON-compatible dict."""
        kind = self.resolve_kind(name, kind)
        record = self.registry.get_record(kind, name)
        return {
            "kind": kind,
            "name": name,
            "version": record.version,
            "spec_hash": record.spec_hash,
            "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat(),
            "updated_by": record.updated_by,
            "spec": record.spec,
        }

    def history(self, name: str, kind: str | None = None) -> list[VersionRecord]:
        """Every version of one object, oldest first, deletions included."""
        kind = self.resolve_kind(name, kind, history=True)
        return self.registry.history(kind, name)

    def restore(
        self,
        name: str,
        version: int,
        kind: str | None = None,
        *,
        allow_breaking: bool = False,
        author: str | None = None,
    ) -> Plan:
        """Make an earlier version of an object current again (as a new version).

        Raises:
            NotFoundError: no such object or version (or the version is a deletion).
            BreakingChangeError: restoring is breaking and ``allow_breaking`` is false.
        """
        kind = self.resolve_kind(name, kind, history=True)
        with self._audited("restore", f"{kind}:{name}"):
            return self._restore(kind, name, version, allow_breaking, author)

    def _restore(
        self, kind: str, name: str, version: int, allow_breaking: bool, author: str | None
    ) -> Plan:
        versions = {v.version: v for v in self.registry.history(kind, name)}
        old = versions.get(version)
        if old is None:
            raise NotFoundError(
                f"{KIND_LABELS[kind]} '{name}' has no version {version}; versions are "
                f"{', '.join(map(str, sorted(versions)))}"
            )
        if old.operation == "delete":
            earlier = [v for v in sorted(versions) if v < version]
            alive = [v for v in earlier if versions[v].operation != "delete"]
            hint = f"; restore version {alive[-1]} instead" if alive else ""
            raise NotFoundError(
                f"version {version} of {KIND_LABELS[kind]} '{name}' is its deletion, "
                f"which cannot be restored{hint}"
            )
        obj = object_from_spec(kind, old.spec)
        plan = compute_plan(self.registry, DefinitionSet.of([obj]), prune=False)
        for change in plan.pending:
            change.action = "update" if change.base_version is not None else "create"
        return apply_plan(
            self.registry, plan, allow_breaking=allow_breaking, author=author or current_user()
        )

    # -- features: offline, online ---------------------------------------------------------------

    def resolve_features(
        self, features: Sequence[str] | None = None, feature_service: str | None = None
    ) -> list[ViewSelection]:
        """Resolve feature references or a feature service into per-view selections."""
        from quiver.selection import resolve_features

        return resolve_features(self.registry, features, feature_service)

    def resolve_selections(
        self, features: Sequence[str] | None = None, feature_service: str | None = None
    ) -> list[ViewSelection | OnDemandSelection]:
        """:meth:`resolve_features`, with on-demand views as
        :class:`~quiver.features.computed.OnDemandSelection` (join keys of their sources)."""
        from quiver.features.computed import resolve_selections

        return resolve_selections(self.registry, features, feature_service)

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | Any | None = None,
        *,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        timestamp_column: str = "event_timestamp",
    ) -> Any:
        """Point-in-time correct feature values for each row of ``entity_df``.

        Args:
            entity_df: pandas / polars DataFrame, pyarrow Table, a Parquet/CSV path, or the name
                of a registered data source holding join keys, a timestamp and labels.
            features: References ``view:feature`` or ``view:*``.
            feature_service: A feature service name (instead of ``features``).
            full_feature_names: Name output columns ``view__feature``.
            timestamp_column: The entity table's timestamp column.

        Returns:
            A retrieval job with ``to_arrow()``, ``to_pandas()``, ``to_polars()``,
            ``to_parquet(path)``.
        """
        from quiver.features.computed import split_references
        from quiver.offline.retrieval import get_historical_features

        features, feature_service = feast_service(features, feature_service)
        computed = split_references(self.registry, features, feature_service, full_feature_names)
        if computed is not None:  # on-demand views: computed on the point-in-time values
            from quiver.features import computed as on_demand

            return on_demand.get_historical_features(
                self,
                entity_df,
                computed,
                full_feature_names=full_feature_names,
                timestamp_column=timestamp_column,
            )
        return get_historical_features(
            self,
            entity_df,
            features=features,
            feature_service=feature_service,
            full_feature_names=full_feature_names,
            timestamp_column=timestamp_column,
        )

    def materialize(
        self,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
        views: Sequence[str] | None = None,
        *,
        progress: Any = None,
        **feast: Any,
    ) -> Any:
        """Copy the latest value per entity key in ``[start, end)`` into the online store
        (Feast's ``start_date``, ``end_date``, ``feature_views`` are accepted)."""
        from quiver.materialize import materialize

        start, end, views = feast_range(start, end, views, {"start_date": None, **feast})

        with self._audited("materialize", *_view_refs(views)):
            return materialize(self, start, end, views, progress=progress)

    def materialize_incremental(
        self,
        end: datetime | str | None = None,
        views: Sequence[str] | None = None,
        *,
        progress: Any = None,
        **feast: Any,
    ) -> Any:
        """Materialize each view from its watermark up to ``end`` (or Feast's ``end_date``)."""
        from quiver.materialize import materialize_incremental

        _, end, views = feast_range(None, end, views, feast)

        with self._audited("materialize", *_view_refs(views)):
            return materialize_incremental(self, end, views, progress=progress)

    def get_online_features(
        self,
        features: Sequence[str] | Any | None = None,
        entity_rows: Any = None,
        *,
        feature_service: str | None = None,
        full_feature_names: bool = False,
        use_defaults: bool = False,
        serve_stale: bool = False,
    ) -> Any:
        """The latest feature values for each entity row, with a status per value.

        ``entity_rows``: a list of dicts of join keys, a dict of lists, or a DataFrame / Arrow
        table. ``use_defaults``: serve each feature's ``default_value`` where its value is
        missing or expired. ``serve_stale``: serve a value past its view's TTL as ``present``
        (Feast's answer). Returns an ``OnlineResponse`` (see ``quiver.online.serving``).
        ``features`` may be a FeatureService object, as in Feast.
        """
        if features is not None and type(features) is not list:
            features, feature_service = feast_service(features, feature_service)
        return _serving().get_online_features(
            self,
            features=features,
            entity_rows=entity_rows,
            feature_service=feature_service,
            full_feature_names=full_feature_names,
            use_defaults=use_defaults,
            serve_stale=serve_stale,
        )

    def push(
        self,
        view: str,
        rows: Any,
        to: Literal["online", "offline", "both", "online_and_offline"] | Any = "online",
    ) -> int:
        """Write fresh rows of ``view`` to the online store (and/or the offline store).

        As in Feast, ``view`` may name a (push) source: every view reading it gets the rows;
        ``to`` may be ``online_and_offline`` or a ``PushMode``.
        """
        mode = push_mode(to)
        views = [view]
        if self.registry.find_record("feature_view", view) is None:
            views = [v.name for v in self.list_feature_views() if v.source_name == view] or views
        if len(views) == 1:  # the serving layer's answer as it is (it carries validation counts)
            with self._audited("push", f"feature_view:{views[0]}"):
                return _serving().push(self, views[0], rows, to=mode)
        total = 0
        for name in views:
            with self._audited("push", f"feature_view:{name}"):
                total += int(_serving().push(self, name, rows, to=mode))
        return total

    # -- models --------------------------------------------------------------------------------

    def train(self, spec: Any, *, progress: Any = None) -> Any:
        """Train a model from a spec (object, dict, or YAML/JSON path); returns the version."""
        from quiver.ml.service import train

        with self._audited("train") as scope:
            version = train(self, spec, progress=progress)
            scope.add(f"model:{version.model_id}")
            return version

    def list_models(self) -> list[Any]:
        """Every registered model with its versions."""
        from quiver.ml.service import list_models

        return list_models(self)

    def get_model(self, model: str, version: int | None = None, stage: str | None = None) -> Any:
        """One model version: by model id, or by name with a version or a stage."""
        from quiver.ml.service import get_model

        return get_model(self, model, version=version, stage=stage)

    def promote(self, model: str, version: int, stage: str) -> Any:
        """Move a model version to a stage (none, staging, production, archived)."""
        from quiver.ml.service import promote

        with self._audited("promote", f"model:{model}"):
            return promote(self, model, version, stage)

    def predict_batch(self, model: str, input: Any, output: Any, **options: Any) -> Any:
        """Score a table of entity rows point-in-time correctly and write the predictions."""
        from quiver.ml.service import predict_batch

        with self._audited("predict_batch", f"model:{model}"):
            return predict_batch(self, model, input, output, **options)

    def predict_online(self, model: str, **options: Any) -> Any:
        """Score entity keys (features from the online store) or given feature values."""
        from quiver.ml.service import predict_online

        return predict_online(self, model, **options)


def _view_refs(views: Sequence[str] | None) -> list[str]:
    """The audit log's resources for a materialization of ``views`` (``None``: every view)."""
    return [f"feature_view:{v}" for v in views] if views else ["feature_view:*"]


@cache
def _serving() -> ModuleType:
    """:mod:`quiver.online.serving`, imported on first use (an import per call costs ~1 us)."""
    from quiver.online import serving

    return serving
