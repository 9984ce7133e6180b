"""Batch and online predictions.

Batch: the input rows (entity keys and a timestamp) are read in chunks; each chunk gets its
features point-in-time correct at each row's timestamp, is encoded with the model's stored
encoding, scored, and appended to the output (Parquet or Iceberg). Memory is bounded by the chunk
size (plus what the offline engine holds for the feature sources). Each job is recorded.

Online: entity keys (features read from the online store) or the feature values themselves. A
missing or expired value is an error listing every such feature, unless the caller opts into the
model's training-time defaults.

Both write the same prediction semantics: ``prediction`` is the positive-class probability for a
binary classifier (the top class's probability for a multiclass one, the value for a regressor),
and ``prediction_class`` (batch: ``<prediction_column>_class``) is the predicted class.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.errors import InvalidError, NotFoundError, QuiverError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

    from quiver.ml.artifacts import LoadedModel
    from quiver.ml.registry import ModelVersion, PredictionJob
    from quiver.store import FeatureStore

__all__ = [
    "DEFAULT_CHUNK_ROWS",
    "MISSING_COLUMN",
    "MISSING_POLICIES",
    "MissingFeaturesError",
    "load_model",
    "predict_batch",
    "predict_online",
]

DEFAULT_CHUNK_ROWS = 250_000
"""Rows scored per chunk in batch prediction."""

MISSING_POLICIES = ("flag", "refuse", "defaults")
"""What a batch prediction does with rows whose features are missing (see :func:`predict_batch`)."""

MISSING_COLUMN = "features_missing"
"""The output column flagging rows scored with missing features."""


class MissingFeaturesError(InvalidError):
    """Features needed for a prediction are missing or expired."""

    error_type = "missing_features"


def load_model(store: FeatureStore, version: ModelVersion) -> LoadedModel:
    """Load a version's artifacts, checking every file's checksum."""
    from quiver.ml.artifacts import load_artifacts

    return load_artifacts(
        store.config.model_path / version.artifact_dir,
        version.checksums,
        model_id=version.model_id,
        framework=version.framework,
        model_type=version.model_type,  # type: ignore[arg-type]
    )


def _outputs(
    loaded: LoadedModel, matrix: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(prediction, class codes or None, probabilities or None) from a model's raw output."""
    import numpy as np

    out = np.asarray(loaded.predict_matrix(matrix))
    if loaded.model_type == "regression":
        return out.astype(np.float64).reshape(-1), None, None
    proba = out.reshape(len(out), -1)
    codes = np.argmax(proba, axis=1)
    pred = proba[:, 1] if proba.shape[1] == 2 else proba[np.arange(len(proba)), codes]
    return pred.astype(np.float64), codes, proba


def _check_feature_views(version: ModelVersion, feature_views: Sequence[str] | None) -> None:
    if not feature_views:
        return
    if isinstance(feature_views, str):
        feature_views = [feature_views]
    trained = list(version.lineage.get("feature_views", {}))
    names = [v.split(":")[0] for v in feature_views]
    unknown = [v for v in names if v not in trained]
    if unknown:
        raise InvalidError(
            f"model '{version.model_id}' was not trained on feature view(s) "
            f"{', '.join(unknown)}; it uses {', '.join(trained)}",
            details={"unknown": unknown, "trained_on": trained},
        )
    lacking = [v for v in trained if v not in names]
    if lacking:
        raise InvalidError(
            f"model '{version.model_id}' also needs feature view(s) {', '.join(lacking)}; "
            "leave feature_views out to use every view the model was trained on"
        )


# -- batch --------------------------------------------------------------------------------


