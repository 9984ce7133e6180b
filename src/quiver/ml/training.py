"""Training: labelled entity rows -> point-in-time training set -> model version.

The steps, in order (``progress`` hears about each):

1. validate the spec and the hyperparameters (before any data is read);
2. read the label table (``[start_date, end_date)``, rows with a null label dropped);
3. resolve the features (a service, references, or every view keyed on the label's entities);
4. build the training set with the point-in-time join (``get_historical_features``);
5. split: ``time`` (the latest ``test_size`` share is the test set; rows sharing the cut-off
   timestamp all go to the test side, so every test row is strictly later than every training
   row) or ``random`` (stratified for classifiers when every class has two rows or more);
6. fit the encoding on the training rows, train, evaluate on both splits;
7. save the artifacts and register the version with its lineage, in one transaction;
8. store the statistics of the training split with the version (for drift checks).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quiver.definitions import did_you_mean
from quiver.errors import InvalidError, require
from quiver.ml.encoding import Encoding, LabelEncoding
from quiver.ml.spec import TrainingSpec
from quiver.ml.trainers import get_trainer

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from quiver.ml.registry import ModelVersion
    from quiver.store import FeatureStore

__all__ = ["MIN_ROWS", "classification_metrics", "regression_metrics", "train"]

MIN_ROWS = 10
"""The fewest labelled rows a training run accepts."""

Progress = Callable[[str], None]


def _noop(_: str) -> None:
    return None


def train(store: FeatureStore, spec: Any, *, progress: Progress | None = None) -> ModelVersion:
    """Train a model version from a training spec and register it.

    Args:
        store: The feature store.
        spec: A :class:`TrainingSpec`, a dict, or a YAML/JSON path.
        progress: Called with a short message at each step.

    Returns:
        The new :class:`~quiver.ml.registry.ModelVersion`.

    Raises:
        InvalidError: a bad spec: unknown label column, a single-class label, too few rows for
            the split, an unknown hyperparameter, features that cannot be used.
        NotFoundError: an unknown source, feature view, feature or service.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from quiver.ml import io
    from quiver.ml.registry import ModelRegistry

    say = progress or _noop
    began = time.perf_counter()
    spec = TrainingSpec.parse(spec)
    say(f"checking the spec of '{spec.name}' ({spec.framework} {spec.model_type})")
    trainer = get_trainer(spec.framework)
    params = spec.hyperparameters.params
    trainer.build(spec.model_type, spec.algorithm, params, spec.random_state)  # fail fast
    require("sklearn", "ml", "model evaluation")
    data = spec.training_data
    ts = data.event_timestamp_column

    say(f"reading labels from '{data.entity_df_source}'")
    ref = io.resolve_ref(store, data.entity_df_source, timestamp_column=ts, what="entity_df_source")
    labels = io.read_input(store, ref, start=data.start_date, end=data.end_date)
    if data.label_column not in labels.column_names:
        columns = [c for c in labels.column_names if c != ts]
        raise InvalidError(
            f"label column '{data.label_column}' is not in '{data.entity_df_source}'"
            + did_you_mean(data.label_column, columns)
            + f"; its columns are: {', '.join(columns)}",
            details={"label_column": data.label_column, "columns": labels.column_names},
        )
    labels = labels.filter(pc.is_valid(labels[data.label_column]))

    selections = _resolve_features(store, spec, labels.column_names)
    join_keys = list(dict.fromkeys(k for sel in selections for k in sel.join_keys))
    missing_keys = [k for k in join_keys if k not in labels.column_names]
    if missing_keys:
        raise InvalidError(
            f"'{data.entity_df_source}' lacks the join key column(s) {', '.join(missing_keys)} "
            "that the selected features need"
        )
    features = _feature_columns(selections, spec.full_feature_names)
    clash = [name for name, _, _ in features if name in (data.label_column, ts, *join_keys)]
    if clash:
        raise InvalidError(
            f"feature column(s) {', '.join(clash)} clash with the label, timestamp or join key "
            "columns; set full_feature_names: true or rename the label"
        )
    n = labels.num_rows
    if n < MIN_ROWS:
        raise InvalidError(
            f"only {n} labelled rows in '{data.entity_df_source}'"
            + _range_text(spec)
            + f"; training needs at least {MIN_ROWS} to split into train and test sets"
        )
    label_enc = _label_encoding(spec, labels[data.label_column])

    say(f"building the training set: {n:,} rows x {len(features)} features (point-in-time join)")
    request = [f.name for s in selections for f in getattr(s, "request_fields", ())]
    entity = labels.select([*join_keys, *dict.fromkeys(request), ts, data.label_column])
    job = store.get_historical_features(
        entity,
        features=[ref_ for _, ref_, _ in features],
        full_feature_names=spec.full_feature_names,
        timestamp_column=ts,
    )
    frame = job.to_arrow()
    join_seconds = time.perf_counter() - began

    train_idx, test_idx = _split(spec, frame, label_enc)
    train_rows = frame.take(pa.array(train_idx))
    test_rows = frame.take(pa.array(test_idx))
    if label_enc.classes is not None:
        present = pc.count_distinct(train_rows[data.label_column]).as_py()
        if present < 2:
            raise InvalidError(
                f"the training split of '{data.label_column}' holds a single class; use more "
                "rows, a wider date range or split: random"
            )

    scheme, impute = trainer.encoding_options(spec.algorithm)
    encoding = Encoding.fit(train_rows, features, scheme=scheme, impute=impute, label=label_enc)
    x_train = encoding.encode(train_rows)
    x_test = encoding.encode(test_rows)
    y_train = label_enc.encode(train_rows[data.label_column])
    y_test = label_enc.encode(test_rows[data.label_column])

    say(f"training {spec.framework} {spec.model_type} on {len(train_idx):,} rows")
    estimator = trainer.build(spec.model_type, spec.algorithm, params, spec.random_state)
    started = time.perf_counter()
    model = trainer.fit(estimator, x_train, y_train, encoding.columns, encoding.categorical_indices)
    fit_seconds = time.perf_counter() - started

    say(f"evaluating on {len(test_idx):,} test rows")
    n_classes = len(label_enc.classes or [])
    metrics = {
        "train": _metrics(
            spec, trainer.predict(model, x_train, spec.model_type), y_train, n_classes
        ),
        "test": _metrics(spec, trainer.predict(model, x_test, spec.model_type), y_test, n_classes),
    }
    importance = _importance(encoding, trainer.importance(model, x_train.shape[1]))

    lineage = _lineage(
        store,
        spec,
        selections,
        features,
        frame=frame,
        train_rows=train_rows,
        test_rows=test_rows,
        label_enc=label_enc,
        params=trainer.params(model),
        versions=trainer.versions(),
        metrics=metrics,
        join_keys=join_keys,
    )
    lineage["timings"] = {
        "training_set_seconds": round(join_seconds, 3),
        "fit_seconds": round(fit_seconds, 3),
        "total_seconds": round(time.perf_counter() - began, 3),
    }

    say("saving the model")
    from quiver.jobs.context import critical
    from quiver.ml import artifacts
    from quiver.ml.registry import artifact_path
    from quiver.registry import current_user

    model_root = store.config.model_path
    staging = artifacts.staging_dir(model_root, spec.name)
    published: list[Any] = []
    try:
        checksums = artifacts.write_artifacts(staging, spec.framework, model, encoding)

        def publish(version: int) -> tuple[str, dict[str, str]]:
            final = artifact_path(model_root, spec.name, version)
            meta = {
                "model_id": f"{spec.name}:{version}",
                "name": spec.name,
                "version": version,
                "framework": spec.framework,
                "model_type": spec.model_type,
                "algorithm": spec.algorithm,
                "created_at": datetime.now(UTC).isoformat(),
                "features": [f.to_dict() for f in encoding.features],
                "label": label_enc.to_dict(),
                "library_versions": lineage["library_versions"],
                "files": dict(checksums),
            }
            sha = artifacts.publish_dir(staging, final, meta)
            published.append(final)
            rel = final.relative_to(model_root).as_posix()
            return rel, {**checksums, artifacts.METADATA_FILE: sha}

        # A server that kills the job waits for this step (files moved, version registered).
        with critical():
            version = ModelRegistry(store.registry).create_version(
                spec.name,
                publish=publish,
                framework=spec.framework,
                model_type=spec.model_type,
                algorithm=spec.algorithm,
                description=spec.description,
                spec=spec.to_dict(),
                lineage=lineage,
                metrics=metrics,
                feature_importance=importance,
                training_duration_seconds=round(fit_seconds, 6),
                author=current_user(),
            )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for path in published:
            shutil.rmtree(path, ignore_errors=True)
        raise
    _record_statistics(store, version, train_rows, features)
    say(f"registered {version.model_id}")
    return version


