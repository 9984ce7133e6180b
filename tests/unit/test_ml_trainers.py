"""Trainers per framework: parameter checks, fit/predict, safe save/load round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quiver.errors import InvalidError
from quiver.ml.artifacts import ArtifactIntegrityError
from quiver.ml.trainers import TRAINERS, get_trainer

CASES = [
    ("sklearn", "random_forest"),
    ("sklearn", "gradient_boosting"),
    ("sklearn", "logistic_regression"),
    ("sklearn", "linear_regression"),
    ("xgboost", None),
    ("lightgbm", None),
]
SMALL = {
    "random_forest": {"n_estimators": 10, "n_jobs": 1},
    "gradient_boosting": {"n_estimators": 10},
    "logistic_regression": {},
    "linear_regression": {},
    None: {"n_estimators": 10},
}


def _data(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    x[:, 2] = rng.integers(0, 4, size=300)  # a category code column
    signal = 2 * x[:, 0] - x[:, 1] + (x[:, 2] == 1)
    if kind == "classification":
        return x, (signal + rng.normal(0, 0.5, 300) > 0).astype(np.int64)
    return x, signal + rng.normal(0, 0.1, 300)


def _tasks(algorithm: str | None) -> list[str]:
    if algorithm == "logistic_regression":
        return ["classification"]
    if algorithm == "linear_regression":
        return ["regression"]
    return ["classification", "regression"]


@pytest.mark.parametrize(
    ("framework", "algorithm", "task"),
    [(f, a, t) for f, a in CASES for t in _tasks(a)],
)
def test_fit_predict_save_load(
    framework: str, algorithm: str | None, task: str, tmp_path: Path
) -> None:
    trainer = get_trainer(framework)
    x, y = _data(task)
    est = trainer.build(task, algorithm, SMALL[algorithm], 7)  # type: ignore[arg-type]
    model = trainer.fit(est, x, y, ["a", "b", "c"], [2] if framework == "lightgbm" else [])
    pred = trainer.predict(model, x, task)  # type: ignore[arg-type]
    if task == "classification":
        assert pred.shape == (300, 2)
        np.testing.assert_allclose(pred.sum(axis=1), 1.0)
        assert (np.argmax(pred, axis=1) == y).mean() > 0.8
    else:
        assert pred.shape == (300,)
        assert np.corrcoef(pred, y)[0, 1] > 0.8
    importance = trainer.importance(model, 3)
    assert importance.shape == (3,) and (importance >= 0).all()
    assert isinstance(trainer.params(model), dict)
    path = tmp_path / trainer.artifact_file
    trainer.save(model, path)
    loaded = trainer.load(path, task)  # type: ignore[arg-type]
    np.testing.assert_allclose(trainer.predict(loaded, x, task), pred, rtol=1e-6)  # type: ignore[arg-type]
    assert framework in str(trainer.versions()) or "scikit-learn" in trainer.versions()


@pytest.mark.parametrize("framework", list(TRAINERS))
def test_unknown_hyperparameter_is_named(framework: str) -> None:
    trainer = get_trainer(framework)
    with pytest.raises(InvalidError, match=r"unknown hyperparameter 'n_estimator'.*n_estimators"):
        trainer.build("classification", None, {"n_estimator": 5}, 0)


def test_lightgbm_accepts_native_parameter_names() -> None:
    trainer = get_trainer("lightgbm")
    est = trainer.build("classification", None, {"min_data_in_leaf": 5, "n_estimators": 5}, 0)
    assert est.get_params()["min_data_in_leaf"] == 5


def test_bad_parameter_value_is_invalid() -> None:
    trainer = get_trainer("sklearn")
    x, y = _data("classification")
    est = trainer.build("classification", "random_forest", {"n_estimators": -3}, 0)
    with pytest.raises(InvalidError, match=r"could not train"):
        trainer.fit(est, x, y, ["a", "b", "c"], [])


def test_unknown_framework() -> None:
    with pytest.raises(InvalidError, match=r"unknown framework 'torch'"):
        get_trainer("torch")


def test_skops_refuses_types_outside_the_allow_list(tmp_path: Path) -> None:
    import operator

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    path = tmp_path / "model.skops"
    sio.dump(FunctionTransformer(func=operator.add).fit([[1.0]]), path)
    assert sio.get_untrusted_types(file=path) == ["_operator.add"]
    with pytest.raises(ArtifactIntegrityError, match=r"does not trust.*_operator.add"):
        get_trainer("sklearn").load(path, "classification")


@pytest.mark.parametrize("framework", ["xgboost", "lightgbm"])
def test_garbage_model_files_are_refused(framework: str, tmp_path: Path) -> None:
    trainer = get_trainer(framework)
    path = tmp_path / trainer.artifact_file
    path.write_bytes(b"\x00not a model at all")
    with pytest.raises(ArtifactIntegrityError, match=r"is not"):
        trainer.load(path, "classification")
