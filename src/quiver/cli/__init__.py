"""The ``quiver`` command line: a thin Typer layer over :class:`quiver.FeatureStore`."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from quiver.cli import registry as _registry

__all__ = ["app", "main"]

app = typer.Typer(
    name="quiver",
    help="Quiver: an Arrow-native feature store and ML platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: Typer's Rich help panels print a `<bool>` type after every flag (--help too).
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from quiver.cli._common import package_version

        typer.echo(f"quiver {package_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Quiver: an Arrow-native feature store and ML platform."""


_registry.register(app)
for _module in (
    "offline",
    "online",
    "server",
    "ml",
    "security",
    "jobs",
    "monitoring_usage",
    "monitor",
    "feast",
):
    try:
        __import__(f"quiver.cli.{_module}")
        sys.modules[f"quiver.cli.{_module}"].register(app)
    except ModuleNotFoundError as _exc:  # a command group that is not written yet
        if _exc.name != f"quiver.cli.{_module}":
            raise


def main() -> None:
    """Run the CLI; errors print one line (set QUIVER_DEBUG=1 for the traceback)."""
    from rich.markup import escape

    from quiver.cli._common import err_console
    from quiver.errors import QuiverError
    from quiver.security.principal import set_local_channel

    set_local_channel("cli")  # the audit log's channel of the changes this process makes

    usage_errors, aborts, exits = _click_exceptions()
    try:
        # Without standalone mode, Click returns the code of a ``typer.Exit`` instead of exiting.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except QuiverError as exc:
        message = escape(exc.message)
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except aborts:
        err_console.print("aborted")
        sys.exit(130)
    except usage_errors as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            help_text = exc.format_message()  # (empty when Typer's Rich help printed itself)
            if help_text.strip():
                typer.echo(help_text)  # on stdout, like --help
        else:
            message = escape(exc.format_message())
            err_console.print(
                f"[bold red]error:[/] {message} (see --help)", highlight=False, soft_wrap=True
            )
        sys.exit(exc.exit_code)
    except exits as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("QUIVER_DEBUG"):
            raise
        err_console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {escape(str(exc))} "
            "(set QUIVER_DEBUG=1 for details)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


_Classes = tuple[type[Any], ...]


def _click_exceptions() -> tuple[_Classes, _Classes, _Classes]:
    """Click's usage-error, abort and exit classes, as raised by this version of Typer.

    Recent Typer versions vendor Click (``typer._click``), whose exceptions are not the
    ``click`` package's; catch both.
    """
    import click

    usage: list[type[Any]] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException
    except ImportError:  # this Typer uses the click package itself
        pass
    else:
        usage.append(ClickException)
    aborts = (click.exceptions.Abort, typer.Abort)
    exits = (click.exceptions.Exit, typer.Exit)
    return tuple(usage), aborts, exits