def predict_batch(
    store: FeatureStore,
    version: ModelVersion,
    input: Any,
    output: str | Path,
    *,
    entity_columns: Sequence[str] | None = None,
    timestamp_column: str = "event_timestamp",
    prediction_column: str = "prediction",
    feature_views: Sequence[str] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Callable[[int], None] | None = None,
    author: str | None = None,
    overwrite: bool = True,
    missing: str = "flag",
) -> PredictionJob:
    """Score every row of ``input`` and write the predictions to ``output``.

    A row's features from a view are *missing* when the view had no row for its key in the
    TTL window (the point-in-time join gives nulls for every feature of the view; a stored row
    holding only nulls looks the same). Windowed aggregations (count 0 in an empty window) and
    on-demand features are never missing. Such rows are counted in the job record
    (``rows_missing_features``) and handled by ``missing``, as online predictions are.

    Args:
        store: The feature store.
        version: The model version to use.
        input: A table reference (source name, Parquet/CSV path, Iceberg table) or a pandas /
            polars / Arrow table, holding the join keys and ``timestamp_column``.
        output: A Parquet path, or an Iceberg table (``iceberg:namespace.table``).
        entity_columns: Input columns copied to the output (default: the model's join keys).
        timestamp_column: The input's timestamp column; features are read as of each row's time.
        prediction_column: The name of the prediction column.
        feature_views: Optional check: the feature views the caller expects the model to use.
        chunk_rows: Rows per chunk (bounds memory).
        progress: Called with the number of rows scored so far after each chunk.
        author: Recorded with the job.
        overwrite: Replace an existing output file (otherwise it is a
            :class:`~quiver.errors.ConflictError`, raised before any work).
        missing: ``flag`` (default: score them and set the ``features_missing`` column),
            ``refuse`` (the job fails with :class:`MissingFeaturesError`, nothing is written)
            or ``defaults`` (fill the missing values with each feature's ``default_value``, or
            the model's training-time default, and flag the row).

    Returns:
        The completed job record.

    Raises:
        InvalidError: missing columns, a clash of column names, or views the model does not use.
        ConflictError: the output file exists and ``overwrite`` is false.
        MissingFeaturesError: rows with missing features and ``missing="refuse"``.
    """

    from quiver.definitions import validate_name
    from quiver.jobs.context import critical, current_token
    from quiver.ml import io
    from quiver.ml.registry import ModelRegistry

    if chunk_rows < 1:
        raise InvalidError(f"chunk_rows must be at least 1, got {chunk_rows}")
    if missing not in MISSING_POLICIES:
        raise InvalidError(f"missing={missing!r} must be one of {', '.join(MISSING_POLICIES)}")
    validate_name(prediction_column, "prediction column")
    _check_feature_views(version, feature_views)
    loaded = load_model(store, version)
    join_keys = list(version.lineage.get("join_keys", []))
    keep = list(dict.fromkeys(entity_columns if entity_columns else join_keys))
    keep = [c for c in keep if c != timestamp_column]  # the timestamp is always written
    class_column = f"{prediction_column}_class"
    reserved = {prediction_column, "model_id", "model_version", timestamp_column, MISSING_COLUMN}
    if loaded.model_type == "classification":
        reserved.add(class_column)
    clash = [c for c in keep if c in reserved]
    if clash:
        raise InvalidError(
            f"entity column(s) {', '.join(clash)} clash with the output columns; pick another "
            "prediction_column_name"
        )
    in_memory = io.to_arrow(input, "input")
    if in_memory is None:
        ref = io.resolve_ref(store, str(input), timestamp_column=timestamp_column, what="input")
        chunks: Any = io.iter_input(store, ref, rows=chunk_rows)
    else:
        chunks = io.rechunk(in_memory.to_batches(max_chunksize=chunk_rows), chunk_rows)
        if in_memory.num_rows == 0:
            chunks = iter([in_memory])
    target = io.open_output(store, output, overwrite=overwrite)
    registry = ModelRegistry(store.registry)
    job_id = registry.start_job(
        version,
        mode="batch",
        input=io.describe_input(input),
        output=str(output),
        author=author,
        job_id=current_token(),  # in a worker: the token, so a cancel can find the record
    )
    started = time.perf_counter()
    rows = 0
    gaps = _MissingPolicy(store, loaded, version, missing, join_keys)
    schema: pa.Schema | None = None
    publishing = ExitStack()
    try:
        needed = list(dict.fromkeys([*join_keys, *keep, timestamp_column]))
        for chunk in chunks:
            lacking = [c for c in needed if c not in chunk.column_names]
            if lacking:
                raise InvalidError(
                    f"input '{io.describe_input(input)}' lacks column(s) {', '.join(lacking)}; "
                    f"it needs the join keys ({', '.join(join_keys)}), the timestamp column "
                    f"'{timestamp_column}' and the entity columns; it has "
                    f"{', '.join(chunk.column_names)}"
                )
            if chunk.num_rows == 0:
                continue
            if schema is None:
                seen = {c: chunk.schema.field(c).type for c in keep}
                schema = _output_schema(
                    store, loaded, keep, timestamp_column, prediction_column, seen
                )
            out = _score_chunk(
                store,
                loaded,
                version,
                chunk.select(needed),
                keep=keep,
                timestamp_column=timestamp_column,
                prediction_column=prediction_column,
                schema=schema,
                gaps=gaps,
            )
            target.write(out)
            rows += out.num_rows
            if progress is not None:
                progress(rows)
        # A server killing the job waits from here until the job is recorded as completed.
        publishing.enter_context(critical())
        target.commit(
            schema or _output_schema(store, loaded, keep, timestamp_column, prediction_column, {})
        )
    except BaseException as exc:
        publishing.close()
        target.abort()
        message = exc.message if isinstance(exc, QuiverError) else f"{type(exc).__name__}: {exc}"
        registry.finish_job(
            job_id,
            status="failed",
            rows=rows,
            duration_seconds=time.perf_counter() - started,
            error=message,
            rows_missing_features=gaps.rows,
        )
        raise
    with publishing:
        return registry.finish_job(
            job_id,
            status="completed",
            rows=rows,
            duration_seconds=time.perf_counter() - started,
            rows_missing_features=gaps.rows,
        )