def _record_statistics(
    store: FeatureStore,
    version: ModelVersion,
    train_rows: pa.Table,
    features: list[tuple[str, str, str]],
) -> None:
    """Store the statistics of the training split with the version, by feature reference, for
    the drift checks (:mod:`quiver.monitoring.drift`). A failure is logged: the version stands
    (its drift check then says it has no training statistics)."""
    import logging

    from quiver.monitoring.statistics import compute_statistics, save_training_statistics

    try:
        stats = compute_statistics(
            train_rows,
            {name: dtype for name, _, dtype in features},
            sample_size=store.config.monitoring.sample_size,
        )
        save_training_statistics(
            store.registry,
            version.name,
            version.version,
            rows=train_rows.num_rows,
            features={ref: stats[name] for name, ref, _ in features},
        )
    except Exception:
        logging.getLogger("quiver.ml").exception(
            "storing the training statistics of %s failed", version.model_id
        )


# -- features -----------------------------------------------------------------------------


def _resolve_features(
    store: FeatureStore, spec: TrainingSpec, label_columns: list[str]
) -> list[Any]:
    """Per-view selections (on-demand views included, see
    :class:`~quiver.features.computed.OnDemandSelection`)."""
    if spec.service_name is not None:
        return list(store.resolve_selections(feature_service=spec.service_name))
    if spec.feature_refs is not None:
        return list(store.resolve_selections(features=spec.feature_refs))
    # Default: every feature of the views whose join keys are all in the label table.
    refs = []
    entities = {e.name: e for e in store.list_entities()}
    for view in store.list_feature_views():
        keys = [k for e in view.entities if e in entities for k in entities[e].join_keys]
        if keys and all(k in label_columns for k in keys):
            refs.append(f"{view.name}:*")
    if not refs:
        raise InvalidError(
            f"no feature view is keyed on the columns of '{spec.training_data.entity_df_source}' "
            f"({', '.join(label_columns)}); list the features to train on in 'features'"
        )
    return store.resolve_features(features=refs)


