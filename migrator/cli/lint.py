"""`migrator lint PLAN|FILE.sql...`, `--sql FILE` and `--alembic [REV | BASE:HEAD]`: the
lock-safety rules, from the CLI."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from migrator.cli.common import (
    AlembicConfig,
    DatabaseUrl,
    ScriptLocation,
    emit_json,
    escape,
    handled,
    out,
    parse_pg_version,
)
from migrator.cli.config import lint_settings
from migrator.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from migrator.commands.lint import LintResult
    from migrator.findings import Finding
    from migrator.lint.rules import RuleSettings


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
        paths: Annotated[
            list[Path] | None,
            typer.Argument(
                help="Release plans (YAML) and SQL files (.sql) to lint; with --alembic, "
                "the revisions: REV, BASE:HEAD or revision files (default: every one).",
                show_default=False,
                metavar="PLAN|FILE.sql...",
            ),
        ] = None,
        sql: Annotated[
            list[Path] | None,
            typer.Option(
                "--sql", help="Lint a raw SQL migration file instead of a plan (repeatable)."
            ),
        ] = None,
        alembic: Annotated[
            bool,
            typer.Option(
                "--alembic",
                help="Lint Alembic revisions through their offline SQL (alembic upgrade "
                "--sql): the arguments are REV, BASE:HEAD or revision files (default: all).",
            ),
        ] = False,
        alembic_config: AlembicConfig = None,
        script_location: ScriptLocation = None,
        pg_version: Annotated[
            str | None,
            typer.Option(
                "--pg-version",
                envvar="MIGRATOR_PG_VERSION",
                help="Server version the verdicts follow offline, e.g. 15, 15.4 or 150004 "
                "(default: the server's with --database-url, else pg_version in "
                "migrator.yaml, else 18).",
            ),
        ] = None,
        fmt: Annotated[
            LintFormat, typer.Option("--format", help="text, json, junit or github (annotations).")
        ] = LintFormat.text,
        database_url: DatabaseUrl = None,
        offline: Annotated[
            bool,
            typer.Option(
                "--offline",
                help="Use no database even if one is configured (as the pre-commit hook does).",
            ),
        ] = False,
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
        """Hold every statement of plans, SQL files or Alembic revisions to the lint rules;
        exit 1 on findings."""
        given = list(paths or [])
        if offline:
            database_url = None
        version = parse_pg_version(pg_version)
        major = version // 10000 if version is not None else None
        if major is not None and major < 9:
            raise UsageError(f"--pg-version {pg_version}: migrator knows PostgreSQL 9 and later")
        settings = lint_settings()
        if alembic:
            if sql:
                raise UsageError(
                    "--alembic lints revisions: give REV, BASE:HEAD or revision files, not --sql"
                )
            from migrator.commands.lint import lint_alembic

            result = lint_alembic(
                [str(p) for p in given],
                config=alembic_config,
                script_location=script_location,
                pg_version=major,
                database_url=database_url,
                enable=enable or [],
                settings=settings,
            )
        else:
            if alembic_config is not None or script_location is not None:
                raise UsageError("--alembic-config and --script-location go with --alembic")
            sql_files = [*(sql or []), *(p for p in given if p.suffix.lower() == ".sql")]
            plans = [p for p in given if p.suffix.lower() != ".sql"]
            if not plans and not sql_files:
                raise UsageError(
                    "give a plan, --sql FILE for raw SQL migrations, or --alembic for "
                    "Alembic revisions"
                )
            result = _lint_files(
                plans,
                sql_files,
                pg_version=major,
                database_url=database_url,
                assume_in_transaction=assume_in_transaction,
                enable=enable or [],
                settings=settings,
            )
        _report(result, fmt, fail_on.value)
        if result.fails(fail_on.value):
            raise typer.Exit(int(ExitCode.FINDINGS))


def _lint_files(
    plans: list[Path],
    sql_files: list[Path],
    *,
    pg_version: int | None,
    database_url: str | None,
    assume_in_transaction: bool,
    enable: list[str],
    settings: RuleSettings,
) -> LintResult:
    """Plans and SQL files linted in one run (as pre-commit passes them), one result."""
    from migrator.commands.lint import lint as lint_plan
    from migrator.commands.lint import lint_sql_files, merged

    results = [
        lint_plan(
            plan,
            pg_version=pg_version,
            database_url=database_url,
            enable=enable,
            settings=settings,
        )
        for plan in plans
    ]
    if sql_files:
        results.append(
            lint_sql_files(
                sql_files,
                pg_version=pg_version,
                database_url=database_url,
                assume_in_transaction=assume_in_transaction,
                enable=enable,
                settings=settings,
            )
        )
    return merged(results)
