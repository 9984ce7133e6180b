"""Definition models: entities, fields, data sources, feature views and feature services.

Every model is a frozen pydantic model validated on construction, with ``extra="forbid"`` so a
typo is an error. ``to_spec()`` gives the canonical JSON shape that the registry stores and the
REST API accepts, and ``from_spec()`` reads it back; a Python module, YAML and JSON therefore all
describe the same objects.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Discriminator,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic import Field as PydanticField

from quiver._paths import check_path_text
from quiver.errors import InvalidError
from quiver.features.aggregations import (
    Aggregation,
    default_interval,
    format_duration,
    parse_duration,
)
from quiver.quality import (
    ValidationRules,
    ViewValidation,
    check_field_rules,
    check_view_rules,
)
from quiver.types import DType

__all__ = [
    "VIEW_KINDS",
    "Aggregation",
    "DataSource",
    "Entity",
    "FeatureService",
    "FeatureView",
    "Field",
    "FileSource",
    "IcebergSource",
    "OnDemandFeatureView",
    "RequestSource",
    "ValidationRules",
    "ViewValidation",
    "parse_feature_ref",
    "validate_name",
]

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\Z")
"""Plain identifiers only: names become table and column names."""


def validate_name(value: str, what: str = "name") -> str:
    """Check that ``value`` is a plain identifier and return it.

    Raises:
        InvalidError: if it is empty, too long, or holds anything but letters, digits and ``_``.
    """
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise InvalidError(
            f"{what} {value!r} is not a plain identifier: use letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters"
        )
    return value


def _name(value: Any) -> Any:
    try:
        return validate_name(value)
    except InvalidError as exc:
        raise ValueError(exc.message) from None


Name = Annotated[str, PydanticField(description="a plain identifier")]
Tags = dict[str, str]


class _Definition(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, validate_default=True
    )

    kind: ClassVar[str]
    name: Name

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_from_pydantic(
                KIND_LABELS.get(self.kind, "object"), data.get("name"), exc
            ) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            name = obj.get("name") if isinstance(obj, dict) else None
            raise invalid_from_pydantic(KIND_LABELS.get(cls.kind, "object"), name, exc) from None

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> Any:
        return _name(value)

    def to_spec(self) -> dict[str, Any]:
        """The canonical JSON-compatible spec of this object."""
        return self.model_dump(mode="json", by_alias=False)

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Self:
        """Build the object from its spec (the inverse of :meth:`to_spec`)."""
        return cls.model_validate(spec)

    def spec_hash(self) -> str:
        """A content hash of the canonical spec."""
        canonical = json.dumps(self.to_spec(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class Entity(_Definition):
    """A business object that features describe, e.g. a customer.

    Attributes:
        name: The entity's name, e.g. ``customer``.
        join_keys: The columns that identify it; defaults to ``[name]``.
        value_type: The dtype of every join key (``int64`` by default).
    """

    kind: ClassVar[str] = "entity"
    join_keys: list[str] = PydanticField(default_factory=list)
    value_type: DType = "int64"
    description: str = ""
    tags: Tags = PydanticField(default_factory=dict)
    owner: str = ""

    @field_validator("join_keys", mode="before")
    @classmethod
    def _keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            for key in value:
                _name(key)
        return value

    @model_validator(mode="after")
    def _default_keys(self) -> Self:
        if not self.join_keys:
            object.__setattr__(self, "join_keys", [self.name])
        if len(set(self.join_keys)) != len(self.join_keys):
            raise ValueError(f"entity '{self.name}' lists a join key twice: {self.join_keys}")
        if self.value_type not in ("int32", "int64", "string", "bool", "timestamp"):
            raise ValueError(
                f"entity '{self.name}': value_type {self.value_type!r} cannot be a join key; "
                "use int32, int64, string, bool or timestamp"
            )
        return self


class Field(BaseModel):
    """A named, typed column of a feature view.

    Attributes:
        name: A plain identifier.
        dtype: ``int32``, ``int64``, ``float32``, ``float64``, ``string``, ``bool``,
            ``timestamp``, ``list<...>`` of one of these, ``map<string, T>``,
            ``struct<name: T, ...>`` or ``json`` (see :mod:`quiver.types`).
        transformation: Optional SQL expression computing the value from the source row's own
            columns (``date_diff('year', date_of_birth, event_timestamp)``); checked by the SQL
            sandbox (:mod:`quiver.features.sql`) and cast to ``dtype``. In an on-demand view,
            an expression over its input features and request fields.
        validation_rules: Optional :class:`~quiver.quality.ValidationRules` (``min_value``,
            ``max_value``, ``not_null``, ``regex``), enforced at materialization and push under
            the view's validation policy.
        allowed_values: Optional list of the only values allowed (a null passes unless
            ``not_null``).
        default_value: Optional value served instead of a missing one where a request opts
            into defaults (online reads, predictions); it must fit the dtype and the rules.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    dtype: DType
    description: str = ""
    tags: Tags = PydanticField(default_factory=dict)
    transformation: str | None = None
    validation_rules: ValidationRules | None = None
    allowed_values: list[StrictBool | StrictInt | StrictFloat | StrictStr] | None = None
    default_value: Any | None = None

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise invalid_from_pydantic("field", data.get("name"), exc) from None

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> Any:
        return _name(value)

    @model_validator(mode="after")
    def _check_transformation(self) -> Self:
        if self.transformation is not None:
            from quiver.features.sql import parse_expression

            try:
                parse_expression(self.transformation, f"transformation of feature '{self.name}'")
            except InvalidError as exc:
                raise ValueError(exc.message) from None
        if self.validation_rules is not None and self.validation_rules.empty:
            object.__setattr__(self, "validation_rules", None)
        check_field_rules(self)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):  # specs of plain fields stay as they were
            for key in ("transformation", "validation_rules", "allowed_values", "default_value"):
                if data.get(key) is None:
                    data.pop(key, None)
            rules = data.get("validation_rules")
            if isinstance(rules, dict):
                data["validation_rules"] = {
                    k: v for k, v in rules.items() if v is not None and v is not False
                }
        return data


