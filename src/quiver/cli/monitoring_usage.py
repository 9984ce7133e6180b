"""``quiver usage``: how often features, views, services and models were read (counted by
``quiver serve``; see :mod:`quiver.monitoring.usage`)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from quiver.cli._common import JsonOption, RepoOption, Table, console, open_store, print_json


def register(app: typer.Typer) -> None:
    """Add ``usage`` to ``app``."""
    app.command("usage")(usage)


def _day(value: str | None, option: str) -> date | None:
    from quiver.errors import InvalidError

    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidError(f"{option} '{value}' is not a date (YYYY-MM-DD)") from None


def usage(
    start_date: Annotated[
        str | None, typer.Option("--start-date", help="First UTC day (YYYY-MM-DD).")
    ] = None,
    end_date: Annotated[
        str | None, typer.Option("--end-date", help="Last UTC day, included (YYYY-MM-DD).")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option("--kind", help="Only feature, feature_view, feature_service or model."),
    ] = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Online reads per feature, view, feature service and model, as counted by the servers."""
    from quiver.monitoring.usage import usage_report

    start, end = _day(start_date, "--start-date"), _day(end_date, "--end-date")
    store = open_store(repo)
    rows = usage_report(store.registry, start, end, kind)
    if json_:
        print_json(
            {
                "project": store.project,
                "start_date": start,
                "end_date": end,
                "items": [r.to_dict() for r in rows],
                "count": len(rows),
            }
        )
        return
    if not rows:
        console.print("No usage counted yet (quiver serve counts online reads).")
        return
    table = Table("kind", "name", "requests", "rows")
    for r in rows:
        table.add_row(r.kind, r.name, str(r.requests), str(r.rows))
    console.print(table)
