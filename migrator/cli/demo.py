"""`migrator demo`: a whole release on an embedded PostgreSQL."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from migrator import demo as demo_core
from migrator.cli.common import ConsoleObserver, Json, emit_json, handled, out
from migrator.errors import FindingsError


def register(app: typer.Typer) -> None:
    """Add `demo` to the app."""

    @app.command()
    @handled
    def demo(
        rows: Annotated[int, typer.Option(help="Rows to seed the users table with.")] = 20_000,
        json: Json = False,
    ) -> None:
        """Run the example release (add users.phone) on an embedded PostgreSQL."""
        result = demo_core.run(rows=rows, observer=ConsoleObserver(as_json=json))
        if json:
            emit_json({"event": "result", **asdict(result)})
        else:
            out.print(
                f"\n[bold]done[/]: {result.rows} users, {result.rows_backfilled} rows backfilled, "
                f"{result.v1_rows_filled_by_trigger} v1 rows filled by the trigger, "
                f"{result.rows_without_phone} without a phone, "
                f"phone NOT NULL: {result.phone_not_null}"
            )
        if result.rows_without_phone or not result.phone_not_null:
            raise FindingsError("the demo release did not end as expected")
