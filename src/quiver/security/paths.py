"""The file boundary of the REST API: the folders a caller may read, the one it may write to.

The CLI and the SDK, run by the repository's owner, read and write wherever the owner says. A
REST caller is somebody else, so every path it gives (an entity table, a training or prediction
input, an output file, the path of a data source it registers) goes through a
:class:`FileBoundary` first:

- relative paths are relative to the repository root, as everywhere in Quiver; the path is then
  resolved, symlinks included, and must lie inside a read root to be read
  (``server.read_roots``, default the data directory; the write root is readable too), inside
  the write root to be written (``server.write_root``, default ``outputs/``);
- the server's own files are never read or written: the registry's and the online store's
  databases, Iceberg SQL catalogs and ``quiver.yaml``; a directory or a glob that would take one
  in is refused, and so is one holding a file that resolves outside the roots;
- writes never land on a registered data source's files, rows pushed to sources, the model
  directory or an Iceberg warehouse, and never replace an existing file unless asked to;
- ``s3://`` is refused unless its bucket (or ``bucket/prefix``) is listed in
  ``server.s3_buckets``.

A refusal is a :class:`~quiver.errors.ForbiddenError` (403) naming the root. Messages quote only
the caller's own path text and the roots, never anything read from a file, nor where a link
leads.

SDK users can check a path the same way: ``FileBoundary(store.config).readable("data/x.csv")``.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import os
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver._paths import check_path_text, user_path
from quiver.errors import (
    BackendError,
    ConflictError,
    ForbiddenError,
    InvalidError,
    NotFoundError,
)

if TYPE_CHECKING:
    from quiver.config import RepoConfig
    from quiver.store import FeatureStore

__all__ = ["FileBoundary", "os_error"]

_GLOB = re.compile(r"[*?\[]")
_SQLITE = "sqlite:///"
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
_CLIENT_OS_ERRORS = frozenset(
    {errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ELOOP, errno.EINVAL}
)


@dataclass(frozen=True)
class _Guarded:
    """A file or folder of the server's own that the API does not touch."""

    path: Path
    what: str


