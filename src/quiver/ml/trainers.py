"""One small trainer per framework, behind the :class:`Trainer` protocol, registered by name.

A trainer builds an estimator from validated hyperparameters, fits it on an encoded matrix,
predicts (class probabilities or values), reports feature importance, and saves/loads its model in
a format that cannot run code when loaded: skops for scikit-learn (with an allow-list of types),
XGBoost's UBJSON, and LightGBM's text model. The libraries are imported lazily through
:func:`quiver.errors.require`, so a missing one gives an error naming the ``ml`` extra.
"""

from __future__ import annotations

import difflib
import platform
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from quiver.errors import InvalidError, require

if TYPE_CHECKING:
    import numpy as np

__all__ = ["TRAINERS", "Trainer", "get_trainer", "library_versions"]

ModelType = Literal["classification", "regression"]


class Trainer(Protocol):
    """What the training and prediction code needs from a framework."""

    name: str
    artifact_file: str

    def encoding_options(self, algorithm: str | None) -> tuple[Literal["ordinal", "onehot"], bool]:
        """The encoding scheme and whether missing values must be imputed."""
        ...

    def build(
        self,
        model_type: ModelType,
        algorithm: str | None,
        params: Mapping[str, Any],
        random_state: int,
    ) -> Any:
        """An unfitted estimator; unknown parameters raise :class:`InvalidError`."""
        ...

    def fit(
        self,
        estimator: Any,
        x: np.ndarray,
        y: np.ndarray,
        columns: list[str],
        categorical: list[int],
    ) -> Any:
        """Fit and return the model used for prediction."""
        ...

    def predict(self, model: Any, x: np.ndarray, model_type: ModelType) -> np.ndarray:
        """Class probabilities ``(n, K)`` for classifiers; values ``(n,)`` for regressors."""
        ...

    def importance(self, model: Any, n_columns: int) -> np.ndarray:
        """One non-negative importance per matrix column."""
        ...

    def params(self, model: Any) -> dict[str, Any]:
        """The effective estimator parameters (JSON-compatible)."""
        ...

    def save(self, model: Any, path: Path) -> None:
        """Write the model to ``path`` in a safe format."""
        ...

    def load(self, path: Path, model_type: ModelType) -> Any:
        """Read a model written by :meth:`save`."""
        ...

    def versions(self) -> dict[str, str]:
        """The library versions the model depends on."""
        ...