def _output_schema(
    store: FeatureStore,
    loaded: LoadedModel,
    keep: list[str],
    timestamp_column: str,
    prediction_column: str,
    seen: dict[str, pa.DataType],
) -> pa.Schema:
    """The output schema: join keys take their entity's dtype, other entity columns keep the
    type seen in the input (string when the input is empty); timestamps are UTC."""
    import pyarrow as pa

    from quiver.types import arrow_type

    key_types: dict[str, pa.DataType] = {}
    for entity in store.list_entities():
        for key in entity.join_keys:
            key_types[key] = arrow_type(entity.value_type)
    fields = []
    for c in keep:
        kind = key_types.get(c) or seen.get(c) or pa.string()
        if pa.types.is_timestamp(kind):
            kind = pa.timestamp("us", tz="UTC")
        fields.append(pa.field(c, kind))
    fields.append(pa.field(timestamp_column, pa.timestamp("us", tz="UTC")))
    fields.append(pa.field(prediction_column, pa.float64()))
    if loaded.model_type == "classification":
        label = loaded.encoding.label
        assert label is not None
        fields.append(pa.field(f"{prediction_column}_class", arrow_type(label.dtype)))
    fields.append(pa.field("model_id", pa.string()))
    fields.append(pa.field("model_version", pa.int64()))
    fields.append(pa.field(MISSING_COLUMN, pa.bool_()))
    return pa.schema(fields)


def _score_chunk(
    store: FeatureStore,
    loaded: LoadedModel,
    version: ModelVersion,
    entity: pa.Table,
    *,
    keep: list[str],
    timestamp_column: str,
    prediction_column: str,
    schema: pa.Schema,
    gaps: _MissingPolicy,
) -> pa.Table:
    import pyarrow as pa

    job = store.get_historical_features(
        entity,
        features=version.feature_refs,
        full_feature_names=bool(version.lineage.get("full_feature_names", False)),
        timestamp_column=timestamp_column,
    )
    frame, flags = gaps.apply(job.to_arrow())
    matrix = loaded.encoding.encode(frame)
    pred, codes, _ = _outputs(loaded, matrix)
    n = frame.num_rows
    arrays: list[Any] = []
    for field in schema:
        name = field.name
        if name == prediction_column:
            arrays.append(pa.array(pred, type=pa.float64()))
        elif name == f"{prediction_column}_class" and codes is not None:
            label = loaded.encoding.label
            assert label is not None
            arrays.append(label.decode(codes))
        elif name == "model_id":
            arrays.append(pa.array([version.model_id] * n, type=pa.string()))
        elif name == "model_version":
            arrays.append(pa.array([version.version] * n, type=pa.int64()))
        elif name == MISSING_COLUMN:
            arrays.append(flags)
        elif name == timestamp_column:
            arrays.append(frame[name].cast(field.type))
        else:
            col = frame[name]
            arrays.append(col if col.type == field.type else _cast(col, field, name))
    return pa.Table.from_arrays(arrays, schema=schema)


