"""Request and response models of the specification's resources: feature sets and features.

A feature set is a feature view (its id is the view's name); a feature is one field of it (its
id is the feature reference ``set:feature``). See :mod:`quiver.server.feature_sets`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quiver.server.schemas import (
    FileSourceSpec,
    IcebergSourceSpec,
    IsoDateTime,
    JsonScalar,
    RunOut,
)

__all__ = [
    "MAX_SET_FEATURES",
    "FeatureIn",
    "FeatureOut",
    "FeatureSetIn",
    "FeatureSetListOut",
    "FeatureSetMaterializeIn",
    "FeatureSetOut",
    "FeatureSetRunsOut",
    "SpecHistoricalOut",
    "SpecOnlineOut",
    "SpecServingMetadata",
    "ValidationRulesIn",
]

MAX_SET_FEATURES = 1000
"""The most features one feature set (one view) may hold, and one request may name."""

Text = Annotated[str, StringConstraints(max_length=4096)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
Ident = Annotated[str, StringConstraints(min_length=1, max_length=63)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Out(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FeatureSetIn(_In):
    """``POST /api/v1/feature-sets``: the specification's body, plus the source it reads.

    ``source`` is a registered data source's name or an inline file/Iceberg source; without it,
    a registered data source named like the set is used.
    """

    name: Ident
    description: Text = ""
    owner: ShortText = ""
    entities: list[Ident] = Field(min_length=1, max_length=16, examples=[["customer"]])
    source_type: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = Field(
        default="batch", description="batch, stream, ... (stored with the set)"
    )
    offline_enabled: bool = True
    online_enabled: bool = True
    materialization_schedule: ShortText | None = Field(
        default=None, examples=["0 */6 * * *"], description="a cron expression"
    )
    schedule_timezone: ShortText | None = Field(
        default=None, examples=["UTC"], description="an IANA time zone; default UTC"
    )
    source: Ident | FileSourceSpec | IcebergSourceSpec | None = None
    ttl_seconds: float | None = Field(default=None, ge=0)
    tags: dict[ShortText, ShortText] = Field(default_factory=dict, max_length=64)


class FeatureOut(_Out):
    """One feature of a feature set."""

    id: str = Field(description="the feature reference, set:feature")
    name: str
    feature_set_id: str
    description: str = ""
    data_type: str
    transformation: str | None = None
    window_size: str | None = None
    aggregation: str | None = Field(default=None, description="the windowed function, if any")
    source_features: list[str] | None = None
    feature_set_version: int | None = Field(
        default=None, description="the set's view version after the write"
    )


class FeatureSetOut(_Out):
    """A feature set: a feature view seen through the specification's fields."""

    id: str = Field(description="the set's stable id: the feature view's name")
    name: str
    description: str
    owner: str
    entities: list[str]
    source: str = Field(description="the data source it reads")
    source_type: str
    offline_enabled: bool
    online_enabled: bool
    materialization_schedule: str | None = Field(
        default=None, description="the view's cron schedule, run by the scheduler"
    )
    schedule_timezone: str = "UTC"
    ttl_seconds: float | None = None
    tags: dict[str, str]
    features: list[FeatureOut]
    version: int = Field(description="the feature view's version in the registry history")
    created_at: datetime
    updated_at: datetime


class FeatureSetListOut(_Out):
    """Every feature set the caller may see."""

    items: list[FeatureSetOut]
    count: int


class ValidationRulesIn(_In):
    """The specification's ``validation_rules``."""

    min_value: float | int | None = None
    max_value: float | int | None = None


class FeatureIn(_In):
    """``POST /api/v1/features``: a feature added to a feature set (a new version of its view).

    ``transformation`` alone: a SQL transformation over the source row's columns;
    with ``window_size``: a windowed aggregation, ``transformation`` being ``SUM(amount)``,
    ``COUNT(*)``, ``AVG(x)``, ...; with ``source_features``: a composite feature, a SQL
    expression over other features of the same set.
    """

    name: Ident
    feature_set_id: Ident
    description: Text = ""
    data_type: ShortText = Field(examples=["int", "float", "string", "bool", "int64"])
    transformation: Text | None = None
    validation_rules: ValidationRulesIn | None = None
    default_value: JsonScalar = None
    allowed_values: list[JsonScalar] | None = Field(default=None, max_length=10_000)
    window_size: ShortText | None = Field(default=None, examples=["7d", "1h"])
    source_features: list[Ident] | None = Field(default=None, max_length=MAX_SET_FEATURES)
    tags: dict[ShortText, ShortText] = Field(default_factory=dict, max_length=64)


class FeatureSetMaterializeIn(_In):
    """``POST /api/v1/feature-sets/{id}/materialize``: the range ``[start_date, end_date)``."""

    start_date: IsoDateTime
    end_date: IsoDateTime | None = Field(default=None, description="default: now")


class FeatureSetRunsOut(_Out):
    """The materialization run of the set."""

    feature_set_id: str
    items: list[RunOut]
    count: int


class SpecServingMetadata(_Out):
    """About a lookup in the specification's shape."""

    latency_ms: float
    cache_hit: bool = Field(description="whether the serving cache answered")
    feature_sets: list[str]


class SpecOnlineOut(_Out):
    """The specification's online answer: feature values keyed by entity id.

    The id is the entity's key value as text (several entity columns: their values joined with
    ``:``, in request order); a value not found or expired is ``null``.
    """

    features: dict[str, dict[str, Any]]
    metadata: SpecServingMetadata


class SpecHistoricalOut(_Out):
    """The specification's historical answer: per entity id, its rows in request order, each
    with the entity table's other columns (its timestamp, labels) and the features as of then."""

    features: dict[str, list[dict[str, Any]]]
    row_count: int
    metadata: SpecServingMetadata
