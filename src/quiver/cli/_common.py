"""Shared pieces of the CLI: the console, the store, output helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console


def _console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return probe
    # Not a terminal (a pipe, a CI log): don't squeeze tables into 80 columns.
    return Console(stderr=stderr, width=int(os.environ.get("COLUMNS", "140")))


console = _console()
err_console = _console(stderr=True)

RepoOption = Annotated[
    Path,
    typer.Option(
        "--repo",
        "-r",
        envvar="QUIVER_REPO",
        help="The feature repository (the folder holding quiver.yaml).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def open_store(repo: Path | None) -> Any:
    """Open the FeatureStore of ``repo`` (default: the current directory)."""
    from quiver.store import FeatureStore

    return FeatureStore(repo_path=repo or Path(os.environ.get("QUIVER_REPO", ".")))


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout."""
    typer.echo(json.dumps(data, indent=2, default=str))
