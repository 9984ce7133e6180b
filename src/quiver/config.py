"""Typed settings: ``quiver.yaml`` plus ``QUIVER_*`` environment variables.

Environment variables override the file; nested keys use ``__``
(``QUIVER_ONLINE_STORE__TYPE=redis``, ``QUIVER_REGISTRY__URL=postgresql+psycopg://...``).
Every model forbids unknown keys, so a typo is an error that names the key.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from quiver._paths import user_path
from quiver.definitions import did_you_mean
from quiver.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "AuthConfig",
    "DynamoDBOnlineStoreConfig",
    "FeastCompatConfig",
    "IcebergCatalogConfig",
    "JobsConfig",
    "MonitoringConfig",
    "OfflineEngineConfig",
    "RedisOnlineStoreConfig",
    "RegistryConfig",
    "RepoConfig",
    "S3Config",
    "SchedulerConfig",
    "ServerConfig",
    "ServingCacheConfig",
    "SparkOfflineEngineConfig",
    "SqliteOnlineStoreConfig",
    "find_repo",
    "load_config",
]

CONFIG_FILE = "quiver.yaml"
FEAST_CONFIG_FILE = "feature_store.yaml"  # a Feast repo's settings (quiver.compat.feast_config)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegistryConfig(_Strict):
    """Where the registry lives: a SQLAlchemy URL (SQLite file by default, or PostgreSQL)."""

    url: str = "sqlite:///data/registry.db"


class OfflineEngineConfig(_Strict):
    """The embedded offline engine, DuckDB in process (the default)."""

    type: Literal["duckdb"] = "duckdb"
    threads: int | None = None
    memory_limit: str | None = Field(default=None, description="e.g. '4GB'")


class SparkOfflineEngineConfig(_Strict):
    """Apache Spark as the offline engine (extra ``spark``): a cluster, a local master, or a
    Spark Connect server.

    The sources are read by Spark itself (``s3://`` paths as ``s3a://``: the cluster needs the
    ``hadoop-aws`` connector jars; ``s3:`` settings are passed on as ``spark.hadoop.fs.s3a.*``).
    Results reach Python through Parquet files that Spark writes under ``staging_dir``: a local
    temp directory by default (a local master, or Spark Connect on this machine), else a
    directory the cluster and the driver share (required then).
    """

    type: Literal["spark"] = "spark"
    master: str = Field(default="local[*]", description="e.g. spark://host:7077, yarn, local[2]")
    remote: str | None = Field(
        default=None,
        pattern=r"^sc://",
        description="a Spark Connect server, sc://host:port (instead of master)",
    )
    app_name: str = "quiver"
    conf: dict[str, str] = Field(
        default_factory=dict, description="Spark settings, e.g. spark.executor.memory: 4g"
    )
    staging_dir: str | None = Field(
        default=None,
        description=(
            "where Spark writes results for the driver to stream (default: a temp dir); "
            "required unless Spark runs on this machine"
        ),
    )

    # DuckDB still runs the small local steps with Spark (source probes, the SQL sandbox), with
    # its defaults: these read as unset.
    @property
    def threads(self) -> int | None:
        """DuckDB's thread count for local steps: its default."""
        return None

    @property
    def memory_limit(self) -> str | None:
        """DuckDB's memory budget for local steps: its default."""
        return None


OfflineEngineSettings = Annotated[
    OfflineEngineConfig | SparkOfflineEngineConfig, Field(discriminator="type")
]


class SqliteOnlineStoreConfig(_Strict):
    """The embedded online store: one SQLite file, WAL mode."""

    type: Literal["sqlite"] = "sqlite"
    path: str = "data/online.db"


