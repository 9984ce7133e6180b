"""The files of a file source: local paths, directories, globs and hive partitions, or the
same on S3 (``pyarrow.fs.S3FileSystem``), and the files pushed to the source."""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver.definitions import FileSource, IcebergSource
from quiver.errors import BackendError, ConfigError, NotFoundError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from quiver.config import RepoConfig

PUSHED_DIR = "_pushed"
"""Folder under the data directory that holds rows pushed to file sources."""

_GLOB_CHARS = re.compile(r"[*?\[]")
_HIVE_DIR = re.compile(r"^[^=/]+=[^/]*$")


def is_s3(path: str) -> bool:
    """Whether ``path`` is an ``s3://`` (or ``s3a://``) URI."""
    return path.lower().startswith(("s3://", "s3a://"))


def _strip_s3(path: str) -> str:
    return path.split("://", 1)[1]


def s3_filesystem(config: RepoConfig) -> pafs.S3FileSystem:
    """A ``pyarrow`` S3 filesystem from ``config.s3``, falling back to the ``AWS_*`` variables.

    The endpoint comes from ``s3.endpoint_url`` or ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``;
    the region from ``s3.region`` or ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; credentials from
    ``s3.access_key_id`` / ``s3.secret_access_key`` / ``s3.session_token`` or the usual AWS chain.
    """
    import pyarrow.fs as pafs

    s3 = config.s3
    kwargs: dict[str, Any] = {}
    endpoint = (
        s3.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        scheme, sep, rest = endpoint.partition("://")
        if sep:
            kwargs["scheme"] = scheme
            kwargs["endpoint_override"] = rest.rstrip("/")
        else:
            kwargs["endpoint_override"] = endpoint.rstrip("/")
    region = s3.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    if s3.access_key_id or s3.secret_access_key:
        kwargs["access_key"] = s3.access_key_id
        kwargs["secret_key"] = s3.secret_access_key
        if s3.session_token:
            kwargs["session_token"] = s3.session_token
    try:  # delayed open: a small output is one PUT, a large one a multipart upload
        return pafs.S3FileSystem(allow_delayed_open=True, **kwargs)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for bad settings
        raise ConfigError(f"cannot set up S3 access from the 's3:' settings: {exc}") from exc


# --------------------------------------------------------------------------------------------
# file listing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileListing:
    """The data files of a path: local paths, or ``bucket/key`` paths on ``filesystem``."""

    files: list[str]
    filesystem: pafs.FileSystem | None
    base: str
    hive: bool

    @property
    def local(self) -> bool:
        """Whether the files are on the local disk."""
        return self.filesystem is None


def _is_data_file(name: str, fmt: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    if base.startswith((".", "_")) or base.endswith((".crc", ".tmp")):
        return False
    lowered = base.lower()
    if fmt == "csv":
        return lowered.endswith((".csv", ".csv.gz", ".tsv", ".txt")) or "." not in base
    return lowered.endswith((".parquet", ".pq", ".parq")) or "." not in base


def _has_hive_dirs(files: Sequence[str], base: str) -> bool:
    for f in files[:1000]:
        rel = f[len(base) :].lstrip("/") if f.startswith(base) else f
        parts = rel.split("/")[:-1]
        if parts and any(_HIVE_DIR.match(p) for p in parts):
            return True
    return False


def _glob_base(pattern: str) -> str:
    parts = pattern.split("/")
    out: list[str] = []
    for part in parts:
        if _GLOB_CHARS.search(part):
            break
        out.append(part)
    return "/".join(out)


def list_files(
    config: RepoConfig, path: str, fmt: str, *, what: str, must_exist: bool = True
) -> FileListing:
    """List the data files of a file, directory or glob, local or on S3.

    Args:
        config: The repo config (relative paths are relative to the repo; S3 settings).
        path: A file, a directory (read recursively) or a glob (``**`` allowed).
        fmt: ``parquet`` or ``csv``: which files of a directory count.
        what: How to name the owner in errors, e.g. ``data source 'x'``.
        must_exist: Raise :class:`NotFoundError` when nothing matches.

    Raises:
        NotFoundError: no file matches (when ``must_exist``).
    """
    if is_s3(path):
        return _list_s3(config, path, fmt, what=what, must_exist=must_exist)
    resolved = str(config.resolve(path))
    if _GLOB_CHARS.search(path):
        files = sorted(f for f in glob.glob(resolved, recursive=True) if os.path.isfile(f))
        base = _glob_base(resolved)
    elif os.path.isdir(resolved):
        files = []
        for root, dirs, names in os.walk(resolved):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")) or "=" in d)
            files.extend(os.path.join(root, n) for n in sorted(names) if _is_data_file(n, fmt))
        base = resolved
    elif os.path.isfile(resolved):
        files = [resolved]
        base = os.path.dirname(resolved)
    else:
        files = []
        base = resolved
    if not files and must_exist:
        where = "matches no file" if _GLOB_CHARS.search(path) else "does not exist"
        if os.path.isdir(resolved):
            where = f"holds no {fmt} files"
        raise NotFoundError(f"{what}: path '{path}' ({resolved}) {where}")
    return FileListing(files=files, filesystem=None, base=base, hive=_has_hive_dirs(files, base))


def _list_s3(
    config: RepoConfig, path: str, fmt: str, *, what: str, must_exist: bool
) -> FileListing:
    import pyarrow.fs as pafs

    fs = s3_filesystem(config)
    raw = _strip_s3(path).rstrip("/")
    try:
        if _GLOB_CHARS.search(raw):
            base = _glob_base(raw)
            infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            pattern = raw.replace("**/", "*").replace("/**", "*")
            files = sorted(
                i.path
                for i in infos
                if i.type == pafs.FileType.File and fnmatch.fnmatch(i.path, pattern)
            )
        else:
            info = fs.get_file_info(raw)
            base = raw
            if info.type == pafs.FileType.File:
                files = [raw]
                base = raw.rsplit("/", 1)[0]
            elif info.type == pafs.FileType.Directory:
                infos = fs.get_file_info(pafs.FileSelector(raw, recursive=True))
                files = sorted(
                    i.path
                    for i in infos
                    if i.type == pafs.FileType.File
                    and _is_data_file(i.path, fmt)
                    and not any(
                        p.startswith((".", "_")) and "=" not in p
                        for p in i.path[len(raw) :].split("/")[:-1]
                    )
                )
            else:
                files = []
    except OSError as exc:
        raise BackendError(f"{what}: cannot list '{path}' on S3: {exc}") from exc
    if not files and must_exist:
        raise NotFoundError(f"{what}: path '{path}' does not exist or holds no {fmt} files")
    return FileListing(files=files, filesystem=fs, base=base, hive=_has_hive_dirs(files, base))


def pushed_dir(config: RepoConfig, source: FileSource | IcebergSource) -> Path:
    """The folder holding rows pushed to a file source."""
    return config.data_path / PUSHED_DIR / source.name


def pushed_files(config: RepoConfig, source: FileSource | IcebergSource) -> list[str]:
    """The Parquet files pushed to a file source so far (complete files only)."""
    folder = pushed_dir(config, source)
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))
