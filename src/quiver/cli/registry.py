"""CLI commands for the repo and the registry: init, plan, apply, list, describe, history."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from quiver.cli._common import JsonOption, RepoOption, Table, console, open_store, print_json

KindOption = Annotated[
    str | None,
    typer.Option(
        "--kind", help="entity, data_source, feature_view or feature_service, when ambiguous."
    ),
]
FileOption = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        help="A Python module, a YAML or JSON file, or a directory of them "
        "(default: the repo's own definitions).",
    ),
]
PruneOption = Annotated[
    bool | None,
    typer.Option(
        "--prune/--no-prune",
        help="Delete registry objects missing from the definitions "
        "(default: on for the repo's own definitions, off with --file).",
        show_default=False,
    ),
]


def register(app: typer.Typer) -> None:
    """Add the registry commands to ``app``."""
    app.command("init")(init)
    app.command("plan")(plan)
    app.command("apply")(apply)
    app.command("describe")(describe)
    app.command("history")(history)
    app.command("restore")(restore)
    for group, kind, columns in (
        ("entities", "entity", _entity_row),
        ("data-sources", "data_source", _source_row),
        ("feature-views", "feature_view", _view_row),
        ("feature-services", "feature_service", _service_row),
    ):
        sub = typer.Typer(help=f"Work with {group.replace('-', ' ')}.", no_args_is_help=True)
        sub.command("list", help=f"List the project's {group.replace('-', ' ')}.")(
            _lister(kind, columns)
        )
        app.add_typer(sub, name=group)


def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the repo.")] = Path("."),
    demo: Annotated[
        bool, typer.Option("--demo", help="Add the synthetic churn dataset and its definitions.")
    ] = False,
    customers: Annotated[
        int, typer.Option("--customers", min=10, help="Demo size (number of customers).")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Demo random seed.")] = 42,
    end_date: Annotated[
        str | None,
        typer.Option(
            "--end-date",
            help="Demo: the last day of the year of data (ISO date; default: today, UTC), "
            "so that online values are fresh. Pin it for byte-identical data.",
        ),
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="Project name (default: the folder's name).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
) -> None:
    """Create a feature repository (quiver.yaml, features.py, data/)."""
    from quiver.errors import ConflictError

    directory = directory.expanduser().resolve()
    config_file = directory / "quiver.yaml"
    features_file = directory / "features.py"
    end = _demo_end(end_date)
    if not force and (config_file.exists() or (demo and features_file.exists())):
        raise ConflictError(
            f"'{directory}' already holds a Quiver repo; pass --force to overwrite it"
        )
    if project is not None:
        from quiver.definitions import validate_name

        name = validate_name(project, "project name")
    else:
        name = re.sub(r"[^A-Za-z0-9_]", "_", directory.name).strip("_")[:60] or "quiver"
        if name[0].isdigit():
            name = f"p_{name}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    config_file.write_text(_CONFIG_TEMPLATE.format(project=name))
    if demo:
        from quiver.demo import FEATURES_TEMPLATE, TRAINING_SPEC_TEMPLATE, generate_demo_data

        with console.status(f"Generating the demo dataset ({customers:,} customers)..."):
            files = generate_demo_data(directory / "data", customers=customers, seed=seed, end=end)
        features_file.write_text(FEATURES_TEMPLATE)
        (directory / "churn_model.yaml").write_text(TRAINING_SPEC_TEMPLATE)
        for label, path in files.items():
            console.print(f"  wrote [cyan]{path.relative_to(directory)}[/] ({label})")
    elif not features_file.exists():
        features_file.write_text(_EMPTY_FEATURES)
    console.print(f"[green]Created Quiver repo[/] '{name}' in {directory}")
    console.print(f"Next: cd {directory} && quiver plan && quiver apply")


def _demo_end(text: str | None) -> datetime:
    from quiver.errors import InvalidError

    if text is None:
        today = datetime.now(UTC).date()
        return datetime(today.year, today.month, today.day, tzinfo=UTC)
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidError(f"--end-date {text!r} is not an ISO date such as 2026-01-01") from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _load(store: Any, file: Path | None, prune: bool | None) -> tuple[Any, bool]:
    # A path on the command line is relative to the working directory, not to --repo.
    definitions = store.load_definitions(file.expanduser().absolute() if file else None)
    return definitions, (file is None) if prune is None else prune


def plan(
    file: FileOption = None,
    prune: PruneOption = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Show what apply would change, without writing."""
    store = open_store(repo)
    definitions, do_prune = _load(store, file, prune)
    result = store.plan(definitions, prune=do_prune)
    if json_:
        print_json(result.to_dict())
        return
    _print_plan(result)


