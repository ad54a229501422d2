"""`migrator check`: the compatibility matrix and the lint, as a table, JSON, JUnit or GitHub."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from migrator.cli.common import (
    ConsoleObserver,
    DatabaseUrl,
    PlanPath,
    ScratchUrl,
    actor,
    cache_dir,
    escape,
    handled,
    out,
    parse_pg_version,
    read_plan,
)
from migrator.cli.config import lint_settings
from migrator.errors import ExitCode, UsageError
from migrator.observer import NULL_OBSERVER

if TYPE_CHECKING:
    from migrator.verify.report import CheckReport, Finding


class Format(StrEnum):
    """Output formats of check."""

    table = "table"
    json = "json"
    junit = "junit"
    github = "github"


_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def _where(f: Finding) -> str:
    return f.location + (f":{f.column}" if f.column else "")


def render_table(report: CheckReport) -> None:
    """The human report: the matrix, then each finding with its place and its fix."""
    from rich.table import Table

    matrix = Table(
        title=f"check {escape(report.release)}: queries at each phase", title_justify="left"
    )
    for column in ("version", "phase", "cell", "queries", "failing"):
        matrix.add_column(column)
    for cell in report.cells:
        failing = cell.failures
        mark = (
            "[green]pass[/]"
            if failing == 0
            else ("[red]FAIL[/]" if cell.must_pass else "[yellow]breaks (informational)[/]")
        )
        matrix.add_row(
            f"{cell.version} ({escape(cell.version_name)})",
            cell.phase,
            "must pass" if cell.must_pass else "informational",
            str(len(cell.results)),
            f"{failing} {mark}",
        )
    out.print(matrix)
    findings = report.findings
    if findings:
        table = Table(title="findings", title_justify="left", show_lines=True)
        # file:line is what a reader clicks or greps for: never folded in the middle.
        where_width = min(60, max(len(_where(f)) for f in findings))
        table.add_column("", no_wrap=True)
        table.add_column("where", min_width=where_width)
        table.add_column("what, and the fix", ratio=1)
        for f in findings:
            # A query without a name is named by its place, already shown.
            name = f.query if f.query and not (f.file or "").endswith(f.query.split(":")[0]) else ""
            where = "\n".join(
                escape(x) for x in (_where(f), name or f.rule or "", f.cell or "") if x
            )
            table.add_row(
                f"[{_STYLE[f.severity]}]{f.severity}[/]",
                where,
                f"{escape(f.reason)}\n[bold]fix:[/] {escape(f.fix)}",
            )
        out.print(table)
    counts = report.counts()
    lint = "" if report.lint_available else " (lint skipped: --no-lint)"
    summary = (
        f"{counts['error']} errors, {counts['warning']} warnings, {counts['info']} informational"
        f"; before = {escape(report.before_source)}; {report.seconds:.1f}s{lint}"
    )
    if report.failed:
        out.print(f"[bold red]✗ check failed[/]: {summary}")
    else:
        out.print(f"[green]✓ check passed[/]: {summary}")


def register(app: typer.Typer) -> None:
    """Add `check` to the app."""

    @app.command(name="check")
    @handled
    def check_command(
        plan: PlanPath,
        database_url: DatabaseUrl = None,
        format: Annotated[
            Format, typer.Option("--format", "-f", help="table, json, junit or github.")
        ] = Format.table,
        output: Annotated[
            Path | None,
            typer.Option("--output", "-o", help="Write the report to this file, not stdout."),
        ] = None,
        pg_version: Annotated[
            str | None,
            typer.Option(
                "--pg-version",
                envvar="MIGRATOR_PG_VERSION",
                help="Judge the lint by this server version (e.g. 15) when no --database-url.",
            ),
        ] = None,
        scratch_url: ScratchUrl = None,
        lint: Annotated[bool, typer.Option("--lint/--no-lint", help="Run the lint too.")] = True,
        as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    ) -> None:
        """Prove the old and new versions' queries work at every phase; lint the plan."""
        from migrator.commands.check import CheckOptions, check

        if as_json:
            if format not in (Format.table, Format.json):
                raise UsageError(f"--json and --format {format.value}: give one of them")
            format = Format.json
        loaded = read_plan(plan)
        if format == Format.table and output is not None:
            raise UsageError("--output takes --format json, junit or github")
        # Progress lines would spoil a machine format on stdout; only the table shows them.
        observer = ConsoleObserver(show_sql=False) if format == Format.table else NULL_OBSERVER
        opts = CheckOptions(
            database_url=database_url,
            scratch_url=scratch_url,
            observer=observer,
            actor=actor(),
            pg_version=parse_pg_version(pg_version),
            lint=lint,
            lint_settings=lint_settings(),
            cache_dir=cache_dir(),
        )
        report = check(loaded, plan, opts)
        if format == Format.table:
            render_table(report)
        else:
            if format == Format.json:
                text = json.dumps(report.to_json(), indent=2, default=str)
            elif format == Format.junit:
                text = report.to_junit()
            else:
                text = "\n".join(report.to_github())
            if output is not None:
                output.write_text(text + "\n", encoding="utf-8")
                counts = report.counts()
                out.print(
                    f"{'✗ check failed' if report.failed else '✓ check passed'}: "
                    f"{counts['error']} errors, {counts['warning']} warnings; "
                    f"{format.value} report in {escape(str(output))}"
                )
            else:
                typer.echo(text)
        if report.failed:
            raise typer.Exit(int(ExitCode.FINDINGS))
