"""`migrator lint PLAN` and `migrator lint --sql FILE`: the lock-safety rules, from the CLI."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from migrator.cli.common import DatabaseUrl, emit_json, escape, handled, out, parse_pg_version
from migrator.cli.config import lint_settings
from migrator.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from migrator.commands.lint import LintResult
    from migrator.findings import Finding


class LintFormat(StrEnum):
    """Output formats of `migrator lint`."""

    text = "text"
    json = "json"
    junit = "junit"
    github = "github"


class FailOn(StrEnum):
    """Which findings make `migrator lint` exit 1."""

    warning = "warning"
    error = "error"


def _show(finding: Finding) -> None:
    colour = "red" if finding.severity == "error" else "yellow"
    where = f"{finding.position}: " if finding.position else ""
    op = f" [{finding.operation}]" if finding.operation else ""
    out.print(
        f"{escape(where)}[bold {colour}]{finding.severity}[/] "
        f"[bold]{finding.rule}[/]{escape(op)}: {escape(finding.message)}"
    )
    sql = " ".join((finding.sql or "").split())
    out.print(f"    [dim]sql:[/] {escape(sql if len(sql) <= 200 else sql[:197] + '...')}")
    out.print(f"    [dim]safe form:[/] {escape(finding.safe_form)}")


def _report(result: LintResult, fmt: LintFormat, fail_on: str) -> None:
    if fmt is LintFormat.json:
        emit_json(result.to_json())
        return
    if fmt is LintFormat.junit:
        typer.echo(result.to_junit(fail_on))
        return
    if fmt is LintFormat.github:
        for line in result.to_github(fail_on):
            typer.echo(line)
        return
    for finding in result.findings:
        _show(finding)
    for waived in result.suppressed:
        where = f"{waived.position}: " if waived.position else ""
        out.print(
            f"[dim]{escape(where)}suppressed {waived.rule}: {escape(waived.suppressed or '')}[/]"
        )
    for item in result.unlinted:
        out.print(f"[yellow]not linted:[/] {escape(item)}")
    errors = sum(1 for f in result.findings if f.severity == "error")
    warnings = len(result.findings) - errors
    extra = f", {len(result.suppressed)} suppressed" if result.suppressed else ""
    unlinted = f", {len(result.unlinted)} not linted" if result.unlinted else ""
    version = f"PostgreSQL {result.server_version // 10000}"
    mark = "[green]✓[/]" if result.clean else "[red]✗[/]"
    out.print(
        f"{mark} {escape(result.source)}: {errors} errors, {warnings} warnings{extra}{unlinted} "
        f"({version})"
    )


def register(app: typer.Typer) -> None:
    """Add `migrator lint` to the app."""

    @app.command("lint")
    @handled
    def lint(
        plan: Annotated[
            Path | None,
            typer.Argument(help="The release plan (YAML).", show_default=False, metavar="PLAN"),
        ] = None,
        sql: Annotated[
            list[Path] | None,
            typer.Option(
                "--sql", help="Lint a raw SQL migration file instead of a plan (repeatable)."
            ),
        ] = None,
        pg_version: Annotated[
            str | None,
            typer.Option(
                "--pg-version",
                help="Server version the verdicts follow offline, e.g. 15, 15.4 or 150004 "
                "(default: the server's with --database-url, else 18).",
            ),
        ] = None,
        fmt: Annotated[
            LintFormat, typer.Option("--format", help="text, json, junit or github (annotations).")
        ] = LintFormat.text,
        database_url: DatabaseUrl = None,
        assume_in_transaction: Annotated[
            bool,
            typer.Option(
                "--assume-in-transaction",
                help="With --sql: the runner wraps each file in one transaction.",
            ),
        ] = False,
        fail_on: Annotated[
            FailOn,
            typer.Option(
                "--fail-on", help="Exit 1 on any finding (warning) or on errors only (error)."
            ),
        ] = FailOn.warning,
        enable: Annotated[
            list[str] | None,
            typer.Option(
                "--enable",
                help="Apply an optional rule too (repeatable), e.g. --enable M041.",
                metavar="RULE",
            ),
        ] = None,
    ) -> None:
        """Hold every statement of a plan (or SQL file) to the lint rules; exit 1 on findings."""
        if plan is not None and sql:
            raise UsageError("give either a plan or --sql FILE, not both")
        if plan is None and not sql:
            raise UsageError("give a plan, or --sql FILE for raw SQL migrations")
        version = parse_pg_version(pg_version)
        major = version // 10000 if version is not None else None
        if major is not None and major < 9:
            raise UsageError(f"--pg-version {pg_version}: migrator knows PostgreSQL 9 and later")
        from migrator.commands.lint import lint as lint_plan
        from migrator.commands.lint import lint_sql_files

        settings = lint_settings()
        if plan is not None:
            result = lint_plan(
                plan,
                pg_version=major,
                database_url=database_url,
                enable=enable or [],
                settings=settings,
            )
        else:
            result = lint_sql_files(
                sql or [],
                pg_version=major,
                database_url=database_url,
                assume_in_transaction=assume_in_transaction,
                enable=enable or [],
                settings=settings,
            )
        _report(result, fmt, fail_on.value)
        if result.fails(fail_on.value):
            raise typer.Exit(int(ExitCode.FINDINGS))
