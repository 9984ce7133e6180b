"""CLI commands for API keys, permissions and the audit log: ``quiver keys``,
``quiver permissions``, ``quiver audit``.

The CLI acts as the local admin (the repo's owner, who has its files and registry URL anyway):
it is not checked against permissions, and its changes are written to the audit log with the OS
user (or ``QUIVER_USER``) as the principal and ``cli`` as the channel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from quiver.cli._common import JsonOption, RepoOption, Table, console, open_store, print_json


def register(app: typer.Typer) -> None:
    """Add ``keys``, ``permissions`` and ``audit`` to ``app``."""
    keys = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
    keys.command("create")(create_key)
    keys.command("list")(list_keys)
    keys.command("revoke")(revoke_key)
    app.add_typer(keys, name="keys")
    permissions = typer.Typer(
        help="List, apply and delete permission policies.", no_args_is_help=True
    )
    permissions.command("list")(list_permissions)
    permissions.command("apply")(apply_permissions)
    permissions.command("delete")(delete_permission)
    app.add_typer(permissions, name="permissions")
    app.command("audit")(audit)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _print_table(title: str, columns: Iterable[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print a table of ``columns`` with one row per item of ``rows``."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


# -- keys ---------------------------------------------------------------------------------------


def create_key(
    name: Annotated[str, typer.Argument(help="The key's name: requests with it act as NAME.")],
    role: Annotated[str, typer.Option("--role", help="reader, writer, ml or admin.")],
    project: Annotated[
        str | None,
        typer.Option("--project", help="Only for this project (default: every project)."),
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="30m, 12h, 90d, 2w or an ISO date (default: never)."),
    ] = None,
    as_json: JsonOption = False,
    repo: RepoOption = None,
) -> None:
    """Create an API key and print it, once: only its hash is stored."""
    from quiver.security.keys import parse_expires

    expires_at = parse_expires(expires)
    with open_store(repo) as store:
        new = store.security.create_key(name, role, project=project, expires_at=expires_at)
    if as_json:
        print_json({**new.record.to_dict(), "key": new.key})
        return
    record = new.record
    scope = f"project '{record.project}'" if record.project else "every project"
    until = f"until {_when(record.expires_at)} UTC" if record.expires_at else "without expiry"
    console.print(
        f"Created API key '{escape(name)}' (role {record.role}, {scope}, {until}):",
        highlight=False,
    )
    console.print(new.key, highlight=False, soft_wrap=True)
    console.print(
        "Store it now: it is not shown again. Send it as 'Authorization: Bearer <key>' or "
        "'X-API-Key: <key>'.",
        highlight=False,
    )


def list_keys(as_json: JsonOption = False, repo: RepoOption = None) -> None:
    """List API keys (never their secrets), revoked and expired ones included."""
    with open_store(repo) as store:
        keys = store.security.keys.list()
    if as_json:
        print_json([k.to_dict() for k in keys])
        return
    _print_table(
        f"API keys ({len(keys)})",
        ("name", "id", "role", "project", "status", "created", "expires", "revoked"),
        (
            [
                escape(key.name),
                key.key_id,
                key.role,
                escape(key.project or "*"),
                key.status(),
                _when(key.created_at),
                _when(key.expires_at),
                _when(key.revoked_at),
            ]
            for key in keys
        ),
    )


def revoke_key(
    name: Annotated[str, typer.Argument(help="The key's name.")],
    repo: RepoOption = None,
) -> None:
    """Revoke an API key; running servers refuse it within a second."""
    with open_store(repo) as store:
        key = store.security.revoke_key(name)
    console.print(f"Revoked API key '{escape(key.name)}' ({key.key_id}).", highlight=False)


# -- permissions ----------------------------------------------------------------------------


def list_permissions(as_json: JsonOption = False, repo: RepoOption = None) -> None:
    """List the project's permission policies."""
    with open_store(repo) as store:
        records = store.security.policies.records()
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    _print_table(
        f"Permissions in project '{store.project}' ({len(records)})",
        ("name", "effect", "actions", "principals", "roles", "kinds", "names", "tags"),
        (_permission_cells(record.permission) for record in records),
    )


def _permission_cells(p: Any) -> list[str]:
    return [
        escape(p.name),
        p.effect,
        ", ".join(p.actions),
        escape(", ".join(p.principals) or "-"),
        escape(", ".join(p.roles) or "-"),
        ", ".join(p.kinds) or "*",
        escape(", ".join(p.names) or "*"),
        escape(", ".join(f"{k}={v}" for k, v in p.tags.items()) or "-"),
    ]


def apply_permissions(
    file: Annotated[
        Path,
        typer.Option("--file", "-f", help="A YAML or JSON file: 'permissions:' and a list."),
    ],
    repo: RepoOption = None,
) -> None:
    """Create or update the policies of a file (by name), in one transaction."""
    from quiver.security.permissions import load_permissions

    policies = load_permissions(file)
    with open_store(repo) as store:
        results = store.security.apply_permissions(policies)
    for name, action in results.items():
        console.print(f"{action:9} permission '{escape(name)}'", highlight=False)


def delete_permission(
    name: Annotated[str, typer.Argument(help="The policy's name.")],
    repo: RepoOption = None,
) -> None:
    """Delete a permission policy."""
    with open_store(repo) as store:
        store.security.delete_permission(name)
    console.print(f"Deleted permission '{escape(name)}'.", highlight=False)


# -- audit ------------------------------------------------------------------------------------


def audit(
    since: Annotated[
        str | None,
        typer.Option("--since", help="A duration back from now (30m, 12h, 7d) or an ISO time."),
    ] = None,
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal's rows.")
    ] = None,
    resource: Annotated[
        str | None,
        typer.Option("--resource", help="Only rows whose resource contains this text."),
    ] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action.")] = None,
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="ok, or an error type (forbidden, ...).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOption = False,
    repo: RepoOption = None,
) -> None:
    """Who did what, newest first: the project's audit log."""
    with open_store(repo) as store:
        rows = store.audit_log.query(
            since=_since(since),
            principal=principal,
            resource=resource,
            action=action,
            outcome=outcome,
            limit=limit,
        )
    if as_json:
        print_json([r.to_dict() for r in rows])
        return
    _print_table(
        f"Audit log of project '{store.project}' ({len(rows)} rows, newest first)",
        ("time (UTC)", "principal", "via", "action", "resource", "outcome", "client"),
        ([escape(str(v)) for v in _audit_cells(row)] for row in rows),
    )


def _audit_cells(row: Any) -> list[Any]:
    via = row.channel if row.key_id is None else f"{row.channel} ({row.key_id})"
    return [
        _when(row.created_at),
        row.principal,
        via,
        row.action,
        row.resource or "-",
        row.outcome,
        row.client or "-",
    ]


def _since(text: str | None) -> datetime | None:
    from quiver.security.keys import parse_duration, parse_time

    if text is None:
        return None
    duration = parse_duration(text, "--since")
    if duration is not None:
        return datetime.now(UTC) - duration
    return parse_time(text, "--since")
