"""``quiver serve``: run the REST API under uvicorn (``--scheduler``: with the schedules)."""

from __future__ import annotations

import os
import tempfile
from typing import Annotated, Any

import typer

from quiver.cli._common import RepoOption, console, err_console, open_store


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
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve a non-loopback address with auth mode 'none' (anyone who reaches it "
            "may do everything).",
        ),
    ] = False,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler",
            help="Also run the views' materialization schedules (safe with several replicas).",
        ),
    ] = False,
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
    _check_exposure(host, store.config.auth.mode, insecure)
    console.print(_auth_note(store), highlight=False)
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
    from quiver.monitoring.metrics import MULTIPROC_ENV

    if workers == 1:
        from quiver.server.app import create_app, freeze_start_up

        os.environ.pop(MULTIPROC_ENV, None)  # one process: its own metrics, no files
        app = create_app(store, close_store=True, scheduler=scheduler)
        freeze_start_up()
        uvicorn.run(app, **options)
        return
    store.close()
    os.environ["QUIVER_REPO"] = str(store.repo_path)
    os.environ["QUIVER_SERVE_SCHEDULER"] = "1" if scheduler else "0"
    # The workers' metrics add up in a directory of this server's own (prometheus-client's
    # multiprocess mode), removed when it stops.
    with tempfile.TemporaryDirectory(prefix="quiver-metrics-") as metrics_dir:
        os.environ[MULTIPROC_ENV] = metrics_dir
        try:
            uvicorn.run("quiver.server.app:app_from_env", factory=True, workers=workers, **options)
        finally:
            os.environ.pop(MULTIPROC_ENV, None)


def _check_exposure(host: str, mode: str, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without authentication, unless ``insecure``.

    Raises:
        ConfigError: ``auth.mode`` is ``none``, ``host`` is not loopback, no ``--insecure``.
    """
    if mode != "none" or is_loopback(host):
        return
    if insecure:
        err_console.print(
            f"[bold yellow]warning:[/] serving {host} without authentication (--insecure): "
            "anyone who can reach it may change or delete everything",
            highlight=False,
        )
        return
    from quiver.errors import ConfigError

    raise ConfigError(
        f"refusing to serve {host} with auth mode 'none': anyone who can reach it could "
        "change or delete everything. Set 'auth: {mode: api_key}' in quiver.yaml (or "
        "QUIVER_AUTH__MODE=api_key) and create keys with 'quiver keys create NAME --role "
        "ROLE', or pass --insecure to serve without authentication anyway"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) is only reachable from this machine."""
    import ipaddress
    import socket

    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.split("%")[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None) if name else []
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def _auth_note(store: Any) -> str:
    """One line on how callers are authenticated (with a hint when no key can get in)."""
    if store.config.auth.mode == "none":
        return "Auth: none (every caller is an anonymous admin)"
    active = sum(key.status() == "active" for key in store.security.keys.list())
    hint = "; create one with 'quiver keys create NAME --role ROLE'" if not active else ""
    return f"Auth: API keys ({active} active){hint}"
