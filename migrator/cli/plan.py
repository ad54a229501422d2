"""`migrator plan ...`: validate a plan, print the JSON Schema, write new plans."""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer

from migrator.cli.common import (
    AlembicConfig,
    ConsoleObserver,
    DatabaseUrl,
    Json,
    ScratchUrl,
    ScriptLocation,
    Settings,
    emit_json,
    err,
    escape,
    handled,
    out,
    read_plan,
)
from migrator.errors import ExitCode, UsageError
from migrator.words import count

plan_app = typer.Typer(help="Work with release plans.", no_args_is_help=True)


PlanPaths = Annotated[
    list[Path],
    typer.Argument(
        help="Release plans (YAML), or folders of them (their *.yaml and *.yml).",
        show_default=False,
        metavar="PLAN...",
    ),
]


def _plan_files(paths: list[Path]) -> list[Path]:
    """The files named, and the plans of each folder named (not its subfolders)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                raise UsageError(f"{path}: no *.yaml or *.yml plan in this folder")
            files += found
        else:
            files.append(path)
    return files


@plan_app.command("validate")
@handled
def validate(plans: PlanPaths, json_output: Json = False) -> None:
    """Check plans' syntax and structure, and that the files they name (baseline:,
    versions' queries:) are there; no database needed. Every error of each plan."""
    from migrator.errors import PlanError
    from migrator.plan.loader import missing_files

    failed = False
    results: list[dict[str, Any]] = []  # --json: one document for every plan
    for plan in _plan_files(plans):
        try:
            loaded = read_plan(plan)
            found: list[PlanError] = []
            if any(op.lint for phase in ("expand", "contract") for op in loaded.operations(phase)):
                # Only then: the lint's registry loads the SQL parser, which validate needs not.
                from migrator.lint.sources import check_suppressions

                try:
                    check_suppressions(loaded)
                except PlanError as exc:
                    found += [exc, *exc.more]
            found += missing_files(loaded, plan)
            if found:
                found[0].more = found[1:]
                raise found[0]
        except PlanError as exc:
            # Go on with the other files: one run reports every plan's errors.
            failed = True
            if Settings.debug:
                err.print(escape(traceback.format_exc()), end="")
            errors = [exc, *exc.more]
            results.append(
                {
                    "file": str(plan),
                    "valid": False,
                    "errors": [{"location": e.location, "message": e.reason} for e in errors],
                }
            )
            if not json_output:
                for error in errors:
                    err.print(f"[bold red]error:[/] {escape(str(error))}")
            continue
        results.append(
            {
                "file": str(plan),
                "valid": True,
                "release": loaded.release,
                "plan_hash": loaded.digest(),
            }
        )
        if json_output:
            continue
        ops = len(loaded.expand) + len(loaded.contract.operations)
        out.print(
            f"[green]✓[/] {escape(str(plan))}: release {escape(loaded.release)}, "
            f"{count(ops, 'operation')}"
        )
    if json_output:
        emit_json({"valid": not failed, "plans": results})
    if failed:
        raise typer.Exit(int(ExitCode.BAD_INPUT))


@plan_app.command("schema")
@handled
def schema() -> None:
    """Print the plan's JSON Schema (for editors and CI)."""
    from migrator.plan.models import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


PlansDir = Annotated[
    Path,
    typer.Option("--plans-dir", file_okay=False, help="Where the plans are, and the new one goes."),
]
Renames = Annotated[
    list[str] | None,
    typer.Option(
        "--rename",
        help="TABLE.OLD=NEW (a column) or OLD=NEW (a table): this drop + add pair is a rename. "
        "Repeatable.",
    ),
]
Fills = Annotated[
    list[str] | None,
    typer.Option(
        "--fill",
        help="TABLE.COLUMN=EXPR: the SQL expression rows already there get for a new NOT NULL "
        "column. Repeatable.",
    ),
]


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or []:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise UsageError(f"{flag} {value}: expected NAME=VALUE")
        pairs[key.strip()] = rest.strip()
    return pairs


def _report_written(path: Path, placeholders: list[Any]) -> None:
    if not placeholders:
        out.print(f"[green]✓[/] wrote {escape(str(path))}; review it, then `migrator check` it")
        return
    out.print(
        f"wrote {escape(str(path))} with {count(len(placeholders), 'placeholder')} to fill in:"
    )
    for p in placeholders:
        out.print(f"  {escape(str(path))}:{p.line}:{p.column}: write {escape(p.what)}")
    raise typer.Exit(int(ExitCode.FINDINGS))