class _MissingPolicy:
    """Finds the rows of a batch whose features are missing and applies the job's policy.

    Attributes:
        rows: Rows with missing features seen so far (for the job record).
    """

    def __init__(
        self,
        store: FeatureStore,
        loaded: LoadedModel,
        version: ModelVersion,
        policy: str,
        join_keys: list[str],
    ) -> None:
        self.policy = policy
        self.version = version
        self.join_keys = join_keys
        self.rows = 0
        windowed = _aggregated_names(store, loaded)
        groups: dict[str, list[str]] = {}
        for f in loaded.encoding.features:
            view = f.ref.split(":", 1)[0]
            if f.name not in windowed and store.registry.find("feature_view", view) is not None:
                groups.setdefault(view, []).append(f.name)
        self.groups = groups
        self.defaults = {**loaded.encoding.defaults, **declared_defaults(store, loaded)}

    def apply(self, frame: pa.Table) -> tuple[pa.Table, pa.Array]:
        """The frame to score (with defaults filled in under ``defaults``) and the flags."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = frame.num_rows
        flags = pa.array([False] * n, pa.bool_())
        masks: dict[str, Any] = {}
        for view, names in self.groups.items():
            mask: Any = None
            for name in names:
                null = pc.is_null(frame.column(name), nan_is_null=False)
                mask = null if mask is None else pc.and_(mask, null)
            if mask is not None and pc.any(mask).as_py():
                masks[view] = mask
                flags = pc.or_(flags, mask)
        if not masks:
            return frame, flags
        count = int(pc.sum(flags).as_py() or 0)
        self.rows += count
        if self.policy == "refuse":
            raise self._error(frame, flags, masks, count)
        if self.policy == "defaults":
            for view, mask in masks.items():
                for name in self.groups[view]:
                    default = self.defaults.get(name)
                    if default is None:
                        continue
                    at = frame.schema.get_field_index(name)
                    col = frame.column(name)
                    filled = pc.if_else(mask, pa.scalar(default).cast(col.type), col)
                    frame = frame.set_column(at, name, filled)
        return frame, flags

    def _error(
        self, frame: pa.Table, flags: Any, masks: dict[str, Any], count: int
    ) -> MissingFeaturesError:
        keys = [k for k in self.join_keys if k in frame.column_names]
        sample = frame.select(keys).filter(flags).slice(0, 5).to_pylist()
        where = "; ".join(", ".join(f"{k}={v}" for k, v in row.items()) for row in sample)
        return MissingFeaturesError(
            f"model '{self.version.model_id}' cannot predict {count} row(s) of this chunk: "
            f"features of {', '.join(masks)} are missing (no row in the TTL window), e.g. "
            f"{where}. Materialize or backfill the data, or set missing to 'flag' (score and "
            "flag them) or 'defaults'",
            details={"rows": count, "views": list(masks), "sample": sample},
        )


def declared_defaults(store: FeatureStore, loaded: LoadedModel) -> dict[str, Any]:
    """The model's features (by its column names) whose fields declare a ``default_value``."""
    out: dict[str, Any] = {}
    views: dict[str, Any] = {}
    for f in loaded.encoding.features:
        view, feature = f.ref.split(":", 1)
        if view not in views:
            views[view] = store.registry.find("feature_view", view) or store.registry.find(
                "on_demand_feature_view", view
            )
        found = views[view]
        if found is None:
            continue
        for field in found.features:
            if field.name == feature and field.default_value is not None:
                out[f.name] = field.default_value
    return out


