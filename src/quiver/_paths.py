"""Path text that no file system accepts, refused before it reaches one; atomic file writes.

:func:`check_path_text` and :func:`user_path` are used at every edge that takes a path from a
user: the REST API (a 422), ``quiver.yaml`` and the repository path (a
:class:`~quiver.errors.ConfigError`), definitions (a validation error).

:func:`temp_path` and :func:`publish_file` are how every output file is written: to a hidden
temporary file in the same directory, moved into place in one step when complete, so a failed
or killed write leaves the previous file (or no file) behind, never half of one.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path

from quiver.errors import ConflictError, InvalidError, QuiverError

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "check_path_text",
    "publish_file",
    "temp_path",
    "user_path",
]

MAX_PATH_BYTES = 4096
"""The longest path Linux accepts (``PATH_MAX``)."""
MAX_NAME_BYTES = 255
"""The longest file or directory name (``NAME_MAX``)."""


def check_path_text(path: str, what: str, error: type[QuiverError] = InvalidError) -> str:
    """Refuse path text no file system accepts, before it reaches one; returns ``path``.

    Args:
        path: The path text.
        what: What the path is, for the message (``"data_dir"``, ``"entity_path"``...).
        error: The error to raise.

    Raises:
        QuiverError: (``error``) a NUL character, a path longer than 4096 bytes or a file or
            directory name longer than 255 bytes.
    """
    shown = path if len(path) <= 80 else path[:77] + "..."
    if "\x00" in path:
        raise error(f"{what} {shown!r} contains a NUL character")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise error(f"{what} {shown!r} is longer than {MAX_PATH_BYTES} bytes")
    parts = path.replace("\\", "/").split("/")
    if any(len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts):
        raise error(
            f"{what} {shown!r} has a file or directory name longer than {MAX_NAME_BYTES} bytes"
        )
    return path


def user_path(path: str | Path, what: str, error: type[QuiverError] = InvalidError) -> Path:
    """``path`` checked (:func:`check_path_text`) and with ``~`` expanded.

    Raises:
        QuiverError: (``error``) path text no file system accepts, or ``~user`` of an unknown
            user.
    """
    text = check_path_text(str(path), what, error)
    try:
        return Path(text).expanduser()
    except RuntimeError as exc:  # "~nouser": no such user's home
        raise error(f"{what} {text!r}: {exc}") from exc


def temp_path(final: str | Path, token: str | None = None) -> Path:
    """A hidden temporary file next to ``final``: ``.<name>.<token>.tmp``.

    Readers of a folder skip it (names starting with ``.`` and ending in ``.tmp`` are not data
    files). ``token`` names the job writing it (see :mod:`quiver.jobs.context`), so the server can
    remove what a cancelled job left; by default a random one.
    """
    final = Path(final)
    return final.with_name(f".{final.name}.{token or uuid.uuid4().hex[:12]}.tmp")


def publish_file(tmp: str | Path, final: str | Path, *, overwrite: bool = True) -> None:
    """Move the complete file ``tmp`` to ``final`` in one step (same directory).

    Args:
        tmp: The written temporary file (from :func:`temp_path`).
        final: Where it goes.
        overwrite: Replace an existing ``final``; otherwise an existing file is kept and
            :class:`~quiver.errors.ConflictError` raised (checked atomically: a hard link fails
            when the name is taken; file systems without hard links fall back to a check).

    Raises:
        ConflictError: ``final`` exists and ``overwrite`` is false (``tmp`` is removed).
    """
    tmp, final = Path(tmp), Path(final)
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise ConflictError(
            f"output '{final}' already exists; ask to overwrite it, or choose another path",
            details={"path": str(final)},
        ) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if final.exists():  # no hard links here: a check, then a rename
            tmp.unlink(missing_ok=True)
            raise ConflictError(
                f"output '{final}' already exists; ask to overwrite it, or choose another path",
                details={"path": str(final)},
            ) from None
        os.replace(tmp, final)
        return
    tmp.unlink()
