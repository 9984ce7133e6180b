"""Drift: a model version's training statistics against the features materialized since.

For every feature of the version (its lineage), the drift check compares the values sampled
from the training split (stored by training with
:func:`~quiver.monitoring.statistics.save_training_statistics`) with the values sampled from
every materialization run of the feature's view since ``since`` (default: when the version was
trained), pooled:

- **PSI**, the population stability index, ``sum((a - e) * ln(a / e))`` over bins: for numbers the
  deciles of the training sample (equal values merged), for strings and booleans the categories;
  proportions are floored at ``1e-4`` so that an empty bin stays finite.
- **A two-sample test** with scipy: Kolmogorov-Smirnov (``ks_2samp``) for numbers, a chi-square
  test of the contingency table for categories. Its p-value is reported (``significant`` when
  below ``monitoring.drift_p_value``); with thousands of values it finds tiny differences, so
  a feature is **flagged** (``drifted``) by its PSI over ``monitoring.drift_psi_threshold``
  (0.2 by default, the usual "significant shift" level).

The report names the feature whose PSI is largest (``most_drifted``). A feature without values on
one side is ``no_data``; timestamps and lists are ``not_tested``.

Each check's scores are stored (:func:`save_drift_scores`, the latest per model version), so the
Prometheus metrics serve them without computing anything when scraped; a successful
materialization checks again the models that use the view (:func:`refresh_drift`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError, require

if TYPE_CHECKING:
    from quiver.ml.registry import ModelVersion
    from quiver.registry import Registry

__all__ = [
    "DriftReport",
    "FeatureDrift",
    "latest_drift_scores",
    "model_drift",
    "psi",
    "refresh_drift",
    "save_drift_scores",
]

_FLOOR = 1e-4
_BINS = 10
_NUMERIC = ("int32", "int64", "float32", "float64")


@dataclass(frozen=True)
class FeatureDrift:
    """The drift of one feature.

    Attributes:
        feature: The feature reference (``view:feature``).
        dtype: Its dtype.
        status: ``ok``, ``drift``, ``no_data`` or ``not_tested``.
        psi: The population stability index.
        test: ``ks`` or ``chi2``.
        statistic: The test statistic.
        p_value: The test's p-value.
        significant: The p-value is below the configured level.
        drifted: The PSI is over the threshold.
        training_count: Sampled training values.
        current_count: Sampled materialized values.
        training_mean: Mean of the training sample (numbers).
        current_mean: Mean of the materialized sample (numbers).
    """

    feature: str
    dtype: str
    status: str
    psi: float | None = None
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    significant: bool = False
    drifted: bool = False
    training_count: int = 0
    current_count: int = 0
    training_mean: float | None = None
    current_mean: float | None = None


@dataclass(frozen=True)
class DriftReport:
    """A drift check of one model version (see the module docstring)."""

    model_name: str
    version: int
    since: datetime
    psi_threshold: float
    p_value_threshold: float
    runs_compared: int
    features: list[FeatureDrift] = field(default_factory=list)

    @property
    def drifted(self) -> list[str]:
        """The features flagged as drifted."""
        return [f.feature for f in self.features if f.drifted]

    @property
    def most_drifted(self) -> str | None:
        """The feature with the largest PSI (``None`` when nothing was compared)."""
        scored = [f for f in self.features if f.psi is not None]
        return max(scored, key=lambda f: f.psi or 0.0).feature if scored else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict."""
        return {
            "model_id": f"{self.model_name}:{self.version}",
            "model_name": self.model_name,
            "version": self.version,
            "since": self.since.isoformat(),
            "psi_threshold": self.psi_threshold,
            "p_value_threshold": self.p_value_threshold,
            "runs_compared": self.runs_compared,
            "drifted": self.drifted,
            "most_drifted": self.most_drifted,
            "features": [asdict(f) for f in self.features],
        }


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The population stability index of two distributions over the same bins (proportions)."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, _FLOOR), max(a, _FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def _numeric(train: list[Any], current: list[Any]) -> tuple[float, float, float]:
    import numpy as np

    stats = require("scipy.stats", "ml", "drift detection")
    x = np.asarray(train, dtype=float)
    y = np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, _BINS + 1))[1:-1])
    e = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1) / len(x)
    a = np.bincount(np.searchsorted(edges, y, side="right"), minlength=len(edges) + 1) / len(y)
    result = stats.ks_2samp(x, y)
    return psi(e.tolist(), a.tolist()), float(result.statistic), float(result.pvalue)


def _categorical(train: list[Any], current: list[Any]) -> tuple[float, float, float]:
    from collections import Counter

    stats = require("scipy.stats", "ml", "drift detection")
    ct, cc = Counter(map(str, train)), Counter(map(str, current))
    cats = sorted(set(ct) | set(cc))
    e = [ct[c] / len(train) for c in cats]
    a = [cc[c] / len(current) for c in cats]
    score = psi(e, a)
    if len(cats) < 2:
        return score, 0.0, 1.0
    chi2, p, _, _ = stats.chi2_contingency([[ct[c] for c in cats], [cc[c] for c in cats]])
    return score, float(chi2), float(p)