def apply(
    file: FileOption = None,
    prune: PruneOption = None,
    allow_breaking: Annotated[
        bool, typer.Option("--allow-breaking", help="Accept breaking changes.")
    ] = False,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Apply the definitions to the registry in one transaction."""
    store = open_store(repo)
    definitions, do_prune = _load(store, file, prune)
    result = store.plan(definitions, prune=do_prune)
    store.apply(result, allow_breaking=allow_breaking)
    if json_:
        print_json({**result.to_dict(), "applied": True})
        return
    _print_plan(result)
    if result.has_changes:
        counts = result.summary()
        console.print(
            f"[green]Applied[/] to project '{store.project}': {counts['create']} created, "
            f"{counts['update']} updated, {counts['delete']} deleted."
        )


_ACTION_STYLE = {"create": "green", "update": "yellow", "delete": "red", "unchanged": "dim"}
_ACTION_MARK = {"create": "+", "update": "~", "delete": "-", "unchanged": " "}


def _print_plan(result: Any) -> None:
    from quiver.definitions import KIND_LABELS

    if not result.has_changes:
        console.print(f"No changes: project '{result.project}' is up to date.")
        return
    table = Table(title=f"Plan for project '{result.project}'", show_lines=False)
    table.add_column("")
    table.add_column("kind")
    table.add_column("name")
    table.add_column("changes")
    for change in result.pending:
        style = _ACTION_STYLE[change.action]
        details = []
        for f in change.fields:
            text = escape(f"{f.path}: {_short(f.old)} -> {_short(f.new)}")
            if f.breaking:
                text = f"[bold red]BREAKING[/] {text} ({f.reason})"
            details.append(text)
        table.add_row(
            f"[{style}]{_ACTION_MARK[change.action]}[/]",
            KIND_LABELS[change.kind],
            f"[{style}]{change.name}[/]",
            "\n".join(details) or change.action,
        )
    console.print(table)
    counts = result.summary()
    breaking = len(result.breaking)
    console.print(
        f"{counts['create']} to create, {counts['update']} to update, {counts['delete']} to "
        f"delete, {counts['unchanged']} unchanged"
        + (f"; [bold red]{breaking} breaking[/]" if breaking else "")
    )


def _short(value: Any) -> str:
    text = "(none)" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _entity_row(obj: Any) -> dict[str, Any]:
    return {
        "name": obj.name,
        "join_keys": ", ".join(obj.join_keys),
        "value_type": obj.value_type,
        "owner": obj.owner,
        "description": obj.description,
    }


def _source_row(obj: Any) -> dict[str, Any]:
    where = obj.path if obj.type == "file" else f"{obj.catalog}:{obj.table}"
    return {
        "name": obj.name,
        "type": obj.type,
        "location": where,
        "timestamp_field": obj.timestamp_field,
        "description": obj.description,
    }


def _view_row(obj: Any) -> dict[str, Any]:
    return {
        "name": obj.name,
        "entities": ", ".join(obj.entities),
        "features": len(obj.features),
        "source": obj.source_name,
        "ttl_seconds": int(obj.ttl.total_seconds()) if obj.ttl else None,
        "online": obj.online,
        "owner": obj.owner,
    }


def _service_row(obj: Any) -> dict[str, Any]:
    return {
        "name": obj.name,
        "features": ", ".join(obj.features),
        "description": obj.description,
    }


_PLURALS = {
    "entity": "entities",
    "data_source": "data sources",
    "feature_view": "feature views",
    "feature_service": "feature services",
}


def _lister(kind: str, row: Any) -> Any:
    def list_objects(repo: RepoOption = None, json_: JsonOption = False) -> None:
        store = open_store(repo)
        objects = store.registry.list(kind)
        if json_:
            print_json([o.to_spec() for o in objects])
            return
        rows = [row(o) for o in objects]
        if not rows:
            console.print(f"No {_PLURALS[kind]} in project '{store.project}'.")
            return
        table = Table(title=f"{_PLURALS[kind]} in project '{store.project}' ({len(rows)})")
        for col in rows[0]:
            table.add_column(col)
        for r in rows:
            table.add_row(*["" if v is None else escape(str(v)) for v in r.values()])
        console.print(table)

    return list_objects


def describe(
    name: Annotated[str, typer.Argument(help="The object's name.")],
    kind: KindOption = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Show one object's spec and metadata."""
    store = open_store(repo)
    info = store.describe(name, kind)
    if json_:
        print_json(info)
        return
    import yaml

    from quiver.definitions import KIND_LABELS

    console.print(
        f"[bold]{KIND_LABELS[info['kind']]} '{name}'[/] version {info['version']}, "
        f"updated {info['updated_at']} by {escape(info['updated_by'] or 'unknown')}"
    )
    spec_text = yaml.safe_dump(info["spec"], sort_keys=False).rstrip()
    console.print(spec_text, highlight=False, markup=False)


def history(
    name: Annotated[str, typer.Argument(help="The object's name.")],
    kind: KindOption = None,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """List every version of an object (deletions included)."""
    store = open_store(repo)
    versions = store.history(name, kind)
    if json_:
        print_json([v.to_dict() for v in versions])
        return
    table = Table(title=f"History of '{name}'")
    for col in ("version", "operation", "time", "author", "hash"):
        table.add_column(col)
    for v in versions:
        table.add_row(
            str(v.version),
            v.operation,
            v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(v.author or ""),
            v.spec_hash[:12],
        )
    console.print(table)


def restore(
    name: Annotated[str, typer.Argument(help="The object's name.")],
    version: Annotated[int, typer.Option("--version", "-v", help="The version to restore.")],
    kind: KindOption = None,
    allow_breaking: Annotated[
        bool, typer.Option("--allow-breaking", help="Accept breaking changes.")
    ] = False,
    repo: RepoOption = None,
    json_: JsonOption = False,
) -> None:
    """Make an earlier version of an object current again (recorded as a new version)."""
    store = open_store(repo)
    result = store.restore(name, version, kind, allow_breaking=allow_breaking)
    if json_:
        print_json(result.to_dict())
        return
    if not result.has_changes:
        console.print(f"'{name}' already equals version {version}; nothing to do.")
        return
    _print_plan(result)
    new = store.history(name, kind)[-1].version
    console.print(f"[green]Restored[/] '{name}' to version {version} (now version {new}).")


_CONFIG_TEMPLATE = """\
# Quiver feature repository settings. Every key can be overridden by a QUIVER_* environment
# variable (nested keys with __, e.g. QUIVER_ONLINE_STORE__TYPE=redis).
project: {project}
definitions: [features.py]
data_dir: data
model_dir: models
registry:
  url: sqlite:///data/registry.db       # or postgresql+psycopg://user@host/db
offline_engine:
  type: duckdb
online_store:
  type: sqlite                          # or: type: redis, url: redis://127.0.0.1:6379/0
  path: data/online.db
iceberg:
  catalogs:
    default:
      type: sql
      uri: sqlite:///data/iceberg_catalog.db
      warehouse: data/warehouse
"""

_EMPTY_FEATURES = '''\
"""Feature definitions of this repo. `quiver plan` shows the diff, `quiver apply` writes it."""

from datetime import timedelta

from quiver import Entity, FeatureService, FeatureView, Field, FileSource

# customer = Entity(name="customer", join_keys=["customer_id"])
# source = FileSource(name="orders", path="data/orders.parquet", timestamp_field="event_timestamp")
# orders = FeatureView(
#     name="customer_orders",
#     entities=[customer],
#     schema=[Field(name="total_orders", dtype="int64")],
#     source=source,
#     ttl=timedelta(days=30),
# )
# churn = FeatureService(name="churn_v1", features=[orders])
'''