def _check_params(params: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in params:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise InvalidError(
                f"unknown hyperparameter '{key}' for {where}{hint}",
                details={"parameter": key},
            )


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return _jsonable(item())
        except (TypeError, ValueError):
            pass
    return repr(value)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def library_versions(*packages: str) -> dict[str, str]:
    """Versions of Python, Quiver, numpy, pyarrow and ``packages``."""
    out = {"python": platform.python_version()}
    for name in ("quiver", "numpy", "pyarrow", *packages):
        out[name] = _version(name)
    return out


@contextmanager
def _fit_errors(framework: str, *library_errors: type[Exception]) -> Iterator[None]:
    """Turn the library's refusal of the data or the settings into an :class:`InvalidError`.

    Args:
        framework: The library's name, as the message shows it.
        *library_errors: The library's own error types, next to ``ValueError``/``TypeError``.
    """
    caught: tuple[type[Exception], ...] = (ValueError, TypeError, *library_errors)
    try:
        yield
    except caught as exc:
        raise InvalidError(f"{framework} could not train with these settings: {exc}") from exc


# -- scikit-learn ---------------------------------------------------------------------------


class SklearnTrainer:
    """scikit-learn: random forest (default), gradient boosting, logistic / linear regression."""

    name = "sklearn"
    artifact_file = "model.skops"
    # skops refuses types it does not trust; these are the only extra ones our models hold.
    TRUSTED_TYPES: ClassVar[frozenset[str]] = frozenset({"sklearn.tree._tree.Tree"})

    def encoding_options(self, algorithm: str | None) -> tuple[Literal["ordinal", "onehot"], bool]:
        linear = algorithm in ("logistic_regression", "linear_regression")
        return ("onehot" if linear else "ordinal"), True

    def _class(self, model_type: ModelType, algorithm: str | None) -> Any:
        require("sklearn", "ml", "training scikit-learn models")
        from sklearn import ensemble, linear_model

        algorithm = algorithm or "random_forest"
        table = {
            ("classification", "random_forest"): ensemble.RandomForestClassifier,
            ("regression", "random_forest"): ensemble.RandomForestRegressor,
            ("classification", "gradient_boosting"): ensemble.GradientBoostingClassifier,
            ("regression", "gradient_boosting"): ensemble.GradientBoostingRegressor,
            ("classification", "logistic_regression"): linear_model.LogisticRegression,
            ("regression", "linear_regression"): linear_model.LinearRegression,
        }
        try:
            return table[(model_type, algorithm)]
        except KeyError:
            raise InvalidError(
                f"scikit-learn algorithm '{algorithm}' does not do {model_type}"
            ) from None

    def build(
        self,
        model_type: ModelType,
        algorithm: str | None,
        params: Mapping[str, Any],
        random_state: int,
    ) -> Any:
        cls = self._class(model_type, algorithm)
        known = set(cls().get_params(deep=False))
        _check_params(params, known, f"scikit-learn {cls.__name__}")
        kwargs = dict(params)
        if "random_state" in known:
            kwargs.setdefault("random_state", random_state)
        if "n_jobs" in known and cls.__name__.startswith("RandomForest"):
            kwargs.setdefault("n_jobs", -1)
        if cls.__name__ == "LogisticRegression":
            kwargs.setdefault("max_iter", 1000)
        estimator = cls(**kwargs)
        if algorithm in ("logistic_regression", "linear_regression"):
            from sklearn.pipeline import Pipeline
            from sklearn.preprocessing import StandardScaler

            return Pipeline([("scale", StandardScaler()), ("model", estimator)])
        return estimator

    def fit(
        self,
        estimator: Any,
        x: np.ndarray,
        y: np.ndarray,
        columns: list[str],
        categorical: list[int],
    ) -> Any:
        with _fit_errors("scikit-learn"):
            return estimator.fit(x, y)

    def predict(self, model: Any, x: np.ndarray, model_type: ModelType) -> np.ndarray:
        if model_type == "classification":
            return model.predict_proba(x)
        return model.predict(x)

    def importance(self, model: Any, n_columns: int) -> np.ndarray:
        import numpy as np

        final = model.steps[-1][1] if hasattr(model, "steps") else model
        if hasattr(final, "feature_importances_"):
            return np.asarray(final.feature_importances_, dtype=float)
        coef = np.abs(np.atleast_2d(np.asarray(final.coef_, dtype=float)))
        return coef.mean(axis=0)

    def params(self, model: Any) -> dict[str, Any]:
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        return {k: _jsonable(v) for k, v in final.get_params(deep=False).items()}

    def save(self, model: Any, path: Path) -> None:
        sio = require("skops.io", "ml", "saving scikit-learn models")
        sio.dump(model, path)

    def load(self, path: Path, model_type: ModelType) -> Any:
        sio = require("skops.io", "ml", "loading scikit-learn models")
        untrusted = sio.get_untrusted_types(file=path)
        refused = sorted(set(untrusted) - self.TRUSTED_TYPES)
        if refused:
            from quiver.ml.artifacts import ArtifactIntegrityError

            raise ArtifactIntegrityError(
                f"model file '{path}' holds types Quiver does not trust ({', '.join(refused)}); "
                "it was not written by Quiver: retrain the model"
            )
        return sio.load(path, trusted=list(untrusted))

    def versions(self) -> dict[str, str]:
        return library_versions("scikit-learn", "skops")


# -- XGBoost ----------------------------------------------------------------------------------


class XGBoostTrainer:
    """XGBoost's scikit-learn API; models saved as UBJSON."""

    name = "xgboost"
    artifact_file = "model.ubj"
    ALIASES: ClassVar[frozenset[str]] = frozenset(
        {"eta", "alpha", "lambda", "min_split_loss", "seed", "nthread", "max_cat_to_onehot"}
    )

    def encoding_options(self, algorithm: str | None) -> tuple[Literal["ordinal", "onehot"], bool]:
        return "ordinal", False

    def _class(self, model_type: ModelType) -> Any:
        xgb = require("xgboost", "ml", "training XGBoost models")
        return xgb.XGBClassifier if model_type == "classification" else xgb.XGBRegressor

    def build(
        self,
        model_type: ModelType,
        algorithm: str | None,
        params: Mapping[str, Any],
        random_state: int,
    ) -> Any:
        cls = self._class(model_type)
        known = set(cls().get_params()) | self.ALIASES
        _check_params(params, known - {"callbacks"}, f"XGBoost {cls.__name__}")
        kwargs = dict(params)
        kwargs.setdefault("random_state", random_state)
        kwargs.setdefault("tree_method", "hist")
        return cls(**kwargs)

    def fit(
        self,
        estimator: Any,
        x: np.ndarray,
        y: np.ndarray,
        columns: list[str],
        categorical: list[int],
    ) -> Any:
        xgb = require("xgboost", "ml", "training XGBoost models")
        with _fit_errors("XGBoost", xgb.core.XGBoostError):
            return estimator.fit(x, y, verbose=False)

    def predict(self, model: Any, x: np.ndarray, model_type: ModelType) -> np.ndarray:
        if model_type == "classification":
            return model.predict_proba(x)
        return model.predict(x)

    def importance(self, model: Any, n_columns: int) -> np.ndarray:
        import numpy as np

        return np.asarray(model.feature_importances_, dtype=float)

    def params(self, model: Any) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in model.get_params().items() if v is not None}

    def save(self, model: Any, path: Path) -> None:
        model.save_model(str(path))

    def load(self, path: Path, model_type: ModelType) -> Any:
        xgb = require("xgboost", "ml", "loading XGBoost models")
        model = self._class(model_type)()
        try:
            model.load_model(str(path))
        except xgb.core.XGBoostError as exc:
            from quiver.ml.artifacts import ArtifactIntegrityError

            raise ArtifactIntegrityError(f"model file '{path}' is not an XGBoost model") from exc
        return model

    def versions(self) -> dict[str, str]:
        return library_versions("xgboost")