def _feature_columns(selections: list[Any], full_feature_names: bool) -> list[tuple[str, str, str]]:
    from quiver.selection import output_names

    names = output_names(selections, full_feature_names)
    refs = [(f"{s.view.name}:{f.name}", f.dtype) for s in selections for f in s.features]
    out = [(name, ref, dtype) for name, (ref, dtype) in zip(names, refs, strict=True)]
    kinds = {"list": "a list", "map": "a map", "struct": "a struct", "json": "a JSON document"}
    for name, _, dtype in out:
        kind = kinds.get(dtype.split("<", 1)[0])
        if kind is not None:
            raise InvalidError(
                f"feature '{name}' is {kind} ({dtype}); models take scalar features, so leave it "
                "out of the training features (or add a scalar feature computed from it)"
            )
    return out


def _label_encoding(spec: TrainingSpec, values: pa.ChunkedArray) -> LabelEncoding:
    import pyarrow as pa
    import pyarrow.compute as pc

    from quiver.types import dtype_from_arrow

    column = spec.training_data.label_column
    dtype = dtype_from_arrow(values.type)
    if spec.model_type == "regression":
        if dtype not in ("int32", "int64", "float32", "float64", "bool"):
            raise InvalidError(
                f"label '{column}' is {dtype}; a regression label must be numeric "
                "(use model_type: classification for categories)"
            )
        return LabelEncoding(column=column, dtype=dtype)
    if dtype not in ("int32", "int64", "float32", "float64", "bool", "string"):
        raise InvalidError(f"label '{column}' is {dtype}; a class label must be a number or string")
    if dtype in ("float32", "float64"):
        floats = pc.drop_null(values)
        if len(floats) and not pc.all(pc.equal(floats, pc.round(floats))).as_py():
            raise InvalidError(
                f"label '{column}' holds fractional values; use model_type: regression, or "
                "integer/string classes"
            )
    if pa.types.is_dictionary(values.type):
        values = pc.cast(values, pa.string())
    classes = sorted(pc.unique(pc.drop_null(values)).to_pylist())
    if len(classes) < 2:
        found = repr(classes[0]) if classes else "no value"
        raise InvalidError(
            f"label '{column}' has a single class ({found}) in the selected rows"
            + _range_text(spec)
            + "; a classifier needs at least two classes",
            details={"label_column": column, "classes": classes},
        )
    return LabelEncoding(column=column, dtype=dtype, classes=classes)


