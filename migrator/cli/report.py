"""`migrator report`: a release's report as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from migrator.cli.common import DatabaseUrl, command_options, escape, handled, out


def register(app: typer.Typer) -> None:
    """Add `report` to the app."""

    @app.command()
    @handled
    def report(
        release: Annotated[
            str | None,
            typer.Argument(help="The release; the one started last when not given."),
        ] = None,
        output: Annotated[
            Path,
            typer.Option("--output", "-o", dir_okay=False, help="Where to write the HTML page."),
        ] = Path("release.html"),
        database_url: DatabaseUrl = None,
    ) -> None:
        """Write a release's report: one HTML page, no server, no network (inline CSS and
        SVG, no script). Phases and steps with durations, the traffic split over time with
        each watch, the backfill's rows/s and throttle pauses, the contract's conditions."""
        from migrator.commands.report import report as gather
        from migrator.report_html import render_html

        data = gather(command_options(database_url), release)
        output.write_text(render_html(data), encoding="utf-8")
        out.print(f"[green]✓[/] report of {escape(data.release)} in {escape(str(output))}")
