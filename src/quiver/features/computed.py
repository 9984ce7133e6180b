"""Reading on-demand features: references split into stored inputs and computed outputs.

A request that names an on-demand view (``charges_ratio:charges_per_month``, directly or
through a feature service) is answered in three steps, the same way offline and online:

1. the **base** request: the plainly requested features plus every feature of the on-demand
   views' source views, read as usual (the point-in-time join, or the online store), under
   full names (``view__feature``) so that hidden inputs never clash with outputs;
2. per on-demand view, an input table (its source views' features by feature name, its
   request fields from the entity rows, with their declared Arrow types) goes through
   :func:`~quiver.features.on_demand.run_on_demand`;
3. the output keeps only what was asked for, in first-use order of the views, named as
   ``full_feature_names`` says.

Online, computed values have the status ``present`` and no event time. A request field missing
from the entity rows is an :class:`~quiver.errors.InvalidError` (HTTP 422) naming it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from quiver.definitions import FeatureView, Field, parse_feature_ref
from quiver.errors import InvalidError

if TYPE_CHECKING:
    import pyarrow as pa

    from quiver.features.on_demand import OnDemandFeatureView
    from quiver.offline.retrieval import RetrievalJob
    from quiver.online.serving import OnlineResponse
    from quiver.registry import Registry
    from quiver.selection import ViewSelection
    from quiver.store import FeatureStore

__all__ = [
    "ComputedRefs",
    "OnDemandSelection",
    "get_historical_features",
    "resolve_selections",
    "split_references",
]


@dataclass(frozen=True)
class _Output:
    """One view of the output: a feature view or an on-demand view, with its features."""

    view: str
    fields: tuple[Field, ...]
    names: tuple[str, ...]
    """The output names of ``fields``."""
    on_demand: OnDemandFeatureView | None = None


@dataclass(frozen=True)
class ComputedRefs:
    """A request with on-demand views, split into its base request and its outputs.

    Attributes:
        base_refs: The references read as usual (under full names).
        outputs: The output views, in first-use order.
        inputs: Per on-demand view, its source views' fields (each ``(view, field)``).
    """

    base_refs: tuple[str, ...]
    outputs: tuple[_Output, ...]
    inputs: Mapping[str, tuple[tuple[str, Field], ...]]

    @property
    def feature_names(self) -> list[str]:
        """The output names, in order."""
        return [n for out in self.outputs for n in out.names]

    @property
    def dtypes(self) -> dict[str, str]:
        """Output name -> dtype."""
        return {
            n: f.dtype for out in self.outputs for n, f in zip(out.names, out.fields, strict=True)
        }

    # -- online --------------------------------------------------------------------------------

    def online(self, response: OnlineResponse, entity_rows: Any) -> OnlineResponse:
        """The final response from the base ``response`` (full names) and the entity rows."""
        import pyarrow as pa

        from quiver.features.on_demand import run_on_demand
        from quiver.online._nested import served_array
        from quiver.online.serving import PRESENT, OnlineGroup, OnlineResponse

        where: dict[str, tuple[int, int]] = {}
        for g, group in enumerate(response.groups):
            for p, name in enumerate(group.names):
                where[name] = (g, p)
        n = len(next(iter(response.entity_columns.values()))) if response.entity_columns else 0

        def column(view: str, field: Field) -> pa.Array:
            g, p = where[f"{view}__{field.name}"]
            rows = response.groups[g].rows
            values = [None if row is None else row[p] for row in rows]
            return served_array(values, field.dtype)

        groups: list[Any] = []
        for out in self.outputs:
            if out.on_demand is None:
                g, _ = where[f"{out.view}__{out.fields[0].name}"]
                base = response.groups[g]
                pos = [where[f"{out.view}__{f.name}"][1] for f in out.fields]
                rows = [None if row is None else tuple(row[p] for p in pos) for row in base.rows]
                groups.append(OnlineGroup(out.names, base.statuses, base.event_us, rows))
                continue
            odfv = out.on_demand
            inputs = {f.name: column(v, f) for v, f in self.inputs[odfv.name]}
            request = _request_rows(entity_rows, odfv, n)
            result = run_on_demand(
                odfv, pa.table({**inputs, **request}) if inputs or request else pa.table({})
            )
            wanted = [result.column(f.name).to_pylist() for f in out.fields]
            computed: list[tuple[Any, ...] | None] = list(zip(*wanted, strict=True))
            groups.append(OnlineGroup(out.names, [PRESENT] * n, [None] * n, computed))
        return OnlineResponse(
            self.feature_names,
            response.join_keys,
            response.entity_columns,
            groups,
            self.dtypes,
            response._key_dtypes,
        )


def split_references(
    registry: Registry,
    features: Sequence[str] | str | None,
    feature_service: str | None,
    full_feature_names: bool,
) -> ComputedRefs | None:
    """Split a request that names on-demand views; ``None`` when it names none.

    Raises:
        NotFoundError: an unknown view or feature.
        InvalidError: two outputs would get the same name.
    """
    from quiver.selection import resolve_features

    if (features is None) == (feature_service is None):
        return None  # the usual path reports it
    if feature_service is not None:
        refs = list(registry.get("feature_service", feature_service).features)
    else:
        refs = [features] if isinstance(features, str) else list(features or [])
    if not refs or not all(isinstance(r, str) for r in refs):
        return None
    parsed = [parse_feature_ref(r) for r in refs]
    on_demand_names = set(registry.names("on_demand_feature_view"))
    if not on_demand_names & {v for v, _ in parsed}:
        return None
    plain = [r for r, (v, _) in zip(refs, parsed, strict=True) if v not in on_demand_names]
    selections = {s.view.name: s for s in resolve_features(registry, plain)} if plain else {}
    order: list[str] = []
    wanted: dict[str, list[Field]] = {}
    odfvs: dict[str, OnDemandFeatureView] = {}
    for vname, fname in parsed:
        if vname not in order:
            order.append(vname)
            wanted[vname] = []
        if vname in on_demand_names:
            odfv = odfvs.get(vname) or registry.get("on_demand_feature_view", vname)
            odfvs[vname] = odfv
            fields = list(odfv.features) if fname == "*" else [odfv.feature(fname)]
            for f in fields:
                if f not in wanted[vname]:
                    wanted[vname].append(f)
        else:
            wanted[vname] = list(selections[vname].features)
    inputs: dict[str, tuple[tuple[str, Field], ...]] = {}
    input_refs: list[str] = []
    for name, odfv in odfvs.items():
        pairs = []
        for src in odfv.sources:
            view: FeatureView = registry.get("feature_view", src)
            pairs += [(src, f) for f in view.output_fields]  # aggregated features too
            input_refs.append(f"{src}:*")
        inputs[name] = tuple(pairs)
    outputs = []
    seen: dict[str, str] = {}
    for vname in order:
        names = []
        for f in wanted[vname]:
            name = f"{vname}__{f.name}" if full_feature_names else f.name
            if name in seen:
                raise InvalidError(
                    f"feature '{f.name}' is selected from both '{seen[name]}' and '{vname}'; "
                    "pass full_feature_names=True to get 'view__feature' column names"
                )
            seen[name] = vname
            names.append(name)
        outputs.append(_Output(vname, tuple(wanted[vname]), tuple(names), odfvs.get(vname)))
    base = list(dict.fromkeys([*plain, *input_refs]))
    return ComputedRefs(base_refs=tuple(base), outputs=tuple(outputs), inputs=inputs)


def _request_rows(entity_rows: Any, odfv: OnDemandFeatureView, n: int) -> dict[str, pa.Array]:
    """The view's request fields from the entity rows (a list of dicts, a dict of lists or a
    DataFrame), as typed Arrow arrays."""
    fields = odfv.request_fields
    if not fields:
        return {}
    if isinstance(entity_rows, Mapping):
        columns = {f.name: entity_rows.get(f.name, _MISSING) for f in fields}
    elif isinstance(entity_rows, (list, tuple)):
        columns = {}
        for f in fields:
            if all(isinstance(r, Mapping) and f.name in r for r in entity_rows):
                columns[f.name] = [r[f.name] for r in entity_rows]
            else:
                columns[f.name] = _MISSING
    else:
        table = _as_table(entity_rows)
        columns = {
            f.name: table.column(f.name) if f.name in table.column_names else _MISSING
            for f in fields
        }
    out = {}
    for f in fields:
        values = columns[f.name]
        if values is _MISSING:
            raise InvalidError(
                f"request field '{f.name}' of on-demand feature view '{odfv.name}' is missing "
                "from the entity rows; send it with every row"
            )
        out[f.name] = _typed(values, f, odfv.name)
        if len(out[f.name]) != n:
            raise InvalidError(
                f"request field '{f.name}' has {len(out[f.name])} values for {n} entity rows"
            )
    return out


_MISSING: Any = object()


def _as_table(rows: Any) -> pa.Table:
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        return rows
    module = type(rows).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(rows, preserve_index=False)
    if module == "polars":
        return rows.to_arrow()
    return pa.table(rows)


def _typed(values: Any, field: Field, view: str) -> pa.Array:
    """Request values as an array of the field's Arrow type."""
    import pyarrow as pa

    from quiver.offline.timestamps import normalize_timestamp
    from quiver.types import arrow_type

    target = arrow_type(field.dtype)
    try:
        if isinstance(values, (pa.Array, pa.ChunkedArray)):
            arr = values
        else:
            try:
                return pa.array(list(values), type=target)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arr = pa.array(list(values), from_pandas=True)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if field.dtype == "timestamp":
            return normalize_timestamp(
                pa.chunked_array([arr]), what=f"request field '{field.name}'"
            ).combine_chunks()
        return arr if arr.type == target else arr.cast(target)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise InvalidError(
            f"request field '{field.name}' of on-demand feature view '{view}' must be "
            f"{field.dtype}: {exc}"
        ) from None


