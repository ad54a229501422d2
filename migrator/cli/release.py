"""`migrator release PLAN`: the whole release, gate after gate."""

from __future__ import annotations

import typer

from migrator.cli.common import (
    AcceptChangedPlan,
    DatabaseUrl,
    Json,
    PlanPath,
    ScratchUrl,
    Workers,
    command_options,
    emit_json,
    escape,
    handled,
    json_lines,
    out,
    read_plan,
)


def register(app: typer.Typer) -> None:
    """Add `release` to the app."""

    @app.command()
    @handled
    @json_lines
    def release(
        plan: PlanPath,
        database_url: DatabaseUrl = None,
        accept_changed_plan: AcceptChangedPlan = False,
        json: Json = False,
        scratch_url: ScratchUrl = None,
        workers: Workers = 1,
    ) -> None:
        """The whole release: check, expand, switch, backfill, complete; rerun to resume.

        Stops at the first gate that fails, with a message that names it."""
        from migrator.commands.release import phase_order
        from migrator.commands.release import release as run_release

        loaded = read_plan(plan)
        opts = command_options(database_url, as_json=json, accept=accept_changed_plan)
        if not json:
            out.print(f"release {escape(loaded.release)}: {' -> '.join(phase_order(loaded))}")
        result = run_release(loaded, plan, opts, scratch_url=scratch_url, workers=workers)
        if json:
            emit_json({"event": "result", **result.to_json()})
        else:
            out.print(
                f"[green]✓[/] release {escape(loaded.release)} complete; its contract is "
                "scheduled (`migrator status` shows when it is due)"
            )
