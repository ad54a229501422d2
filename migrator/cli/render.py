"""`migrator render`: release plans as Alembic revisions under migrations/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from migrator.cli.common import (
    ConsoleObserver,
    Json,
    ScratchUrl,
    emit_json,
    escape,
    handled,
    json_lines,
    out,
    read_plan,
)


def register(app: typer.Typer) -> None:
    """Add `render` to the app."""

    @app.command(name="render")
    @handled
    @json_lines
    def render_command(
        plans: Annotated[
            list[Path],
            typer.Argument(
                help="Release plans (YAML); several are rendered in their `after:` order.",
                show_default=False,
                metavar="PLAN...",
            ),
        ],
        out_dir: Annotated[
            Path, typer.Option("--out", help="The Alembic folder (alembic.ini, env.py, versions/).")
        ] = Path("migrations"),
        database_url: Annotated[
            str | None,
            typer.Option(
                "--database-url",
                help="Compute the steps against this database, read only (one plan). "
                "Without it an embedded PostgreSQL is loaded with --baseline.",
            ),
        ] = None,
        baseline: Annotated[
            Path | None,
            typer.Option(
                "--baseline",
                help="SQL file with the schema before the first plan (pg_dump --schema-only); "
                "also written as the first revision when the history is empty.",
                exists=True,
                dir_okay=False,
            ),
        ] = None,
        scratch_url: ScratchUrl = None,
        as_json: Json = False,
    ) -> None:
        """Write <rev>_<release>_expand.py and _contract.py Alembic revisions for each plan."""
        from migrator.commands.render import RenderOptions, render

        loaded = [(read_plan(p), str(p)) for p in plans]
        result = render(
            loaded,
            RenderOptions(
                out=out_dir,
                database_url=database_url,
                baseline=baseline,
                scratch_url=scratch_url,
                observer=ConsoleObserver(as_json=as_json, show_sql=False),
            ),
        )
        if as_json:
            emit_json({"event": "result", **result.to_json()})
            return
        for path in result.environment:
            out.print(f"[green]✓[/] wrote {escape(path)}")
        out.print(f"[green]✓[/] {len(result.files)} revision files in {escape(str(out_dir))}")