@plan_app.command("new")
@handled
def new(
    name: Annotated[str, typer.Argument(help="The release name; the plan is PLANS_DIR/NAME.yaml.")],
    from_models: Annotated[
        str,
        typer.Option(
            "--from-models",
            help="MODULE:ATTR, a SQLAlchemy MetaData or declarative base (imported from the "
            "working directory).",
        ),
    ],
    database_url: DatabaseUrl = None,
    scratch_url: ScratchUrl = None,
    plans_dir: PlansDir = Path("plans"),
    rename: Renames = None,
    fill: Fills = None,
) -> None:
    """Write a plan that turns the schema before the release into the models' schema.

    The schema before is the database of --database-url, else the chain of plans in
    --plans-dir built on a scratch database the way `migrator check` builds it.
    Exit 1 when the plan has placeholders left to fill in."""
    # Imported here: the authoring package pulls in Alembic's autogenerate.
    from migrator.authoring import write_plan
    from migrator.authoring.models import NewPlan, draft_from_models, scratch_server
    from migrator.commands.check import CommandPhases
    from migrator.observer import Observer

    # Building the schema before runs earlier plans' phases; their statements are not
    # this command's output.
    observer = ConsoleObserver()
    request = NewPlan(
        release=name,
        plans_dir=plans_dir,
        database_url=database_url,
        renames=_pairs(rename, "--rename"),
        fills=_pairs(fill, "--fill"),
        search_path=[str(Path.cwd())],
        observer=Observer(),
    )
    if database_url is not None:
        draft = draft_from_models(from_models, request)
    else:
        with scratch_server(scratch_url, observer) as server:
            draft = draft_from_models(
                from_models, request, scratch=lambda: server, phases=CommandPhases()
            )
    path, placeholders = write_plan(draft, plans_dir)
    _report_written(path, placeholders)


LiveSchema = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="MIGRATOR_DATABASE_URL",
        help="Optional, read only: the database the plan will run on, for what the files do "
        "not say (a column's current type, whether PostgreSQL casts it, in-place changes).",
    ),
]

import_app = typer.Typer(help="Write a plan from existing migrations.", no_args_is_help=True)
plan_app.add_typer(import_app, name="import")

Release = Annotated[
    str | None,
    typer.Option("--release", help="The release name (the plan is PLANS_DIR/NAME.yaml)."),
]


@import_app.command("alembic")
@handled
def import_alembic(
    revisions: Annotated[
        str | None,
        typer.Argument(help="REV, or BASE:HEAD (BASE excluded); default: every revision."),
    ] = None,
    release: Release = None,
    alembic_config: AlembicConfig = None,
    script_location: ScriptLocation = None,
    plans_dir: PlansDir = Path("plans"),
    rename: Renames = None,
    fill: Fills = None,
    database_url: LiveSchema = None,
) -> None:
    """Write a plan doing what Alembic revisions' upgrade() do, in lock-safe forms.

    The revisions are read, not run: no database is needed. Exit 1 when the plan has
    placeholders left to fill in (the rollback of an op.execute, say)."""
    from migrator.authoring import write_plan
    from migrator.authoring.alembic_import import AlembicImport, draft_from_alembic

    draft = draft_from_alembic(
        AlembicImport(
            release=release,
            plans_dir=plans_dir,
            spec=revisions,
            config=alembic_config,
            location=script_location,
            fills=_pairs(fill, "--fill"),
            renames=_pairs(rename, "--rename"),
            database_url=database_url,
        )
    )
    path, placeholders = write_plan(draft, plans_dir)
    _report_written(path, placeholders)


@import_app.command("sql")
@handled
def import_sql(
    files: Annotated[list[Path], typer.Argument(help="SQL files, read in order.", dir_okay=False)],
    release: Annotated[
        str, typer.Option("--release", help="The release name (the plan is PLANS_DIR/NAME.yaml).")
    ],
    plans_dir: PlansDir = Path("plans"),
    fill: Fills = None,
    database_url: LiveSchema = None,
) -> None:
    """Write a plan doing what DDL files do, in lock-safe forms (parsed by pglast).

    Statements with no plan operation become `sql` operations with the lint's verdict.
    Exit 1 when the plan has placeholders left to fill in."""
    from migrator.authoring import write_plan
    from migrator.authoring.sql_import import SqlImport, draft_from_sql

    draft = draft_from_sql(
        SqlImport(
            release=release,
            plans_dir=plans_dir,
            files=files,
            fills=_pairs(fill, "--fill"),
            database_url=database_url,
        )
    )
    path, placeholders = write_plan(draft, plans_dir)
    _report_written(path, placeholders)
