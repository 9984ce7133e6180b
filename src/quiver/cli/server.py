"""``quiver serve``: run the REST API under uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from quiver.cli._common import RepoOption, console, open_store


def register(app: typer.Typer) -> None:
    """Add ``serve`` to ``app``."""
    app.command("serve")(serve)


def serve(
    host: Annotated[
        str | None,
        typer.Option("--host", help="Interface to bind (default: server.host, 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", "-p", min=0, max=65535, help="Port (default: server.port, 8000)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes.")] = 1,
    log_level: Annotated[
        str, typer.Option("--log-level", help="critical, error, warning, info or debug.")
    ] = "info",
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log every request.")
    ] = True,
    repo: RepoOption = None,
) -> None:
    """Serve the REST API (OpenAPI docs at /docs)."""
    from quiver.errors import require

    require("fastapi", "server", "quiver serve")
    uvicorn = require("uvicorn", "server", "quiver serve")
    store = open_store(repo)
    store.registry  # noqa: B018 - fail here, as one line, when the registry cannot be opened
    host = host or store.config.server.host
    port = store.config.server.port if port is None else port
    console.print(
        f"Serving project '{store.project}' on http://{host}:{port} "
        f"(docs: http://{host}:{port}/docs, {workers} worker{'s' if workers > 1 else ''})"
    )
    options = {
        "host": host,
        "port": port,
        "log_level": log_level.lower(),
        "access_log": access_log,
        "proxy_headers": False,
    }
    if workers == 1:
        from quiver.server.app import create_app, freeze_start_up

        app = create_app(store, close_store=True)
        freeze_start_up()
        uvicorn.run(app, **options)
    else:
        store.close()
        os.environ["QUIVER_REPO"] = str(store.repo_path)
        uvicorn.run("quiver.server.app:app_from_env", factory=True, workers=workers, **options)
