"""Materialization: copy the latest row per entity key from the offline source to the online store.

For each feature view, the offline engine computes the latest row per entity key with
``start <= event_timestamp < end`` (:meth:`~quiver.offline.OfflineEngine.pull_latest`, streamed
in record batches) and the rows are written to the online store in batches of
:data:`BATCH_ROWS`, so memory stays bounded by a batch plus what the engine itself needs. The
store keeps the newer row per key, so a run is idempotent and an older row never replaces a
newer one (e.g. one pushed meanwhile).

Each run is recorded in the registry (:mod:`quiver.registry.runs`); a successful run moves the
view's watermark in the online store it wrote to up to ``end``.
:func:`materialize_incremental` resumes every view from its watermark in the configured online
store; a view never materialized starts at ``end - ttl`` (older rows would be expired), or at
the beginning when it has no TTL. A run that fails half-way leaves part of its range in the
store and the watermark where it was, so the next incremental run covers the range again.

**In a background job** (:mod:`quiver.jobs.pool`), a cancel takes effect within a view, and a
view's online rows stay either all from before the run or all from after it:

1. *Read*: the view's rows are pulled, checked and held (in memory up to :data:`HOLD_BYTES`,
   then in a temporary Arrow file); the job's checkpoint is checked before each batch, and a
   cancel here leaves the store untouched.
2. *Write*: on a store that writes in transactions (SQLite: ``write_atomic``) every held batch
   goes into one transaction, the checkpoint is checked between batches, and a cancel rolls it
   back (readers see the old rows until the commit). Redis and DynamoDB cannot roll back many
   batches, so their write, once begun, is finished; while the pool stops it begins only if the
   write speed this process measured says it fits in the grace period left (else the view is
   cancelled, untouched), and with no measurement yet it does not begin.

Views of windowed aggregations hold their tiles the same way; their writes merge into the stored
tile state and are never rolled back, so on every store they begin only under the rule for Redis
and DynamoDB above. Outside a job (CLI, SDK) rows stream straight to the store as described above.

With ``monitoring.statistics`` on (the default), every batch also passes through a
:class:`~quiver.monitoring.statistics.StatisticsCollector`, and a successful run stores the
per-feature statistics of the rows it wrote (:mod:`quiver.monitoring.statistics`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from quiver.definitions import did_you_mean
from quiver.errors import BackendError, InvalidError, NotFoundError, QuiverError
from quiver.quality import ValidationCounts
from quiver.registry.runs import MaterializationRun, finish_run, get_watermark, start_run

if TYPE_CHECKING:
    from quiver.jobs.context import Checkpoint
    from quiver.monitoring.statistics import StatisticsCollector
    from quiver.online.encoding import ViewLayout
    from quiver.quality import ValidationPlan
    from quiver.selection import ViewSelection
    from quiver.store import FeatureStore

__all__ = [
    "BATCH_ROWS",
    "HOLD_BYTES",
    "MaterializationRun",
    "MaterializeProgress",
    "materialize",
    "materialize_incremental",
    "parse_time",
]

logger = logging.getLogger("quiver.materialize")

BATCH_ROWS = 10_000
"""Rows written to the online store per batch (one transaction / one pipeline)."""

HOLD_BYTES = 64 * 2**20
"""Checked rows a ``reject`` run holds in memory before they go to a temporary file."""


class MaterializeProgress(Protocol):
    """Receives progress events; every method is optional (missing ones are not called).

    An exception raised by a method aborts the run, which is then recorded as failed.
    """

    def view_started(self, view: str, start: datetime | None, end: datetime) -> None:
        """A view's run started."""

    def rows_read(self, view: str, rows: int) -> None:
        """A batch of ``rows`` rows was read and held (a background job's run only)."""

    def rows_written(self, view: str, rows: int) -> None:
        """A batch of ``rows`` rows was written."""

    def view_finished(self, run: MaterializationRun) -> None:
        """A view's run ended (``run.status`` says how)."""

    def view_skipped(self, view: str, watermark: datetime) -> None:
        """An incremental run had nothing to do: the watermark is already at ``end``."""


def _notify(progress: Any, event: str, *args: Any) -> None:
    if progress is not None:
        method = getattr(progress, event, None)
        if method is not None:
            method(*args)


