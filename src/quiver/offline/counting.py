"""Counting a source's rows without reading them into memory.

Used to bound a request before it does its work: the REST API counts an entity table given by
name or path, and refuses it (413) before the point-in-time join when it is larger than the
request may be. Local Parquet is counted from the files' metadata; CSV and remote files are
scanned by DuckDB without keeping rows, and the scan stops once the count passes ``limit``; an
Iceberg table answers from its snapshot summary (or is scanned the same way).

:func:`estimate_rows` is cheaper still (metadata only, never a scan): what the engines use to
plan a join.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quiver.definitions import FileSource, IcebergSource
from quiver.errors import QuiverError

if TYPE_CHECKING:
    from quiver.config import RepoConfig

__all__ = ["count_rows", "estimate_rows"]


def count_rows(
    config: RepoConfig, source: FileSource | IcebergSource, limit: int | None = None
) -> int:
    """The rows of ``source`` (rows pushed to it included).

    Args:
        config: The repository's settings.
        source: A file or Iceberg source.
        limit: Stop counting once the count is past ``limit`` (the answer is then
            ``limit + 1`` or more, not the exact count).

    Raises:
        NotFoundError: the source's files or table do not exist.
        InvalidError: files that cannot be read as the source's format.
    """
    import duckdb

    from quiver.offline.sources import (
        TimeWindow,
        _open_parts,
        _register_part,
        _translate,
        _view_name,
        quote,
    )

    total = 0
    con = duckdb.connect()
    try:
        for part in _open_parts(config, source):
            room = None if limit is None else max(limit - total, 0) + 1
            if part.kind == "iceberg":
                known = _snapshot_rows(part.table)
                if known is not None:
                    total += known
                    continue
            name = _view_name("count")
            _register_part(
                con,
                part,
                name,
                raw_columns=[],
                raw_hints={},
                ts_raw=source.timestamp_field,
                window=TimeWindow(),
            )
            inner = f"SELECT 1 FROM {quote(name)}" + ("" if room is None else f" LIMIT {room}")
            row = con.execute(f"SELECT count(*) FROM ({inner})").fetchone()
            total += int(row[0]) if row else 0
            if limit is not None and total > limit:
                break
    except duckdb.Error as exc:
        raise _translate(exc, f"data source '{source.name}'") from exc
    finally:
        con.close()
    return total


def _snapshot_rows(table: object) -> int | None:
    """An Iceberg table's row count from its current snapshot's summary (``None``: unknown)."""
    try:
        snapshot = table.current_snapshot()  # type: ignore[attr-defined]
        if snapshot is None:
            return 0
        summary = snapshot.summary
        total = summary.get("total-records") if summary is not None else None
        deletes = summary.get("total-position-deletes") if summary is not None else None
        if total is None or (deletes is not None and int(deletes) > 0):
            return None  # with deletes the summary over-counts: scan instead
        return int(total)
    except (QuiverError, AttributeError, ValueError, TypeError):
        return None


def estimate_rows(config: RepoConfig, source: FileSource | IcebergSource) -> int | None:
    """A cheap estimate of a source's row count from metadata only (``None`` when unknown):
    an Iceberg snapshot's summary, local Parquet footers (CSV: its size / 32), at most 256
    files; never a scan."""
    import os

    import pyarrow.parquet as pq

    from quiver.offline._files import list_files, pushed_files
    from quiver.offline.sources import load_iceberg_table

    try:
        if isinstance(source, IcebergSource):
            snap = load_iceberg_table(config, source).current_snapshot()
            if snap is None or snap.summary is None:
                return 0
            total = snap.summary.get("total-records")
            return int(total) if total is not None else None
        listing = list_files(config, source.path, source.format, what=source.name, must_exist=False)
        extra = pushed_files(config, source)
        if not listing.local or len(listing.files) + len(extra) > 256:
            return None
        pushed = sum(pq.read_metadata(f).num_rows for f in extra)
        if source.format == "csv":
            return sum(os.path.getsize(f) for f in listing.files) // 32 + pushed
        return sum(pq.read_metadata(f).num_rows for f in listing.files) + pushed
    except (QuiverError, OSError, ValueError):
        return None