def _shown(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def os_error(exc: OSError, what: str, path: str) -> Exception:
    """An OS error about a client's path: their mistake (422) or the server's (503)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _CLIENT_OS_ERRORS:
        return InvalidError(f"{what} {_shown(path)!r} cannot be used: {reason}")
    return BackendError(f"{what} {_shown(path)!r}: {reason}")


def _within(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _glob_split(text: str) -> tuple[str, str]:
    """``text`` split into the folder before its first glob character and the pattern after."""
    parts = text.replace("\\", "/").split("/")
    for i, part in enumerate(parts):
        if _GLOB.search(part):
            return "/".join(parts[:i]), "/".join(parts[i:])
    return text, ""


class FileBoundary:
    """Where a REST caller may read and write files (see the module docstring).

    Args:
        config: The repository's settings (``server.read_roots``, ``server.write_root``,
            ``server.s3_buckets`` and the paths of the server's own files).
        sources: Returns the registered data sources, whose files no write may touch
            (:meth:`of` reads them from the store's registry).
    """

    def __init__(
        self, config: RepoConfig, sources: Callable[[], Iterable[Any]] | None = None
    ) -> None:
        self.config = config
        self.repo = config.repo_path.resolve()
        server = config.server
        self.write_root = config.resolve(server.write_root).resolve()
        roots = server.read_roots
        read = [config.resolve(r) for r in roots] if roots is not None else [config.data_path]
        self.read_roots: tuple[Path, ...] = tuple(
            dict.fromkeys([*(p.resolve() for p in read), self.write_root])
        )
        self.s3_prefixes: tuple[str, ...] = tuple(
            e.split("://", 1)[-1].strip("/") for e in server.s3_buckets if e.strip("/ ")
        )
        self._sources = sources or (lambda: ())

    @classmethod
    def of(cls, store: FeatureStore) -> FileBoundary:
        """The boundary of ``store``'s repository (registered sources read when writing)."""
        return cls(store.config, lambda: [r.obj for r in store.registry.records("data_source")])

    # -- what is guarded ------------------------------------------------------------------------

    @cached_property
    def internal(self) -> tuple[_Guarded, ...]:
        """The server's own files: never read nor written by a REST caller."""
        config = self.config
        out = [_Guarded(self.repo / "quiver.yaml", "the repository's settings (quiver.yaml)")]
        databases: list[tuple[str, str]] = [(config.registry_url, "the registry's database")]
        if config.online_store.type == "sqlite":
            path = str(config.resolve(config.online_store.path))
            databases.append((_SQLITE + path, "the online store's database"))
        for name, catalog in config.iceberg.catalogs.items():
            if catalog.type == "sql":
                databases.append((catalog.uri, f"Iceberg catalog '{name}'"))
        for url, what in databases:
            if url.startswith(_SQLITE) and ":memory:" not in url:
                db = config.resolve(url[len(_SQLITE) :]).resolve()
                out.extend(_Guarded(db.with_name(db.name + s), what) for s in _SQLITE_SUFFIXES)
        return tuple(out)

    def _write_guarded(self) -> list[_Guarded]:
        """Everything no write may land on or inside: the internal files, the model directory,
        pushed rows, Iceberg warehouses and every registered file source's files."""
        from quiver.definitions import FileSource
        from quiver.offline.sources import PUSHED_DIR

        config = self.config
        out = list(self.internal)
        out.append(_Guarded(config.model_path.resolve(), "the model directory"))
        out.append(_Guarded((config.data_path / PUSHED_DIR).resolve(), "rows pushed to sources"))
        for name, catalog in config.iceberg.catalogs.items():
            if catalog.warehouse and "://" not in catalog.warehouse:
                where = config.resolve(catalog.warehouse).resolve()
                out.append(_Guarded(where, f"the warehouse of Iceberg catalog '{name}'"))
        for source in self._sources():
            if isinstance(source, FileSource) and "://" not in source.path:
                base, _ = _glob_split(source.path)
                try:
                    where = config.resolve(base or ".").resolve()
                except (OSError, InvalidError):  # a path no file system takes: no files
                    continue
                out.append(_Guarded(where, f"the files of data source '{source.name}'"))
        return out

    # -- reads ----------------------------------------------------------------------------------

    def readable(self, text: str, what: str = "path", *, must_exist: bool = True) -> str:
        """A path a REST caller may read: an absolute local path, glob, or an allowed S3 URI.

        Args:
            text: The caller's path (a file, a folder or a glob; relative to the repo root).
            what: The request field, for messages.
            must_exist: Raise :class:`NotFoundError` for a local path (not a glob) that does
                not exist.

        Raises:
            ForbiddenError: outside the read roots (after resolving links), the server's own
                files, a folder or glob taking one in, or S3 outside ``server.s3_buckets``.
            InvalidError: path text no file system takes.
            NotFoundError: a missing local path (with ``must_exist``).
        """
        check_path_text(text, what)
        if "://" in text:
            return self._s3(text, what, write=False)
        base_text, pattern = _glob_split(text)
        base = self._absolute(base_text or ".", text, what)
        self._inside_read_roots(base, base_text or ".", text, what)
        if pattern:
            full = str(base / pattern)
            for guarded in self.internal:
                if fnmatch.fnmatch(str(guarded.path), full):
                    raise self._internal_error(text, what, guarded)
            for match in glob.iglob(full, recursive=True):
                self._check_read_file(Path(match), text, what)
            return full
        for guarded in self.internal:
            if base == guarded.path:
                raise self._internal_error(text, what, guarded)
        try:
            if base.is_dir():
                self._check_folder(base, text, what)
            elif must_exist and not base.exists():
                raise NotFoundError(f"{what} {_shown(text)!r} does not exist (looked at {base})")
        except OSError as exc:
            raise os_error(exc, what, text) from exc
        return str(base)

    def check_source(self, source: Any, what: str | None = None) -> None:
        """Refuse a data source a REST caller registers whose files it may not read.

        Iceberg sources name a table of a catalog in ``quiver.yaml`` and pass. The path need not
        exist yet (files may arrive after the source is registered).
        """
        path = getattr(source, "path", None)
        if isinstance(path, str):
            label = what or f"data source '{getattr(source, 'name', '?')}': path"
            self.readable(path, label, must_exist=False)

    def _inside_read_roots(self, path: Path, base_text: str, text: str, what: str) -> None:
        if any(_within(path, root) for root in self.read_roots):
            return
        roots = ", ".join(str(r) for r in self.read_roots)
        lexical = Path(os.path.normpath(self.repo / Path(base_text).expanduser()))
        if any(_within(lexical, root) for root in self.read_roots):
            reason = "is a link that leads outside the folders the API reads"
        else:
            reason = "is outside the folders the API reads"
        raise ForbiddenError(
            f"{what} {_shown(text)!r} {reason} ({roots}); put the file under one of them, or "
            "ask the server's owner to add a root (server.read_roots)",
            details={"read_roots": [str(r) for r in self.read_roots]},
        )

    def _check_read_file(self, path: Path, text: str, what: str) -> None:
        """A file a folder or glob takes in: inside the roots after links, not internal."""
        try:
            resolved = path.resolve()
        except OSError as exc:
            raise os_error(exc, what, text) from exc
        for guarded in self.internal:
            if resolved == guarded.path:
                raise self._internal_error(text, what, guarded)
        if not any(_within(resolved, root) for root in self.read_roots):
            roots = ", ".join(str(r) for r in self.read_roots)
            raise ForbiddenError(
                f"{what} {_shown(text)!r} takes in a file that leads outside the folders the "
                f"API reads ({roots}); name the files to read, or remove the link",
                details={"read_roots": [str(r) for r in self.read_roots]},
            )

    def _check_folder(self, folder: Path, text: str, what: str) -> None:
        for root, _dirs, names in os.walk(folder):
            for name in names:
                self._check_read_file(Path(root) / name, text, what)

    def _internal_error(self, text: str, what: str, guarded: _Guarded) -> ForbiddenError:
        return ForbiddenError(
            f"{what} {_shown(text)!r} is or holds {guarded.what}; the API never reads or "
            "writes the server's own files",
        )

    # -- writes ---------------------------------------------------------------------------------

    def writable(
        self,
        text: str | None,
        what: str = "output_path",
        *,
        prefix: str = "output",
        overwrite: bool = False,
    ) -> str:
        """A file a REST caller may write: an absolute path in the write root, or allowed S3.

        Its folder is created. The caller writes it atomically (a temporary file, then a
        rename: :func:`quiver._paths.publish_file`).

        Args:
            text: The caller's path (relative to the repo root), or ``None`` for a new file
                ``<write_root>/<prefix>-<time>-<id>.parquet``.
            what: The request field, for messages.
            prefix: The name prefix of a default file.
            overwrite: Whether an existing file may be replaced.

        Raises:
            ForbiddenError: outside the write root (after resolving links), or on a file or
                inside a folder the server guards (registry, online store, a data source's
                files, pushed rows, models, Iceberg warehouses); S3 outside
                ``server.s3_buckets``.
            ConflictError: the file exists and ``overwrite`` is false.
            InvalidError: a folder, a glob, or path text no file system takes.
        """
        if text is None:
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            target = self.write_root / f"{prefix}-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            self._make_parent(target, what, str(target))
            return str(target)
        check_path_text(text, what)
        if "://" in text:
            return self._s3(text, what, write=True, overwrite=overwrite)
        if _GLOB.search(text):
            raise InvalidError(f"{what} {_shown(text)!r} is a pattern; give one file path")
        target = self._absolute(text, text, what)
        if not _within(target, self.write_root):
            lexical = Path(os.path.normpath(self.repo / Path(text).expanduser()))
            leads = "is a link that leads" if _within(lexical, self.write_root) else "is"
            raise ForbiddenError(
                f"{what} {_shown(text)!r} {leads} outside the folder the API writes to "
                f"({self.write_root}); write under it (relative paths are relative to the "
                f"repository, e.g. '{os.path.relpath(self.write_root, self.repo)}/x.parquet')",
                details={"write_root": str(self.write_root)},
            )
        for guarded in self._write_guarded():
            if _within(target, guarded.path):
                raise ForbiddenError(
                    f"{what} {_shown(text)!r} is or is inside {guarded.what}; the API never "
                    "writes there"
                )
        try:
            if target.is_dir():
                raise InvalidError(
                    f"{what} {_shown(text)!r} is a directory; give a .parquet file path"
                )
            if target.exists() and not overwrite:
                raise ConflictError(
                    f"{what} {_shown(text)!r} already exists; send overwrite: true to replace "
                    "it, or choose another path",
                    details={"path": str(target)},
                )
        except OSError as exc:
            raise os_error(exc, what, text) from exc
        self._make_parent(target, what, text)
        return str(target)

    def writable_table(self, ref: str, what: str = "output_table") -> str:
        """An Iceberg table a REST caller may append to: any but a registered source's table.

        Args:
            ref: ``iceberg:[catalog/]namespace.table`` (as
                :func:`quiver.server._convert.iceberg_ref` writes it).
            what: The request field, for messages.

        Raises:
            ForbiddenError: the table is a registered data source's.
        """
        from quiver.definitions import IcebergSource

        catalog, _, table = ref.removeprefix("iceberg:").rpartition("/")
        for source in self._sources():
            if (
                isinstance(source, IcebergSource)
                and source.table == table
                and source.catalog == (catalog or "default")
            ):
                raise ForbiddenError(
                    f"{what} {_shown(ref)!r} is the table of data source '{source.name}'; the API "
                    "never writes to a data source: choose another table"
                )
        return ref

    @staticmethod
    def _make_parent(target: Path, what: str, text: str) -> None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, what, text) from exc

    # -- shared ---------------------------------------------------------------------------------

    def _absolute(self, path: str, text: str, what: str) -> Path:
        """``path`` made absolute against the repo root and resolved (links followed)."""
        local = user_path(path, what)  # '~user' with no such user: an InvalidError
        try:
            return (local if local.is_absolute() else self.repo / local).resolve()
        except (OSError, RuntimeError) as exc:  # a link loop
            if isinstance(exc, OSError):
                raise os_error(exc, what, text) from exc
            raise InvalidError(f"{what} {_shown(text)!r} cannot be used: {exc}") from exc

    def _s3(self, text: str, what: str, *, write: bool, overwrite: bool = False) -> str:
        scheme, _, rest = text.partition("://")
        if scheme.lower() not in ("s3", "s3a"):
            raise InvalidError(f"{what} {_shown(text)!r}: use a local path or an s3:// URI")
        bucket, _, key = rest.partition("/")
        if not bucket or (write and not key.strip("/")):
            example = "s3://bucket/path/file.parquet" if write else "s3://bucket/path"
            missing = "object" if bucket else "bucket"
            raise InvalidError(f"{what} {_shown(text)!r} names no {missing}: write {example}")
        base, _ = _glob_split(f"{bucket}/{key}")
        if _GLOB.search(bucket) or any(p in (".", "..") for p in key.split("/")):
            raise ForbiddenError(
                f"{what} {_shown(text)!r}: an S3 path may not hold '.' or '..' segments or a "
                "pattern in its bucket name"
            )
        if not any(base == p or base.startswith(p + "/") for p in self.s3_prefixes):
            allowed = ", ".join(f"s3://{p}" for p in self.s3_prefixes) or "none"
            raise ForbiddenError(
                f"{what} {_shown(text)!r} is outside the S3 locations open to the API "
                f"({allowed}; server.s3_buckets)",
                details={"s3_buckets": list(self.s3_prefixes)},
            )
        if write:
            self._check_s3_write(text, f"{bucket}/{key}", what, overwrite)
        return text

    def _check_s3_write(self, text: str, target: str, what: str, overwrite: bool) -> None:
        from quiver.definitions import FileSource

        for source in self._sources():
            if isinstance(source, FileSource) and "://" in source.path:
                base, _ = _glob_split(source.path.split("://", 1)[1].rstrip("/"))
                if target == base or target.startswith(base + "/"):
                    raise ForbiddenError(
                        f"{what} {_shown(text)!r} is or is inside the files of data source "
                        f"'{source.name}'; the API never writes there"
                    )
        if overwrite:
            return
        import pyarrow.fs as pafs

        from quiver.offline.sources import s3_filesystem

        try:
            info = s3_filesystem(self.config).get_file_info(target)
        except OSError as exc:
            raise BackendError(f"{what} {_shown(text)!r}: cannot reach S3: {exc}") from exc
        if info.type != pafs.FileType.NotFound:
            raise ConflictError(
                f"{what} {_shown(text)!r} already exists; send overwrite: true to replace it, "
                "or choose another path",
                details={"path": text},
            )
