"""Usage counts: how often each feature, view, feature service and model is read.

A server counts in memory (:class:`UsageRecorder`, kept on its store): an online read adds one
to a counter of the resolved request (its features, views and service are listed once per
resolved request, not per call), an online prediction one to its model. Every
``monitoring.usage_flush_seconds`` (and when the server stops) the counts are added to the
registry's ``usage_counts`` table, one row per (project, UTC day, kind, name), with an
additive upsert: never a write per request, and ``quiver serve --workers N`` is right because
each worker adds its own counts. Reads by the SDK and the CLI are not counted.

:func:`usage_report` answers ``GET /monitoring/usage`` and ``quiver usage``.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from quiver.errors import BackendError, InvalidError
from quiver.registry.tables import metadata

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from quiver.registry import Registry

__all__ = ["KINDS", "UsageRecorder", "UsageRow", "recorder_of", "usage_counts", "usage_report"]

KINDS = ("feature", "feature_view", "feature_service", "model")
"""What usage is counted of."""

usage_counts = sa.Table(
    "usage_counts",
    metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("requests", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows", sa.BigInteger, nullable=False, server_default="0"),
)
"""Reads per project, UTC day, kind and name (created by migration 0008)."""

ATTR = "_quiver_usage"
"""Where a store keeps its recorder (``None`` or absent: not counted)."""

_SLOT = "_usage_slot"
Items = tuple[tuple[str, str], ...]


class UsageRecorder:
    """Counts reads in memory; :meth:`flush` adds them to the registry.

    Each counted thing (a resolved request, a model) has a slot ``[requests, rows, requests
    written, rows written]``; a read adds to its first two items (no lock: on CPython an
    in-place add of an int list item is not interrupted by another thread), and a flush writes
    the difference with the last two, then moves them up. Counts are given the UTC day of the
    flush that writes them.

    Args:
        url: The registry URL (written on an engine of the recorder's own, as the audit log).
        project: The project.
    """

    def __init__(self, url: str, project: str) -> None:
        self.url = url
        self.project = project
        self._slots: list[tuple[Any, Items, list[int]]] = []
        self._by_items: dict[Items, list[int]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._engine: Engine | None = None

    def _new_slot(self, owner: Any, items: Items) -> list[int]:
        slot = [0, 0, 0, 0]
        with self._lock:
            self._slots.append((owner, items, slot))
        return slot

    def record(self, items: Items, rows: int) -> None:
        """Count one read of ``items`` (``(kind, name)`` pairs) for ``rows`` entity rows."""
        slot = self._by_items.get(items)
        if slot is None:
            with self._lock:
                slot = self._by_items.get(items)
                if slot is None:
                    slot = self._by_items[items] = [0, 0, 0, 0]
                    self._slots.append((None, items, slot))
        slot[0] += 1
        slot[1] += rows

    def record_online(self, store: Any, plan: Any, features: Any, service: Any, rows: int) -> None:
        """Count one online read of a resolved request (``plan``)."""
        found = plan.__dict__.get(_SLOT)
        if found is None or found[0] is not self:
            items = online_items(store, features, service)
            found = plan.__dict__[_SLOT] = (self, self._new_slot(weakref.ref(plan), items))
        slot = found[1]
        slot[0] += 1
        slot[1] += rows

    def _deltas(self) -> list[tuple[Items, list[int], int, int]]:
        with self._lock:
            slots = list(self._slots)
        out = []
        for _, items, slot in slots:
            n, r = slot[0] - slot[2], slot[1] - slot[3]
            if n:
                out.append((items, slot, n, r))
        return out

    def pending(self) -> dict[tuple[date, str, str], tuple[int, int]]:
        """The counts not flushed yet, by (day, kind, name)."""
        return _expand(self._deltas(), _today())

    def flush(self) -> int:
        """Add the counts to the registry; returns how many rows were written. On failure the
        counts stay for the next flush.

        Raises:
            BackendError: the registry write failed.
        """
        with self._flush_lock:
            deltas = self._deltas()
            rows = _expand(deltas, _today())
            if rows:
                try:
                    self._write(rows)
                except Exception as exc:
                    raise BackendError(f"usage counts could not be written: {exc}") from exc
                for _, slot, n, r in deltas:
                    slot[2] += n
                    slot[3] += r
            with self._lock:  # the slots of resolved requests gone (registry changes), flushed
                self._slots = [
                    e
                    for e in self._slots
                    if e[0] is None or e[0]() is not None or e[2][0] != e[2][2]
                ]
            return len(rows)

    def _write(self, rows: dict[tuple[date, str, str], tuple[int, int]]) -> None:
        engine = self.engine
        values = [
            {
                "project": self.project,
                "day": day,
                "kind": kind,
                "name": name,
                "requests": n,
                "rows": r,
            }
            for (day, kind, name), (n, r) in sorted(rows.items())
        ]
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        stmt = insert(usage_counts)
        stmt = stmt.on_conflict_do_update(
            index_elements=["project", "day", "kind", "name"],
            set_={
                "requests": usage_counts.c.requests + stmt.excluded.requests,
                "rows": usage_counts.c.rows + stmt.excluded.rows,
            },
        )
        with engine.begin() as conn:
            conn.execute(stmt, values)

    @property
    def engine(self) -> Engine:
        """The recorder's own engine (writes do not disturb the registry's caches)."""
        if self._engine is None:
            from quiver.registry._registry import make_engine

            self._engine = make_engine(self.url)
        return self._engine

    def close(self) -> None:
        """Flush (best effort) and release the engine."""
        with contextlib.suppress(BackendError):
            self.flush()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()


def _today() -> date:
    return datetime.now(UTC).date()


def _expand(
    deltas: list[tuple[Items, list[int], int, int]], day: date
) -> dict[tuple[date, str, str], tuple[int, int]]:
    out: dict[tuple[date, str, str], tuple[int, int]] = {}
    for items, _, n, r in deltas:
        for kind, name in items:
            old = out.get((day, kind, name), (0, 0))
            out[(day, kind, name)] = (old[0] + n, old[1] + r)
    return out


def online_items(store: Any, features: Sequence[str] | None, service: str | None) -> Items:
    """The features, views and service an online read of ``features``/``service`` reads."""
    from quiver.errors import QuiverError
    from quiver.selection import resolve_features

    found: dict[tuple[str, str], None] = {}
    if service is not None:
        found["feature_service", service] = None
    try:
        for sel in resolve_features(store.registry, features, service):
            found["feature_view", sel.view.name] = None
            for field in sel.features:
                found["feature", f"{sel.view.name}:{field.name}"] = None
    except QuiverError:  # computed (on-demand) features: the references as they are written
        for ref in features or ():
            view, _, name = ref.partition(":")
            found["feature_view", view] = None
            if name and name != "*":
                found["feature", ref] = None
    return tuple(found)


def recorder_of(store: Any) -> UsageRecorder | None:
    """The recorder of a served store (or of the store a scoped store wraps), if any."""
    found = store.__dict__.get(ATTR)
    if found is None:
        inner = store.__dict__.get("_store")
        found = None if inner is None else inner.__dict__.get(ATTR)
    return found


def record_model(store: Any, model: str, rows: int) -> None:
    """Count one online prediction of ``model`` (when the store is served with usage on)."""
    recorder = recorder_of(store)
    if recorder is not None:
        recorder.record(_model_items(model), rows)


_MODEL_ITEMS: dict[str, Items] = {}


def _model_items(model: str) -> Items:
    found = _MODEL_ITEMS.get(model)
    if found is None:
        if len(_MODEL_ITEMS) > 10_000:
            _MODEL_ITEMS.clear()
        found = _MODEL_ITEMS[model] = (("model", model),)
    return found


@dataclass(frozen=True)
class UsageRow:
    """Reads of one object in a date range."""

    kind: str
    name: str
    requests: int
    rows: int

    def to_dict(self) -> dict[str, Any]:
        """As JSON."""
        return {"kind": self.kind, "name": self.name, "requests": self.requests, "rows": self.rows}


def usage_report(
    registry: Registry,
    start_date: date | None = None,
    end_date: date | None = None,
    kind: str | None = None,
) -> list[UsageRow]:
    """Reads per object between two UTC days (both included), most read first.

    Args:
        registry: The registry (its project is reported).
        start_date: The first day (default: no bound).
        end_date: The last day (default: no bound).
        kind: Only this kind (``feature``, ``feature_view``, ``feature_service``, ``model``).

    Raises:
        InvalidError: ``start_date`` after ``end_date``, or an unknown kind.
        BackendError: the registry cannot be read.
    """
    if start_date is not None and end_date is not None and start_date > end_date:
        raise InvalidError(f"start_date {start_date} is after end_date {end_date}")
    if kind is not None and kind not in KINDS:
        raise InvalidError(f"unknown usage kind '{kind}'; use one of {', '.join(KINDS)}")
    t = usage_counts
    query = (
        sa.select(t.c.kind, t.c.name, sa.func.sum(t.c.requests), sa.func.sum(t.c.rows))
        .where(t.c.project == registry.project)
        .group_by(t.c.kind, t.c.name)
    )
    if start_date is not None:
        query = query.where(t.c.day >= start_date)
    if end_date is not None:
        query = query.where(t.c.day <= end_date)
    if kind is not None:
        query = query.where(t.c.kind == kind)
    try:
        with registry.engine.connect() as conn:
            found = conn.execute(query).all()
    except sa.exc.SQLAlchemyError as exc:
        raise BackendError(f"registry read (usage counts) failed: {exc}") from exc
    rows = [UsageRow(k, n, int(r or 0), int(w or 0)) for k, n, r, w in found]
    order = {k: i for i, k in enumerate(KINDS)}
    rows.sort(key=lambda u: (order.get(u.kind, 9), -u.requests, u.name))
    return rows
