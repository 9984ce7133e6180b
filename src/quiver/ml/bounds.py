"""Bounds on the size of a model: trees (boosting rounds), tree depth and leaves per tree.

The REST server checks a training spec against ``server.max_estimators``, ``server.max_depth``
and ``server.max_leaves`` before any data is read (a 422 naming the parameter and the setting);
the CLI and the SDK, run by the repo's owner, are not bounded.

Every spelling a framework accepts is checked (LightGBM's aliases such as ``num_iterations`` or
``num_leaf``); XGBoost's trees are ``n_estimators`` times ``num_parallel_tree``. A parameter
left out takes the library's default (100 trees in all three). Unlimited depth (``None``, or 0
and below) is accepted: the tree is then bounded by its leaves (``num_leaves``, ``max_leaves``)
or, for scikit-learn, by the training rows, and its time by the job's time limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError

if TYPE_CHECKING:
    from quiver.config import ServerConfig
    from quiver.ml.spec import TrainingSpec

__all__ = ["ModelBounds", "check_model_size"]

_LGB_ROUNDS = (
    "n_estimators",
    "num_iterations",
    "num_iteration",
    "n_iter",
    "num_tree",
    "num_trees",
    "num_round",
    "num_rounds",
    "nrounds",
    "num_boost_round",
    "max_iter",
)
_ESTIMATORS = {"sklearn": ("n_estimators",), "xgboost": ("n_estimators",), "lightgbm": _LGB_ROUNDS}
_LEAVES = {
    "sklearn": ("max_leaf_nodes",),
    "xgboost": ("max_leaves",),
    "lightgbm": ("num_leaves", "num_leaf", "max_leaves", "max_leaf", "max_leaf_nodes"),
}
_DEFAULT_TREES = 100
_LINEAR = frozenset({"logistic_regression", "linear_regression"})


@dataclass(frozen=True)
class ModelBounds:
    """The largest model a caller may train.

    Attributes:
        max_estimators: Trees (boosting rounds; XGBoost: times ``num_parallel_tree``).
        max_depth: The depth of a tree.
        max_leaves: The leaves of a tree.
    """

    max_estimators: int
    max_depth: int
    max_leaves: int

    @classmethod
    def of(cls, server: ServerConfig) -> ModelBounds:
        """The bounds of ``server:`` in ``quiver.yaml``."""
        return cls(server.max_estimators, server.max_depth, server.max_leaves)


def _number(value: Any) -> float | None:
    """A numeric parameter value (numbers in strings too), or ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def check_model_size(spec: TrainingSpec, bounds: ModelBounds) -> None:
    """Refuse a spec whose model would be larger than ``bounds``, before any work.

    Raises:
        InvalidError: a tree count, depth or leaf count above its bound; the message names the
            parameter, its value and the setting.
    """
    if spec.framework == "sklearn" and spec.algorithm in _LINEAR:
        return  # no trees
    params = spec.hyperparameters.params
    framework = spec.framework
    given = [(k, params[k]) for k in _ESTIMATORS[framework] if k in params]
    name, value = given[0] if given else ("n_estimators", _DEFAULT_TREES)
    trees = _number(value)
    if trees is not None and framework == "xgboost" and "num_parallel_tree" in params:
        parallel = _number(params["num_parallel_tree"])
        if parallel is not None and parallel > 1:
            trees, name = trees * parallel, "n_estimators x num_parallel_tree"
    _check(name, trees, bounds.max_estimators, "max_estimators", "trees")
    if "max_depth" in params:
        _check("max_depth", _number(params["max_depth"]), bounds.max_depth, "max_depth", "depth")
    for key in _LEAVES[framework]:
        if key in params:
            _check(key, _number(params[key]), bounds.max_leaves, "max_leaves", "leaves")


def _check(name: str, value: float | None, limit: int, setting: str, what: str) -> None:
    if value is None or (math.isfinite(value) and value <= limit):
        return
    shown = f"{value:g}" if math.isfinite(value) else str(value)
    raise InvalidError(
        f"hyperparameter {name} = {shown} asks for more {what} than this server trains "
        f"(at most {limit}, server.{setting}); ask for a smaller model",
        details={"parameter": name, "value": shown, "limit": limit, "setting": f"server.{setting}"},
    )
