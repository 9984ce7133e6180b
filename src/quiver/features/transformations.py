"""SQL transformations of feature views: which columns they read, and running them on rows.

A field with a ``transformation`` is computed from its source row's own columns (after the
source's ``field_mapping``; the event and created timestamps under their column names, as
naive UTC microseconds). The same :class:`ViewTransform` runs it everywhere, in the SQL sandbox
(:mod:`quiver.features.sql`), on rows the engine has already read:

* offline, on the source rows of the join's time window, before the ``ASOF`` match;
* at materialization, on the latest row per key, before the write;
* on push, on the pushed rows (which carry the source's columns, not the computed values).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quiver.definitions import did_you_mean
from quiver.errors import InvalidError, QuiverError

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.config import RepoConfig
    from quiver.definitions import FeatureView, Field, FileSource, IcebergSource
    from quiver.features.sql import ParsedExpression

__all__ = ["ViewTransform", "check_source_columns", "view_transform"]


@dataclass(frozen=True)
class ViewTransform:
    """The transformations among some features of one view.

    Attributes:
        view: The view's name.
        features: The selected features, in order.
        computed: Feature name -> its checked expression, for the transformed ones.
        inputs: The source columns the expressions read, timestamps excluded.
        ts_name: The event timestamp's column name (after ``field_mapping``).
        created_name: The created timestamp's column name, if the source has one.
    """

    view: str
    features: tuple[Field, ...]
    computed: Mapping[str, ParsedExpression]
    inputs: tuple[str, ...]
    ts_name: str
    created_name: str | None

    @property
    def plain(self) -> list[str]:
        """The selected features read as they are."""
        return [f.name for f in self.features if f.name not in self.computed]

    def source_columns(self, key_types: Mapping[str, str]) -> dict[str, str | None]:
        """What to read from the source: keys and plain features typed, inputs as they are."""
        columns: dict[str, str | None] = dict(key_types)
        for f in self.features:
            if f.name not in self.computed:
                columns[f.name] = f.dtype
        for c in self.inputs:
            columns.setdefault(c, None)
        return columns

    def apply(
        self, table: pa.Table, keep: Sequence[str], *, ts: str, created: str | None
    ) -> pa.Table:
        """``keep`` (plain features included by the caller), then every computed feature.

        Args:
            table: Source rows with the inputs, ``keep`` and the normalized timestamps.
            keep: Columns passed through unchanged.
            ts: The column of ``table`` holding the normalized event timestamp.
            created: The column holding the normalized created timestamp, if any.
        """
        import pyarrow as pa

        from quiver.features.sql import evaluate

        inputs = table
        for name, column in ((self.ts_name, ts), (self.created_name, created)):
            if name and column and name != column and name in self._reads:
                if name in inputs.column_names:
                    inputs = inputs.drop_columns([name])
                inputs = inputs.append_column(name, table.column(column))
        outputs = {
            f.name: (self.computed[f.name], f.dtype)
            for f in self.features
            if f.name in self.computed
        }
        result = evaluate(
            inputs, outputs, keep, what=f"transformation in feature view '{self.view}'"
        )
        if result.num_rows == 0 and table.num_rows == 0:
            return result
        return pa.Table.from_arrays(result.columns, names=result.column_names)

    @property
    def _reads(self) -> set[str]:
        return {c for expr in self.computed.values() for c in expr.columns}

    def apply_batches(
        self,
        reader: Iterator[pa.RecordBatch],
        keep: Sequence[str],
        *,
        ts: str,
        created: str | None,
    ) -> Iterator[pa.RecordBatch]:
        """:meth:`apply` on each batch of ``reader``."""
        import pyarrow as pa

        for batch in reader:
            if batch.num_rows == 0:
                continue
            out = self.apply(pa.Table.from_batches([batch]), keep, ts=ts, created=created)
            yield from out.to_batches()


def view_transform(
    view: FeatureView,
    features: Sequence[Field],
    source: FileSource | IcebergSource,
) -> ViewTransform | None:
    """The transformations among ``features`` of ``view`` (``None`` when there are none)."""
    from quiver.features.sql import parse_expression

    computed = {
        f.name: parse_expression(
            f.transformation, f"transformation of feature '{f.name}' in view '{view.name}'"
        )
        for f in features
        if f.transformation is not None
    }
    if not computed:
        return None
    mapping = source.field_mapping
    ts_name = mapping.get(source.timestamp_field, source.timestamp_field)
    created = source.created_timestamp_field
    created_name = mapping.get(created, created) if created else None
    inputs: list[str] = []
    for expr in computed.values():
        for c in expr.columns:
            if c not in inputs and c not in (ts_name, created_name):
                inputs.append(c)
    return ViewTransform(
        view=view.name,
        features=tuple(features),
        computed=computed,
        inputs=tuple(inputs),
        ts_name=ts_name,
        created_name=created_name,
    )


def check_source_columns(
    config: RepoConfig,
    view: FeatureView,
    source: FileSource | IcebergSource,
    query_sources: Sequence[FileSource | IcebergSource] = (),
) -> None:
    """Refuse transformations that read a column the view's rows do not have, and a source
    query that fails on its source or does not return the view's plain features.

    A source that cannot be read yet (no files) is not checked: the columns are then checked
    when rows are first read.

    Raises:
        InvalidError: naming the feature, the column and the columns there are.
    """
    tx = view_transform(view, view.features, source)
    if tx is None and view.source_query is None:
        return
    import duckdb

    from quiver.offline.sources import _all_columns

    con = duckdb.connect()
    try:
        columns = _all_columns(con, config, source)
    except (QuiverError, duckdb.Error, OSError):
        return  # not readable yet: checked when rows are first read
    finally:
        con.close()
    where = f"data source '{source.name}'"
    if view.source_query is not None:
        try:
            columns = _query_columns(config, view, source, query_sources)
        except QuiverError as exc:
            if "source query" in exc.message:
                raise
            return  # a joined source is not readable yet
        where = f"the source query of feature view '{view.name}'"
        plain = [f.name for f in view.features if f.transformation is None]
        missing = [n for n in plain if n not in columns]
        if missing:
            raise InvalidError(
                f"{where} returns no column '{missing[0]}'; it returns: {', '.join(columns)}"
            )
    if tx is None:
        return
    known = [*columns, tx.ts_name] + ([tx.created_name] if tx.created_name else [])
    for name, expr in tx.computed.items():
        for c in expr.columns:
            if c not in known:
                raise InvalidError(
                    f"transformation of feature '{name}' in feature view '{view.name}' reads "
                    f"column '{c}', which {where} does not have"
                    + did_you_mean(c, known)
                    + f"; its columns are: {', '.join(known)}"
                )


def _query_columns(
    config: RepoConfig,
    view: FeatureView,
    source: FileSource | IcebergSource,
    query_sources: Sequence[FileSource | IcebergSource],
) -> list[str]:
    """The columns a view's source query returns (run on no rows of its sources' schemas)."""
    from quiver.features.sql import parse_query, run_query

    what = f"source query of feature view '{view.name}'"
    empty = {
        n: t.schema.empty_table() for n, t in _query_inputs(config, source, query_sources).items()
    }
    query = parse_query(view.source_query or "", tuple(empty), what)
    return run_query(query, empty, what=what).column_names


def _query_inputs(
    config: RepoConfig,
    source: FileSource | IcebergSource,
    query_sources: Sequence[FileSource | IcebergSource],
) -> dict[str, pa.Table]:
    """Every row of the tables a source query reads, by name: the view's source (its event
    timestamp required) and the joined sources as they are (a dimension table needs none)."""
    from quiver.offline.sources import read_table, scan_source

    tables = {source.name: scan_source(config, source).read_all()}
    for other in query_sources:
        tables.setdefault(other.name, read_table(config, other))
    return tables


def input_columns(view: FeatureView) -> set[str]:
    """The source columns the view's transformations read (timestamps included)."""
    from quiver.features.sql import parse_expression

    return {
        c
        for f in view.features
        if f.transformation is not None
        for c in parse_expression(f.transformation, f"transformation of feature '{f.name}'").columns
    }


