"""Push: fresh rows validated against a view's schema, written to the online store (newer
wins, as with materialization) and/or appended to the view's offline source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from quiver.definitions import did_you_mean
from quiver.errors import InvalidError, NotFoundError
from quiver.monitoring.cache import invalidate
from quiver.online._plans import _cache, _PushTarget
from quiver.online.encoding import CREATED_TS, EVENT_TS, ViewLayout
from quiver.types import arrow_type, is_list, is_nested

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.quality import ValidationCounts
    from quiver.store import FeatureStore


def _push_target(store: FeatureStore, view: str) -> _PushTarget:
    cache = _cache(store)
    target = cache.targets.get(view)
    if target is not None:
        return target
    registry = store.registry
    if not isinstance(view, str):
        raise InvalidError(f"push needs a feature view name, got {type(view).__name__}")
    generation = cache.generation
    fv = registry.find("feature_view", view)
    if fv is None:
        raise NotFoundError(
            f"feature view '{view}' does not exist in project '{store.project}'"
            + did_you_mean(view, registry.names("feature_view"))
        )
    entities = [registry.get("entity", e) for e in fv.entities]
    source = registry.get("data_source", fv.source_name)
    from quiver.quality import validation_plan

    layout = ViewLayout.from_view(store.project, fv, entities)
    target = _PushTarget(fv, layout, source, validation_plan(fv))
    if cache.generation == generation:
        cache.targets[view] = target
    return target


class PushResult(int):
    """The number of rows written (an ``int``), with what the view's validation found.

    Attributes:
        validation: The counts (:class:`~quiver.quality.ValidationCounts`), or ``None`` when
            the view declares no validation rules.
    """

    validation: ValidationCounts | None

    def __new__(cls, rows: int, validation: ValidationCounts | None = None) -> PushResult:
        obj = super().__new__(cls, rows)
        obj.validation = validation
        return obj


def push(
    store: FeatureStore,
    view: str,
    rows: Any,
    *,
    to: Literal["online", "offline", "both"] = "online",
) -> PushResult:
    """Validate fresh rows of ``view`` and write them to the online and/or offline store.

    Args:
        store: The feature store.
        view: The feature view's name.
        rows: A pandas or polars DataFrame, an Arrow table or batch, a list of dicts, or a
            dict of lists. Columns: every join key, every feature of the view, and optionally
            the event timestamp (the source's ``timestamp_field`` or ``event_timestamp``;
            default: now) and the created timestamp (default: now). A view with SQL
            transformations takes the columns they read instead of the computed features.
        to: ``online`` (default), ``offline`` (append to the view's source) or ``both``.

    Returns:
        The number of rows pushed (a :class:`PushResult`, which also carries the validation
        counts when the view declares rules).

    Raises:
        NotFoundError: the view does not exist.
        InvalidError: ``to`` is not one of the three, the view is not online, or the rows do
            not match the view's schema (nothing is written then).
        DataValidationError: a row fails the view's validation rules under the ``reject``
            policy (nothing is written then).
    """
    found = _prepare(store, view, rows, to)
    return found if isinstance(found, PushResult) else _write(store, found)


def push_many(
    store: FeatureStore,
    pushes: Sequence[tuple[str, Any]],
    *,
    to: Literal["online", "offline", "both"] = "online",
) -> list[PushResult]:
    """Push rows to several views (a push source feeding them): every view's rows are checked
    (schema and validation rules) before any is written, so a refusal writes nothing.

    Args:
        store: The feature store.
        pushes: ``(view, rows)`` pairs, as :func:`push` takes them.
        to: ``online``, ``offline`` or ``both``.

    Returns:
        One :class:`PushResult` per pair, in order.

    Raises:
        NotFoundError, InvalidError, DataValidationError: as :func:`push`, before any write.
    """
    found = [_prepare(store, view, rows, to) for view, rows in pushes]
    return [p if isinstance(p, PushResult) else _write(store, p) for p in found]


@dataclass
class _Prepared:
    """Checked rows of one push, ready to write."""

    view: str
    target: _PushTarget
    table: pa.Table
    source_rows: pa.Table | None
    counts: ValidationCounts | None
    to: str


def _prepare(store: FeatureStore, view: str, rows: Any, to: str) -> _Prepared | PushResult:
    """The rows of a push, converted and checked (a :class:`PushResult` when nothing is left
    to write)."""
    if to not in ("online", "offline", "both"):
        raise InvalidError(f"push: to={to!r} must be 'online', 'offline' or 'both'")
    target = _push_target(store, view)
    if target.view.source_query is not None:
        raise InvalidError(
            f"feature view '{view}' reads a source query, which pushed rows would bypass; push "
            f"them to its source '{target.source.name}' (through a view of it, to='offline') "
            "and materialize"
        )
    if isinstance(rows, (list, tuple)) and not rows:
        return PushResult(0)
    if to != "offline" and not target.view.online:
        raise InvalidError(
            f"feature view '{view}' has online=False, so it has no online data; set "
            "online=True and apply, or push with to='offline'"
        )
    source_rows = None
    if any(f.transformation is not None for f in target.view.features):
        from quiver.features.transformations import push_tables

        table, source_rows = push_tables(target, rows, store.config)
    else:
        table = _push_table(target, rows)
    counts = None
    if target.validation is not None:
        table, source_rows, counts = _validate(target, table, source_rows)
    if table.num_rows == 0:
        return PushResult(0, counts)
    return _Prepared(view, target, table, source_rows, counts, to)


def _write(store: FeatureStore, p: _Prepared) -> PushResult:
    """Write checked rows where the push asked."""
    view, target, table, source_rows, counts, to = (
        p.view,
        p.target,
        p.table,
        p.source_rows,
        p.counts,
        p.to,
    )
    if to in ("offline", "both"):
        from quiver.offline.sources import append_to_source

        if source_rows is None:
            source_rows = _source_table(target, table)
        append_to_source(store.config, target.source, source_rows)
    if to in ("online", "both") and target.view.aggregations:  # events into their tiles
        from quiver.features.tile_store import push_tiles, tile_layout

        entities = [store.registry.get("entity", e) for e in target.view.entities]
        layout = tile_layout(store.project, target.view, entities)
        created = target.source.created_timestamp_field is not None
        push_tiles(store.online_store, layout, target.view, table, created=created)
    elif to in ("online", "both"):
        try:
            store.online_store.write(target.layout, table)
        finally:  # after the write (even a partial one): cached reads of the view are stale
            invalidate(store, [view])
    return PushResult(table.num_rows, counts)


def _validate(
    target: _PushTarget, table: pa.Table, source_rows: pa.Table | None
) -> tuple[pa.Table, pa.Table | None, ValidationCounts]:
    """Apply the view's validation to pushed rows (and the matching offline rows)."""
    import pyarrow as pa

    plan = target.validation
    assert plan is not None
    if plan.policy == "drop" and source_rows is not None:
        index = "__qv_row"
        numbered = table.append_column(index, pa.array(range(table.num_rows), pa.int64()))
        kept, counts = plan.evaluate(numbered, list(target.layout.join_keys), what="push")
        source_rows = source_rows.take(kept.column(index))
        return kept.drop_columns([index]), source_rows, counts
    kept, counts = plan.evaluate(table, list(target.layout.join_keys), what="push")
    return kept, source_rows, counts


def _as_arrow(rows: Any, view: str, nested: Mapping[str, str] | None = None) -> pa.Table:
    """``rows`` as Arrow; Python values of the ``nested`` columns (name -> map, struct or
    ``json`` dtype) are read by their dtype, not inferred."""
    import pyarrow as pa

    nested = nested or {}

    try:
        if isinstance(rows, pa.Table):
            return rows
        if isinstance(rows, pa.RecordBatch):
            return pa.Table.from_batches([rows])
        if isinstance(rows, Mapping):
            return pa.table({k: _py_array(v, k, view, nested.get(k)) for k, v in rows.items()})
        if isinstance(rows, (list, tuple)):
            names: list[str] = []
            for i, row in enumerate(rows):
                if not isinstance(row, Mapping):
                    raise InvalidError(
                        f"push to feature view '{view}': row {i} is {type(row).__name__}, "
                        "not a dict"
                    )
                for k in row:
                    if k not in names:
                        names.append(k)
            for i, row in enumerate(rows):
                if len(row) != len(names):
                    missing = [k for k in names if k not in row]
                    raise InvalidError(
                        f"push to feature view '{view}': row {i} lacks {', '.join(missing)}"
                    )
            return pa.table(
                {k: _py_array([r[k] for r in rows], k, view, nested.get(k)) for k in names}
            )
        module = type(rows).__module__.split(".")[0]
        if module == "pandas":
            own = [c for c in rows.columns if c in nested]  # dicts read by dtype, not inferred
            table = pa.Table.from_pandas(rows.drop(columns=own), preserve_index=False)
            for c in own:
                table = table.append_column(c, _py_array(rows[c].tolist(), c, view, nested[c]))
            return table
        if module == "polars":
            return rows.to_arrow()
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidError(f"push to feature view '{view}': cannot read the rows: {exc}") from exc
    raise InvalidError(
        f"push to feature view '{view}': rows must be a pandas or polars DataFrame, an Arrow "
        f"table, a list of dicts or a dict of lists, not {type(rows).__name__}"
    )


def _py_array(values: Any, column: str, view: str, dtype: str | None = None) -> pa.Array:
    import pyarrow as pa

    if dtype is not None:
        from quiver.online._nested import nested_array

        return nested_array(
            list(values), dtype, f"push to feature view '{view}': column '{column}'"
        )
    try:
        return pa.array(list(values), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidError(
            f"push to feature view '{view}': column '{column}' mixes value types ({exc})"
        ) from None


def _compatible(src: pa.DataType, dtype: str) -> bool:
    import pyarrow as pa
    import pyarrow.types as t

    if t.is_null(src):
        return True
    if t.is_dictionary(src):
        src = src.value_type
    if is_list(dtype):
        return (t.is_list(src) or t.is_large_list(src)) and _compatible(src.value_type, dtype[5:-1])
    if dtype in ("int32", "int64"):
        return t.is_integer(src)
    if dtype in ("float32", "float64"):
        return t.is_integer(src) or t.is_floating(src) or t.is_decimal(src)
    if dtype == "string":
        return t.is_string(src) or t.is_large_string(src)
    if dtype == "bool":
        return t.is_boolean(src)
    if dtype == "timestamp":
        return t.is_timestamp(src) or t.is_date(src) or t.is_string(src) or src == pa.string()
    return False  # pragma: no cover


def _coerce(arr: Any, dtype: str, column: str, view: str) -> Any:
    import pyarrow as pa

    if is_nested(dtype):
        return _coerce_nested(arr, dtype, column, view)
    if not _compatible(arr.type, dtype):
        raise InvalidError(
            f"push to feature view '{view}': column '{column}' is {arr.type}, but it must be "
            f"{dtype}"
        )
    target = arrow_type(dtype)
    try:
        if pa.types.is_dictionary(arr.type):
            arr = arr.cast(arr.type.value_type)
        # Timestamps may lose sub-microsecond digits (pandas writes nanoseconds).
        timestamps = dtype == "timestamp" or dtype == "list<timestamp>"
        return arr.cast(target, safe=not timestamps)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise InvalidError(
            f"push to feature view '{view}': column '{column}' cannot be read as {dtype}: {exc}"
        ) from None


def _coerce_nested(arr: Any, dtype: str, column: str, view: str) -> Any:
    """A map, struct or ``json`` column from a frame or table: as is when it has the dtype's
    Arrow type, else through its Python values (checked by :func:`nested_array`)."""
    import pyarrow as pa

    from quiver.online._nested import nested_array

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    target = arrow_type(dtype)
    what = f"push to feature view '{view}': column '{column}'"
    if dtype != "json" and arr.type == target:
        return arr
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), target)
    values = arr.to_pylist(maps_as_pydicts="lossy") if pa.types.is_map(arr.type) else None
    return nested_array(values if values is not None else arr.to_pylist(), dtype, what)


