"""The lifecycle verbs, one phase each: init, expand, backfill, complete, contract,
rollback, and status to see where a release is. (`release` runs them all: release.py.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from migrator.cli.common import (
    AcceptChangedPlan,
    DatabaseUrl,
    DryRun,
    Force,
    Json,
    PlanPath,
    Reason,
    Workers,
    command_options,
    emit_json,
    escape,
    handled,
    json_lines,
    out,
    read_plan,
)
from migrator.words import count

if TYPE_CHECKING:
    from migrator.commands.session import PhaseResult


def _report(result: PhaseResult, as_json: bool, dry_run: bool) -> None:
    if as_json:
        emit_json({"event": "result", **result.to_json()})
        return
    if dry_run:
        return
    skipped = f", {len(result.skipped)} already done" if result.skipped else ""
    rows = f", {result.rows} rows" if result.rows else ""
    out.print(
        f"[green]✓[/] {result.phase} of {escape(result.release)}: "
        f"{count(len(result.ran), 'step')} run{skipped}{rows}"
    )


def register(app: typer.Typer) -> None:
    """Add the release verbs to the app."""

    @app.command()
    @handled
    def init(database_url: DatabaseUrl = None) -> None:
        """Create migrator's state schema in the database (safe to rerun)."""
        from migrator.commands.session import init

        init(command_options(database_url))
        out.print("[green]✓[/] state schema `migrator` is ready")

    @app.command()
    @handled
    @json_lines
    def expand(
        plan: PlanPath,
        database_url: DatabaseUrl = None,
        dry_run: DryRun = False,
        accept_changed_plan: AcceptChangedPlan = False,
        strict: Annotated[
            bool,
            typer.Option(
                "--strict", help="Refuse, not just warn, while an earlier contract is due."
            ),
        ] = False,
        json: Json = False,
    ) -> None:
        """Add what the new version needs; nothing the old version uses changes."""
        from migrator.commands.expand import expand

        opts = command_options(
            database_url, as_json=json, dry_run=dry_run, accept=accept_changed_plan
        )
        opts.strict = strict
        _report(expand(read_plan(plan), opts), json, dry_run)

    @app.command()
    @handled
    @json_lines
    def backfill(
        plan: PlanPath,
        database_url: DatabaseUrl = None,
        dry_run: DryRun = False,
        accept_changed_plan: AcceptChangedPlan = False,
        json: Json = False,
        workers: Workers = 1,
    ) -> None:
        """Fill new columns for existing rows, in small batches, while both versions run."""
        from migrator.cli.progress import BackfillObserver
        from migrator.commands.backfill import backfill

        opts = command_options(
            database_url, as_json=json, dry_run=dry_run, accept=accept_changed_plan
        )
        opts.observer = BackfillObserver(as_json=json)
        _report(backfill(read_plan(plan), opts, workers=workers), json, dry_run)

    @app.command()
    @handled
    @json_lines
    def complete(
        plan: PlanPath,
        database_url: DatabaseUrl = None,
        dry_run: DryRun = False,
        accept_changed_plan: AcceptChangedPlan = False,
        force: Force = False,
        reason: Reason = "",
        json: Json = False,
    ) -> None:
        """Mark the release done and schedule its contract for the next release."""
        from migrator.commands.complete import complete

        opts = command_options(
            database_url,
            as_json=json,
            dry_run=dry_run,
            accept=accept_changed_plan,
            force=force,
            reason=reason,
        )
        _report(complete(read_plan(plan), opts), json, dry_run)

    @app.command()
    @handled
    @json_lines
    def contract(
        database_url: DatabaseUrl = None,
        release: Annotated[
            str | None, typer.Option("--release", help="Only this release's contract.")
        ] = None,
        dry_run: DryRun = False,
        force: Force = False,
        reason: Reason = "",
        json: Json = False,
    ) -> None:
        """Run the due contract steps: drop what only the old version needed, tighten."""
        from migrator.commands.contract import contract

        opts = command_options(
            database_url, as_json=json, dry_run=dry_run, force=force, reason=reason
        )
        results = contract(opts, release)
        if json:
            # One final object for the run, whatever number of releases it contracted.
            emit_json(
                {"event": "result", "phase": "contract", "releases": [r.to_json() for r in results]}
            )
            return
        if not results:
            out.print("nothing to contract")
        for result in results:
            _report(result, json, dry_run)

    @app.command()
    @handled
    @json_lines
    def rollback(
        plan: PlanPath,
        database_url: DatabaseUrl = None,
        dry_run: DryRun = False,
        accept_changed_plan: AcceptChangedPlan = False,
        json: Json = False,
    ) -> None:
        """All traffic back to blue in seconds; with none on green, undo the expand.

        Refused once the contract has run: the old version could no longer work."""
        from migrator.commands.rollback import rollback

        opts = command_options(
            database_url, as_json=json, dry_run=dry_run, accept=accept_changed_plan
        )
        result = rollback(read_plan(plan), opts)
        if result.phase == "traffic-rollback" and not json:
            if dry_run:  # what would move was said above; nothing moved
                return
            out.print(f"[green]✓[/] {escape(result.ran[0])}")
            out.print("  the schema stays expanded (v1 works with it); rerun to undo the expand")
            return
        _report(result, json, dry_run)

    @app.command()
    @handled
    def status(database_url: DatabaseUrl = None, json: Json = False) -> None:
        """Timeline of releases: phases, steps, traffic, backfill progress, contracts due.

        Each contract due lists what still blocks it."""
        from migrator.commands.status import status

        result = status(command_options(database_url))
        if json:
            emit_json(result.to_json())
            return
        if not result.initialised:
            out.print("no releases: the state schema does not exist yet (`migrator init`)")
            return
        if not result.releases:
            out.print("no releases yet")
        for release in result.releases:
            _show_release(release)
        for due in result.contracts_due:
            blocked = due["blocked_by"]
            state = "[green]ready to run[/]" if not blocked else "[yellow]waiting[/]"
            out.print(
                f"\n[bold]contract due[/]: {escape(due['release'])}, {count(due['steps'], 'step')}, "
                f"not before {due['not_before']}: {state}"
            )
            for reason in blocked:
                out.print(f"  blocked by {escape(reason)}")


