"""Request and response models of the REST API.

Request models check shapes and types only (``extra="forbid"`` so a typo is a 422), and take
exactly the JSON types the OpenAPI document declares (``strict=True``: no ``0``/``1`` or
``"true"`` for a boolean, no ``"5"`` for a number; times are ISO 8601 strings,
:data:`IsoDateTime`); the meaning of a request (does the view exist, is the spec consistent)
is checked by the core, whose :class:`~quiver.errors.QuiverError` becomes the same JSON error
body.
"""

from __future__ import annotations

import json
import re
import types
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from datetime import date, datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi import Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
)
from pydantic_core import PydanticCustomError

from quiver.ml.registry import MAX_VERSION

JsonScalar = str | int | float | bool | None
"""A JSON value that can be a join key, a feature value or a cell of an entity table."""

PushValue = JsonScalar | list[JsonValue] | dict[str, JsonValue]
"""A pushed feature value: a scalar, a list, or an object (maps, structs, ``json``)."""

MAX_CHUNK_ROWS = 10_000_000
"""The largest ``chunk_rows`` of a batch prediction (a chunk is held in memory)."""

VersionPath = Annotated[
    int, Path(ge=1, le=MAX_VERSION, description="a version number (1 to 2**31 - 1)")
]
"""A version in a URL path: registry objects and models (32-bit in the registry database)."""


# --- strict scalars at the edge ----------------------------------------------------------------
#
# Pydantic's lax mode (which FastAPI uses for query parameters and bodies alike) takes more than
# the OpenAPI document says: ``0``/``1``/``yes``/``on`` as booleans, numbers (and numeric
# strings) as unix times. The API takes exactly what it documents; these types say so once.


def _query_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if value == "true":
        return True
    if value == "false":
        return False
    raise PydanticCustomError("bool_parsing", "Input should be true or false")


QueryBool = Annotated[bool, BeforeValidator(_query_bool)]
"""A boolean query parameter: exactly ``true`` or ``false`` (not ``1``, ``yes`` or ``on``)."""

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?![0-9])")


def _iso_only(value: Any) -> Any:
    if isinstance(value, date) or (isinstance(value, str) and _ISO_DATE.match(value)):
        return value  # pydantic parses (and checks) the rest of the ISO 8601 text
    raise PydanticCustomError(
        "datetime_type",
        "Input should be an ISO 8601 string, e.g. 2025-01-01T00:00:00Z (not a number)",
    )


IsoDateTime = Annotated[datetime, Strict(False), BeforeValidator(_iso_only)]
"""A time in a body or a query parameter: an ISO 8601 string (``2025-01-01T00:00:00Z``; without
an offset it is UTC), never a number (pydantic would read one as a unix time)."""

IsoDate = Annotated[date, Strict(False), BeforeValidator(_iso_only)]
"""A day in a body: an ISO 8601 string (``2025-01-01``), never a number."""


def _is_sequence(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_is_sequence(arg) for arg in get_args(annotation))
    if origin is Annotated:
        return _is_sequence(get_args(annotation)[0])
    return origin in (list, set, frozenset, tuple) or annotation in (list, set, frozenset, tuple)


def _query_fields(dependant: Any) -> Iterator[Any]:
    yield from dependant.query_params
    for sub in dependant.dependencies:
        yield from _query_fields(sub)


def _scalar_query_names(route: Any) -> frozenset[str]:
    """The query parameters of ``route`` that take one value (worked out once per route)."""
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return frozenset()
    names: frozenset[str] | None = getattr(route, "quiver_scalar_query", None)
    if names is None:
        fields = _query_fields(dependant)
        names = frozenset(f.alias for f in fields if not _is_sequence(f.field_info.annotation))
        route.quiver_scalar_query = names
    return names


async def single_query_values(request: Request) -> None:
    """The app-wide dependency that refuses a scalar query parameter given twice (422).

    Starlette keeps every value of a repeated parameter and FastAPI would take the last one;
    the document declares one value (a list parameter, e.g. ``tag``, may repeat). Free when the
    request has no query string; the online fast path takes POST bodies only.
    """
    if not request.scope.get("query_string"):
        return
    names = _scalar_query_names(request.scope.get("route"))
    if not names:
        return
    counts = Counter(key for key, _ in request.query_params.multi_items() if key in names)
    errors = [
        {
            "type": "multiple_values",
            "loc": ("query", name),
            "msg": f"give {name} once (it was given {count} times)",
            "input": request.query_params.getlist(name),
        }
        for name, count in counts.items()
        if count > 1
    ]
    if errors:
        raise RequestValidationError(errors)