# -- offline ---------------------------------------------------------------------------------------


def get_historical_features(
    store: FeatureStore,
    entity_df: Any,
    computed: ComputedRefs,
    *,
    full_feature_names: bool,
    timestamp_column: str,
) -> RetrievalJob:
    """Point-in-time values with on-demand features computed on them (lazily, per batch).

    Raises:
        InvalidError: the entity table lacks a request field, or already has an output column.
    """
    import pyarrow as pa

    from quiver.offline.retrieval import RetrievalJob
    from quiver.offline.retrieval import get_historical_features as base_features
    from quiver.types import arrow_type

    if computed.base_refs:
        base = base_features(
            store,
            entity_df,
            features=list(computed.base_refs),
            full_feature_names=True,
            timestamp_column=timestamp_column,
        )
    else:  # pragma: no cover - an on-demand view always has a source view
        raise InvalidError("an on-demand feature view needs a feature view among its sources")
    entity = base.entity_table
    clash = [n for n in computed.feature_names if n in entity.column_names]
    if clash:
        raise InvalidError(
            f"entity_df already has column(s) {', '.join(repr(c) for c in clash)}, which are "
            "also feature columns of the output; rename them or pass full_feature_names=True"
        )
    for out in computed.outputs:
        if out.on_demand is not None:
            for f in out.on_demand.request_fields:
                if f.name not in entity.column_names:
                    raise InvalidError(
                        f"entity_df has no column '{f.name}', a request field of on-demand "
                        f"feature view '{out.on_demand.name}'"
                    )
    schema = pa.schema(
        [
            pa.field(n, arrow_type(f.dtype))
            for out in computed.outputs
            for n, f in zip(out.names, out.fields, strict=True)
        ]
    )

    def run(batch_size: int) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(
            schema, _batches(base, computed, schema, batch_size)
        )

    return RetrievalJob(
        entity,
        schema,
        run,
        selections=base.selections,
        full_feature_names=full_feature_names,
    )


