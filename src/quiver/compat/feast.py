"""Feast's definition API over Quiver's objects, so Feast repos load unchanged.

While ``quiver apply`` (or ``quiver plan``) imports a definitions file that imports ``feast``,
:func:`feast_modules` makes ``feast`` and every ``feast.*`` submodule this module: Feast is
never installed nor imported. ``Entity``, ``FeatureView``, ``Field``, ``feast.types``,
``ValueType``, ``FileSource``, ``PushSource``, ``RequestSource``, ``FeatureService``,
``on_demand_feature_view``, ``LabelView`` build the equivalent Quiver objects. What Quiver does
not use is accepted with a warning naming it (``enable_validation``, a feature service's
``logging_config``, ``Project``); what it cannot represent is refused by name
(:class:`~quiver.errors.DefinitionError`), never dropped.

Decisions: Feast's untyped ``Map`` is ``map<string, string>``; an entity without
``value_type`` has ``int64`` keys; a ``FileSource`` without a name is named after its path; a
``PushSource`` is its batch source under the push source's name (so ``/push`` and
``store.push`` find its views by that name).
"""

from __future__ import annotations

import contextlib
import enum
import importlib.abc
import importlib.machinery
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from quiver.definitions import Entity as _Entity
from quiver.definitions import FeatureService as _FeatureService
from quiver.definitions import FeatureView as _FeatureView
from quiver.definitions import Field as _Field
from quiver.definitions import FileSource as _FileSource
from quiver.errors import DefinitionError
from quiver.features.on_demand import OnDemandFeatureView
from quiver.features.on_demand import RequestSource as _RequestSource
from quiver.features.on_demand import on_demand_feature_view as _on_demand

__all__ = [
    "Array",
    "Bool",
    "ConflictPolicy",
    "Entity",
    "FeastCompatWarning",
    "FeatureService",
    "FeatureView",
    "Field",
    "FileSource",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "Json",
    "LabelView",
    "Map",
    "Project",
    "PushSource",
    "RequestSource",
    "String",
    "Struct",
    "UnixTimestamp",
    "ValueType",
    "feast_modules",
    "on_demand_feature_view",
]


class FeastCompatWarning(UserWarning):
    """A Feast option that Quiver accepts but does not use."""


def _ignored(what: str, why: str = "Quiver does not use it") -> None:
    warnings.warn(f"Feast's {what} is ignored ({why})", FeastCompatWarning, stacklevel=3)


def _refuse(what: str, why: str) -> DefinitionError:
    return DefinitionError(f"Feast's {what} cannot be represented in Quiver: {why}")


# -- types ---------------------------------------------------------------------------------------


class FeastType:
    """A Feast type: its Quiver dtype."""

    def __init__(self, name: str, dtype: str | None) -> None:
        self.name, self.dtype = name, dtype

    def quiver(self) -> str:
        if self.dtype is None:
            raise _refuse(f"type {self.name}", "Quiver has no such dtype")
        return self.dtype

    def __repr__(self) -> str:
        return self.name


Invalid = FeastType("Invalid", None)
Bytes = FeastType("Bytes", None)
String = FeastType("String", "string")
Bool = FeastType("Bool", "bool")
Int32 = FeastType("Int32", "int32")
Int64 = FeastType("Int64", "int64")
Float32 = FeastType("Float32", "float32")
Float64 = FeastType("Float64", "float64")
UnixTimestamp = FeastType("UnixTimestamp", "timestamp")
Map = FeastType("Map", "map<string, string>")
Json = FeastType("Json", "json")


def Array(base: FeastType) -> FeastType:
    """Feast's ``Array(T)``: ``list<T>``."""
    return FeastType(f"Array({base!r})", f"list<{base.quiver()}>")


def Struct(fields: dict[str, FeastType]) -> FeastType:
    """Feast's ``Struct({"name": T, ...})``: ``struct<name: T, ...>``."""
    inner = ", ".join(f"{k}: {_dtype(v)}" for k, v in fields.items())
    return FeastType(f"Struct({list(fields)})", f"struct<{inner}>")


class ValueType(enum.Enum):
    """Feast's ``ValueType`` (an entity's key type)."""

    UNKNOWN = 0
    BYTES = 1
    STRING = 2
    INT32 = 3
    INT64 = 4
    DOUBLE = 5
    FLOAT = 6
    BOOL = 7
    UNIX_TIMESTAMP = 8


_VALUE_TYPES = {
    ValueType.STRING: "string",
    ValueType.INT32: "int32",
    ValueType.INT64: "int64",
    ValueType.DOUBLE: "float64",
    ValueType.FLOAT: "float32",
    ValueType.BOOL: "bool",
    ValueType.UNIX_TIMESTAMP: "timestamp",
}


def _dtype(value: Any) -> str:
    if isinstance(value, FeastType):
        return value.quiver()
    if isinstance(value, ValueType):
        if value not in _VALUE_TYPES:
            raise _refuse(f"ValueType.{value.name}", "Quiver has no such dtype")
        return _VALUE_TYPES[value]
    if isinstance(value, str):
        return value
    raise _refuse(f"dtype {value!r}", "not a Feast type")


