"""`migrator rollback`: traffic back to blue first; with none on green, undo the
expand, last operation first.
"""

from __future__ import annotations

from sqlalchemy import Connection

from migrator.commands.session import (
    STATE,
    Options,
    PhaseResult,
    check_plan_hash,
    find_release,
    keyed_steps,
    operation_context,
    run_steps,
    session,
    set_phase,
)
from migrator.commands.switch import rollback_traffic
from migrator.engine.state import ROLLBACK_PHASES, ReleasePhase
from migrator.engine.steps import Step
from migrator.errors import GateRefused
from migrator.plan.models import Plan
from migrator.render import history


def rollback_steps(plan: Plan, conn: Connection) -> tuple[list[tuple[str, Step]], list[str]]:
    """The steps that undo the plan's expand on this database, last operation first,
    and the notes on what they cannot undo."""
    ctx = operation_context(plan, conn)
    steps: list[tuple[str, Step]] = []
    for index, op in reversed(list(enumerate(plan.operations("expand")))):
        steps += keyed_steps(index, op, op.rollback(ctx))
    return steps, list(dict.fromkeys(ctx.notes))


def rollback(plan: Plan, opts: Options) -> PhaseResult:
    """Move all traffic back to blue; with none on green, undo the expand.

    The result's phase says which: ``traffic-rollback`` or ``rollback`` (the schema).
    """
    result = PhaseResult(plan.release, "rollback")
    # Traffic first, lock-free and within seconds; the schema only once none is on green.
    moved = rollback_traffic(plan, opts)
    if moved is not None:
        result.phase = "traffic-rollback"
        result.ran.append(moved.summary())
        return result
    with session(opts, "rollback", plan.release) as s:
        release = find_release(s, plan.release)
        if release is None:
            raise GateRefused(
                f"release {plan.release} has not been expanded; there is nothing to roll back",
                gate="expanded",
            )
        if release.phase == ReleasePhase.ROLLED_BACK:
            return result
        if release.phase not in ROLLBACK_PHASES:
            raise GateRefused(
                f"cannot roll back the schema of {plan.release}: it is {release.phase}; "
                "after the switch the new version depends on it",
                gate="not-switched",
            )
        check_plan_hash(s, plan, release)
        with s.conn() as conn:
            steps, notes = rollback_steps(plan, conn)
            conn.rollback()
        for note in notes:  # what cannot be undone (an enum value)
            opts.observer.warning(note)
        if not opts.dry_run:
            set_phase(s, plan.release, ReleasePhase.ROLLING_BACK)
            s.event("rollback.start", plan.release, plan.digest())
        run_steps(
            s,
            plan,
            "rollback",
            steps,
            result,
            last=history.after_rollback(plan.release, opts.observer),
        )
        if not opts.dry_run:
            with s.conn() as conn:
                for phase in ("expand", "backfill"):
                    STATE.undo_phase(conn, plan.release, phase)
                STATE.set_phase(conn, plan.release, ReleasePhase.ROLLED_BACK)
                STATE.event(conn, opts.actor, "rollback.done", plan.release, plan.digest())
    return result