def parse_time(value: datetime | date | str, what: str = "time") -> datetime:
    """A UTC ``datetime`` from a datetime (naive = UTC), a date, ``"now"`` or ISO 8601 text.

    Raises:
        InvalidError: anything else.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() == "now":
            return datetime.now(UTC)
        try:
            return parse_time(datetime.fromisoformat(text), what)
        except ValueError:
            pass
    raise InvalidError(
        f"{what} {value!r} is not a time; use ISO 8601 such as 2024-01-31 or "
        "2024-01-31T12:00:00Z, or 'now'"
    )


def _targets(store: FeatureStore, views: Sequence[str] | None) -> list[ViewSelection]:
    from quiver.selection import ViewSelection, query_sources

    registry = store.registry
    if views is None:
        # A view with no features yet (a feature set created before its features) has nothing.
        chosen = [v for v in registry.list("feature_view") if v.online and v.output_fields]
    else:
        if isinstance(views, str):
            views = [views]
        chosen = []
        names = None
        for name in dict.fromkeys(views):
            view = registry.find("feature_view", name) if isinstance(name, str) else None
            if view is None:
                names = names if names is not None else registry.names("feature_view")
                raise NotFoundError(
                    f"feature view '{name}' does not exist in project '{store.project}'"
                    + did_you_mean(str(name), names)
                )
            if not view.online:
                raise InvalidError(
                    f"feature view '{name}' has online=False, so it is not materialized; set "
                    "online=True and apply first"
                )
            if not view.output_fields:
                raise InvalidError(
                    f"feature view '{name}' has no features yet, so there is nothing to "
                    "materialize; add a feature first"
                )
            chosen.append(view)
    out = []
    for view in chosen:
        source = registry.get("data_source", view.source_name)
        entities = tuple(registry.get("entity", e) for e in view.entities)
        joined = query_sources(registry, view)
        out.append(ViewSelection(view, tuple(view.features), source, entities, joined))
    return out


def _layout(store: FeatureStore, sel: ViewSelection) -> ViewLayout:
    from quiver.online.encoding import ViewLayout

    if sel.view.aggregations:  # tiles (quiver.features.tile_store)
        from quiver.features.tile_store import tile_layout

        return tile_layout(store.project, sel.view, sel.entities)
    return ViewLayout.from_selection(store.project, sel)


def materialize(
    store: FeatureStore,
    start: datetime | date | str,
    end: datetime | date | str,
    views: Sequence[str] | None = None,
    *,
    progress: MaterializeProgress | None = None,
) -> list[MaterializationRun]:
    """Copy the latest row per entity key with ``start <= event time < end`` to the online store.

    Args:
        store: The feature store.
        start: Range start (inclusive): a datetime (naive = UTC), a date, ISO text or ``now``.
        end: Range end (exclusive); becomes the views' watermark (it never moves back).
        views: Feature view names (default: every view with ``online=True``).
        progress: Optional :class:`MaterializeProgress` receiving events.

    Returns:
        One succeeded run per view, in order.

    Raises:
        InvalidError: a bad time or range, or a view with ``online=False``.
        NotFoundError: an unknown view (nothing is written then).
        QuiverError: a view's run failed (recorded as failed; earlier views stay done).
    """
    start_dt = parse_time(start, "start")
    end_dt = parse_time(end, "end")
    if start_dt >= end_dt:
        raise InvalidError(f"start {start_dt.isoformat()} must be before end {end_dt.isoformat()}")
    selections = _targets(store, views)
    return [
        _run_view(store, sel, _layout(store, sel), start_dt, end_dt, progress) for sel in selections
    ]


def materialize_incremental(
    store: FeatureStore,
    end: datetime | date | str,
    views: Sequence[str] | None = None,
    *,
    progress: MaterializeProgress | None = None,
) -> list[MaterializationRun]:
    """Materialize each view from its watermark up to ``end``.

    A view without a watermark (never materialized, or its schema changed since) starts at
    ``end - ttl``, or at the beginning of its data when it has no TTL. Views already at
    ``end`` are skipped (no run is recorded).

    Returns:
        The runs made, in view order.
    """
    end_dt = parse_time(end, "end")
    selections = _targets(store, views)
    work = []
    for sel in selections:
        layout = _layout(store, sel)
        mark = get_watermark(store.registry, sel.view.name, layout.version, _store_key(store))
        start: datetime | None
        if mark is None and sel.view.aggregations:  # the tiles a read at end needs
            widest = max(a.time_window for a in sel.view.aggregations)
            start = end_dt - widest - (sel.view.aggregation_interval or widest)
        elif mark is None:
            start = end_dt - sel.view.ttl if sel.view.ttl is not None else None
        else:
            start = mark
        if start is not None and start >= end_dt:
            _notify(progress, "view_skipped", sel.view.name, start)
            continue
        work.append((sel, layout, start))
    return [_run_view(store, sel, layout, start, end_dt, progress) for sel, layout, start in work]


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, QuiverError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


def _run_view(
    store: FeatureStore,
    sel: ViewSelection,
    layout: ViewLayout,
    start: datetime | None,
    end: datetime,
    progress: MaterializeProgress | None,
) -> MaterializationRun:
    from quiver.quality import validation_plan

    view = sel.view.name
    registry = store.registry
    from quiver.jobs.context import current_checkpoint, current_job_id

    checkpoint = current_checkpoint()
    run = start_run(registry, view, start, end, layout.version, _store_key(store), current_job_id())
    began = time.perf_counter()
    rows = 0
    reader = None
    collector = _collector(store, sel)
    plan = None if sel.view.aggregations else validation_plan(sel.view)
    counts = None if plan is None else ValidationCounts(policy=plan.policy)
    try:
        _notify(progress, "view_started", view, start, end)
        online = store.online_store
        if sel.view.aggregations:  # recompute the range's tiles (quiver.features.tile_store)
            from quiver.features.tile_store import TileLayout, materialize_tiles

            assert isinstance(layout, TileLayout)
            staged = None
            if checkpoint is not None:
                staged = _TilesStaged(
                    checkpoint,
                    online.name,
                    view,
                    lambda event, n: _notify(progress, event, view, n),
                )
            rows = materialize_tiles(
                store,
                sel,
                layout,
                start,
                end,
                lambda n: _notify(progress, "rows_written", view, n),
                staged=staged,
            )
            if staged is not None:
                staged.measured()
        else:
            reader = store.offline_engine.pull_latest(sel, start, end)
        batches: Any = reader or ()
        if checkpoint is not None and reader is not None:
            batches = _checked(batches, checkpoint)
        if plan is not None and counts is not None:
            batches = _validated(plan, counts, batches, list(sel.join_keys), spill)
        if checkpoint is not None and reader is not None:
            rows = _write_staged(
                online,
                layout,
                batches,
                collector,
                checkpoint,
                lambda event, n: _notify(progress, event, view, n),
            )
            batches = ()
        for batch in batches:
            if collector is not None:
                collector.add(batch)
            for offset in range(0, batch.num_rows, BATCH_ROWS):
                chunk = batch.slice(offset, BATCH_ROWS)
                rows += online.write(layout, chunk)
                _notify(progress, "rows_written", view, chunk.num_rows)
    except BaseException as exc:
        if reader is not None:
            _close(reader)
        _invalidate(store, view)
        try:
            failed = finish_run(
                registry,
                run,
                rows_written=rows,
                duration_seconds=time.perf_counter() - began,
                error=_error_text(exc),
                validation=counts,
            )
        except QuiverError:
            failed = None  # the registry is down too; the original error matters more
        if failed is not None:
            _notify(progress, "view_finished", failed)
        if isinstance(exc, QuiverError) or not isinstance(exc, Exception):
            raise
        raise BackendError(
            f"materializing feature view '{view}' failed after {rows} rows: "
            f"{_error_text(exc)}; run it again (materialization is idempotent)"
        ) from exc
    _invalidate(store, view)
    features = _statistics(collector, view)
    done = finish_run(
        registry,
        run,
        rows_written=rows,
        duration_seconds=time.perf_counter() - began,
        validation=counts,
    )
    if collector is not None and features is not None:
        _save_statistics(registry, done, collector, features)
        _refresh_drift(store, view)
    _notify(progress, "view_finished", done)
    return done


def _store_key(store: FeatureStore) -> str:
    """The online store's key: watermarks are per view and online store."""
    from quiver.registry.runs import online_store_key

    return online_store_key(store.config)