_SOURCE_TYPES: dict[tuple[str, str], dict[str, pa.DataType]] = {}
"""(repo, source spec hash) -> column -> Arrow type, read once per process."""


def _source_types(config: RepoConfig, source: FileSource | IcebergSource) -> dict[str, pa.DataType]:
    """The Arrow types of a source's columns (after ``field_mapping``); empty if unreadable."""
    from quiver.offline.sources import scan_source

    key = (str(config.repo_path), source.spec_hash())
    found = _SOURCE_TYPES.get(key)
    if found is None:
        try:
            reader = scan_source(config, source)
            found = {f.name: f.type for f in reader.schema}
            reader.close()
        except QuiverError:
            return {}
        _SOURCE_TYPES[key] = found
    return found


def _as_source_type(column: Any, target: pa.DataType | None, name: str, view: str) -> Any:
    """A pushed input column as the source's type when it came as text (JSON) or nulls, so the
    expression sees what it sees offline; other columns are used as given."""
    import pyarrow as pa

    from quiver.offline.timestamps import normalize_timestamp

    if target is None or pa.types.is_null(target) or column.type == target:
        return column
    if not (pa.types.is_string(column.type) or pa.types.is_null(column.type)):
        return column
    try:
        if pa.types.is_timestamp(target):
            return normalize_timestamp(column, what=f"pushed column '{name}'")
        return column.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, InvalidError) as exc:
        raise InvalidError(
            f"push to feature view '{view}': column '{name}' cannot be read as the source's "
            f"{target}: {exc}"
        ) from None


