"""The `migrator` app: its top-level options and the verbs under it.

Each verb's module is imported here, and each imports what its verb needs (commands,
SQLAlchemy, kubernetes...) only when that verb runs: `--help` loads none of it.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import IO, Annotated, Any

import typer

try:  # newer typer carries its own click; older typer uses the click package
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - depends on the installed typer
    from click.exceptions import UsageError as ClickUsageError  # type: ignore[assignment]

from migrator import __version__
from migrator.cli import CLOSED_PIPE, demo, lifecycle
from migrator.cli import check as check_cli
from migrator.cli import lint as lint_cli
from migrator.cli import release as release_cli
from migrator.cli import render as render_cli
from migrator.cli import report as report_cli
from migrator.cli import switch as switch_cli
from migrator.cli.common import Settings, err, escape, scrubbed_output
from migrator.cli.config import (
    DEFAULT_FILE,
    KEYS,
    config_path,
    default_map,
    read_config_file,
)
from migrator.cli.db import db_app
from migrator.cli.plan import plan_app
from migrator.cli.queries import queries_app
from migrator.errors import ExitCode, UsageError


def _usage_error_line(self: ClickUsageError, file: IO[Any] | None = None) -> None:
    """A usage error (a missing argument, an unknown option or command, a bad value) as
    one line on stderr, as migrator's own errors are, with the command's usage in it;
    click's own form is four lines (usage, a hint, a blank one, the error)."""
    line = f"error: {self.format_message()}"
    if self.ctx is not None:
        usage = self.ctx.get_usage().removeprefix("Usage: ").strip()
        line = f"error: {self.ctx.command_path}: {self.format_message()} (usage: {usage}"
        if self.ctx.command.get_help_option(self.ctx) is not None:
            line += f"; `{self.ctx.command_path} {self.ctx.help_option_names[0]}` says more"
        line += ")"
    typer.echo(" ".join(line.split()), file=file or sys.stderr, err=file is None)


ClickUsageError.show = _usage_error_line  # type: ignore[method-assign]

app = typer.Typer(
    name="migrator",
    help="Zero-downtime blue-green releases on PostgreSQL: expand, check, switch, backfill, "
    "contract.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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
            help=f"Option defaults ({', '.join(KEYS)}) and lint rule settings (lint); "
            f"default: ./{DEFAULT_FILE} if present. "
            "Flags and MIGRATOR_* variables come first.",
        ),
    ] = None,
) -> None:
    """Zero-downtime blue-green releases on PostgreSQL."""
    Settings.debug = debug
    Settings.lint = None
    path = config_path(config)
    if path is not None:
        try:
            values, Settings.lint = read_config_file(path)
        except UsageError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(int(ExitCode.BAD_INPUT)) from None
        ctx.default_map = default_map(ctx.command, values)


lifecycle.register(app)
switch_cli.register(app)
release_cli.register(app)
demo.register(app)
app.add_typer(plan_app, name="plan")
check_cli.register(app)
lint_cli.register(app)
render_cli.register(app)
report_cli.register(app)
app.add_typer(queries_app, name="queries")
app.add_typer(db_app, name="db")


def _whole_short_help(typer_app: typer.Typer) -> None:
    """Plain help (rich's would double the start-up time) cuts each verb's line in the
    list at 45 characters: give it the first paragraph of the verb's help, whole."""
    for info in typer_app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and doc:
            info.short_help = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _whole_short_help(group.typer_instance)


_whole_short_help(app)


def run() -> None:
    """Run the app on the command line's arguments."""
    with scrubbed_output(sys.argv):
        stdout = _identity(sys.stdout)
        try:
            app()
        except SystemExit as exc:
            # Typer's own output (help, --version) into a closed pipe ends with exit 1
            # after putting /dev/null in stdout's place: give it the pipe's status, as a
            # verb does.
            if exc.code == 1 and _identity(sys.stdout) != stdout:
                raise SystemExit(CLOSED_PIPE) from None
            raise


def _identity(stream: object) -> tuple[int, int, str]:
    """Which file ``stream`` writes to."""
    try:
        info = os.fstat(stream.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return (0, 0, type(stream).__name__)
    return (info.st_dev, info.st_ino, type(stream).__name__)