# -- definitions ---------------------------------------------------------------------------------


def Field(
    *,
    name: str,
    dtype: Any,
    description: str = "",
    tags: dict[str, str] | None = None,
    vector_index: bool = False,
    **unused: Any,
) -> _Field:
    """Feast's ``Field``: a Quiver :class:`~quiver.definitions.Field`."""
    if vector_index:
        raise _refuse(f"vector_index on field '{name}'", "Quiver has no vector search")
    for key in unused:
        _ignored(f"Field(..., {key}=) of '{name}'")
    return _Field(name=name, dtype=_dtype(dtype), description=description, tags=dict(tags or {}))


def Entity(
    *,
    name: str,
    join_keys: Sequence[str] | None = None,
    value_type: ValueType | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    owner: str = "",
    **unused: Any,
) -> _Entity:
    """Feast's ``Entity``: keys are ``int64`` unless ``value_type`` says otherwise."""
    for key in unused:
        _ignored(f"Entity(..., {key}=) of '{name}'")
    dtype = "int64" if value_type in (None, ValueType.UNKNOWN) else _dtype(value_type)
    return _Entity(
        name=name,
        join_keys=list(join_keys or [name]),
        value_type=dtype,
        description=description,
        tags=dict(tags or {}),
        owner=owner,
    )


def _source_name(path: str) -> str:
    stem = re.sub(r"\W+", "_", path.rsplit("/", 1)[-1].split(".", 1)[0]).strip("_") or "source"
    return stem if stem[0].isalpha() else f"s_{stem}"


def FileSource(
    *,
    path: str,
    name: str | None = None,
    timestamp_field: str = "event_timestamp",
    created_timestamp_column: str | None = None,
    field_mapping: dict[str, str] | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    owner: str = "",
    file_format: Any = None,
    **unused: Any,
) -> _FileSource:
    """Feast's ``FileSource``; without a ``name`` it is named after its file."""
    label = name or path
    for key in unused:
        _ignored(f"FileSource(..., {key}=) of '{label}'")
    if file_format is not None:
        _ignored(f"file_format of FileSource '{label}'", "the format follows the path")
    return _FileSource(
        name=name or _source_name(path),
        path=path,
        timestamp_field=timestamp_field,
        created_timestamp_field=created_timestamp_column or None,
        field_mapping=dict(field_mapping or {}),
        description=description,
        tags=dict(tags or {}),
        owner=owner,
    )


def PushSource(
    *, name: str, batch_source: Any, description: str = "", **unused: Any
) -> _FileSource:
    """Feast's ``PushSource``: its batch source, under the push source's name."""
    for key in unused:
        _ignored(f"PushSource(..., {key}=) of '{name}'")
    if not isinstance(batch_source, _FileSource):
        raise _refuse(f"PushSource '{name}'", "its batch_source must be a FileSource")
    spec = batch_source.model_dump()
    spec.update(name=name, description=description or batch_source.description)
    return _FileSource(**{k: v for k, v in spec.items() if k != "type"})


def RequestSource(
    *, name: str, schema: Sequence[_Field], description: str = "", **unused: Any
) -> _RequestSource:
    """Feast's ``RequestSource``: fields sent with each entity row."""
    for key in unused:
        _ignored(f"RequestSource(..., {key}=) of '{name}'")
    return _RequestSource(name=name, schema=list(schema))


_FV_IGNORED = {"enable_validation", "offline", "mode", "sink_source", "stream_source"}


class FeatureView(_FeatureView):
    """Feast's ``FeatureView``: a Quiver feature view; ``view[["a", "b"]]`` selects features."""

    def __init__(
        self,
        *,
        name: str,
        source: Any,
        schema: Sequence[_Field] | None = None,
        entities: Sequence[Any] | None = None,
        ttl: timedelta | None = timedelta(0),
        online: bool = True,
        description: str = "",
        tags: dict[str, str] | None = None,
        owner: str = "",
        version: str | None = None,
        **unused: Any,
    ) -> None:
        for key in sorted(unused):
            if key not in _FV_IGNORED:
                raise _refuse(f"FeatureView(..., {key}=) of '{name}'", "Quiver has no such option")
            _ignored(f"FeatureView(..., {key}=) of '{name}'")
        if version not in (None, "latest"):
            raise _refuse(f"version={version!r} of feature view '{name}'", "views are unversioned")
        if isinstance(source, _RequestSource) or source is None:
            raise _refuse(f"feature view '{name}'", "its source must be a file or push source")
        ents = list(entities or [])
        keys = {k for e in ents if isinstance(e, _Entity) for k in e.join_keys}
        fields = [f for f in (schema or []) if f.name not in keys]
        super().__init__(
            name=name,
            entities=ents,
            schema=fields,
            source=source,
            ttl=ttl if ttl else None,
            online=online,
            description=description,
            tags=dict(tags or {}),
            owner=owner,
        )

    def __getitem__(self, features: str | Sequence[str]) -> list[str]:
        names = [features] if isinstance(features, str) else list(features)
        return [f"{self.name}:{n}" for n in names]