def _compare(ref: str, dtype: str, train: list[Any], current: list[Any], cfg: Any) -> FeatureDrift:
    if dtype not in _NUMERIC and dtype not in ("string", "bool"):
        return FeatureDrift(ref, dtype, "not_tested")
    if not train or not current:
        return FeatureDrift(
            ref, dtype, "no_data", training_count=len(train), current_count=len(current)
        )
    train_mean = current_mean = None
    if dtype in _NUMERIC:
        score, statistic, p = _numeric(train, current)
        test = "ks"
        train_mean = _finite(sum(train) / len(train))
        current_mean = _finite(sum(current) / len(current))
    else:
        score, statistic, p = _categorical(train, current)
        test = "chi2"
    drifted = score > cfg.drift_psi_threshold
    return FeatureDrift(
        ref,
        dtype,
        "drift" if drifted else "ok",
        psi=_finite(score),
        test=test,
        statistic=_finite(statistic),
        p_value=_finite(p),
        significant=p < cfg.drift_p_value,
        drifted=drifted,
        training_count=len(train),
        current_count=len(current),
        training_mean=train_mean,
        current_mean=current_mean,
    )


def model_drift(
    registry: Registry,
    version: ModelVersion,
    monitoring: Any,
    *,
    since: datetime | None = None,
) -> DriftReport:
    """Compare a model version's training statistics with the features materialized since.

    Args:
        registry: The registry (training and materialization statistics).
        version: The model version.
        monitoring: The :class:`~quiver.config.MonitoringConfig` (thresholds).
        since: Compare the runs stored since this time (default: when the version was trained).

    Raises:
        InvalidError: the version has no training statistics (trained before statistics
            existed, or their storage failed): train it again.
        MissingExtraError: scipy is not installed (the ``ml`` extra).
    """
    from quiver.monitoring.statistics import get_training_statistics, list_view_statistics

    require("scipy.stats", "ml", "drift detection")
    trained = get_training_statistics(registry, version.name, version.version)
    if trained is None:
        raise InvalidError(
            f"model version {version.name}:{version.version} has no training statistics (it was "
            "trained before Quiver recorded them); train the model again to check its drift"
        )
    start = since if since is not None else version.created_at
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    views = sorted({ref.split(":", 1)[0] for ref in trained.features})
    runs = list_view_statistics(registry, views=views, since=start)
    features = []
    for ref, stats in trained.features.items():
        view, name = ref.split(":", 1)
        current: list[Any] = []
        for run in runs:
            if run.view == view and name in run.features:
                current.extend(run.features[name].get("sample") or [])
        train_values = list(stats.get("sample") or [])
        features.append(_compare(ref, stats.get("dtype", ""), train_values, current, monitoring))
    return DriftReport(
        model_name=version.name,
        version=version.version,
        since=start,
        psi_threshold=monitoring.drift_psi_threshold,
        p_value_threshold=monitoring.drift_p_value,
        runs_compared=len(runs),
        features=features,
    )


def save_drift_scores(registry: Registry, report: DriftReport) -> None:
    """Store a check's scores as the latest of its model version (one transaction).

    Raises:
        BackendError: the registry write failed.
    """
    from quiver.monitoring.tables import drift_scores as table

    now = datetime.now(UTC)
    rows = [
        {
            "project": registry.project,
            "model_name": report.model_name,
            "version": report.version,
            "feature": f.feature,
            "computed_at": now,
            "status": f.status,
            "psi": _finite(f.psi),
            "p_value": _finite(f.p_value),
            "drifted": f.drifted,
        }
        for f in report.features
    ]
    mine = (
        (table.c.project == registry.project)
        & (table.c.model_name == report.model_name)
        & (table.c.version == report.version)
    )
    with registry.writing("drift scores") as conn:
        conn.execute(table.delete().where(mine))
        if rows:
            conn.execute(table.insert(), rows)


def latest_drift_scores(conn: Any, project: str) -> list[tuple[str, int, str, float | None, bool]]:
    """``(model, version, feature, psi, drifted)`` of each model version's latest check."""
    import sqlalchemy as sa

    from quiver.monitoring.tables import drift_scores as table

    query = sa.select(
        table.c.model_name, table.c.version, table.c.feature, table.c.psi, table.c.drifted
    ).where(table.c.project == project)
    return [(m, int(v), f, psi, bool(d)) for m, v, f, psi, d in conn.execute(query)]


def refresh_drift(registry: Registry, versions: Sequence[ModelVersion], monitoring: Any) -> int:
    """Check again, and store, the drift of the given model versions (after a materialization
    of a view they use); a version without training statistics is skipped. Returns how many
    were checked.

    Raises:
        MissingExtraError: scipy is not installed (the ``ml`` extra).
        BackendError: the registry failed.
    """
    checked = 0
    for version in versions:
        try:
            report = model_drift(registry, version, monitoring)
        except InvalidError:
            continue  # trained before statistics existed
        save_drift_scores(registry, report)
        checked += 1
    return checked
