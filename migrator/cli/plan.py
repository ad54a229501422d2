"""`migrator plan ...`: validate a plan, print the JSON Schema."""

from __future__ import annotations

import json

import typer
from rich.markup import escape

from migrator.cli.common import Json, PlanPath, emit_json, handled, out, read_plan
from migrator.plan.models import json_schema

plan_app = typer.Typer(help="Work with release plans.", no_args_is_help=True)


@plan_app.command("validate")
@handled
def validate(plan: PlanPath, json_output: Json = False) -> None:
    """Check a plan's syntax and structure (no database needed)."""
    loaded = read_plan(plan)
    if json_output:
        emit_json({"valid": True, "release": loaded.release, "plan_hash": loaded.digest()})
        return
    ops = len(loaded.expand) + len(loaded.contract.operations)
    out.print(
        f"[green]✓[/] {escape(str(plan))}: release {escape(loaded.release)}, {ops} operations"
    )


@plan_app.command("schema")
@handled
def schema() -> None:
    """Print the plan's JSON Schema (for editors and CI)."""
    typer.echo(json.dumps(json_schema(), indent=2))