def _push_table(target: _PushTarget, rows: Any) -> pa.Table:
    """The rows as an Arrow table of join keys, features, event and created timestamps."""
    import pyarrow as pa

    layout, source, view = target.layout, target.source, target.view.name
    nested = {
        n: d
        for n, d in zip(layout.feature_names, layout.feature_dtypes, strict=True)
        if is_nested(d)
    }
    table = _as_arrow(rows, view, nested)
    names = table.schema.names
    if len(set(names)) != len(names):
        raise InvalidError(f"push to feature view '{view}': a column name appears twice")
    mapping = source.field_mapping
    ts, created = source.timestamp_field, source.created_timestamp_field
    event_names = list(dict.fromkeys([mapping.get(ts, ts), ts, EVENT_TS]))
    created_names = list(
        dict.fromkeys([c for c in (mapping.get(created or "", created), created, CREATED_TS) if c])
    )
    allowed = {*layout.join_keys, *layout.feature_names, *event_names, *created_names}
    unknown = [c for c in names if c not in allowed]
    if unknown:
        raise InvalidError(
            f"push to feature view '{view}': unknown column(s) {', '.join(unknown)}; the view "
            f"takes {', '.join([*layout.join_keys, *layout.feature_names])} and "
            f"'{event_names[0]}'"
        )
    missing = [c for c in (*layout.join_keys, *layout.feature_names) if c not in names]
    if missing:
        raise InvalidError(
            f"push to feature view '{view}': missing column(s) {', '.join(missing)}; rows need "
            "every join key and every feature of the view (use None for a missing value)"
        )
    n = table.num_rows
    out: dict[str, Any] = {}
    for key, dtype in zip(layout.join_keys, layout.key_dtypes, strict=True):
        col = _coerce(table.column(key), dtype, key, view)
        if col.null_count:
            raise InvalidError(f"push to feature view '{view}': join key '{key}' has nulls")
        out[key] = col
    for name, dtype in zip(layout.feature_names, layout.feature_dtypes, strict=True):
        out[name] = _coerce(table.column(name), dtype, name, view)
    now = datetime.now(UTC)
    out[EVENT_TS] = _timestamp_column(table, event_names, n, now, view, "event")
    out[CREATED_TS] = _timestamp_column(table, created_names, n, now, view, "created")
    return pa.table(out)


