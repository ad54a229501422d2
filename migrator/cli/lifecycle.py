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
            out.print(f"\n[bold]contract due[/]: {state}")
            line = (
                f"{due['release']}, {count(due['steps'], 'step')}, not before "
                f"{_when(due['not_before'])} UTC"
            )
            out.print(escape(_lines(line, 2)))
            for reason in blocked:
                out.print(escape(_lines(f"blocked by {reason}", 2)))


def _when(iso: str | None, day: str | None = None) -> str:
    """An ISO time as ``2026-12-05 17:43:32`` (UTC, as stored), or ``17:43:32`` on ``day``."""
    if not iso:
        return ""
    text = iso.replace("T", " ")[:19]
    return text[11:] if day and text.startswith(day) else text


def _lines(text: str, indent: int) -> str:
    """Text wrapped to the terminal at spaces only, so no name is ever cut in two (a
    word longer than the line stays whole and the terminal wraps it)."""
    import textwrap

    width = max(out.console.width, 40)
    pad = " " * indent
    return textwrap.fill(
        text,
        width,
        initial_indent=pad,
        subsequent_indent=pad + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _step_note(st: dict[str, Any]) -> str:
    """What a step's row says beyond its status: its error, or its rows for a batched
    step (from its key ranges, which hold the truth after an interruption)."""
    checkpoint = st["checkpoint"] or {}
    filled = st.get("filled")
    if not filled and not checkpoint:
        return st["error"] or ""
    done = filled["rows"] if filled else checkpoint.get("rows", 0)
    total = checkpoint.get("total")
    note = f"{done} rows filled" + (f" of ~{total}" if total else "")
    if filled and filled["ranges"]:
        note += f", {filled['ranges_done']} of {count(filled['ranges'], 'key range')} done"
    rate = checkpoint.get("rate")
    if isinstance(rate, int | float) and not st.get("interrupted"):
        note += f", {rate:.0f} rows/s"
    if st.get("interrupted"):
        note += "; interrupted: rerun to resume from there"
    if st["error"]:
        note += f"; {st['error']}"
    return note


def _share(split: Any) -> str:
    """A traffic split of the audit log (``{"blue": 50, "green": 50}``) as green's share."""
    if isinstance(split, dict) and "green" in split:
        return f"{split['green']}%"
    return "?" if split is None else str(split)


def _show_release(release: dict[str, Any]) -> None:
    # Lines, not a table: a table squeezed into 80 columns folds names mid-word. Each
    # step is one line of short fixed columns, then its key; a key or note that does not
    # fit goes on its own line, wrapped at spaces only.
    day = (release["created_at"] or "")[:10]
    out.print(f"\n[bold]{escape(release['name'])}[/]")
    out.print(
        f"  [cyan]{release['phase']}[/], plan {release['plan_hash'][:12]}, "
        f"started {_when(release['created_at'])} UTC"
    )
    width = max(out.console.width, 40)
    rows: list[tuple[str, str, str, str, str]] = []
    for st in release["steps"]:
        status = "interrupted" if st.get("interrupted") else st["status"]
        when = _when(st["finished_at"] or st["started_at"], day)
        rows.append((st["phase"], status, when, st["key"], _step_note(st)))
    for c in release["contracts"]:
        when = _when(c["done_at"], day) if c["done_at"] else ""
        note = c["error"] or ("" if c["done_at"] else f"not before {_when(c['not_before'])}")
        rows.append(("contract", c["status"], when, c["key"], note))
    if rows:
        out.print(f"  [dim]{'phase':<9} {'status':<11} {'when':<8}  step[/]")
    for phase, status, when, key, note in rows:
        head = f"  {phase:<9} {status:<11} {when:<8}  "
        if len(head) + len(key) <= width:
            out.print(escape(head + key))
        else:
            out.print(escape(head.rstrip()))
            out.print(escape(_lines(key, 4)))
        if note:
            out.print(f"[dim]{escape(_lines(note, 4))}[/]")
    moves = [e for e in release["timeline"] if e["action"].startswith("switch")]
    for event in release["timeline"]:
        details = event["details"] or {}
        if event in moves and "from" in details:
            what = f"green {_share(details.get('from'))} -> {_share(details.get('to'))}"
        else:
            what = ", ".join(f"{k}={v}" for k, v in details.items() if v not in (None, [], {}))
        line = f"{_when(event['at'], day)} {event['action']} by {event['actor']}"
        out.print(f"[dim]{escape(_lines(line + (f': {what}' if what else ''), 2))}[/]")