def _invalidate(store: FeatureStore, view: str) -> None:
    """Drop the serving cache's entries of ``view`` (after its online rows changed)."""
    from quiver.monitoring.cache import invalidate

    with contextlib.suppress(QuiverError):  # a cache that cannot be told expires by its TTL
        invalidate(store, [view])


def _collector(store: FeatureStore, sel: ViewSelection) -> StatisticsCollector | None:
    """A statistics collector for the run, unless ``monitoring.statistics`` is off (or the view
    holds tiles of windowed aggregations, which are not feature values)."""
    settings = store.config.monitoring
    if not settings.statistics or sel.view.aggregations:
        return None
    from quiver.monitoring.statistics import StatisticsCollector

    return StatisticsCollector(
        {f.name: f.dtype for f in sel.features},
        max_rows=settings.statistics_max_rows,
        sample_size=settings.sample_size,
    )


def _statistics(collector: StatisticsCollector | None, view: str) -> dict[str, Any] | None:
    """The run's statistics; a failure is logged and the run stays a success (its rows are in
    the online store)."""
    if collector is None:
        return None
    try:
        return collector.finish()
    except Exception:
        logger.exception("feature statistics of '%s' failed; the run itself succeeded", view)
        return None


def _save_statistics(
    registry: Any, run: MaterializationRun, collector: StatisticsCollector, features: Any
) -> None:
    from quiver.monitoring.statistics import save_view_statistics

    try:
        save_view_statistics(
            registry,
            run,
            rows=collector.rows,
            newest_event_timestamp=collector.newest,
            features=features,
        )
    except QuiverError:
        logger.exception("storing the feature statistics of '%s' failed", run.view)