def _timestamp_column(
    table: pa.Table, candidates: list[str], n: int, now: datetime, view: str, what: str
) -> Any:
    import pyarrow as pa

    found = [c for c in candidates if c in table.schema.names]
    if len(found) > 1:
        raise InvalidError(
            f"push to feature view '{view}': give the {what} timestamp once "
            f"(found {', '.join(found)})"
        )
    if not found:
        return pa.array([now] * n, type=arrow_type("timestamp"))
    col = _coerce(table.column(found[0]), "timestamp", found[0], view)
    if col.null_count:
        raise InvalidError(f"push to feature view '{view}': column '{found[0]}' has nulls")
    return col


def _source_table(target: _PushTarget, table: pa.Table) -> pa.Table:
    """The pushed rows for the offline append: keys and features under their own names, the
    timestamps under the names the source's ``field_mapping`` gives them."""
    import pyarrow as pa

    source = target.source
    columns: dict[str, Any] = {
        name: table.column(name)
        for name in (*target.layout.join_keys, *target.layout.feature_names)
    }
    ts = source.timestamp_field
    columns[source.field_mapping.get(ts, ts)] = table.column(EVENT_TS)
    created = source.created_timestamp_field
    if created:
        columns[source.field_mapping.get(created, created)] = table.column(CREATED_TS)
    return pa.table(columns)
