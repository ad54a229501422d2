"""`migrator expand`: add what the new version needs; nothing the old version uses
changes. Gated on one release in flight, a linear history, and (with --strict) no
earlier contract still due.
"""

from __future__ import annotations

from migrator.commands.session import (
    STATE,
    Options,
    PhaseResult,
    Session,
    at_operation,
    check_plan_hash,
    find_release,
    keyed_steps,
    phase_forward,
    precheck_context,
    prechecks_bounded,
    run_steps,
    session,
    state_ready,
)
from migrator.engine.state import ReleasePhase
from migrator.engine.steps import Step
from migrator.errors import GateRefused
from migrator.plan.models import Plan
from migrator.render import history
from migrator.words import count


def expand(plan: Plan, opts: Options) -> PhaseResult:
    """Add what the new version needs; nothing the old version uses changes."""
    result = PhaseResult(plan.release, "expand")
    with session(opts, "expand", plan.release) as s:
        release = find_release(s, plan.release)
        check_plan_hash(s, plan, release)
        if release is None or release.phase == ReleasePhase.ROLLED_BACK:
            _gate_new_release(s, plan)
            _gate_earlier_contracts(s, plan)
        with s.conn() as conn:
            done = (
                STATE.step_status(conn, plan.release, "expand")
                if release and release.phase != ReleasePhase.ROLLED_BACK
                else {}
            )
            ctx = precheck_context(s, plan, conn)
            steps: list[tuple[str, Step]] = []
            with prechecks_bounded(plan):
                for index, op in enumerate(plan.operations("expand")):
                    prefix = f"{index}.{op.op_name}."
                    mine = {k: v for k, v in done.items() if k.startswith(prefix)}
                    if mine and all(v == "done" for v in mine.values()):
                        continue  # all done on an earlier run
                    with at_operation(plan, "expand", index, op):
                        if not any(v == "done" for v in mine.values()):
                            op.validate_live(ctx)  # a half-done one was validated before
                        steps += keyed_steps(index, op, op.expand(ctx))
            conn.rollback()
        for note in dict.fromkeys(ctx.notes):  # what the operations want the user to know
            opts.observer.warning(note)
        if not opts.dry_run:
            with s.conn() as conn:
                STATE.start_release(conn, plan.release, plan.after, plan.canonical(), plan.digest())
                STATE.event(conn, opts.actor, "expand.start", plan.release, plan.digest())
        run_steps(
            s,
            plan,
            "expand",
            steps,
            result,
            last=history.after_expand(plan.release, plan.after, opts.observer),
        )
        if not opts.dry_run:
            phase_forward(s, plan.release, ReleasePhase.EXPANDED)
            s.event("expand.done", plan.release, plan.digest(), steps=result.ran)
    return result


def _gate_new_release(s: Session, plan: Plan) -> None:
    """One release in flight, and a linear history."""
    if not state_ready(s):
        return
    with s.conn() as conn:
        flying = STATE.in_flight(conn)
        latest = STATE.latest(conn)
    if flying is not None and flying.name != plan.release:
        raise GateRefused(
            f"release {flying.name} is still in flight ({flying.phase}); complete or roll it "
            f"back before starting {plan.release}",
            gate="one-in-flight",
        )
    if latest is not None and latest.name != plan.release and plan.after != latest.name:
        raise GateRefused(
            f"release {plan.release} says after: {plan.after or '(nothing)'}, but the last "
            f"release on this database is {latest.name}; set `after: {latest.name}`",
            gate="linear-history",
        )


def _gate_earlier_contracts(s: Session, plan: Plan) -> None:
    """Warn (or, with --strict, refuse) while an earlier release's contract is still due.

    The contract of the release before is usually the first thing the next one runs:
    its drops and tightenings belong to a schema both new versions no longer need.
    """
    if not state_ready(s):
        return
    with s.conn() as conn:
        due = [c for c in STATE.contracts(conn) if c.status != "done" and c.release != plan.release]
    if not due:
        return
    names = ", ".join(dict.fromkeys(c.release for c in due))
    message = f"the contract of {names} is still due ({count(len(due), 'step')}); run `migrator contract` first"
    if s.opts.strict:
        raise GateRefused(f"cannot expand {plan.release}: {message}", gate="earlier-contract")
    s.opts.observer.warning(message)