class RedisOnlineStoreConfig(_Strict):
    """Redis as the online store."""

    type: Literal["redis"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "quiver"
    expire_with_ttl: bool = Field(
        default=True, description="set a key expiry derived from the view's TTL"
    )


class DynamoDBOnlineStoreConfig(_Strict):
    """Amazon DynamoDB as the online store: one table per feature view.

    Unset values fall back to the usual AWS settings: the region to ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``, the endpoint to ``AWS_ENDPOINT_URL_DYNAMODB`` / ``AWS_ENDPOINT_URL``,
    and the credentials to boto3's chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` /
    ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, an instance or task role).
    """

    type: Literal["dynamodb"] = "dynamodb"
    region: str | None = None
    table_prefix: str = Field(
        default="quiver.",
        pattern=r"^[A-Za-z0-9_.-]{0,100}$",
        description="the start of every table name: <table_prefix><project>.<view>",
    )
    endpoint_url: str | None = Field(
        default=None, description="e.g. http://localhost:8000 for DynamoDB Local"
    )
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    expire_with_ttl: bool = Field(
        default=True,
        description="give rows of views with a TTL an expiry (DynamoDB's TimeToLive reclaims them)",
    )
    max_workers: int = Field(
        default=8, ge=1, le=64, description="requests in flight at once for large reads and writes"
    )


OnlineStoreConfig = Annotated[
    SqliteOnlineStoreConfig | RedisOnlineStoreConfig | DynamoDBOnlineStoreConfig,
    Field(discriminator="type"),
]


class IcebergCatalogConfig(_Strict):
    """One Iceberg catalog, as pyiceberg's ``load_catalog`` takes it."""

    type: Literal["sql", "rest"] = "sql"
    uri: str = "sqlite:///data/iceberg_catalog.db"
    warehouse: str = "data/warehouse"
    properties: dict[str, str] = Field(default_factory=dict)


class IcebergConfig(_Strict):
    """Iceberg catalogs by name; ``default`` is used when a source names none."""

    catalogs: dict[str, IcebergCatalogConfig] = Field(
        default_factory=lambda: {"default": IcebergCatalogConfig()}
    )


class FeastCompatConfig(_Strict):
    """Settings of the Feast-compatible routes, and Feast's behaviour where Quiver's
    deliberately differs (see ``docs/feast-migration.md``).

    Attributes:
        default_catalog: The catalog a ``/feast`` table name means when it names none. A name
            that is not in ``iceberg.catalogs`` stands for the ``default`` catalog (the platform
            calls its Iceberg catalog ``iceberg``).
        default_schema: The schema (Iceberg namespace) a ``/feast`` table name means when it
            names none, and where batch predictions go without ``output_schema``.
        serve_stale: On the Feast routes (``/get-online-features``, what Feast's client calls),
            serve a value past its view's TTL as ``PRESENT`` with its value, as Feast does,
            instead of Quiver's ``OUTSIDE_MAX_AGE`` with no value. The native ``/api/v1``
            routes, the SDK and the CLI keep Quiver's answer.
    """

    default_catalog: str = "iceberg"
    default_schema: str = "gold"
    serve_stale: bool = Field(
        default=False,
        description="Feast routes: an expired value is PRESENT with its value, as in Feast",
    )

    @field_validator("default_catalog", "default_schema")
    @classmethod
    def _identifier(cls, value: str) -> str:
        from quiver.definitions import NAME_RE

        if not NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a plain identifier of at most 63 characters")
        return value


class S3Config(_Strict):
    """S3 access; unset values fall back to the usual ``AWS_*`` environment variables."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


class ServerConfig(_Strict):
    """Settings of ``quiver serve``: its address, the files a REST caller may touch, and the
    bounds of the work one request may ask for (see ``docs/architecture.md``, REST API)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_inline_rows: int = Field(default=10_000, ge=1)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    read_roots: list[str] | None = Field(
        default=None,
        description="folders a REST caller may read files from (entity tables, prediction "
        "inputs, data sources it registers); default: the data directory. The write root is "
        "readable too",
    )
    write_root: str = Field(
        default="outputs", description="the one folder a REST caller may write files to"
    )
    s3_buckets: list[str] = Field(
        default_factory=list,
        description="S3 buckets ('bucket' or 'bucket/prefix') a REST caller may read and write; "
        "default: none",
    )
    max_entity_rows: int = Field(
        default=10_000_000,
        ge=1,
        description="the largest entity table of a historical request written to a file",
    )
    max_estimators: int = Field(default=5_000, ge=1, description="trees / boosting rounds")
    max_depth: int = Field(default=32, ge=1, description="the deepest tree a REST caller trains")
    max_leaves: int = Field(default=4_096, ge=2, description="the most leaves per tree")
    job_timeout_seconds: float = Field(
        default=600.0, gt=0, description="the time limit of a training or batch prediction job"
    )


class JobsConfig(_Strict):
    """Background jobs (``"async": true`` REST requests, scheduled materializations)."""

    workers: int = Field(default=2, ge=1, le=64, description="jobs run at once per process")
    max_queued: int = Field(default=100, ge=1, description="jobs waiting per process")
    grace_seconds: float = Field(
        default=30.0, ge=0, description="on SIGTERM, how long running jobs may take to finish"
    )
    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="how often a process marks its running jobs alive"
    )