# --- request bodies ----------------------------------------------------------------------------

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _lone_surrogate(value: Any) -> bool:
    """Whether a decoded JSON value holds a string (or key) that is not valid Unicode."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class StrictJSONRequest(Request):
    """A request whose JSON body must be valid Unicode.

    JSON may escape a lone UTF-16 surrogate (``"\\ud800"``), which Python's ``json`` decodes
    into a string that no database, file system or UTF-8 encoder accepts. Such a body is
    refused as invalid JSON (422), like every other malformed body; surrogate pairs (escaped
    emoji) are fine.
    """

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            data = json.loads(body)
            match = _SURROGATE_ESCAPE.search(body)
            if match is not None and _lone_surrogate(data):
                raise json.JSONDecodeError(
                    "a string holds a lone UTF-16 surrogate escape (e.g. \\ud800), which is "
                    "not valid Unicode",
                    body.decode("utf-8", "replace"),
                    match.start(),
                )
            self._json = data
        return self._json


class StrictJSONRoute(APIRoute):
    """A route that parses JSON bodies with :class:`StrictJSONRequest`.

    Routers opt in with ``APIRouter(route_class=StrictJSONRoute)``.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: see the module


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class MLIn(BaseModel):
    """The base of the model and prediction request bodies: unknown fields are a 422.

    Their fields may start with ``model_`` (``model_id``), a prefix pydantic reserves by default.
    """

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), strict=True)


class MLOut(BaseModel):
    """The base of the model and prediction answers: fields they do not declare are dropped.

    Their fields may start with ``model_`` (``model_id``), a prefix pydantic reserves by default.
    """

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


# --- errors ------------------------------------------------------------------------------------


class ErrorBody(_Out):
    """What went wrong."""

    type: str = Field(description="a stable error type, e.g. not_found, conflict, invalid")
    message: str = Field(description="one line that names the object and says what to do")
    details: Any = Field(default=None, description="structured details, when there are any")


class ErrorResponse(_Out):
    """The body of every error response."""

    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "an object does not exist"},
    409: {"model": ErrorResponse, "description": "the request conflicts with the current state"},
    422: {
        "model": ErrorResponse,
        "description": "invalid input (rows failing a view's validation rules under the "
        "'reject' policy: type validation_failed, with the counts and sample keys in details)",
    },
}
"""The error responses documented on every route of the resource routers."""

JOB_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {
        "model": ErrorResponse,
        "description": "the job was cancelled because the server is stopping (job_cancelled), "
        "or a backend failed",
    },
}
"""Declared on the job routes (training, batch prediction)."""


# --- probes and status -------------------------------------------------------------------------


class HealthResponse(_Out):
    """The process is up."""

    status: Literal["ok"] = "ok"


class ReadyResponse(_Out):
    """Whether the registry and the online store answer."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="check name -> 'ok' or the error")


class LastMaterialization(_Out):
    """The latest materialization run of one feature view."""

    view: str
    status: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    finished_at: datetime | None = None
    rows: int | None = None


class StatusResponse(_Out):
    """The project, its backends and what the registry holds."""

    project: str
    version: str
    registry_type: str
    online_store_type: str
    offline_engine_type: str
    counts: dict[str, int | None] = Field(
        description="entities, data_sources, feature_views, feature_services, models"
    )
    last_materialization: list[LastMaterialization]


# --- registry objects --------------------------------------------------------------------------


class ValidationRulesSpec(_In):
    """Rules a feature's values must follow (a null passes all but ``not_null``)."""

    min_value: int | float | None = Field(default=None, description="numeric features")
    max_value: int | float | None = Field(default=None, description="numeric features")
    not_null: bool = False
    regex: str | None = Field(
        default=None, description="a full match of string values (RE2 syntax)", max_length=1000
    )