def _batches(
    base: RetrievalJob, computed: ComputedRefs, schema: pa.Schema, batch_size: int
) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    from quiver.features.on_demand import run_on_demand

    offset = 0
    for batch in base._feature_batches(batch_size):
        n = batch.num_rows
        entity = base.entity_table.slice(offset, n)
        offset += n
        arrays: list[Any] = []
        for out in computed.outputs:
            if out.on_demand is None:
                arrays += [batch.column(f"{out.view}__{f.name}") for f in out.fields]
                continue
            odfv = out.on_demand
            inputs = {f.name: batch.column(f"{v}__{f.name}") for v, f in computed.inputs[odfv.name]}
            request = {
                f.name: _typed(entity.column(f.name), f, odfv.name) for f in odfv.request_fields
            }
            result = run_on_demand(odfv, pa.table({**inputs, **request}))
            arrays += [result.column(f.name).combine_chunks() for f in out.fields]
        yield pa.RecordBatch.from_arrays(
            [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays],
            schema=schema,
        )


# -- selections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnDemandSelection:
    """The features selected from one on-demand view, shaped like a
    :class:`~quiver.selection.ViewSelection` for callers that list features and keys (training,
    the CLI): its join keys are those of its source views.
    """

    view: OnDemandFeatureView
    features: tuple[Field, ...]
    sources: tuple[ViewSelection, ...]

    @property
    def join_keys(self) -> list[str]:
        """The join keys of its source views, in first-use order."""
        return list(dict.fromkeys(k for s in self.sources for k in s.join_keys))

    @property
    def key_types(self) -> dict[str, str]:
        """The dtype of each join key."""
        return {k: t for s in self.sources for k, t in s.key_types.items()}

    @property
    def feature_names(self) -> list[str]:
        """The selected feature names."""
        return [f.name for f in self.features]

    @property
    def request_fields(self) -> list[Field]:
        """The fields each entity row must carry."""
        return self.view.request_fields


def resolve_selections(
    registry: Registry,
    features: Sequence[str] | None = None,
    feature_service: str | None = None,
) -> list[ViewSelection | OnDemandSelection]:
    """:func:`~quiver.selection.resolve_features`, with on-demand views resolved too.

    Raises:
        NotFoundError, InvalidError: as :func:`~quiver.selection.resolve_features`.
    """
    from quiver.selection import ViewSelection, resolve_features

    computed = split_references(registry, features, feature_service, True)
    if computed is None:
        return list(resolve_features(registry, features, feature_service))
    base = {s.view.name: s for s in resolve_features(registry, list(computed.base_refs))}
    out: list[ViewSelection | OnDemandSelection] = []
    for o in computed.outputs:
        if o.on_demand is None:
            b = base[o.view]
            out.append(ViewSelection(b.view, o.fields, b.source, b.entities, b.query_sources))
        else:
            sources = tuple(base[s] for s in o.on_demand.sources)
            out.append(OnDemandSelection(o.on_demand, o.fields, sources))
    return out
