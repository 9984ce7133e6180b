"""Shared pieces of the CLI: the console, the store, output helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich import table as _rich_table
from rich.console import Console


def _console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that styles its output on a terminal only.

    Rich writes escape codes only to a terminal (unless ``FORCE_COLOR`` or ``TTY_COMPATIBLE``
    ask for them); with ``NO_COLOR`` set it writes none, bold included.
    """
    color_system: Literal["auto"] | None = None if os.environ.get("NO_COLOR") else "auto"
    probe = Console(stderr=stderr, color_system=color_system)
    if probe.is_terminal:
        return probe
    # Not a terminal (a pipe, a CI log): don't squeeze tables into 80 columns.
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() else 140
    return Console(stderr=stderr, color_system=color_system, width=width)


class Table(_rich_table.Table):
    """A Rich table whose cells wrap when the terminal is too narrow, never cut with "…"."""

    def add_column(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(*args, **kwargs)


console = _console()
err_console = _console(stderr=True)

RepoOption = Annotated[
    Path | None,
    typer.Option(
        "--repo",
        "-r",
        envvar="QUIVER_REPO",
        help="The feature repository (the folder holding quiver.yaml; default: the current "
        "folder or the nearest parent holding one).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def open_store(repo: Path | None) -> Any:
    """Open the FeatureStore of ``repo``, or of the repo around the current directory.

    Args:
        repo: The repository given with ``--repo`` or ``QUIVER_REPO``; None to look for
            ``quiver.yaml`` in the current directory and its parents.

    Raises:
        ConfigError: no ``repo`` and no ``quiver.yaml`` found; nothing is created on disk.
    """
    from quiver.store import FeatureStore

    return FeatureStore(repo_path=repo if repo is not None else _discover_repo())


def _discover_repo() -> Path:
    from quiver.config import CONFIG_FILE, find_repo
    from quiver.errors import ConfigError

    here = Path.cwd()
    found = find_repo(here)
    if found is None:
        raise ConfigError(
            f"no {CONFIG_FILE} in {here} or its parents; run 'quiver init' or pass --repo"
        )
    return found


def package_version() -> str:
    """Quiver's version: the installed package's metadata, else ``quiver.__version__``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("quiver")
    except PackageNotFoundError:
        import quiver

        return str(getattr(quiver, "__version__", "unknown"))


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    typer.echo(json.dumps(data, indent=2, default=str))