def _cast(col: Any, field: Any, name: str) -> Any:
    import pyarrow as pa

    try:
        return col.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InvalidError(
            f"input column '{name}' of type {col.type} cannot be written as {field.type}"
        ) from exc


# -- online -------------------------------------------------------------------------------


def _canonical_names(loaded: LoadedModel) -> dict[str, str]:
    """Every accepted spelling of a feature -> the model's column name."""
    names: dict[str, str] = {}
    for f in loaded.encoding.features:
        view, feature = f.ref.split(":", 1)
        for alias in (f.name, f.ref, f"{view}__{feature}"):
            names.setdefault(alias, f.name)
        names.setdefault(feature, f.name)
    return names


def predict_online(
    store: FeatureStore,
    version: ModelVersion,
    *,
    entity_rows: Sequence[Mapping[str, Any]] | None = None,
    features: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    use_defaults: bool = False,
) -> dict[str, Any]:
    """Score entity keys (features from the online store) or given feature values.

    Args:
        store: The feature store.
        version: The model version.
        entity_rows: Join key values per row, e.g. ``[{"customer_id": 42}]``.
        features: Feature values: one mapping, or one per row. Keys are the model's feature
            names (``view:feature`` and ``view__feature`` are accepted too).
        use_defaults: Fill missing or expired values with each feature's ``default_value`` (or,
            where it declares none, the model's training-time default) instead of refusing
            the request.

    Returns:
        ``{"model_id", "model_name", "model_version", "model_type", "predictions": [...]}`` with,
        per row, ``prediction`` and (classifiers) ``prediction_class`` and ``probabilities``,
        plus ``used_defaults`` (the features filled with defaults).

    Raises:
        InvalidError: neither or both inputs, features the model was not trained on.
        MissingFeaturesError: missing or expired features without ``use_defaults``.
    """
    if (entity_rows is None) == (features is None):
        raise InvalidError(
            "give either entity_rows (keys) or features (values), not both or neither"
        )
    loaded = load_model(store, version)
    encoding = loaded.encoding
    join_keys = list(version.lineage.get("join_keys", []))
    if features is not None:
        rows_in = [features] if isinstance(features, Mapping) else list(features)
        if not rows_in:
            raise InvalidError("features is empty; give one mapping of feature values per row")
        rows, statuses = _rows_from_values(version, loaded, rows_in, join_keys)
        keys_out: list[dict[str, Any]] = [{k: r[k] for k in join_keys if k in r} for r in rows_in]
    else:
        rows_req = list(entity_rows or [])
        if not rows_req:
            raise InvalidError("entity_rows is empty; give at least one row of join keys")
        rows, statuses = _rows_from_online(store, version, loaded, rows_req, join_keys)
        keys_out = [dict(r) for r in rows_req]

    problems: list[dict[str, Any]] = []
    for i, row_status in enumerate(statuses):
        bad = {name: s for name, s in row_status.items() if s != "present"}
        if bad:
            problems.append({"row": i, "keys": keys_out[i], "features": bad})
    used_defaults: list[list[str]] = [[] for _ in rows]
    if problems and not use_defaults:
        lines = []
        for p in problems[:5]:
            where = ", ".join(f"{k}={v}" for k, v in p["keys"].items()) or f"row {p['row']}"
            what = ", ".join(f"{n} ({s})" for n, s in p["features"].items())
            lines.append(f"{where}: {what}")
        more = f" and {len(problems) - 5} more rows" if len(problems) > 5 else ""
        raise MissingFeaturesError(
            f"model '{version.model_id}' cannot predict: missing or expired features for "
            + "; ".join(lines)
            + more
            + ". Materialize fresher data, pass the values, or set use_defaults to use the "
            "model's training-time defaults",
            details={"missing": problems},
        )
    if problems:
        defaults = {**encoding.defaults, **declared_defaults(store, loaded)}
        for p in problems:
            for name in p["features"]:
                rows[p["row"]][name] = defaults.get(name)
                used_defaults[p["row"]].append(name)

    table = encoding.table_from_values(rows)
    pred, codes, proba = _outputs(loaded, encoding.encode(table))
    label = encoding.label
    classes = label.classes if label is not None else None
    out_rows = []
    for i in range(len(rows)):
        item: dict[str, Any] = {"prediction": float(pred[i])}
        if codes is not None and classes is not None and proba is not None:
            item["prediction_class"] = classes[int(codes[i])]
            item["probabilities"] = {str(c): float(proba[i, j]) for j, c in enumerate(classes)}
        if keys_out[i]:
            item["entity"] = keys_out[i]
        item["used_defaults"] = used_defaults[i]
        out_rows.append(item)
    return {
        "model_id": version.model_id,
        "model_name": version.name,
        "model_version": version.version,
        "model_type": version.model_type,
        "predictions": out_rows,
    }


