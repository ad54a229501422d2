"""The `migrator` command line: Typer over the plain functions of migrator.commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from migrator import __version__
from migrator.cli import check as check_cli
from migrator.cli import demo, phases
from migrator.cli import lint as lint_cli
from migrator.cli import release as release_cli
from migrator.cli import render as render_cli
from migrator.cli import switch as switch_cli
from migrator.cli.common import Settings, err, scrubbed_output
from migrator.cli.config import DEFAULT_FILE, KEYS, config_path, default_map, read_config
from migrator.cli.plan import plan_app
from migrator.cli.queries import queries_app
from migrator.errors import ExitCode, UsageError

app = typer.Typer(
    name="migrator",
    help="Zero-downtime blue-green releases on PostgreSQL: expand, check, switch, backfill, "
    "contract.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"migrator {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="MIGRATOR_DEBUG", help="Show tracebacks on errors."),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="MIGRATOR_CONFIG",
            dir_okay=False,
            help=f"Option defaults ({', '.join(KEYS)}); default: ./{DEFAULT_FILE} if present. "
            "Flags and MIGRATOR_* variables come first.",
        ),
    ] = None,
) -> None:
    """Zero-downtime blue-green releases on PostgreSQL."""
    Settings.debug = debug
    path = config_path(config)
    if path is not None:
        try:
            values = read_config(path)
        except UsageError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(int(ExitCode.BAD_INPUT)) from None
        ctx.default_map = default_map(ctx.command, values)


phases.register(app)
switch_cli.register(app)
release_cli.register(app)
demo.register(app)
app.add_typer(plan_app, name="plan")
check_cli.register(app)
lint_cli.register(app)
render_cli.register(app)
app.add_typer(queries_app, name="queries")


def main() -> None:
    """Console-script entry point."""
    with scrubbed_output(sys.argv):
        app()