def _show_release(release: dict[str, Any]) -> None:
    from rich.table import Table

    out.print(
        f"\n[bold]{escape(release['name'])}[/] [cyan]{release['phase']}[/]"
        f"  plan {release['plan_hash'][:12]}  started {release['created_at']}"
    )
    table = Table(box=None, pad_edge=False, show_header=True, header_style="dim")
    for column in ("phase", "step", "status", "when", "note"):
        table.add_column(column)
    for st in release["steps"]:
        note = st["error"] or ""
        checkpoint = st["checkpoint"] or {}
        if checkpoint:
            done, total = checkpoint.get("rows", 0), checkpoint.get("total")
            rate = checkpoint.get("rate")
            note = f"{done} rows" + (f" of ~{total}" if total else "")
            note += f", {rate:.0f} rows/s" if isinstance(rate, int | float) else ""
        when = st["finished_at"] or st["started_at"] or ""
        table.add_row(st["phase"], st["key"], st["status"], when, escape(note))
    for c in release["contracts"]:
        when = c["done_at"] or f"not before {c['not_before']}"
        table.add_row("contract", c["key"], c["status"], when, escape(c["error"] or ""))
    out.print(table)
    moves = [e for e in release["timeline"] if e["action"].startswith("switch")]
    for event in release["timeline"]:
        details = event["details"] or {}
        if event in moves and "from" in details:
            what = f"traffic {details.get('from')} -> {details.get('to')}"
        else:
            what = ", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, [], {}))
        out.print(
            f"  [dim]{event['at']}[/] {escape(event['action'])} by {escape(event['actor'])}"
            + (f": {escape(what)}" if what else "")
        )