def _hint(name: str, options: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _rows_from_values(
    version: ModelVersion,
    loaded: LoadedModel,
    rows_in: list[Mapping[str, Any]],
    join_keys: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    names = _canonical_names(loaded)
    wanted = loaded.encoding.feature_names
    rows: list[dict[str, Any]] = []
    statuses: list[dict[str, str]] = []
    for row in rows_in:
        if not isinstance(row, Mapping):
            raise InvalidError("each row of features must be a mapping of feature name to value")
        unknown = [k for k in row if k not in names and k not in join_keys]
        if unknown:
            hints = [f"'{u}'" + _hint(u, wanted) for u in unknown]
            raise InvalidError(
                f"model '{version.model_id}' was not trained on feature(s) {', '.join(hints)}; "
                f"it takes: {', '.join(wanted)}",
                details={"unknown": unknown, "features": wanted},
            )
        values: dict[str, Any] = {}
        for key, value in row.items():
            if key in names:
                values[names[key]] = value
        rows.append({n: values.get(n) for n in wanted})
        statuses.append({n: ("present" if n in values else "not_found") for n in wanted})
    return rows, statuses


def _rows_from_online(
    store: FeatureStore,
    version: ModelVersion,
    loaded: LoadedModel,
    rows_req: list[Mapping[str, Any]],
    join_keys: list[str],
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    for row in rows_req:
        if not isinstance(row, Mapping):
            raise InvalidError("each entity row must be a mapping of join key to value")
        missing = [k for k in join_keys if k not in row]
        if missing:
            raise InvalidError(
                f"entity row {dict(row)!r} lacks the join key(s) {', '.join(missing)} that "
                f"model '{version.model_id}' needs"
            )
    full = bool(version.lineage.get("full_feature_names", False))
    response = store.get_online_features(
        features=version.feature_refs,
        entity_rows=[dict(r) for r in rows_req],  # keys, and request fields of on-demand views
        full_feature_names=full,
    )
    wanted = loaded.encoding.feature_names
    windowed = _aggregated_names(store, loaded)
    rows: list[dict[str, Any]] = [{} for _ in rows_req]
    statuses: list[dict[str, str]] = [{} for _ in rows_req]
    for name in wanted:
        values = response.values.get(name)
        status = response.statuses.get(name)
        if values is None or status is None:
            raise InvalidError(f"the online store returned no column for feature '{name}'")
        for i in range(len(rows_req)):
            rows[i][name] = values[i]
            statuses[i][name] = str(status[i])
            if name in windowed and statuses[i][name] == "not_found":
                # A key without events in the windows: its values (count 0, nulls) are the
                # ones the offline join gives, so the model takes them as they are.
                statuses[i][name] = "present"
    return rows, statuses


def _aggregated_names(store: FeatureStore, loaded: LoadedModel) -> set[str]:
    """The model's features that are windowed aggregations (their views' only features)."""
    aggregated: dict[str, bool] = {}
    names: set[str] = set()
    for f in loaded.encoding.features:
        view = f.ref.split(":", 1)[0]
        if view not in aggregated:
            try:
                aggregated[view] = bool(store.get_feature_view(view).aggregations)
            except NotFoundError:  # an on-demand view
                aggregated[view] = False
        if aggregated[view]:
            names.add(f.name)
    return names