def _range_text(spec: TrainingSpec) -> str:
    data = spec.training_data
    if data.start_date is None and data.end_date is None:
        return ""
    lo = data.start_date.isoformat() if data.start_date else "the beginning"
    hi = data.end_date.isoformat() if data.end_date else "now"
    return f" between {lo} and {hi}"


# -- split --------------------------------------------------------------------------------


def _split(
    spec: TrainingSpec, frame: pa.Table, label: LabelEncoding
) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = frame.num_rows
    n_test = math.ceil(n * spec.test_size)
    n_train = n - n_test
    if n_test < 1 or n_train < 2:
        raise InvalidError(
            f"{n} rows with test_size {spec.test_size} leave {n_train} training and {n_test} test "
            "rows; use more rows or another test_size"
        )
    if spec.split == "random":
        from sklearn.model_selection import train_test_split

        y = label.encode(frame[label.column]) if label.classes is not None else None
        stratify = None
        if y is not None:
            counts = np.bincount(y)
            if counts[counts > 0].min() >= 2 and n_test >= len(counts):
                stratify = y
        train_idx, test_idx = train_test_split(
            np.arange(n), test_size=n_test, random_state=spec.random_state, stratify=stratify
        )
        return np.sort(train_idx), np.sort(test_idx)

    ts_col = spec.training_data.event_timestamp_column
    micros = np.asarray(
        pc.cast(pc.cast(frame[ts_col], pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(
            zero_copy_only=False
        )
    )
    order = np.argsort(micros, kind="stable")
    cutoff = micros[order[n_train]]
    train_idx = order[micros[order] < cutoff]
    test_idx = order[micros[order] >= cutoff]
    if len(train_idx) < 2:
        raise InvalidError(
            f"the time split needs earlier rows to train on, but {n - len(train_idx)} of {n} rows "
            f"share the cut-off timestamp; use split: random"
        )
    return train_idx, test_idx


# -- metrics ------------------------------------------------------------------------------


def _metrics(spec: TrainingSpec, pred: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, Any]:
    if spec.model_type == "classification":
        return classification_metrics(y, pred, n_classes)
    return regression_metrics(y, pred)


def _finite(value: float) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None


def classification_metrics(y: np.ndarray, proba: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Accuracy, precision, recall, f1, ROC AUC and log loss (binary: of the positive class;
    multiclass: weighted averages). ``roc_auc`` is ``None`` when only one class is present."""
    import numpy as np
    from sklearn import metrics

    pred = np.argmax(proba, axis=1)
    labels = list(range(n_classes))
    average = "binary" if n_classes == 2 else "weighted"
    out: dict[str, Any] = {
        "rows": len(y),
        "accuracy": _finite(metrics.accuracy_score(y, pred)),
        "precision": _finite(
            metrics.precision_score(y, pred, labels=labels, average=average, zero_division=0)
        ),
        "recall": _finite(
            metrics.recall_score(y, pred, labels=labels, average=average, zero_division=0)
        ),
        "f1": _finite(metrics.f1_score(y, pred, labels=labels, average=average, zero_division=0)),
    }
    try:
        if n_classes == 2:
            out["roc_auc"] = _finite(metrics.roc_auc_score(y, proba[:, 1]))
        else:
            out["roc_auc"] = _finite(
                metrics.roc_auc_score(
                    y, proba, multi_class="ovr", average="weighted", labels=labels
                )
            )
    except ValueError:
        out["roc_auc"] = None
    clipped = np.clip(proba, 1e-15, 1 - 1e-15)
    out["log_loss"] = _finite(
        metrics.log_loss(y, clipped / clipped.sum(axis=1, keepdims=True), labels=labels)
    )
    return out


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """MSE, RMSE, MAE and R2."""
    from sklearn import metrics

    mse = float(metrics.mean_squared_error(y, pred))
    r2 = metrics.r2_score(y, pred) if len(y) > 1 else float("nan")
    return {
        "rows": len(y),
        "mse": _finite(mse),
        "rmse": _finite(math.sqrt(mse)),
        "mae": _finite(metrics.mean_absolute_error(y, pred)),
        "r2": _finite(r2),
    }


def _importance(encoding: Encoding, raw: np.ndarray) -> dict[str, float]:
    import numpy as np

    totals: dict[str, float] = {f.name: 0.0 for f in encoding.features}
    owners = []
    for f in encoding.features:
        width = (
            len(f.categories or [])
            if f.kind == "categorical" and encoding.scheme == "onehot"
            else 1
        )
        owners.extend([f.name] * width)
    raw = np.nan_to_num(np.asarray(raw, dtype=float))
    for owner, value in zip(owners, raw, strict=False):
        totals[owner] += abs(float(value))
    total = sum(totals.values())
    if total > 0:
        totals = {k: v / total for k, v in totals.items()}
    ordered = sorted(totals.items(), key=lambda kv: -kv[1])
    return {k: round(v, 6) for k, v in ordered}


# -- lineage ------------------------------------------------------------------------------


def _lineage(
    store: FeatureStore,
    spec: TrainingSpec,
    selections: list[Any],
    features: list[tuple[str, str, str]],
    *,
    frame: pa.Table,
    train_rows: pa.Table,
    test_rows: pa.Table,
    label_enc: LabelEncoding,
    params: dict[str, Any],
    versions: dict[str, str],
    metrics: dict[str, Any],
    join_keys: list[str],
) -> dict[str, Any]:
    import pyarrow.compute as pc

    data = spec.training_data
    view_versions = {
        sel.view.name: store.registry.get_record(sel.view.kind, sel.view.name).version
        for sel in selections
    }
    service = None
    if spec.service_name is not None:
        record = store.registry.get_record("feature_service", spec.service_name)
        service = {"name": spec.service_name, "version": record.version}
    ts = frame[data.event_timestamp_column]

    def _when(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "features": [
            {
                "name": name,
                "ref": ref,
                "dtype": dtype,
                "feature_view": ref.split(":")[0],
                "feature_view_version": view_versions[ref.split(":")[0]],
            }
            for name, ref, dtype in features
        ],
        "feature_views": view_versions,
        "feature_service": service,
        "full_feature_names": spec.full_feature_names,
        "join_keys": join_keys,
        "label_source": data.entity_df_source,
        "label_column": data.label_column,
        "event_timestamp_column": data.event_timestamp_column,
        "time_range": {
            "start_date": _when(data.start_date),
            "end_date": _when(data.end_date),
            "min_timestamp": _when(pc.min(ts).as_py()),
            "max_timestamp": _when(pc.max(ts).as_py()),
            "train_max_timestamp": _when(pc.max(train_rows[data.event_timestamp_column]).as_py()),
            "test_min_timestamp": _when(pc.min(test_rows[data.event_timestamp_column]).as_py()),
        },
        "split": spec.split,
        "test_size": spec.test_size,
        "row_counts": {
            "total": frame.num_rows,
            "train": train_rows.num_rows,
            "test": test_rows.num_rows,
        },
        "label_distribution": {
            "total": _distribution(frame[data.label_column], label_enc),
            "train": _distribution(train_rows[data.label_column], label_enc),
            "test": _distribution(test_rows[data.label_column], label_enc),
        },
        "hyperparameters": {
            "requested": spec.hyperparameters.params,
            "effective": params,
        },
        "library_versions": versions,
        "metrics": metrics,
    }


def _distribution(values: Any, label_enc: LabelEncoding) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if label_enc.classes is not None:
        counts = pc.value_counts(values)
        pairs = dict(
            zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
        )
        return {str(c): int(pairs.get(c, 0)) for c in label_enc.classes}
    floats = pc.cast(values, pa.float64())
    if len(floats) == 0:
        return {"count": 0}
    return {
        "count": len(floats),
        "mean": _finite(pc.mean(floats).as_py()),
        "std": _finite(pc.stddev(floats).as_py() or 0.0),
        "min": _finite(pc.min(floats).as_py()),
        "max": _finite(pc.max(floats).as_py()),
    }