class ConflictPolicy(enum.Enum):
    """Feast's label conflict policies; Quiver keeps the newest row by event time."""

    LAST_WRITE_WINS = "last_write_wins"
    FIRST_WRITE_WINS = "first_write_wins"
    MAJORITY_VOTE = "majority_vote"


def LabelView(
    *,
    name: str,
    conflict_policy: ConflictPolicy = ConflictPolicy.LAST_WRITE_WINS,
    labeler_field: str | None = None,
    **kwargs: Any,
) -> FeatureView:
    """Feast's ``LabelView``: a feature view whose labels are the newest row (last write wins)."""
    if conflict_policy is not ConflictPolicy.LAST_WRITE_WINS:
        raise _refuse(f"conflict_policy {conflict_policy.name} of '{name}'", "only last write wins")
    if labeler_field:
        _ignored(f"labeler_field of label view '{name}'", "it is served as a plain feature")
    return FeatureView(name=name, **kwargs)


class LoggingConfig:
    """Feast's feature logging configuration (accepted, ignored with a warning)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class FileLoggingDestination(LoggingConfig):
    """Feast's file logging destination (accepted, ignored)."""


class Project:
    """Feast's ``Project`` object: the project comes from ``feature_store.yaml``."""

    def __init__(self, *, name: str, description: str = "", **kwargs: Any) -> None:
        _ignored(f"Project {name!r}", "the project is feature_store.yaml's")
        self.name, self.description = name, description


def FeatureService(
    *,
    name: str,
    features: Sequence[Any],
    description: str = "",
    tags: dict[str, str] | None = None,
    owner: str = "",
    logging_config: Any = None,
    **unused: Any,
) -> _FeatureService:
    """Feast's ``FeatureService``; on-demand views and ``view[[...]]`` selections included."""
    for key in unused:
        _ignored(f"FeatureService(..., {key}=) of '{name}'")
    if logging_config is not None:
        _ignored(f"logging_config of feature service '{name}'", "Quiver logs no served features")
    refs: list[Any] = []
    for item in features:
        refs.append(f"{item.name}:*" if isinstance(item, OnDemandFeatureView) else item)
    return _FeatureService(
        name=name, features=refs, description=description, tags=dict(tags or {}), owner=owner
    )


def on_demand_feature_view(
    *,
    sources: Sequence[Any],
    schema: Sequence[_Field],
    mode: str = "pandas",
    name: str | None = None,
    description: str = "",
    tags: dict[str, str] | None = None,
    owner: str = "",
    **unused: Any,
) -> Callable[[Callable[..., Any]], OnDemandFeatureView]:
    """Feast's ``@on_demand_feature_view`` (``pandas`` mode; ``python`` is refused by name)."""
    label = name or "on-demand feature view"
    if mode != "pandas":
        raise _refuse(f"mode={mode!r} of {label}", "Quiver runs pandas or arrow functions")
    for key in unused:
        _ignored(f"on_demand_feature_view(..., {key}=) of {label}")
    return _on_demand(
        sources=list(sources),
        schema=list(schema),
        name=name,
        description=description,
        tags=dict(tags or {}),
        owner=owner,
    )


class PushMode(enum.Enum):
    """Feast's push modes (``store.push(..., to=PushMode.ONLINE)``)."""

    ONLINE = "online"
    OFFLINE = "offline"
    ONLINE_AND_OFFLINE = "online_and_offline"


def __getattr__(name: str) -> Any:
    if name == "FeatureStore":
        from quiver.store import FeatureStore

        return FeatureStore
    if name.startswith("__"):
        raise AttributeError(name)
    raise _refuse(name, "Quiver has no equivalent; remove it or define it the Quiver way")


# -- the import hook -----------------------------------------------------------------------------


class _FeastModule(types.ModuleType):
    """``feast`` or one of its submodules: every name is this module's.

    The import system binds a submodule on its parent (``feast.on_demand_feature_view`` the
    module would hide the decorator of that name): such bindings are not kept.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(sys.modules[__name__], name)

    def __setattr__(self, name: str, value: Any) -> None:
        if not isinstance(value, _FeastModule):
            super().__setattr__(name, value)


class _FeastFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``feast`` and every ``feast.*`` module (see :class:`_FeastModule`)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname == "feast" or fullname.startswith("feast."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        return _FeastModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        return None


@contextlib.contextmanager
def feast_modules() -> Iterator[None]:
    """While inside, ``import feast`` (and ``feast.*``) gives this module; restored after."""
    saved = {k: v for k, v in sys.modules.items() if k == "feast" or k.startswith("feast.")}
    for key in saved:
        del sys.modules[key]
    finder = _FeastFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for key in [k for k in sys.modules if k == "feast" or k.startswith("feast.")]:
            del sys.modules[key]
        sys.modules.update(saved)
