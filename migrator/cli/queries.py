"""`migrator queries capture`: a query set from pg_stat_statements."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from migrator.cli.common import ConsoleObserver, err, escape, handled, out
from migrator.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from migrator.verify.capture import CaptureResult

queries_app = typer.Typer(help="Work with query sets.", no_args_is_help=True)


@queries_app.command("capture", context_settings={"allow_interspersed_args": False})
@handled
def capture(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder to write the query set to.", show_default=False)
    ],
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="After --: a command to run against a fresh embedded PostgreSQL "
            "(its URL in DATABASE_URL); what it runs is captured.",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            # No MIGRATOR_DATABASE_URL here: where to capture from is said explicitly, so a
            # CI job with the variable set can still capture a command's queries.
            help="Capture from this database's pg_stat_statements (e.g. production's).",
        ),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", help="File name of the query set.")
    ] = "captured.sql",
) -> None:
    """Write the normalised statements pg_stat_statements holds as a query set.

    Either from a live database (--database-url), or by running a command after `--`
    against a fresh embedded PostgreSQL with pg_stat_statements loaded.
    """
    from migrator.verify.capture import capture_command, capture_from

    if command and database_url:
        raise UsageError("give either --database-url or a command after --, not both")
    if command:
        result = capture_command(
            command, out_dir, observer=ConsoleObserver(), name=name, env=os.environ
        )
    elif database_url:
        result = capture_from(database_url, out_dir, name=name)
    else:
        raise UsageError(
            "nothing to capture from: pass --database-url URL, or a command after `--`"
        )
    _report(result)
    if result.command_status:
        err.print(
            f"[yellow]warning:[/] the command exited with status {result.command_status}; "
            "the statements it ran before that were captured"
        )
        raise typer.Exit(int(ExitCode.RUNTIME))


def _report(result: CaptureResult) -> None:
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(result.skipped_reasons.items()))
    out.print(
        f"[green]✓[/] {result.statements} statements written to {escape(str(result.file))}"
        + (f" (left out: {escape(skipped)})" if skipped else "")
    )