class ViewValidationSpec(_In):
    """A view's row checks and what a failing row does."""

    policy: Literal["reject", "drop", "warn"] = Field(
        default="reject",
        description="reject: the push or run fails, nothing written; drop: left out, counted; "
        "warn: written, counted",
    )
    checks: list[str] = Field(
        default_factory=list,
        description="SQL boolean expressions over the row's features (checked by the sandbox)",
        examples=[["orders <= 10 * tenure_months"]],
    )


class FieldSpec(_In):
    """A named, typed column of a feature view."""

    name: str
    dtype: str = Field(examples=["int64", "float64", "string", "list<int64>"])
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    transformation: str | None = Field(
        default=None,
        description="a SQL expression over the source row's columns (checked by the sandbox)",
        examples=["date_diff('year', date_of_birth, event_timestamp)"],
    )
    validation_rules: ValidationRulesSpec | None = None
    allowed_values: list[str | int | float | bool] | None = Field(
        default=None, description="the only values allowed (a null passes unless not_null)"
    )
    default_value: Any = Field(
        default=None,
        description="served where a value is missing when a request opts into defaults",
    )


class EntitySpec(_In):
    """An entity; ``name`` may be omitted on update (the path gives it)."""

    name: str | None = None
    join_keys: list[str] = Field(default_factory=list)
    value_type: str = "int64"
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    owner: str = ""


class _SourceSpecBase(_In):
    name: str | None = None
    timestamp_field: str = "event_timestamp"
    created_timestamp_field: str | None = None
    field_mapping: dict[str, str] = Field(default_factory=dict)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    owner: str = ""


class FileSourceSpec(_SourceSpecBase):
    """Parquet or CSV files, local (relative to the repo) or ``s3://``."""

    type: Literal["file"] = "file"
    path: str
    format: Literal["parquet", "csv"] | None = None


class IcebergSourceSpec(_SourceSpecBase):
    """A table ``namespace.table`` in an Iceberg catalog of ``quiver.yaml``."""

    type: Literal["iceberg"]
    table: str
    catalog: str = "default"


DataSourceSpec = FileSourceSpec | IcebergSourceSpec


class AggregationSpec(_In):
    """A time-windowed aggregation: a feature of its view (see ``Aggregation``)."""

    column: str | None = Field(
        default=None, description="the source column; none (or '*') to count events"
    )
    function: Literal["count", "sum", "mean", "min", "max", "stddev", "count_distinct", "last"]
    window: str = Field(examples=["7d", "1h", "30m"], description="a number and d, h, m or s")
    name: str = Field(default="", description="default: <column>_<function>_<window>")


class FeatureViewSpec(_In):
    """A feature view; ``source`` is a registered source's name or an inline source. With
    ``aggregations``, ``features`` lists the source columns they read."""

    name: str | None = None
    entities: list[str]
    features: list[FieldSpec]
    source: str | FileSourceSpec | IcebergSourceSpec
    ttl_seconds: float | None = None
    online: bool = True
    aggregations: list[AggregationSpec] = Field(default_factory=list)
    aggregation_interval: str | None = Field(
        default=None, examples=["1h"], description="the tile size; default gcd(windows, 1h)"
    )
    source_query: str | None = Field(
        default=None,
        description="a SELECT over the view's own source (by name), run in the SQL sandbox",
    )
    materialization_schedule: str | None = Field(
        default=None,
        examples=["0 */6 * * *"],
        description="cron (five fields): the scheduler materializes the view at those times",
    )
    schedule_timezone: str = Field(default="UTC", examples=["Europe/Paris"])
    validation: ViewValidationSpec = Field(default_factory=ViewValidationSpec)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    owner: str = ""


class RequestSourceSpec(_In):
    """Fields the caller sends with each entity row."""

    name: str
    fields: list[FieldSpec]


class OnDemandFeatureViewSpec(_In):
    """An on-demand feature view: a Python function (``udf``, its source code, modes
    ``pandas``/``arrow``) or SQL expressions (mode ``sql``, a ``transformation`` per field) over
    its source views' features and request fields."""

    name: str | None = None
    sources: list[str]
    request_sources: list[RequestSourceSpec] = Field(default_factory=list)
    features: list[FieldSpec]
    mode: Literal["pandas", "arrow", "sql"] | None = None
    udf: str = Field(default="", examples=["def f(df):\n    return df[['a']] * 2"])
    udf_name: str = ""
    udf_hash: str = ""
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    owner: str = ""


