"""Path text that no file system accepts, refused before it reaches one.

Used at every edge that takes a path from a user: the REST API (a 422), ``quiver.yaml`` and the
repository path (a :class:`~quiver.errors.ConfigError`), definitions (a validation error).
"""

from __future__ import annotations

from pathlib import Path

from quiver.errors import InvalidError, QuiverError

__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "check_path_text", "user_path"]

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
