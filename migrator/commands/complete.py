"""`migrator complete`: mark a release done (all traffic on green, backfills done)
and schedule its contract, with the conditions it waits for.
"""

from __future__ import annotations

from sqlalchemy import Connection

from migrator.commands.backfill import backfill_specs
from migrator.commands.contract import contract_steps, validate_contract_ops
from migrator.commands.session import (
    STATE,
    Options,
    PhaseResult,
    precheck_context,
    prechecks_bounded,
    require_release,
    session,
)
from migrator.commands.switch import require_all_green
from migrator.engine import conditions
from migrator.engine.state import COMPLETED_PHASES, ReleasePhase
from migrator.errors import GateRefused
from migrator.ops.base import Context
from migrator.plan.models import Plan


def pending_work(conn: Connection, plan: Plan, ctx: Context) -> tuple[list[str], list[str]]:
    """What `complete` waits for: the expand steps not done, the backfills not done."""
    expand_status = STATE.step_status(conn, plan.release, "expand")
    backfill_status = STATE.step_status(conn, plan.release, "backfill")
    todo_backfills = [
        key for key, _ in backfill_specs(plan, ctx) if backfill_status.get(key) != "done"
    ]
    undone = [k for k, v in expand_status.items() if v != "done"]
    return undone, todo_backfills


def complete(plan: Plan, opts: Options) -> PhaseResult:
    """Mark the release done and schedule its contract for later."""
    result = PhaseResult(plan.release, "complete")
    with session(opts, "complete", plan.release) as s:
        release = require_release(s, plan, "complete")
        if release.phase in COMPLETED_PHASES:
            return result
        if not opts.force:
            require_all_green(plan, opts)  # complete retires blue: all traffic must be on green
        with s.conn() as conn, prechecks_bounded(plan):
            # The contract's steps read the catalog too (a column's grants, indexes,
            # defaults): under the same lock_timeout as its operations' checks.
            ctx = precheck_context(s, plan, conn)
            undone, todo_backfills = pending_work(conn, plan, ctx)
            if not undone:
                validate_contract_ops(plan, ctx)
            steps = contract_steps(plan, ctx)
            conn.rollback()
        doomed = [
            d
            for phase in ("expand", "contract")
            for op in plan.operations(phase)
            for d in op.doomed()
        ]
        if undone:
            raise GateRefused(
                f"cannot complete {plan.release}: expand steps not done: {', '.join(undone)}; "
                "rerun `migrator expand`",
                gate="expanded",
            )
        if todo_backfills and not opts.force:
            raise GateRefused(
                f"cannot complete {plan.release}: backfill not done for "
                f"{', '.join(todo_backfills)}; run `migrator backfill` first",
                gate="backfilled",
            )
        for key, st in steps:
            result.statements += [x.sql for x in st.statements]
            if not opts.dry_run:
                opts.observer.info(f"scheduled {key}: {st.description}")
                continue
            opts.observer.info(f"-- would schedule {key}: {st.description}")
            for x in st.statements:
                opts.observer.statement(x.sql, step=key, autocommit=x.autocommit, dry_run=True)
        if opts.dry_run:
            return result
        with s.conn() as conn:
            for position, (key, st) in enumerate(steps):
                STATE.schedule_contract(
                    conn,
                    plan.release,
                    position,
                    key,
                    st.description,
                    [{"sql": x.sql, "autocommit": x.autocommit} for x in st.statements],
                    plan.contract.not_before,
                    {
                        "not_before_seconds": plan.contract.not_before,
                        "doomed": [[d.table, d.column] for d in doomed],
                    },
                )
                result.ran.append(key)
            conditions.snapshot_statements(conn, plan.release)
            STATE.set_phase(conn, plan.release, ReleasePhase.COMPLETED)
            STATE.event(
                conn,
                opts.actor,
                "complete",
                plan.release,
                plan.digest(),
                forced=opts.force,
                reason=opts.force_reason or None,
                contract_steps=len(steps),
            )
    return result
