"""``quiver validate``: is the deployed feature store usable as declared?

The checks, in order (each failure is one :class:`ValidationFailure` naming the object and the
fix):

1. the registry answers (nothing else is checked when it does not);
2. the online store answers;
3. the definitions are consistent: every view's entities and data source exist, an entity's join
   key is not also a feature of the view, every feature a service names exists;
4. every feature view's source is readable with the declared columns and types: its rows are
   read as materialization reads them (:func:`quiver.offline.probe.probe_view`, every value cast
   to its declared dtype, once per view).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError, NotFoundError, QuiverError

if TYPE_CHECKING:
    from quiver.registry import Registry

__all__ = ["ValidationFailure", "ValidationReport", "validate"]


@dataclass(frozen=True)
class ValidationFailure:
    """One failed check.

    Attributes:
        object: What failed, e.g. ``feature view 'customer_behavior'`` or ``online store``.
        check: ``registry``, ``online_store``, ``definitions`` or ``source``.
        message: What is wrong.
        fix: What to do about it.
    """

    object: str
    check: str
    message: str
    fix: str

    def line(self) -> str:
        """The failure as one line of text."""
        return f"{self.object}: {self.message} (fix: {self.fix})"


@dataclass(frozen=True)
class ValidationReport:
    """The outcome: how many checks ran, and the failures (none: valid)."""

    checks: int
    failures: list[ValidationFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether every check passed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "ok": self.ok,
            "checks": self.checks,
            "failures": [{**asdict(f), "line": f.line()} for f in self.failures],
        }


def _message(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, QuiverError) else f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())


def validate(
    open_registry: Callable[[], Registry],
    online_store: Callable[[], Any],
    probe: Callable[[Any], Any],
    *,
    registry_url: str = "",
) -> ValidationReport:
    """Run the checks (see the module docstring).

    Args:
        open_registry: Returns the registry (opening it may fail; that is a failure too).
        online_store: Returns the online store (opening it may fail; that is a failure too).
        probe: Reads a :class:`~quiver.selection.ViewSelection`'s rows from its source and
            raises :class:`QuiverError` when it cannot (e.g.
            :func:`quiver.offline.probe.probe_view` bound to an engine with ``check_types``).
        registry_url: The registry's URL (password hidden), for the message.
    """
    failures: list[ValidationFailure] = []
    checks = 1
    try:
        registry = open_registry()
        registry.count("entity")
    except Exception as exc:
        failures.append(
            ValidationFailure(
                "registry",
                "registry",
                f"cannot read {registry_url or 'the registry'}: {_message(exc)}",
                "check registry.url in quiver.yaml (or QUIVER_REGISTRY__URL) and that the "
                "database is up",
            )
        )
        return ValidationReport(checks, failures)
    checks += 1
    try:
        store = online_store()
        ping = getattr(store, "ping", None)
        if callable(ping):
            ping()
    except Exception as exc:
        failures.append(
            ValidationFailure(
                "online store",
                "online_store",
                f"does not answer: {_message(exc)}",
                "check online_store in quiver.yaml and that the store (e.g. redis-server) is up",
            )
        )
    n, found = _definitions(registry)
    checks += n
    failures += found
    n, found = _sources(registry, probe)
    checks += n
    failures += found
    return ValidationReport(checks, failures)


def _definitions(registry: Registry) -> tuple[int, list[ValidationFailure]]:
    failures = []
    checks = 0
    entities = {e.name: e for e in registry.list("entity")}
    sources = set(registry.names("data_source"))
    views = {v.name: v for v in registry.list("feature_view")}
    views.update({v.name: v for v in registry.list("on_demand_feature_view")})
    for view in registry.list("feature_view"):
        what = f"feature view '{view.name}'"
        checks += 1
        for name in view.entities:
            if name not in entities:
                failures.append(
                    ValidationFailure(
                        what,
                        "definitions",
                        f"uses entity '{name}', which does not exist",
                        f"define entity '{name}' and run quiver apply, or remove it from the view",
                    )
                )
        if view.source_name not in sources:
            failures.append(
                ValidationFailure(
                    what,
                    "definitions",
                    f"reads data source '{view.source_name}', which does not exist",
                    f"define data source '{view.source_name}' and run quiver apply",
                )
            )
        features = {f.name for f in view.features}
        for name in view.entities:
            for key in getattr(entities.get(name), "join_keys", ()):
                if key in features:
                    failures.append(
                        ValidationFailure(
                            what,
                            "definitions",
                            f"declares the join key '{key}' of entity '{name}' as a feature",
                            f"remove feature '{key}' from the view (join keys come with entities)",
                        )
                    )
    for service in registry.list("feature_service"):
        what = f"feature service '{service.name}'"
        checks += 1
        for ref in service.features:
            view_name, _, feature = ref.partition(":")
            view = views.get(view_name)
            if view is None:
                failures.append(
                    ValidationFailure(
                        what,
                        "definitions",
                        f"uses '{ref}' but feature view '{view_name}' does not exist",
                        f"define feature view '{view_name}' or remove '{ref}' from the service",
                    )
                )
            elif feature != "*" and feature not in {f.name for f in view.features}:
                failures.append(
                    ValidationFailure(
                        what,
                        "definitions",
                        f"uses '{ref}' but view '{view_name}' has no feature '{feature}'",
                        f"remove '{ref}' from the service or add the feature to the view",
                    )
                )
    return checks, failures


def _sources(
    registry: Registry, probe: Callable[[Any], Any]
) -> tuple[int, list[ValidationFailure]]:
    from quiver.selection import ViewSelection, query_sources

    failures = []
    checks = 0
    for view in registry.list("feature_view"):
        what = f"feature view '{view.name}'"
        source = registry.find("data_source", view.source_name)
        entities: list[Any] = [registry.find("entity", e) for e in view.entities]
        if source is None or any(e is None for e in entities):
            continue  # reported as a definitions failure
        checks += 1
        features = () if view.aggregations else tuple(view.features)
        try:
            selection = ViewSelection(
                view, features, source, tuple(entities), query_sources(registry, view)
            )
            probe(selection)
        except NotFoundError as exc:
            failures.append(
                ValidationFailure(
                    what,
                    "source",
                    _message(exc),
                    f"write the data of source '{source.name}' or fix its path",
                )
            )
        except InvalidError as exc:
            failures.append(
                ValidationFailure(
                    what,
                    "source",
                    _message(exc),
                    f"make the columns of source '{source.name}' match the declared names and "
                    "dtypes (or fix the view's fields and run quiver apply)",
                )
            )
        except QuiverError as exc:
            failures.append(
                ValidationFailure(
                    what, "source", _message(exc), f"check that source '{source.name}' is readable"
                )
            )
    return checks, failures
