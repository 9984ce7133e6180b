"""``quiver import-feast``: write a Feast repo out as an equivalent Quiver repo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]


def import_feast(
    directory: Annotated[Path, typer.Argument(help="The Feast repo (feature_store.yaml).")],
    out: Annotated[Path, typer.Argument(help="Where to write the Quiver repo (new or empty).")],
) -> None:
    """Write the Quiver repo equivalent to a Feast repo (quiver.yaml, definitions.yaml, data)."""
    from quiver.compat.feast_import import import_feast as run

    counts = run(directory.expanduser(), out.expanduser())
    summary = ", ".join(f"{n} {kind.replace('_', ' ')}(s)" for kind, n in counts.items())
    typer.echo(f"Wrote {out / 'quiver.yaml'} and {out / 'definitions.yaml'}: {summary}")
    typer.echo(f"Next: quiver apply --repo {out}")


def register(app: typer.Typer) -> None:
    """Add ``import-feast`` to ``app``."""
    app.command("import-feast")(import_feast)