def _refresh_drift(store: FeatureStore, view: str) -> None:
    """Check again the drift of the models trained on ``view`` (the scores the metrics serve);
    a failure is logged, the run stays a success."""
    from quiver.monitoring.service import refresh_drift

    try:
        refresh_drift(store, view)
    except Exception:
        logger.exception("checking the drift of the models using '%s' failed", view)


def _validated(
    plan: ValidationPlan,
    counts: ValidationCounts,
    batches: Any,
    keys: list[str],
    spill: Any,
) -> Iterator[Any]:
    """The batches to write after the view's validation, with ``counts`` filled in.

    Under ``drop`` and ``warn`` batches stream through. Under ``reject`` nothing may be written
    unless every row passes, so the checked batches are held, in memory up to
    :data:`HOLD_BYTES` and beyond that in a temporary Arrow IPC file (memory stays bounded),
    and written only after the last one passed; a failing row makes the run fail with
    :class:`~quiver.errors.DataValidationError` after every row was counted.
    """
    import pyarrow as pa

    what = "materialization"
    if plan.policy != "reject":
        for batch in batches:
            kept, found = plan.check(pa.Table.from_batches([batch]), keys, what=what)
            counts.add(found)
            yield from kept.to_batches()
        return
    held: list[Any] = []
    size = 0
    writer = None
    with contextlib.ExitStack() as stack:
        for batch in batches:
            _, found = plan.check(pa.Table.from_batches([batch]), keys, what=what)
            counts.add(found)
            if counts.rows_invalid:
                held.clear()
                continue  # the run fails: count the rest, keep nothing
            if writer is None:
                held.append(batch)
                size += batch.nbytes
                if size <= HOLD_BYTES:
                    continue
                path = stack.enter_context(spill())
                writer = stack.enter_context(pa.ipc.new_file(path, batch.schema))
                for kept in held:
                    writer.write_batch(kept)
                held.clear()
            else:
                writer.write_batch(batch)
        if counts.rows_invalid:
            raise counts.error(plan.view, what)
        yield from held
        if writer is not None:
            writer.close()
            source = stack.enter_context(pa.memory_map(str(path)))
            stored = pa.ipc.open_file(source)
            for i in range(stored.num_record_batches):
                yield stored.get_batch(i)


@contextlib.contextmanager
def spill() -> Iterator[Path]:
    """A temporary file for the batches of a ``reject`` run, removed afterwards."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="quiver-validate-") as tmp:
        yield Path(tmp) / "rows.arrow"


def _checked(batches: Any, checkpoint: Checkpoint) -> Iterator[Any]:
    """``batches``, with the job's checkpoint checked before each one is read."""
    for batch in batches:
        checkpoint.check()
        yield batch


