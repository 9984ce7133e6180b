"""The training spec: what to train, on which data, with which settings.

A :class:`TrainingSpec` is a pydantic model with ``extra="forbid"``, so a typo is an error that
names the key. It can be built from Python, a dict (the REST body), or a YAML/JSON file::

    name: churn_model
    framework: lightgbm            # sklearn, xgboost or lightgbm
    model_type: classification     # or regression
    training_data:
      entity_df_source: churn_labels
      label_column: churned
      event_timestamp_column: event_timestamp
      start_date: 2025-01-01
      end_date: 2026-01-01
    features: churn_prediction_v1  # a feature service, or a list of 'view:feature' references
    hyperparameters:
      params: {n_estimators: 200, learning_rate: 0.05}
    test_size: 0.2
    split: time                    # or random
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from quiver.definitions import NAME_RE, invalid_from_pydantic, parse_feature_ref
from quiver.errors import InvalidError, NotFoundError

__all__ = [
    "ALGORITHMS",
    "FRAMEWORKS",
    "Hyperparameters",
    "TrainingData",
    "TrainingSpec",
    "load_spec",
]

FRAMEWORKS: tuple[str, ...] = ("sklearn", "xgboost", "lightgbm")
ALGORITHMS: tuple[str, ...] = (
    "random_forest",
    "gradient_boosting",
    "logistic_regression",
    "linear_regression",
)
"""The scikit-learn algorithms (``algorithm`` is only meaningful with ``framework: sklearn``)."""

_ALGORITHM_ALIASES = {
    "rf": "random_forest",
    "randomforest": "random_forest",
    "gbm": "gradient_boosting",
    "gb": "gradient_boosting",
    "gradientboosting": "gradient_boosting",
    "logistic": "logistic_regression",
    "logreg": "logistic_regression",
    "logisticregression": "logistic_regression",
    "linear": "linear_regression",
    "linearregression": "linear_regression",
}


def _utc(value: Any) -> Any:
    if isinstance(value, datetime):
        try:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00: before year 1 in UTC
            raise ValueError(f"{value.isoformat()} is out of range in UTC") from None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str) and value.strip():
        text = value.strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO date or date-time") from None
        return _utc(parsed)
    if isinstance(value, int | float):  # pydantic would read a number as a unix time
        raise ValueError(f"{value!r} is not an ISO date or date-time (a string)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TrainingData(_Strict):
    """Where the labelled entity rows come from.

    Attributes:
        entity_df_source: A registered data source, a Parquet/CSV path, or an Iceberg table
            (``iceberg:namespace.table`` or ``iceberg:catalog/namespace.table``), holding the
            join keys, a timestamp and the label.
        label_column: The column to predict.
        event_timestamp_column: The timestamp used for the point-in-time join and the time split.
        start_date: Keep rows at or after this time (UTC; naive is UTC).
        end_date: Keep rows strictly before this time.
    """

    entity_df_source: str
    label_column: str
    event_timestamp_column: str = "event_timestamp"
    start_date: datetime | None = None
    end_date: datetime | None = None

    @field_validator("entity_df_source")
    @classmethod
    def _source(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("entity_df_source must not be empty")
        return value.strip()

    @field_validator("label_column", "event_timestamp_column")
    @classmethod
    def _column(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("start_date", "end_date", mode="before")
    @classmethod
    def _dates(cls, value: Any) -> Any:
        return None if value in (None, "") else _utc(value)

    @model_validator(mode="after")
    def _range(self) -> Self:
        if self.start_date and self.end_date and self.start_date >= self.end_date:
            raise ValueError(
                f"start_date {self.start_date.isoformat()} must be before "
                f"end_date {self.end_date.isoformat()}"
            )
        return self


class Hyperparameters(_Strict):
    """Parameters passed to the estimator; unknown names are refused at training time."""

    params: dict[str, Any] = Field(default_factory=dict)


class TrainingSpec(_Strict):
    """A training run: model name, framework, task, data, features and settings.

    Attributes:
        name: The model's name (a plain identifier); each run adds a version.
        framework: ``sklearn``, ``xgboost`` or ``lightgbm``.
        model_type: ``classification`` or ``regression``.
        algorithm: scikit-learn only: ``random_forest`` (default), ``gradient_boosting``,
            ``logistic_regression`` (classification) or ``linear_regression`` (regression).
        training_data: The labelled entity rows (see :class:`TrainingData`).
        features: A feature service name, or a list of references ``view:feature`` / ``view:*``.
            Default: every feature of the views keyed on the label table's entities.
        feature_service: A feature service name (an explicit alternative to ``features``).
        full_feature_names: Name feature columns ``view__feature`` (needed when two views
            share a feature name).
        hyperparameters: ``params`` for the estimator.
        test_size: The share of rows held out for testing, in (0, 1).
        split: ``time`` (train on the earlier rows, test on the later ones) or ``random``.
        random_state: Seed of the random split and of the estimator (unless ``params`` sets one).
        description: Free text recorded with the version.
    """

    name: str
    framework: Literal["sklearn", "xgboost", "lightgbm"]
    model_type: Literal["classification", "regression"]
    algorithm: str | None = None
    training_data: TrainingData
    features: list[str] | str | None = None
    feature_service: str | None = None
    # Strict scalars: the REST body (POST /api/v1/models) takes the JSON types it declares
    # (no 0/1 or "yes" for a boolean, no "0.2" or "42" for a number).
    full_feature_names: StrictBool = False
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    test_size: StrictFloat = 0.2
    split: Literal["time", "random"] = "time"
    random_state: StrictInt = Field(default=42, ge=0, le=2**32 - 1)
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_RE.match(value):
            raise ValueError(
                f"model name {value!r} is not a plain identifier: use letters, digits and '_'"
            )
        return value

    @field_validator("framework", "model_type", "split", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _params_shorthand(cls, value: Any) -> Any:
        # Accept a bare mapping of parameters as well as {"params": {...}}.
        if isinstance(value, dict) and "params" not in value:
            return {"params": value}
        return {"params": {}} if value is None else value

    @field_validator("features", mode="before")
    @classmethod
    def _features(cls, value: Any) -> Any:
        if value is None or value == []:
            return None
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, (list, tuple)):
            refs = []
            for ref in value:
                try:
                    view, feature = parse_feature_ref(ref)
                except InvalidError as exc:
                    raise ValueError(exc.message) from None
                refs.append(f"{view}:{feature}")
            return refs
        return value

    @field_validator("test_size")
    @classmethod
    def _test_size(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError(f"test_size must be between 0 and 1 (exclusive), got {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.features is not None and self.feature_service is not None:
            raise ValueError("give either features or feature_service, not both")
        if self.algorithm is not None:
            key = self.algorithm.strip().lower().replace("-", "_").replace(" ", "_")
            key = _ALGORITHM_ALIASES.get(key.replace("_", ""), key)
            if self.framework != "sklearn":
                raise ValueError(
                    f"algorithm is only used with framework 'sklearn' ({self.framework} trains "
                    "gradient-boosted trees); remove it"
                )
            if key not in ALGORITHMS:
                raise ValueError(
                    f"unknown algorithm {self.algorithm!r}; use one of {', '.join(ALGORITHMS)}"
                )
            if key == "logistic_regression" and self.model_type == "regression":
                raise ValueError("logistic_regression is for classification; use linear_regression")
            if key == "linear_regression" and self.model_type == "classification":
                raise ValueError(
                    "linear_regression is for regression; use logistic_regression to classify"
                )
            object.__setattr__(self, "algorithm", key)
        elif self.framework == "sklearn":
            object.__setattr__(self, "algorithm", "random_forest")
        return self

    @property
    def service_name(self) -> str | None:
        """The feature service to train on, if the spec names one."""
        if self.feature_service is not None:
            return self.feature_service
        return self.features if isinstance(self.features, str) else None

    @property
    def feature_refs(self) -> list[str] | None:
        """The feature references, if the spec lists them."""
        return self.features if isinstance(self.features, list) else None

    @classmethod
    def parse(cls, spec: Any) -> TrainingSpec:
        """Build a spec from a :class:`TrainingSpec`, a dict, or a YAML/JSON file path.

        Raises:
            InvalidError: the spec is malformed; the message names every bad key.
            NotFoundError: a path that does not exist.
        """
        if isinstance(spec, TrainingSpec):
            return spec
        if isinstance(spec, (str, Path)):
            return load_spec(spec)
        if hasattr(spec, "model_dump") and not isinstance(spec, dict):
            spec = spec.model_dump()
        if not isinstance(spec, dict):
            raise InvalidError(
                f"a training spec must be a TrainingSpec, a dict or a YAML/JSON path, "
                f"not {type(spec).__name__}"
            )
        try:
            return cls.model_validate(spec)
        except ValidationError as exc:
            raise invalid_from_pydantic("training spec", spec.get("name"), exc) from None

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-compatible dict."""
        return self.model_dump(mode="json")


def load_spec(path: str | Path) -> TrainingSpec:
    """Read a training spec from a YAML or JSON file.

    Raises:
        NotFoundError: the file does not exist.
        InvalidError: it is not valid YAML/JSON, or not a valid spec.
    """
    import yaml

    file = Path(path).expanduser()
    if not file.is_file():
        raise NotFoundError(f"training spec file '{file}' does not exist")
    text = file.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InvalidError(f"training spec file '{file}' is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidError(f"training spec file '{file}' must hold a mapping at the top level")
    try:
        return TrainingSpec.model_validate(data)
    except ValidationError as exc:
        raise invalid_from_pydantic(f"training spec in '{file}'", data.get("name"), exc) from None
