"""`migrator gate PLAN --for switch|complete|contract`: whether the gate of that phase
holds now, with every condition that does not. How a deployment tool asks migrator.

It calls the very checks the verbs make and changes nothing: no advisory lock, no state
schema made, no events, no step rows, no traffic moved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from migrator.commands.complete import pending_work
from migrator.commands.contract import contract_conditions
from migrator.commands.session import STATE, Options, Session, operation_context
from migrator.commands.switch import switch_problems, traffic_problem
from migrator.db.connection import make_engine
from migrator.engine.state import (
    COMPLETED_PHASES,
    CONTRACT_DUE_PHASES,
    CONTRACTED_PHASES,
    NOT_EXPANDED_PHASES,
    Release,
    ReleasePhase,
)
from migrator.errors import UsageError
from migrator.plan.models import Plan
from migrator.switch import TrafficBackend

Phase = Literal["switch", "complete", "contract"]
PHASES: tuple[Phase, ...] = ("switch", "complete", "contract")


@dataclass
class GateResult:
    """The verdict: ``ok`` when the gate of ``for_phase`` holds, else every reason."""

    release: str
    for_phase: str
    ok: bool
    phase: str | None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json."""
        return asdict(self)


def gate(
    plan: Plan, opts: Options, for_phase: str, *, backend: TrafficBackend | None = None
) -> GateResult:
    """Check the gate ``for_phase`` would check, for this plan, changing nothing."""
    if for_phase not in PHASES:
        raise UsageError(f"--for takes {', '.join(PHASES)}, not {for_phase!r}")
    engine = make_engine(opts.database_url)
    try:
        # A Session made by hand, not by session(): that one takes the advisory lock
        # and creates the state schema, and asking must not wait for nor write anything.
        s = Session(engine, opts, "gate")
        release: Release | None = None
        with s.conn() as conn:
            if STATE.exists(conn):
                release = STATE.release(conn, plan.release)
        if for_phase == "switch":
            problems = _switch(s, plan, release)
        elif for_phase == "complete":
            problems = _complete(s, plan, release, backend)
        else:
            problems = _contract(s, plan, release)
    finally:
        engine.dispose()
    return GateResult(
        plan.release, for_phase, not problems, release.phase if release else None, problems
    )


def _plan_changed(plan: Plan, release: Release | None) -> list[str]:
    """check_plan_hash's refusal, as a problem (the gate accepts no changed plan)."""
    if release is None or release.plan_hash == plan.digest():
        return []
    return [
        f"the plan of release {plan.release} changed since it started (stored hash "
        f"{release.plan_hash[:12]}, file {plan.digest()[:12]}); revert the change, or run "
        "the phase with --accept-changed-plan if it is intended"
    ]


def _switch(s: Session, plan: Plan, release: Release | None) -> list[str]:
    if release is not None and release.phase in CONTRACTED_PHASES:
        return [
            f"its contract has run ({release.phase}); the old version could no longer "
            "work with this schema"
        ]
    changed = (
        _plan_changed(plan, release) if release and release.phase not in NOT_EXPANDED_PHASES else []
    )
    return changed + switch_problems(s, plan, release)


def _complete(
    s: Session, plan: Plan, release: Release | None, backend: TrafficBackend | None
) -> list[str]:
    # As require_release, then complete's own checks.
    if release is None or release.phase in NOT_EXPANDED_PHASES:
        state = "has not been expanded" if release is None else f"is {release.phase}"
        return [f"release {plan.release} {state}; run `migrator expand` first"]
    problems = _plan_changed(plan, release)
    if release.phase in COMPLETED_PHASES:
        return problems  # complete has nothing left to do
    traffic = traffic_problem(plan, s.opts, backend=backend)
    if traffic:
        problems.append(traffic)
    with s.conn() as conn:
        undone, todo_backfills = pending_work(conn, plan, operation_context(plan, conn))
        conn.rollback()
    if undone:
        problems.append(f"expand steps not done: {', '.join(undone)}; rerun `migrator expand`")
    if todo_backfills:
        problems.append(
            f"backfill not done for {', '.join(todo_backfills)}; run `migrator backfill` first"
        )
    return problems


def _contract(s: Session, plan: Plan, release: Release | None) -> list[str]:
    if release is None:
        return [f"release {plan.release} has not been expanded; nothing to contract"]
    if release.phase == ReleasePhase.CONTRACTED:
        return []
    if release.phase not in CONTRACT_DUE_PHASES:
        return [
            f"release {plan.release} is {release.phase}, not completed; run "
            "`migrator complete` first"
        ]
    with s.conn() as conn:
        pending = [r for r in STATE.contracts(conn, plan.release) if r.status != "done"]
        if not pending:
            return []
        now = conn.exec_driver_sql("SELECT now()").scalar_one()
        verdicts = contract_conditions(conn, release, pending, now)
    return [f"{c.name}: {c.detail}" for c in verdicts if not c.ok]
