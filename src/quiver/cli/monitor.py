"""CLI commands for monitoring: stats, monitor drift, validate, docs, lineage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from quiver.cli._common import JsonOption, RepoOption, Table, console, open_store, print_json


def register(app: typer.Typer) -> None:
    """Add the monitoring commands to ``app``."""
    app.command("stats")(stats)
    app.command("validate")(validate)
    app.command("docs")(docs)
    app.command("lineage")(lineage)
    monitor = typer.Typer(help="Watch features and models.", no_args_is_help=True)
    monitor.command("drift")(drift)
    app.add_typer(monitor, name="monitor")


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def stats(
    view: Annotated[str, typer.Argument(help="A feature view.")],
    days: Annotated[
        float | None,
        typer.Option("--days", "-d", min=0, help="Only runs of the last N days (default: all)."),
    ] = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Show the feature statistics of a view's latest materialization (and how many runs)."""
    from quiver.monitoring.service import statistics

    store = open_store(repo)
    report = statistics(store, view, days=days)
    entry = report["views"][view]
    if json_:
        print_json(entry)
        return
    latest = entry["latest"]
    if latest is None:
        period = f" in the last {days:g} days" if days is not None else ""
        console.print(
            f"No statistics of '{view}'{period}; run 'quiver materialize' (with "
            "monitoring.statistics on) first."
        )
        return
    table = Table(
        title=f"'{view}': {latest['rows']} rows at {latest['computed_at']} "
        f"({len(entry['runs'])} run(s) shown)"
    )
    cols = ("feature", "type", "null %", "mean", "stddev", "min", "p50", "max", "distinct", "top")
    for col in cols:
        table.add_column(col)
    for name, s in latest["features"].items():
        q = s.get("quantiles") or {}
        top = ", ".join(f"{t['value']} ({t['count']})" for t in (s.get("top_values") or [])[:3])
        table.add_row(
            name,
            s.get("dtype", ""),
            f"{100 * (s.get('null_rate') or 0):.1f}",
            _fmt(s.get("mean")),
            _fmt(s.get("stddev")),
            _fmt(s.get("min")),
            _fmt(q.get("p50")),
            _fmt(s.get("max")),
            _fmt(s.get("distinct")),
            top,
        )
    console.print(table)


def drift(
    model: Annotated[str, typer.Argument(help="A model name (production, else latest) or id.")],
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Compare runs since this time (ISO 8601; default: training time)."
        ),
    ] = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Compare a model's training features with the features materialized since (PSI, test)."""
    from quiver.materialize import parse_time
    from quiver.monitoring.service import drift as run

    store = open_store(repo)
    report = run(store, model, since=parse_time(since, "since") if since else None)
    if json_:
        print_json(report.to_dict())
        return
    table = Table(
        title=f"Drift of {report.model_name}:{report.version} since {report.since.isoformat()} "
        f"({report.runs_compared} run(s); PSI threshold {report.psi_threshold:g})"
    )
    for col in ("feature", "status", "PSI", "test", "p-value", "train mean", "now mean"):
        table.add_column(col)
    for f in report.features:
        table.add_row(
            f.feature,
            f.status,
            _fmt(f.psi),
            f.test or "",
            _fmt(f.p_value),
            _fmt(f.training_mean),
            _fmt(f.current_mean),
        )
    console.print(table)
    drifted = report.drifted
    console.print(
        f"{len(drifted)} feature(s) drifted" + (f": {', '.join(drifted)}" if drifted else "")
    )
    if report.most_drifted:
        console.print(f"Moved most: {report.most_drifted}")


def validate(repo: RepoOption = None, json_: JsonOption = False) -> None:
    """Check the registry, the online store, the definitions and every view's source.

    Prints one line per failure and exits with status 1 when any check fails.
    """
    from quiver.monitoring.service import validate as run

    store = open_store(repo)
    report = run(store)
    if json_:
        print_json(report.to_dict())
    elif report.ok:
        console.print(f"OK: {report.checks} checks passed.")
    else:
        for failure in report.failures:
            typer.echo(failure.line())
        typer.echo(f"{len(report.failures)} of {report.checks} checks failed.")
    if not report.ok:
        raise typer.Exit(1)


def docs(
    output_file: Annotated[
        Path,
        typer.Option("--output-file", "-o", help="The Markdown file to write."),
    ] = Path("FEATURES.md"),
    repo: RepoOption = None,
) -> None:
    """Write a Markdown catalogue of the entities, views and features (and who uses them)."""
    from quiver.monitoring.service import catalog

    store = open_store(repo)
    text = catalog(store)
    output_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = output_file.with_name(output_file.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output_file)
    console.print(f"Wrote {output_file} ({len(text.splitlines())} lines).")


def lineage(
    target: Annotated[str, typer.Argument(help="VIEW or VIEW:FEATURE.")],
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Show which feature services and model versions use a view or a feature."""
    from quiver.monitoring.lineage import parse_target
    from quiver.monitoring.service import lineage as run

    store = open_store(repo)
    view, feature = parse_target(target)
    found = run(store, view, feature)
    if json_:
        print_json(found)
        return
    console.print(f"'{target}' is used by:")
    services = found["feature_services"]
    models = found["model_versions"]
    if not services and not models:
        console.print("  nothing (no feature service or model version uses it)")
    for s in services:
        console.print(f"  feature service {s['name']}: {', '.join(s['features'])}")
    for m in models:
        console.print(f"  model {m['model_id']} ({m['stage']}): {', '.join(m['features'])}")