class FeatureServiceSpec(_In):
    """A feature service: references ``view:feature`` or ``view:*``."""

    name: str | None = None
    features: list[str]
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    owner: str = ""


class ObjectRecordOut(_Out):
    """One registry object: its current spec and metadata."""

    kind: str
    name: str
    version: int
    spec_hash: str
    created_at: datetime
    updated_at: datetime
    updated_by: str | None = None
    spec: dict[str, Any]


class ObjectListOut(_Out):
    """Objects of one kind, by name."""

    items: list[ObjectRecordOut]
    count: int


class FieldChangeOut(_Out):
    """One changed value in a spec."""

    path: str
    old: Any = None
    new: Any = None
    breaking: bool = False
    reason: str = ""


class ChangeOut(_Out):
    """What a write did to one object."""

    kind: str
    name: str
    action: Literal["create", "update", "delete", "unchanged"]
    breaking: bool = False
    changes: list[FieldChangeOut] = Field(default_factory=list)


class WriteResult(_Out):
    """The result of a create, update, delete or restore."""

    action: Literal["create", "update", "delete", "unchanged"]
    object: ObjectRecordOut = Field(description="the object after the write (before, for delete)")
    changes: list[ChangeOut] = Field(
        default_factory=list, description="every object the write changed"
    )


class VersionOut(_Out):
    """One entry of an object's history."""

    kind: str
    name: str
    version: int
    operation: str
    spec_hash: str
    created_at: datetime
    author: str | None = None
    message: str | None = None
    spec: dict[str, Any]


class HistoryOut(_Out):
    """Every version of one object, oldest first."""

    items: list[VersionOut]
    count: int


class RestoreRequest(_In):
    """Which version to make current again."""

    version: int = Field(ge=1, le=MAX_VERSION)


# --- feature discovery -------------------------------------------------------------------------


class Freshness(_Out):
    """How fresh a view's online values are."""

    ttl_seconds: float | None = None
    materialized_until: datetime | None = Field(
        default=None, description="the end of the last successful materialization"
    )
    last_materialized_at: datetime | None = Field(
        default=None, description="when the latest materialization run finished"
    )
    last_run_status: str | None = Field(
        default=None, description="succeeded or failed (running while a run is under way)"
    )
    lag_seconds: float | None = Field(
        default=None, description="seconds between now and materialized_until"
    )


class FeatureInfo(_Out):
    """One feature of one view."""

    name: str
    ref: str = Field(description="the feature reference, view:feature")
    view: str
    dtype: str
    description: str
    tags: dict[str, str]
    owner: str
    entities: list[str]
    join_keys: list[str]
    online: bool
    freshness: Freshness


class FeatureListOut(_Out):
    """Features matching the filters."""

    items: list[FeatureInfo]
    count: int


# --- serving -----------------------------------------------------------------------------------


class OnlineRequest(_In):
    """Online feature values for entity keys (columnar, as in Feast).

    With ``feature_sets`` (the specification's shape): ``features`` are bare names resolved
    within those sets (all their features when omitted), ``entities`` may be keyed by entity
    name, and the answer is :class:`~quiver.server.schemas_spec.SpecOnlineOut`.
    """

    features: list[str] | None = Field(default=None, examples=[["customer_behavior:tenure_months"]])
    feature_service: str | None = None
    entities: dict[str, list[JsonScalar]] = Field(examples=[{"customer_id": [1, 2]}])
    full_feature_names: bool = False
    feature_sets: list[str] | None = Field(
        default=None, max_length=100, description="feature set ids (the specification's shape)"
    )
    use_defaults: bool = Field(
        default=False,
        description="serve each feature's default_value where its value is missing or expired",
    )


class OnlineRow(_Out):
    """The values of one entity key."""

    entity: dict[str, Any]
    values: dict[str, Any]
    statuses: dict[str, Literal["present", "not_found", "expired"]]
    event_timestamps: dict[str, datetime | None]


class OnlineMetadata(_Out):
    """About the lookup."""

    latency_ms: float
    feature_service: str | None = None
    cache_hit: bool = Field(
        default=False, description="whether the values came from the serving cache"
    )


class OnlineResponseOut(_Out):
    """Values per entity key, in request order."""

    feature_names: list[str]
    join_keys: list[str]
    results: list[OnlineRow]
    metadata: OnlineMetadata


