"""Bounds on the size of a model a REST caller trains (:mod:`quiver.ml.bounds`)."""

from __future__ import annotations

from typing import Any

import pytest

from quiver.errors import InvalidError
from quiver.ml.bounds import ModelBounds, check_model_size
from quiver.ml.spec import TrainingSpec

BOUNDS = ModelBounds(max_estimators=500, max_depth=12, max_leaves=256)


def spec(framework: str, algorithm: str | None = None, **params: Any) -> TrainingSpec:
    return TrainingSpec.parse(
        {
            "name": "m",
            "framework": framework,
            "model_type": "classification",
            "algorithm": algorithm,
            "training_data": {"entity_df_source": "labels", "label_column": "y"},
            "hyperparameters": {"params": params},
        }
    )


@pytest.mark.parametrize(
    ("framework", "params"),
    [
        ("lightgbm", {}),  # the library defaults: 100 trees, 31 leaves, no depth limit
        ("lightgbm", {"n_estimators": 500, "num_leaves": 256, "max_depth": 12}),
        ("lightgbm", {"max_depth": -1}),  # unlimited depth: bounded by the leaves
        ("xgboost", {"n_estimators": 50, "num_parallel_tree": 10, "max_depth": 0}),
        ("sklearn", {"max_depth": None, "n_estimators": "200"}),
        ("lightgbm", {"n_estimators": "not a number"}),  # left to the library to refuse
    ],
)
def test_models_within_the_bounds_pass(framework: str, params: dict[str, Any]) -> None:
    check_model_size(spec(framework, **params), BOUNDS)


@pytest.mark.parametrize(
    ("framework", "params", "name", "setting"),
    [
        ("lightgbm", {"n_estimators": 501}, "n_estimators", "max_estimators"),
        ("lightgbm", {"num_boost_round": 10**8}, "num_boost_round", "max_estimators"),
        ("lightgbm", {"num_leaf": 257}, "num_leaf", "max_leaves"),
        ("lightgbm", {"max_depth": 13}, "max_depth", "max_depth"),
        ("xgboost", {"n_estimators": 100, "num_parallel_tree": 6}, "num_parallel_tree", "max_"),
        ("xgboost", {"max_leaves": 1e9}, "max_leaves", "max_leaves"),
        ("sklearn", {"n_estimators": 1e300}, "n_estimators", "max_estimators"),
        ("sklearn", {"max_leaf_nodes": 10_000}, "max_leaf_nodes", "max_leaves"),
        ("sklearn", {"max_depth": float("inf")}, "max_depth", "max_depth"),
    ],
)
def test_models_above_the_bounds_are_refused_naming_the_setting(
    framework: str, params: dict[str, Any], name: str, setting: str
) -> None:
    with pytest.raises(InvalidError) as info:
        check_model_size(spec(framework, **params), BOUNDS)
    assert name in info.value.message and f"server.{setting}" in info.value.message


def test_the_default_tree_count_counts_against_a_low_bound() -> None:
    with pytest.raises(InvalidError):
        check_model_size(spec("lightgbm"), ModelBounds(50, 12, 256))


def test_linear_models_have_no_trees_to_bound() -> None:
    check_model_size(spec("sklearn", "logistic_regression", max_iter=10**6), ModelBounds(1, 1, 2))
