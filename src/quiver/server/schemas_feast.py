"""Request and response models of the Feast-compatible routes: Feast's feature server
(``/get-online-features``, ``/push``, ...; :mod:`quiver.server.compat.feast`) and the ``/feast``
platform routes (:mod:`quiver.server.compat.platform`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

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


class PlatformFeature(BaseModel):
    """A feature of the platform API."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    dtype: str
    description: str = ""


class PlatformSource(BaseModel):
    """Where the rows live: an Iceberg table, or Parquet under ``<data_dir>/<schema>/<table>``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    table_name: str
    timestamp_field: str = "event_timestamp"
    catalog: str | None = None
    schema_: str | None = Field(default=None, alias="schema")
    created_timestamp_field: str | None = None


class PlatformFeatureViewIn(BaseModel):
    """``POST /feast/features``: a feature view; ``entities`` are join key names."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    entities: list[str] = Field(min_length=1)
    features: list[PlatformFeature] = Field(min_length=1)
    source: PlatformSource
    ttl_seconds: int | None = Field(default=None, ge=0)
    online: bool = True
    description: str = ""


class PlatformFeatureViewCreated(_Out):
    """The registered feature view."""

    name: str
    entities: list[str]
    features: list[PlatformFeature]
    status: Literal["registered"] = "registered"
    created_at: datetime


class PlatformFeatureViewOut(_Out):
    """A feature view as the platform lists it."""

    name: str
    entities: list[str]
    features: list[PlatformFeature]
    online: bool
    ttl_seconds: int | None
    created_at: datetime
    description: str = ""


class PlatformFeatureViewList(_Out):
    """Every feature view."""

    feature_views: list[PlatformFeatureViewOut]
    count: int


class PlatformServiceIn(BaseModel):
    """``POST /feast/features/service``: a feature service over whole views."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    feature_views: list[str] = Field(min_length=1)
    description: str = ""


class PlatformServiceCreated(_Out):
    """The created feature service."""

    name: str
    feature_views: list[str]
    status: Literal["created"] = "created"


class PlatformStatus(_Out):
    """The platform's status."""

    status: Literal["healthy", "degraded"]
    project: str
    registry: str
    online_store: str
    offline_store: str
    feature_views: int
    entities: int
    feature_services: int
    version: str