# -- LightGBM ---------------------------------------------------------------------------------


class LightGBMTrainer:
    """LightGBM's scikit-learn API for training; the Booster's text model for storage."""

    name = "lightgbm"
    artifact_file = "model.txt"

    def encoding_options(self, algorithm: str | None) -> tuple[Literal["ordinal", "onehot"], bool]:
        return "ordinal", False

    def _class(self, model_type: ModelType) -> Any:
        lgb = require("lightgbm", "ml", "training LightGBM models")
        return lgb.LGBMClassifier if model_type == "classification" else lgb.LGBMRegressor

    @staticmethod
    def _native_params() -> set[str]:
        lgb = require("lightgbm", "ml", "training LightGBM models")
        try:  # every parameter of the C library, with its aliases (a private helper)
            aliases = lgb.basic._ConfigAliases._get_all_param_aliases()
        except Exception:  # pragma: no cover - depends on the LightGBM version
            return set()
        return {name for names in aliases.values() for name in names}

    def build(
        self,
        model_type: ModelType,
        algorithm: str | None,
        params: Mapping[str, Any],
        random_state: int,
    ) -> Any:
        cls = self._class(model_type)
        known = set(cls().get_params()) | self._native_params()
        _check_params(params, known, f"LightGBM {cls.__name__}")
        kwargs = dict(params)
        kwargs.setdefault("random_state", random_state)
        kwargs.setdefault("verbose", -1)
        return cls(**kwargs)

    def fit(
        self,
        estimator: Any,
        x: np.ndarray,
        y: np.ndarray,
        columns: list[str],
        categorical: list[int],
    ) -> Any:
        lgb = require("lightgbm", "ml", "training LightGBM models")
        safe = [_lgb_name(c, i) for i, c in enumerate(columns)]
        with _fit_errors("LightGBM", lgb.basic.LightGBMError):
            estimator.fit(x, y, feature_name=safe, categorical_feature=categorical or "auto")
        return estimator.booster_

    def predict(self, model: Any, x: np.ndarray, model_type: ModelType) -> np.ndarray:
        import numpy as np

        out = np.asarray(model.predict(x))
        if model_type == "classification" and out.ndim == 1:
            return np.column_stack([1.0 - out, out])
        return out

    def importance(self, model: Any, n_columns: int) -> np.ndarray:
        import numpy as np

        return np.asarray(model.feature_importance(importance_type="gain"), dtype=float)

    def params(self, model: Any) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in (model.params or {}).items()}

    def save(self, model: Any, path: Path) -> None:
        model.save_model(str(path))

    def load(self, path: Path, model_type: ModelType) -> Any:
        lgb = require("lightgbm", "ml", "loading LightGBM models")
        try:
            return lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            from quiver.ml.artifacts import ArtifactIntegrityError

            raise ArtifactIntegrityError(f"model file '{path}' is not a LightGBM model") from exc

    def versions(self) -> dict[str, str]:
        return library_versions("lightgbm")


def _lgb_name(column: str, index: int) -> str:
    # LightGBM refuses some characters in feature names (JSON specials); keep it readable.
    safe = "".join(ch if ch.isalnum() or ch in "_-=." else "_" for ch in column)
    return safe or f"f{index}"


TRAINERS: dict[str, Trainer] = {
    "sklearn": SklearnTrainer(),
    "xgboost": XGBoostTrainer(),
    "lightgbm": LightGBMTrainer(),
}
"""The trainers by framework name."""


def get_trainer(framework: str) -> Trainer:
    """The trainer of ``framework``, or raise :class:`InvalidError` listing the known ones."""
    try:
        return TRAINERS[framework]
    except KeyError:
        raise InvalidError(
            f"unknown framework '{framework}'; use one of {', '.join(TRAINERS)}"
        ) from None