def push_tables(
    target: Any, rows: Any, config: RepoConfig | None = None
) -> tuple[pa.Table, pa.Table]:
    """Pushed source rows -> (the online rows with computed features, the rows to append to
    the offline source: its own columns, so that reading them computes the same values).

    ``target`` is serving's push target (view, layout, source). Pushed rows carry every join
    key, every plain feature and every input column of the transformations; computed features
    are not pushed.

    Raises:
        InvalidError: a missing or unknown column, or a value an expression cannot take.
    """
    import pyarrow as pa

    from quiver.online._push import _as_arrow, _push_table
    from quiver.online.encoding import CREATED_TS, EVENT_TS

    view, source = target.view, target.source
    tx = view_transform(view, view.features, source)
    assert tx is not None
    table = _as_arrow(rows, view.name)
    computed_only = [n for n in tx.computed if n not in tx.inputs]
    pushed = [n for n in computed_only if n in table.column_names]
    if pushed:
        expr = tx.computed[pushed[0]]
        raise InvalidError(
            f"push to feature view '{view.name}': feature '{pushed[0]}' is computed by its "
            f"transformation ({expr.text}); push its input columns instead: "
            + ", ".join(expr.columns)
        )
    missing = [c for c in tx.inputs if c not in table.column_names]
    if missing:
        raise InvalidError(
            f"push to feature view '{view.name}': missing column(s) {', '.join(missing)}, "
            "read by the view's transformations (use None for a missing value)"
        )
    # The plain part goes through push's own checks (computed features as nulls); the
    # inputs that are not plain features are carried beside it.
    plain_names = set(tx.plain) | set(target.layout.join_keys)
    given = {
        n: table.column(n)
        for n in table.column_names
        if n in plain_names or (n not in tx.inputs and n not in tx.computed)
    }
    for n in tx.computed:
        given[n] = pa.nulls(table.num_rows)
    checked = _push_table(target, pa.table(given))
    types = _source_types(config, source) if config is not None else {}
    raw = {c: _as_source_type(table.column(c), types.get(c), c, view.name) for c in tx.inputs}
    inputs = checked.drop_columns([n for n in tx.computed])
    for c in tx.inputs:
        if c not in inputs.column_names:
            inputs = inputs.append_column(c, raw[c])
    keep = [*target.layout.join_keys, *tx.plain, EVENT_TS, CREATED_TS]
    computed = tx.apply(inputs, keep, ts=EVENT_TS, created=CREATED_TS)
    online = {n: computed.column(n) for n in keep}
    layout = target.layout
    from quiver.types import arrow_type

    for name, dtype in zip(layout.feature_names, layout.feature_dtypes, strict=True):
        if name in tx.computed:
            online[name] = computed.column(name).cast(arrow_type(dtype))
    online_table = pa.table(
        {n: online[n] for n in [*layout.join_keys, *layout.feature_names, EVENT_TS, CREATED_TS]}
    )
    offline: dict[str, Any] = {n: checked.column(n) for n in layout.join_keys}
    for n in tx.plain:
        offline[n] = checked.column(n)
    for c in tx.inputs:
        if c not in offline:
            offline[c] = raw[c]
    offline[tx.ts_name] = checked.column(EVENT_TS)
    if tx.created_name:
        offline[tx.created_name] = checked.column(CREATED_TS)
    return online_table, pa.table(offline)