class SchedulerConfig(_Strict):
    """The scheduler of views' ``materialization_schedule`` (``quiver scheduler``)."""

    poll_seconds: float = Field(default=15.0, gt=0, description="how often schedules are checked")
    lease_seconds: float = Field(
        default=120.0, gt=0, description="how long a schedule's lease outlives its holder"
    )


class AuthConfig(_Strict):
    """Who may call the REST API.

    ``none``: every caller is an anonymous admin (the local experience; ``quiver serve`` then
    refuses a non-loopback address unless ``--insecure``). ``api_key``: every route but
    ``/health``, ``/ready`` and the docs needs a key from ``quiver keys create``, sent as
    ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; roles and permissions apply.
    """

    mode: Literal["none", "api_key"] = "none"


class ServingCacheConfig(_Strict):
    """The serving cache of online reads (see ``docs/architecture.md``, Monitoring).

    ``memory``: a cache per process, invalidated across the processes of one machine (every
    ``quiver serve`` worker, ``quiver materialize``, pushes) through a small shared file of
    version counters in the data directory. ``redis``: entries and version counters in Redis,
    shared by every replica that names the same Redis.
    """

    enabled: bool = False
    ttl_seconds: float = Field(default=300.0, gt=0, description="how long an entry is served")
    max_entries: int = Field(default=100_000, ge=1, description="entries kept per process")
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = Field(
        default=None,
        description="the Redis of the redis backend (default: the online store's, if Redis)",
    )
    key_prefix: str = "quiver-cache"


class MonitoringConfig(_Strict):
    """Feature statistics, freshness, drift, Prometheus metrics and usage counts
    (:mod:`quiver.monitoring`).

    Attributes:
        statistics: Compute per-feature statistics on each materialization (over the rows it
            pulled; the source is not read again).
        statistics_max_rows: The most rows of one run kept for the quantiles, distinct count,
            top values and drift sample; beyond it a systematic sample of the rows is kept
            (count, null rate, min, max, mean and stddev stay exact).
        sample_size: Values kept per feature for drift tests.
        drift_psi_threshold: A feature drifts when its population stability index exceeds it.
        drift_p_value: The two-sample test's p-value below it is reported as significant.
        metrics_enabled: ``quiver serve`` answers ``/metrics`` and observes its requests.
        usage_enabled: ``quiver serve`` counts reads per feature, view, service and model.
        usage_flush_seconds: How often a server adds its counts to the registry.
        metric_prefix: ``feast``: the metrics also carry the ``feast_`` names.
    """

    statistics: bool = True
    statistics_max_rows: int = Field(default=250_000, ge=1_000)
    sample_size: int = Field(default=1_000, ge=10, le=100_000)
    drift_psi_threshold: float = Field(default=0.2, gt=0)
    drift_p_value: float = Field(default=0.01, gt=0, lt=1)
    metrics_enabled: bool = Field(default=True, description="serve /metrics")
    usage_enabled: bool = Field(default=True, description="count reads per feature, view...")
    usage_flush_seconds: float = Field(
        default=10.0, gt=0, description="how often a server adds its counts to the registry"
    )
    metric_prefix: Literal["quiver", "feast"] = Field(
        default="quiver",
        description="'feast': the metrics also carry the feast_ names Feast's dashboards query",
    )


