"""`migrator demo`: a whole release on an embedded PostgreSQL."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer

from migrator.cli.common import ConsoleObserver, Json, emit_json, handled, json_lines, out
from migrator.errors import FindingsError


def register(app: typer.Typer) -> None:
    """Add `demo` to the app."""

    @app.command()
    @handled
    @json_lines
    def demo(
        rows: Annotated[int, typer.Option(help="Rows to seed the users table with.")] = 20_000,
        nginx: Annotated[
            bool, typer.Option("--nginx/--no-nginx", help="Use nginx as the front if installed.")
        ] = True,
        json: Json = False,
    ) -> None:
        """Run the example release on an embedded PostgreSQL, under load, end to end.

        v1 and v2 of a small users service run behind a switch (nginx where installed),
        with a load running throughout; the release adds users.phone."""
        from migrator import demo as demo_core

        result = demo_core.run(
            rows=rows, observer=ConsoleObserver(as_json=json), prefer_nginx=nginx
        )
        if json:
            emit_json({"event": "result", **asdict(result)})
        else:
            served = ", ".join(f"{v} {n}" for v, n in sorted(result.served_by.items()))
            out.print(
                f"\n[bold]done[/] (front: {result.front}): {result.requests_served} requests "
                f"served ({served}), [bold]{result.requests_failed} failed[/]; "
                f"{result.rows_backfilled} rows backfilled; {result.rows} users, "
                f"{result.rows_without_phone} without a phone; "
                f"phone NOT NULL: {result.phone_not_null}"
            )
            for failure in result.failures[:5]:
                out.print(f"  failed: {failure}")
        if result.requests_failed or result.rows_without_phone or not result.phone_not_null:
            raise FindingsError("the demo release did not end as expected")