class _SourceBase(_Definition):
    kind: ClassVar[str] = "data_source"
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str | None = None
    field_mapping: dict[str, str] = PydanticField(
        default_factory=dict, description="source column -> feature or key name"
    )
    description: str = ""
    tags: Tags = PydanticField(default_factory=dict)
    owner: str = ""

    @field_validator("timestamp_field", "created_timestamp_field", mode="before")
    @classmethod
    def _column(cls, value: Any) -> Any:
        return value if value is None else _name(value)

    @field_validator("field_mapping", mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for src, dst in value.items():
                _name(src)
                _name(dst)
        return value

    def column_for(self, name: str) -> str:
        """The source column that holds the feature or key ``name``."""
        for src, dst in self.field_mapping.items():
            if dst == name:
                return src
        return name


class FileSource(_SourceBase):
    """Rows in Parquet or CSV files: one file, a directory, or a glob; local or ``s3://``.

    Attributes:
        path: A path (relative paths are relative to the repo) or an ``s3://`` URI.
        format: ``parquet`` or ``csv``; inferred from the path when not given.
        timestamp_field: The event timestamp column.
        created_timestamp_field: Optional column that breaks ties between equal event times.
        field_mapping: Renames source columns to feature or join key names.
    """

    type: Literal["file"] = "file"
    path: str
    format: Literal["parquet", "csv"] = "parquet"

    @model_validator(mode="before")
    @classmethod
    def _infer_format(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("format") and isinstance(data.get("path"), str):
            lowered = data["path"].lower().rstrip("/")
            data = {**data, "format": "csv" if lowered.endswith((".csv", ".csv.gz")) else "parquet"}
        return data

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("path must not be empty")
        try:
            check_path_text(value, "path")
        except InvalidError as exc:  # reported as pydantic reports the empty path
            raise ValueError(str(exc)) from None
        return value


class IcebergSource(_SourceBase):
    """A table in an Iceberg catalog configured in ``quiver.yaml``.

    Attributes:
        table: The table identifier, ``namespace.table``.
        catalog: The catalog's name under ``iceberg.catalogs`` in ``quiver.yaml``.
    """

    type: Literal["iceberg"] = "iceberg"
    table: str
    catalog: str = "default"

    @field_validator("catalog", mode="before")
    @classmethod
    def _catalog(cls, value: Any) -> Any:
        return _name(value)

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        parts = value.split(".")
        if len(parts) < 2:
            raise ValueError(f"table {value!r} must be 'namespace.table'")
        for part in parts:
            _name(part)
        return value


def _source_tag(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "file"))
    return str(getattr(value, "type", "file"))


DataSource = Annotated[
    Annotated[FileSource, Tag("file")] | Annotated[IcebergSource, Tag("iceberg")],
    Discriminator(
        _source_tag,
        custom_error_type="source_type",
        custom_error_message="unknown data source type; use 'file' or 'iceberg'",
    ),
]
"""A data source: :class:`FileSource` or :class:`IcebergSource` (JSON key ``type``)."""


def _check_schedule(view: str, schedule: str | None, timezone: str) -> None:
    """Refuse a cron expression or time zone that cannot be read (``ValueError``)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"feature view '{view}': schedule_timezone {timezone!r} is not a time zone; use an "
            "IANA name such as UTC or Europe/Paris"
        ) from None
    if schedule is None:
        return
    from croniter import croniter

    if not schedule.strip() or len(schedule.split()) != 5 or not croniter.is_valid(schedule):
        raise ValueError(
            f"feature view '{view}': materialization_schedule {schedule!r} is not a cron "
            "expression; use five fields: minute hour day-of-month month day-of-week, e.g. "
            "'0 */6 * * *'"
        )


class FeatureView(_Definition):
    """A named set of fields from one source for one or more entities.

    Attributes:
        name: The view's name.
        entities: Entity names (or :class:`Entity` objects).
        features: The fields (``schema=`` is accepted as in Feast).
        source: A data source object, or the name of a registered one.
        ttl: The maximum age of a value (``ttl_seconds`` in JSON); ``None`` or 0 for no limit.
        online: Whether the view is materialized to the online store.
        source_query: Optional ``SELECT`` over the view's source and other registered data
            sources (by name, e.g. a join with a dimension table), run in the SQL sandbox over
            their rows; the view reads its result instead of the source's rows.
        materialization_schedule: Optional cron expression (five fields, e.g. ``0 */6 * * *``):
            ``quiver scheduler`` (or ``quiver serve --scheduler``) materializes the view
            incrementally at those times.
        schedule_timezone: The IANA time zone the schedule is read in (default ``UTC``).
    """

    kind: ClassVar[str] = "feature_view"
    entities: list[str]
    features: list[Field] = PydanticField(validation_alias=AliasChoices("features", "schema"))
    source: DataSource | str
    ttl: timedelta | None = PydanticField(
        default=None, validation_alias=AliasChoices("ttl", "ttl_seconds")
    )
    online: bool = True
    source_query: str | None = None
    description: str = ""
    tags: Tags = PydanticField(default_factory=dict)
    owner: str = ""
    aggregations: list[Aggregation] = PydanticField(default_factory=list)
    aggregation_interval: timedelta | None = None
    materialization_schedule: str | None = None
    schedule_timezone: str = "UTC"
    validation: ViewValidation = PydanticField(default_factory=ViewValidation)

    if TYPE_CHECKING:
        # The signature users write (``schema=`` and ``ttl_seconds=`` are validation aliases,
        # which the pydantic mypy plugin does not see); at run time pydantic's __init__ runs.
        def __init__(
            self,
            *,
            name: str,
            entities: Sequence[str | Entity] | str | Entity,
            source: FileSource | IcebergSource | dict[str, Any] | str,
            schema: Sequence[Field | dict[str, Any]] = ...,
            features: Sequence[Field | dict[str, Any]] = ...,
            ttl: timedelta | float | str | None = None,
            ttl_seconds: float | None = None,
            online: bool = True,
            source_query: str | None = None,
            description: str = "",
            tags: dict[str, str] = ...,
            owner: str = "",
            aggregations: Sequence[Aggregation | dict[str, Any]] = ...,
            aggregation_interval: timedelta | str | None = None,
            materialization_schedule: str | None = None,
            schedule_timezone: str = "UTC",
            validation: ViewValidation | dict[str, Any] | None = None,
        ) -> None: ...

    @field_validator("entities", mode="before")
    @classmethod
    def _entities(cls, value: Any) -> Any:
        if isinstance(value, (str, Entity)):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value  # pydantic reports "Input should be a valid list"
        names = [v.name if isinstance(v, Entity) else v for v in value]
        for name in names:
            _name(name)
        return names

    @field_validator("source", mode="before")
    @classmethod
    def _source(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _name(value)
        return value

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("ttl must be a timedelta or a number of seconds, not a bool")
        if value in (None, 0, 0.0, ""):
            return None
        if isinstance(value, (int, float)):
            if value < 0:
                raise ValueError("ttl must not be negative")
            try:
                return timedelta(seconds=value)
            except (OverflowError, ValueError):
                raise ValueError(f"ttl {value!r} is not a usable number of seconds") from None
        if isinstance(value, timedelta) and value < timedelta(0):
            raise ValueError("ttl must not be negative")
        return value

    @field_validator("aggregation_interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value, "aggregation_interval")

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.aggregations or self.aggregation_interval is not None:
            _check_aggregations(self)
        _check_schedule(self.name, self.materialization_schedule, self.schedule_timezone)
        if not self.entities:
            raise ValueError(f"feature view '{self.name}' needs at least one entity")
        if len(set(self.entities)) != len(self.entities):
            raise ValueError(f"feature view '{self.name}' lists an entity twice")
        seen: set[str] = set()
        for field in self.features:
            if field.name in seen:
                raise ValueError(
                    f"feature view '{self.name}' declares feature '{field.name}' twice"
                )
            seen.add(field.name)
        if self.ttl is not None and self.ttl < timedelta(0):
            raise ValueError(f"feature view '{self.name}': ttl must not be negative")
        try:  # the spec stores seconds as a float: it must convert back
            if self.ttl is not None:
                timedelta(seconds=self.ttl.total_seconds())
        except OverflowError:
            raise ValueError(f"feature view '{self.name}': ttl {self.ttl} is too large") from None
        if self.ttl == timedelta(0):
            object.__setattr__(self, "ttl", None)
        if not isinstance(self.source, str) and self.source.name == "":
            raise ValueError("source name must not be empty")
        check_view_rules(self)
        if self.source_query is not None:
            from quiver.features.sql import parse_query

            what = f"source query of feature view '{self.name}'"
            try:
                query = parse_query(self.source_query, None, what)
            except InvalidError as exc:
                raise ValueError(exc.message) from None
            if self.source_name not in query.tables:
                raise ValueError(
                    f"{what} does not read the view's source '{self.source_name}' (its event "
                    "times are the view's); name it in FROM or JOIN"
                )
        return self

    @property
    def source_name(self) -> str:
        """The name of the view's data source."""
        return self.source if isinstance(self.source, str) else self.source.name

    @property
    def feature_names(self) -> list[str]:
        """The names of the view's features, in order (its aggregations' when it has any)."""
        return [f.name for f in self.output_fields]

    @property
    def output_fields(self) -> list[Field]:
        """The features the view serves: its fields, or, for a view with aggregations, one field
        per aggregation (its schema then declares the source columns they read)."""
        if not self.aggregations:
            return self.features
        dtypes = {f.name: f.dtype for f in self.features}
        return [
            Field(name=a.name, dtype=a.dtype(dtypes.get(a.column or ""))) for a in self.aggregations
        ]

    def aggregation(self, name: str) -> Aggregation:
        """The aggregation whose feature is ``name`` (``KeyError`` if none)."""
        for agg in self.aggregations:
            if agg.name == name:
                return agg
        raise KeyError(name)

    def feature(self, name: str) -> Field:
        """The field called ``name``, or raise :class:`~quiver.errors.NotFoundError`."""
        from quiver.errors import NotFoundError

        for field in self.output_fields:
            if field.name == name:
                return field
        raise NotFoundError(
            f"feature view '{self.name}' has no feature '{name}'"
            + _did_you_mean(name, self.feature_names)
        )

    def normalized(self) -> FeatureView:
        """This view with an inline source replaced by the source's name."""
        if isinstance(self.source, str):
            return self
        return self.model_copy(update={"source": self.source.name})

    def to_spec(self) -> dict[str, Any]:
        spec = super().to_spec()
        ttl = spec.pop("ttl")
        seconds = self.ttl.total_seconds() if self.ttl is not None else None
        if seconds is not None and seconds.is_integer():
            seconds = int(seconds)
        del ttl
        spec["ttl_seconds"] = seconds
        if self.source_query is None:
            spec.pop("source_query", None)  # specs of plain views stay as they were
        if self.aggregations:  # specs of plain views stay as they were
            spec["aggregations"] = [a.to_spec() for a in self.aggregations]
            assert self.aggregation_interval is not None
            spec["aggregation_interval"] = format_duration(self.aggregation_interval)
        else:
            spec.pop("aggregations", None)
            spec.pop("aggregation_interval", None)
        if self.materialization_schedule is None:  # specs of plain views stay as they were
            spec.pop("materialization_schedule", None)
        if self.schedule_timezone == "UTC":
            spec.pop("schedule_timezone", None)
        if self.validation.is_default:  # specs of views without checks stay as they were
            spec.pop("validation", None)
        return spec

    def __getitem__(self, names: list[str] | tuple[str, ...] | str) -> list[str]:
        """Feature references for a selection, for ``FeatureService(features=[view[["a"]]])``."""
        if isinstance(names, str):
            names = [names]
        for n in names:
            self.feature(n)
        return [f"{self.name}:{n}" for n in names]


def _check_aggregations(view: FeatureView) -> None:
    """Validate a view's aggregations and fill in its default tile size (``ValueError``)."""
    name = view.name
    if not view.aggregations:
        raise ValueError(f"feature view '{name}': aggregation_interval needs aggregations")
    if view.ttl is not None and view.ttl != timedelta(0):
        raise ValueError(
            f"feature view '{name}': ttl does not apply to aggregations (an empty window gives "
            "count 0 and null for the others); remove ttl"
        )
    interval = view.aggregation_interval or default_interval(
        [a.time_window for a in view.aggregations]
    )
    object.__setattr__(view, "aggregation_interval", interval)
    dtypes = {f.name: f.dtype for f in view.features}
    seen: set[str] = set()
    for agg in view.aggregations:
        if agg.column is not None and agg.column not in dtypes:
            raise ValueError(
                f"feature view '{name}': aggregation '{agg.name}' reads column '{agg.column}', "
                "which the view's schema does not declare" + _did_you_mean(agg.column, list(dtypes))
            )
        agg.check_column(name, dtypes.get(agg.column or ""))
        if agg.time_window % interval:
            raise ValueError(
                f"feature view '{name}': aggregation '{agg.name}': window "
                f"{format_duration(agg.time_window)} is not a multiple of aggregation_interval "
                f"{format_duration(interval)}"
            )
        if agg.name in seen or agg.name in dtypes:
            raise ValueError(
                f"feature view '{name}': '{agg.name}' names two aggregations, or an aggregation "
                "and a schema column; give the aggregation another name"
            )
        seen.add(agg.name)


def parse_feature_ref(ref: str) -> tuple[str, str]:
    """Split ``view:feature`` (or ``view:*``, or a bare ``view``) into its two parts.

    Raises:
        InvalidError: if the reference is malformed.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidError(f"feature reference {ref!r} must be 'view:feature' or 'view:*'")
    view, sep, feature = ref.strip().partition(":")
    if not sep:
        feature = "*"
    try:
        validate_name(view, "feature view name")
        if feature != "*":
            validate_name(feature, "feature name")
    except InvalidError as exc:
        raise InvalidError(
            f"feature reference {ref!r} must be 'view:feature' or 'view:*': {exc.message}"
        ) from None
    return view, feature


class FeatureService(_Definition):
    """A named selection of features from one or more views, used to train and serve a model.

    Attributes:
        features: References ``view:feature`` or ``view:*``; :class:`FeatureView` objects and
            ``view[["a", "b"]]`` selections are accepted too.
    """

    kind: ClassVar[str] = "feature_service"
    features: list[str]
    description: str = ""
    tags: Tags = PydanticField(default_factory=dict)
    owner: str = ""

    @field_validator("features", mode="before")
    @classmethod
    def _refs(cls, value: Any) -> Any:
        out: list[str] = []

        def add(item: Any) -> None:
            if isinstance(item, FeatureView):
                out.append(f"{item.name}:*")
            elif isinstance(item, (list, tuple)):
                for sub in item:
                    add(sub)
            else:
                try:
                    view, feature = parse_feature_ref(item)
                except InvalidError as exc:
                    raise ValueError(exc.message) from None
                out.append(f"{view}:{feature}")

        add(value)
        if not out:
            raise ValueError("a feature service needs at least one feature reference")
        if len(set(out)) != len(out):
            raise ValueError("a feature service lists the same feature reference twice")
        return out

    @property
    def view_names(self) -> list[str]:
        """The names of the views this service reads, in first-use order."""
        return list(dict.fromkeys(parse_feature_ref(r)[0] for r in self.features))


def invalid_from_pydantic(what: str, name: Any, exc: ValidationError) -> InvalidError:
    """Turn a pydantic ValidationError into an :class:`InvalidError` with a readable message."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not _is_internal_loc(p))
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    label = f"{what} {name!r}" if isinstance(name, str) else what
    return InvalidError(
        f"{label} is invalid: " + "; ".join(parts),
        details=[{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()],
    )


_INTERNAL_LOC = re.compile(r"^(tagged-union|function-(after|before|wrap|plain))\[")


def _is_internal_loc(part: Any) -> bool:
    """Whether a pydantic error location part names a union branch, not a user's key."""
    return isinstance(part, str) and (
        part in ("file", "iceberg") or _INTERNAL_LOC.match(part) is not None
    )


def _did_you_mean(name: str, options: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


did_you_mean = _did_you_mean

KINDS: dict[str, type[_Definition]] = {
    "entity": Entity,
    "data_source": FileSource,  # resolved by type in spec_to_object
    "feature_view": FeatureView,
    "feature_service": FeatureService,
}
KIND_LABELS = {
    "entity": "entity",
    "data_source": "data source",
    "feature_view": "feature view",
    "feature_service": "feature service",
}

# On-demand feature views live in quiver.features (a light module: pydantic only).
from quiver.features.on_demand import OnDemandFeatureView, RequestSource  # noqa: E402

KINDS["on_demand_feature_view"] = OnDemandFeatureView
KIND_LABELS["on_demand_feature_view"] = "on-demand feature view"
VIEW_KINDS = ("feature_view", "on_demand_feature_view")
"""Kinds whose features are referenced as ``view:feature`` (one namespace)."""


def object_from_spec(kind: str, spec: dict[str, Any]) -> Any:
    """Build a definition object of ``kind`` from its spec."""
    if kind == "data_source":
        source_type = spec.get("type", "file")
        if source_type not in ("file", "iceberg"):
            raise InvalidError(
                f"data source {spec.get('name')!r} has unknown type {source_type!r}; "
                "use 'file' or 'iceberg'"
            )
        if source_type == "iceberg":
            return IcebergSource.from_spec(spec)
        return FileSource.from_spec(spec)
    return KINDS[kind].from_spec(spec)