class RepoConfig(BaseSettings):
    """The settings of one feature repository.

    Attributes:
        project: The project name; every registry object belongs to one project.
        repo_path: The repository root; relative paths in the config are relative to it.
        definitions: Files or directories holding the repo's definitions (``.py``, ``.yaml``,
            ``.json``), used by ``quiver plan`` / ``apply`` when no path is given.
    """

    model_config = SettingsConfigDict(
        env_prefix="QUIVER_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    project: str = "default"
    repo_path: Path = Field(default=Path("."), exclude=True)
    definitions: list[str] = Field(default_factory=lambda: ["."])
    data_dir: str = "data"
    model_dir: str = "models"
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    offline_engine: OfflineEngineSettings = Field(default_factory=OfflineEngineConfig)
    online_store: OnlineStoreConfig = Field(default_factory=SqliteOnlineStoreConfig)
    iceberg: IcebergConfig = Field(default_factory=IcebergConfig)
    feast_compat: FeastCompatConfig = Field(default_factory=FeastCompatConfig)
    s3: S3Config = Field(default_factory=S3Config)
    server: ServerConfig = Field(default_factory=ServerConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    serving_cache: ServingCacheConfig = Field(default_factory=ServingCacheConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        from quiver.definitions import NAME_RE

        if not NAME_RE.match(value):
            raise ValueError(
                f"project name {value!r} is not a plain identifier (letters, digits, _)"
            )
        return value

    @field_validator("registry", mode="before")
    @classmethod
    def _registry_shorthand(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("offline_engine", mode="before")
    @classmethod
    def _offline_engine_default_type(cls, value: Any) -> Any:
        # A section without `type` is the embedded default, DuckDB.
        if isinstance(value, dict) and "type" not in value:
            return {"type": "duckdb", **value}
        return value

    @field_validator("online_store", mode="before")
    @classmethod
    def _online_store_default_type(cls, value: Any) -> Any:
        # A section without `type` is the embedded default, SQLite (so a typo of `type` is
        # reported as an unknown key, not as a missing union tag).
        if isinstance(value, dict) and "type" not in value:
            return {"type": "sqlite", **value}
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables win over quiver.yaml, which arrives as init kwargs.
        return (env_settings, init_settings)

    def resolve(self, path: str | Path) -> Path:
        """A path from the config, made absolute against the repo root.

        Raises:
            ConfigError: path text no file system accepts (NUL, too long, ``~nouser``).
        """
        p = user_path(path, "path", ConfigError)
        return p if p.is_absolute() else (self.repo_path / p).resolve()

    @property
    def data_path(self) -> Path:
        """The absolute data directory."""
        return self.resolve(self.data_dir)

    @property
    def model_path(self) -> Path:
        """The absolute model directory."""
        return self.resolve(self.model_dir)

    @property
    def registry_url(self) -> str:
        """The registry URL with a relative SQLite path made absolute against the repo."""
        url = self.registry.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str(self.resolve(url[len(prefix) :]))
        return url


def find_repo(start: str | Path = ".") -> Path | None:
    """The nearest directory at or above ``start`` that holds ``quiver.yaml``.

    Args:
        start: Where to start looking (default: the current directory).

    Returns:
        The repository root, or None when neither ``start`` nor any parent holds the file
        (or Feast's ``feature_store.yaml``, read as settings when there is no ``quiver.yaml``).
    """
    here = Path(start).resolve()
    for directory in (here, *here.parents):
        if (directory / CONFIG_FILE).is_file() or (directory / FEAST_CONFIG_FILE).is_file():
            return directory
    return None


def load_config(repo_path: str | Path = ".", **overrides: Any) -> RepoConfig:
    """Read ``quiver.yaml`` in ``repo_path`` (if present), apply ``QUIVER_*`` overrides.

    Args:
        repo_path: The repository root.
        **overrides: Values that win over the file (e.g. ``project="x"``).

    Raises:
        ConfigError: malformed YAML, an unknown key or an invalid value; the message names it.
    """
    root = user_path(repo_path, "repository path", ConfigError).resolve()
    if not root.is_dir():
        raise ConfigError(
            f"repository '{root}' does not exist or is not a directory; "
            f"create one with: quiver init {root}"
        )
    file = root / CONFIG_FILE
    data: dict[str, Any] = {}
    if file.exists():
        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file}: malformed YAML: {_yaml_problem(exc)}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file}: expected a mapping of settings at the top level")
        data = loaded
    elif (root / FEAST_CONFIG_FILE).is_file():  # a Feast repo, unchanged
        from quiver.compat.feast_config import settings_from_feast

        file = root / FEAST_CONFIG_FILE
        data = settings_from_feast(file)
    data.update(overrides)
    data["repo_path"] = root
    return build_config(data, source=str(file) if file.exists() else "settings")


def build_config(data: dict[str, Any], source: str = "settings") -> RepoConfig:
    """Validate a settings mapping (plus ``QUIVER_*`` variables) into a :class:`RepoConfig`."""
    if "repo_path" not in data:
        data = {**data, "repo_path": Path.cwd()}
    data = _drop_replaced_online_store(data)
    try:
        return RepoConfig(**data)
    except SettingsError as exc:
        field = re.search(r'field "(\w+)"', str(exc))
        var = f"QUIVER_{field.group(1).upper()}" if field else "a QUIVER_* variable"
        raise ConfigError(
            f"{var} cannot be read: it must be JSON for a list or a mapping "
            "(QUIVER_DEFINITIONS='[\"features.py\"]'); set one nested key with '__' "
            "(QUIVER_REGISTRY__URL=...)"
        ) from None
    except ValidationError as exc:
        problems = [_problem(err) for err in exc.errors()]
        env = sorted(k for k in os.environ if k.startswith("QUIVER_"))
        hint = f" (QUIVER_* variables set: {', '.join(env)})" if env else ""
        raise ConfigError(f"{source}: " + "; ".join(problems) + hint) from None


_UNION_TAGS = ("sqlite", "redis", "dynamodb", "duckdb", "spark")


def _problem(err: Mapping[str, Any]) -> str:
    """One validation error as the user's key path and what is wrong with it."""
    loc = ".".join(str(p) for p in err["loc"] if p not in _UNION_TAGS)
    if err["type"] != "extra_forbidden":
        return f"{loc}: {err['msg']}"
    *section, key = err["loc"]
    return f"unknown key '{loc}'" + did_you_mean(str(key), _keys_at(section))


def _keys_at(loc: list[int | str]) -> list[str]:
    """The keys the config section at ``loc`` (a pydantic error location) accepts."""
    node: Any = RepoConfig
    for part in loc:
        node = _subsection(node, part)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [name for name, field in node.model_fields.items() if not field.exclude]
    return []


def _subsection(node: Any, part: int | str) -> Any:
    """The type of the part ``part`` of a config section's type ``node`` (None if unknown)."""
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        return None if field is None else field.annotation
    if get_origin(node) is dict:
        return get_args(node)[1]
    for branch in get_args(node):  # a union tagged by `type`: `part` is the tag
        fields = getattr(branch, "model_fields", {})
        if "type" in fields and fields["type"].default == part:
            return branch
    return None


def _drop_replaced_online_store(data: dict[str, Any]) -> dict[str, Any]:
    """Drop the file's ``online_store`` (or ``offline_engine``) section when QUIVER_* variables
    switch its ``type``.

    Settings are merged key by key, so ``QUIVER_ONLINE_STORE__TYPE=redis`` over a file with
    ``online_store: {type: sqlite, path: ...}`` would otherwise leave ``path`` on a Redis store.
    """
    env = {k.upper(): v for k, v in os.environ.items()}
    for name, default in (("online_store", "sqlite"), ("offline_engine", "duckdb")):
        section = data.get(name)
        if not isinstance(section, dict):
            continue
        var = f"QUIVER_{name.upper()}"
        env_type = env.get(f"{var}__TYPE")
        if env_type is None and var in env:
            try:
                whole = json.loads(env[var])
            except ValueError:
                whole = None
            env_type = whole.get("type") if isinstance(whole, dict) else None
        if env_type is None or env_type == section.get("type", default):
            continue
        data = {k: v for k, v in data.items() if k != name}
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)