class _Held:
    """Record batches held until written: in memory up to :data:`HOLD_BYTES`, then in a
    temporary Arrow IPC file (memory stays bounded)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._memory: list[Any] = []
        self._size = 0
        self._path: Path | None = None
        self._writer: Any = None
        self.rows = 0

    def add(self, batch: Any) -> None:
        import pyarrow as pa

        self.rows += batch.num_rows
        if self._writer is None:
            self._memory.append(batch)
            self._size += batch.nbytes
            if self._size <= HOLD_BYTES:
                return
            self._path = self._stack.enter_context(spill())
            self._writer = self._stack.enter_context(pa.ipc.new_file(self._path, batch.schema))
            batches, self._memory = self._memory, []
            for held in batches:
                self._writer.write_batch(held)
        else:
            self._writer.write_batch(batch)

    def chunks(self) -> Iterator[Any]:
        """The held rows in slices of at most :data:`BATCH_ROWS`."""
        import pyarrow as pa

        batches: Any = self._memory
        if self._writer is not None:
            self._writer.close()
            stored = pa.ipc.open_file(self._stack.enter_context(pa.memory_map(str(self._path))))
            batches = (stored.get_batch(i) for i in range(stored.num_record_batches))
        for batch in batches:
            for offset in range(0, batch.num_rows, BATCH_ROWS):
                yield batch.slice(offset, BATCH_ROWS)


_seconds_per_row: dict[str, float] = {}
"""Write time per row measured in this process, per online store kind (the latest write of
at least :data:`BATCH_ROWS` rows): how long a non-transactional write would take."""


def _write_staged(
    online: Any,
    layout: ViewLayout,
    batches: Any,
    collector: StatisticsCollector | None,
    checkpoint: Checkpoint,
    notify: Any,
) -> int:
    """Hold a view's rows, then write them all or nothing (the module docstring, "In a
    background job"); the rows written."""
    with contextlib.ExitStack() as stack:
        held = _Held(stack)
        for batch in batches:
            if collector is not None:
                collector.add(batch)
            held.add(batch)
            notify("rows_read", batch.num_rows)
        checkpoint.check()

        def counted() -> Iterator[Any]:
            for chunk in held.chunks():
                yield chunk
                notify("rows_written", chunk.num_rows)

        atomic = getattr(online, "write_atomic", None)
        if atomic is not None:
            return int(atomic(layout, counted(), checkpoint.check))
        _check_fits(checkpoint, online.name, held.rows, f"rows of feature view '{layout.view}'")
        began = time.perf_counter()
        rows = sum(online.write(layout, chunk) for chunk in counted())
        if held.rows >= BATCH_ROWS:
            _seconds_per_row[online.name] = (time.perf_counter() - began) / held.rows
        return rows


def _check_fits(checkpoint: Checkpoint, kind: str, rows: int, what: str) -> None:
    """While the pool stops, refuse to begin a write that cannot be rolled back unless the
    write speed measured for ``kind`` says it ends within the grace period left."""
    left = checkpoint.time_left()
    if left is None:
        return
    per_row = _seconds_per_row.get(kind)
    if per_row is None or per_row * rows > left:
        from quiver.errors import JobCancelledError

        raise JobCancelledError(
            f"writing {rows} {what} to the {kind.split('/')[0]} online store would not end "
            f"within the {max(left, 0):.1f} s left to stop in; nothing of the view was written"
        )


class _TilesStaged:
    """The tiles of an aggregated view in a job: pulled with the checkpoint checked before each
    batch and held (:class:`_Held`), then written only if the write may begin
    (:func:`_check_fits`; tile writes merge into stored state, so they are never rolled back)."""

    def __init__(self, checkpoint: Checkpoint, store_kind: str, view: str, notify: Any) -> None:
        self.checkpoint = checkpoint
        self.kind = f"{store_kind}/tiles"
        self.view = view
        self.notify = notify
        self._began: float | None = None
        self._rows = 0

    def __call__(self, reader: Any) -> Iterator[Any]:
        with contextlib.ExitStack() as stack:
            held = _Held(stack)
            for batch in _checked(reader, self.checkpoint):
                held.add(batch)
                self.notify("rows_read", batch.num_rows)
            self.checkpoint.check()
            _check_fits(self.checkpoint, self.kind, held.rows, f"tile rows of '{self.view}'")
            self._began, self._rows = time.perf_counter(), held.rows
            yield from held.chunks()

    def measured(self) -> None:
        """Record the write speed of a finished write (of at least :data:`BATCH_ROWS` rows)."""
        if self._began is not None and self._rows >= BATCH_ROWS:
            _seconds_per_row[self.kind] = (time.perf_counter() - self._began) / self._rows


def _close(reader: Any) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):  # best effort: the run already failed
            close()