class InlineTable(_In):
    """A small table: column names and rows."""

    columns: list[str] = Field(min_length=1)
    data: list[list[JsonScalar]]


class HistoricalRequest(_In):
    """Point-in-time correct features for an entity table.

    Give exactly one of ``entity_rows`` (inline, bounded), ``entity_source`` (a registered data
    source) and ``entity_path`` (a Parquet/CSV file, folder or glob under the server's read
    roots, or an allowed ``s3://`` location; relative to the repository root).
    """

    features: list[str] | None = None
    feature_service: str | None = None
    feature_sets: list[str] | None = Field(
        default=None,
        max_length=100,
        description="feature set ids: the specification's shape (bare feature names resolved "
        "within these sets, the entity table as entity_df, the answer keyed by entity id)",
    )
    entity_rows: InlineTable | None = None
    entity_df: InlineTable | None = Field(
        default=None, description="the specification's name of entity_rows (with feature_sets)"
    )
    entity_source: str | None = None
    entity_path: str | None = None
    timestamp_column: str = "event_timestamp"
    full_feature_names: bool = False
    output: Literal["json", "parquet"] = "json"
    output_path: str | None = Field(
        default=None,
        description="for output=parquet: a file under the server's write root (relative to the "
        "repository root, e.g. outputs/train.parquet) or an allowed s3:// location; default "
        "<write root>/historical-<time>-<id>.parquet",
    )
    overwrite: bool = Field(
        default=False, description="replace output_path if it exists (otherwise a 409)"
    )


class HistoricalResponse(_Out):
    """The training rows inline, or where they were written."""

    columns: list[str]
    data: list[list[Any]] | None = None
    row_count: int
    output_path: str | None = None
    metadata: OnlineMetadata


class MaterializeRequest(_In):
    """A materialization run: a range ``[start, end)``, or incremental up to ``end``."""

    start: IsoDateTime | None = None
    end: IsoDateTime | None = Field(default=None, description="default: now")
    views: list[str] | None = Field(default=None, description="default: every online view")
    incremental: bool = False
    run_async: bool = Field(
        default=False,
        alias="async",
        description="run in the background: answer 202 with the job (poll GET "
        "/api/v1/jobs/{id}); the header 'Prefer: respond-async' does the same",
    )


class ValidationOut(_Out):
    """What a view's validation rules found in the rows of a push or a materialization run."""

    policy: str = Field(description="reject, drop or warn")
    rows_checked: int
    rows_invalid: int = Field(description="rows failing at least one rule")
    rows_dropped: int = Field(description="rows left out (policy drop)")
    failures: dict[str, int] = Field(description="'feature:rule' or 'check:<expr>' -> rows")
    samples: dict[str, list[dict[str, Any]]] = Field(
        description="the same keys -> join keys of up to 5 failing rows"
    )


class RunOut(_Out):
    """One materialization run of one feature view over ``[start, end)``."""

    run_id: str
    view: str
    status: str = Field(description="running, succeeded or failed")
    start: datetime | None = Field(description="null: from the beginning of the data")
    end: datetime
    rows_written: int = Field(description="rows written to the online store")
    duration_seconds: float | None = None
    error: str | None = None
    started_at: datetime
    finished_at: datetime | None = None
    schema_version: str = Field(description="the hash of the view's schema the run wrote")
    job_id: str | None = Field(default=None, description="the background job of the run")
    rows_invalid: int = Field(default=0, description="rows failing the view's validation")
    rows_dropped: int = Field(default=0, description="rows left out by the 'drop' policy")
    validation: ValidationOut | None = Field(
        default=None, description="the validation's counts; null when the view has no rules"
    )


class RunListOut(_Out):
    """Materialization runs, newest first."""

    items: list[RunOut]
    count: int


class PushRequest(_In):
    """Fresh rows of one feature view (join keys, timestamp, features)."""

    view: str
    rows: list[dict[str, PushValue]] = Field(min_length=1)
    to: Literal["online", "offline", "both"] = "online"


class PushResponse(_Out):
    """How many rows were written where."""

    view: str
    rows: int
    to: str
    validation: ValidationOut | None = Field(
        default=None, description="the validation's counts; null when the view has no rules"
    )