def check_plan_columns(
    config: RepoConfig, changes: Sequence[Any], source_of: Callable[[str], Any]
) -> None:
    """:func:`check_source_columns` for every created or updated feature view of a plan.

    Args:
        config: The repo config (to read the sources).
        changes: The plan's object changes.
        source_of: Data source name -> the object in the plan's desired state (or ``None``).
    """
    from quiver.definitions import FeatureView

    for change in changes:
        if change.kind != "feature_view" or change.action not in ("create", "update"):
            continue
        spec = change.new_spec or {}
        if not spec.get("source_query") and not any(
            f.get("transformation") for f in spec.get("features", [])
        ):
            continue
        view = FeatureView.from_spec(spec)
        source = source_of(view.source_name)
        joined = []
        if view.source_query is not None:
            from quiver.features.sql import parse_query

            tables = parse_query(view.source_query, None).tables
            joined = [source_of(t) for t in tables if t != view.source_name]
        if source is not None and all(s is not None for s in joined):
            check_source_columns(config, view, source, joined)


def view_select(
    cur: Any,
    config: RepoConfig,
    view: FeatureView,
    source: FileSource | IcebergSource,
    columns: Mapping[str, str | None],
    *,
    window: Any,
    roles: Mapping[str, str] | None = None,
    query_sources: Sequence[FileSource | IcebergSource] = (),
) -> Any:
    """:func:`~quiver.offline.sources.source_select` of the rows a view reads: its source's,
    or, with a ``source_query``, the query's result.

    The query runs in the SQL sandbox over every row of the source and of the other sources it
    reads (``query_sources``; ``field_mapping`` applied, pushed rows included, timestamps as
    naive UTC), so it gives the same rows whatever range is read; the result is then read like
    a source (the time window, casts, missing columns named). Those rows must fit in memory.

    Raises:
        InvalidError: the query fails, or its result lacks a column the view needs.
    """
    from quiver.offline.sources import _Part, source_select

    if view.source_query is None:
        return source_select(cur, config, source, columns, window=window, roles=roles)
    from quiver.features.sql import parse_query, run_query

    what = f"source query of feature view '{view.name}'"
    rows = _query_inputs(config, source, query_sources)
    query = parse_query(view.source_query, tuple(rows), what)
    result = run_query(query, rows, what=what)
    mapping = source.field_mapping
    created = source.created_timestamp_field
    flat = source.model_copy(
        update={
            "field_mapping": {},
            "timestamp_field": mapping.get(source.timestamp_field, source.timestamp_field),
            "created_timestamp_field": mapping.get(created, created) if created else None,
        }
    )
    part = _Part("arrow", table=result, label=what)
    return source_select(cur, config, flat, columns, window=window, roles=roles, parts=[part])
