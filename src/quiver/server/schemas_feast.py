"""Request and response models of the Feast-compatible routes: Feast's feature server
(``/get-online-features``, ``/push``, ...; :mod:`quiver.server.compat.feast`) and the ``/feast``
platform routes (:mod:`quiver.server.compat.platform`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, RootModel, StringConstraints

from quiver.server.schemas import JsonScalar, PushValue, _Out

# --- Feast feature server ----------------------------------------------------------------------


class FeastOnlineRequest(BaseModel):
    """Feast's ``/get-online-features`` request."""

    model_config = ConfigDict(extra="ignore", strict=True)

    entities: dict[str, list[JsonScalar]]
    feature_service: str | None = None
    features: list[str] | None = None
    full_feature_names: bool = False
    include_feature_view_version_metadata: bool = False


class FeastViewVersion(_Out):
    """A feature view the lookup read, and its registry version."""

    name: str
    version: int


class FeastMetadata(_Out):
    """Feast's response metadata (``feature_view_metadata`` only when asked for)."""

    feature_names: list[str]
    feature_view_metadata: list[FeastViewVersion] | None = None


class FeastFeatureVector(_Out):
    """One output column (entity key or feature) over every requested entity."""

    values: list[Any]
    statuses: list[Literal["PRESENT", "NOT_FOUND", "OUTSIDE_MAX_AGE", "NULL_VALUE"]]
    event_timestamps: list[str]


class FeastOnlineResponse(_Out):
    """Feast's ``/get-online-features`` response: entity key columns first."""

    metadata: FeastMetadata
    results: list[FeastFeatureVector]


class FeastPushRequest(BaseModel):
    """Feast's ``/push`` request: ``push_source_name`` is a feature view or a data source."""

    model_config = ConfigDict(extra="ignore", strict=True)

    push_source_name: str
    df: dict[str, list[PushValue]]
    to: Literal["online", "offline", "online_and_offline", "both"] = "online"
    allow_registry_cache: bool = True
    transform_on_write: bool = True


class FeastWriteRequest(BaseModel):
    """Feast's ``/write-to-online-store`` request."""

    model_config = ConfigDict(extra="ignore", strict=True)

    feature_view_name: str
    df: dict[str, list[PushValue]]
    allow_registry_cache: bool = True
    transform_on_write: bool = True


class FeastMaterializeRequest(BaseModel):
    """Feast's ``/materialize`` request."""

    model_config = ConfigDict(extra="ignore", strict=True)

    start_ts: str
    end_ts: str
    feature_views: list[str] | None = None


class FeastMaterializeIncrementalRequest(BaseModel):
    """Feast's ``/materialize-incremental`` request."""

    model_config = ConfigDict(extra="ignore", strict=True)

    end_ts: str
    feature_views: list[str] | None = None


class FeastNull(RootModel[None]):
    """Feast's feature server answers these routes with an empty (``null``) body."""

    root: None = None


# --- /feast platform routes --------------------------------------------------------------------
# Field names, shapes and types as the platform documents them (tests/fixtures/feast_platform).

_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,62}$"
Tags = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=256)],
        Annotated[str, StringConstraints(max_length=1024)],
    ],
    Field(max_length=64, description="accepted for compatibility; kept as the object's tags"),
]


class PlatformFeature(BaseModel):
    """A feature of the platform API."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(max_length=63)
    dtype: str = Field(
        max_length=64,
        description="int32, int64, float32, float64, string, bool, unix_timestamp, "
        "array_<type> (any case), or a Quiver dtype",
    )
    description: str | None = Field(default=None, max_length=4096)
    tags: Tags = Field(default_factory=dict)


class PlatformFeatureOut(_Out):
    """A feature as the platform lists it (``description`` only when it has one)."""

    name: str
    dtype: str
    description: str | None = None


class PlatformSource(BaseModel):
    """The table holding the rows: ``catalog.schema.table_name`` (defaults: ``feast_compat``)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    table_name: str = Field(max_length=200)
    timestamp_field: str = Field(default="event_timestamp", max_length=63)
    catalog: str | None = Field(default=None, max_length=63)
    schema_: str | None = Field(default=None, alias="schema", max_length=63)
    created_timestamp_column: str | None = Field(
        default=None,
        max_length=63,
        validation_alias=AliasChoices("created_timestamp_column", "created_timestamp_field"),
    )


class PlatformFeatureViewIn(BaseModel):
    """``POST /feast/features``: a feature view; ``entities`` are join key names."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(max_length=63)
    entities: list[Annotated[str, StringConstraints(max_length=63)]] = Field(
        min_length=1, max_length=16
    )
    features: list[PlatformFeature] = Field(min_length=1, max_length=1000)
    source: PlatformSource
    ttl_seconds: int | None = Field(
        default=86400, gt=0, description="seconds; null: values never expire"
    )
    online: bool = False
    description: str | None = Field(default=None, max_length=4096)
    tags: Tags = Field(default_factory=dict)


class PlatformFeatureViewCreated(_Out):
    """The registered feature view."""

    name: str
    entities: list[str]
    features: list[str]
    source_table: str = Field(description="catalog.schema.table, or the Parquet path")
    online_enabled: bool
    created_at: datetime
    status: Literal["registered"] = "registered"
    message: str


class PlatformFeatureViewOut(_Out):
    """A feature view as the platform lists it."""

    name: str
    entities: list[str]
    features: list[PlatformFeatureOut]
    online_enabled: bool
    ttl_seconds: int = Field(description="0: values never expire")
    created_at: datetime


class PlatformFeatureViewList(RootModel[list[PlatformFeatureViewOut]]):
    """Every feature view (a bare array)."""


class PlatformServiceIn(BaseModel):
    """``POST /feast/features/service``: a feature service over whole views."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(max_length=63)
    feature_views: list[Annotated[str, StringConstraints(max_length=63)]] = Field(
        min_length=1, max_length=200
    )
    description: str | None = Field(default=None, max_length=4096)
    tags: Tags = Field(default_factory=dict)


class PlatformServiceCreated(_Out):
    """The created feature service."""

    name: str
    feature_views: list[str]
    status: Literal["created"] = "created"


class PlatformStatus(_Out):
    """The platform's status."""

    status: Literal["healthy", "degraded"]
    registry_type: str = Field(description="sqlite or postgresql")
    online_store_type: str = Field(description="sqlite, redis or dynamodb")
    offline_store_type: str = Field(description="the offline engine: duckdb")
    num_feature_views: int
    num_entities: int
    num_feature_services: int
    feature_views: list[str]
    entities: list[str]
