"""Models: training on feature services, a model registry with lineage, batch and online
predictions.

The :class:`~quiver.store.FeatureStore` methods ``train``, ``list_models``, ``get_model``,
``promote``, ``predict_batch`` and ``predict_online`` are the entry points; this package holds
the pieces behind them:

- :mod:`quiver.ml.spec`: the training spec (Python, YAML, JSON);
- :mod:`quiver.ml.trainers`: one trainer per framework (scikit-learn, XGBoost, LightGBM);
- :mod:`quiver.ml.encoding`: categorical encoding and training-time defaults, kept with the model;
- :mod:`quiver.ml.artifacts`: safe model formats and checksums checked on every load;
- :mod:`quiver.ml.registry`: models, versions, stages, lineage and prediction jobs;
- :mod:`quiver.ml.training`, :mod:`quiver.ml.predict`: the training and prediction flows.
"""

from __future__ import annotations

from quiver.ml.spec import Hyperparameters, TrainingData, TrainingSpec, load_spec

__all__ = ["Hyperparameters", "TrainingData", "TrainingSpec", "load_spec"]
