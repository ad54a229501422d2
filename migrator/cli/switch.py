"""`migrator switch`: move traffic from blue to green, step by step, watched; and
`migrator gate`, which asks whether a phase's gate holds."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from migrator.cli.common import (
    AcceptChangedPlan,
    DatabaseUrl,
    DryRun,
    Force,
    Json,
    PlanPath,
    Reason,
    check_force,
    command_options,
    emit_json,
    escape,
    handled,
    json_lines,
    out,
    read_plan,
)
from migrator.errors import UsageError


def register(app: typer.Typer) -> None:
    """Add `switch` to the app."""

    @app.command()
    @handled
    @json_lines
    def switch(
        plan: PlanPath,
        to: Annotated[
            str, typer.Option("--to", help="green (the steps of the plan) or blue (all back).")
        ] = "green",
        step: Annotated[
            int | None,
            typer.Option("--step", help="Run only this step of switch.steps (1-based).", min=1),
        ] = None,
        database_url: DatabaseUrl = None,
        dry_run: DryRun = False,
        accept_changed_plan: AcceptChangedPlan = False,
        force: Force = False,
        reason: Reason = "",
        json: Json = False,
    ) -> None:
        """Smoke-test green, move traffic step by step and watch each step; a failed probe
        moves all traffic back to blue (exit 3). Needs the expand applied and a passing
        `migrator check` for this plan."""
        from migrator.commands.switch import switch as run_switch

        check_force(force, reason)
        if to not in ("green", "blue"):
            raise UsageError(f"--to takes green or blue, not {to!r}")
        target: Literal["green", "blue"] = "green" if to == "green" else "blue"
        opts = command_options(
            database_url,
            as_json=json,
            dry_run=dry_run,
            accept=accept_changed_plan,
            force=force,
            reason=reason,
        )
        result = run_switch(read_plan(plan), opts, to=target, step=step)
        if json:
            emit_json({"event": "result", **result.to_json()})
        elif not dry_run:
            out.print(f"[green]✓[/] {escape(result.release)}: {escape(result.summary())}")

    @app.command()
    @handled
    def gate(
        plan: PlanPath,
        for_phase: Annotated[
            str,
            typer.Option(
                "--for", help="The phase whose gate to check: switch, complete or contract."
            ),
        ],
        database_url: DatabaseUrl = None,
        json: Json = False,
    ) -> None:
        """Check the gate a phase would check, change nothing: exit 0 when it holds, 3
        naming every condition that does not. For deployment tools (Argo Rollouts
        analysis, Argo CD hooks, CI steps)."""
        from migrator.commands.gate import gate as run_gate
        from migrator.errors import GateRefused

        opts = command_options(database_url, as_json=json)
        result = run_gate(read_plan(plan), opts, for_phase)
        if json:
            emit_json({"event": "result", **result.to_json()})
        elif result.ok:
            out.print(
                f"[green]✓[/] {escape(result.release)}: the {escape(result.for_phase)} gate holds"
            )
        if not result.ok:
            raise GateRefused(
                f"the {result.for_phase} gate of {result.release} does not hold: "
                + "; ".join(result.problems),
                gate=result.for_phase,
            )
