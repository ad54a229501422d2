"""`migrator contract`: run the due contract steps of completed releases, oldest
first, once their conditions hold (or --force). Also the contract steps of a plan and
the conditions `migrator status` shows.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from migrator.commands.session import (
    STATE,
    Options,
    PhaseResult,
    Session,
    at_operation,
    keyed_steps,
    precheck_context,
    prechecks_bounded,
    session,
    set_phase,
    state_ready,
)
from migrator.engine import conditions
from migrator.engine.conditions import Condition
from migrator.engine.executor import Executor
from migrator.engine.state import (
    CONTRACT_DUE_PHASES,
    FORWARD_PHASES,
    ContractRecord,
    Release,
    ReleasePhase,
)
from migrator.engine.steps import Doomed, Statement, Step
from migrator.errors import GateRefused, MigratorError
from migrator.ops.base import Context
from migrator.plan.models import Plan
from migrator.render import history
from migrator.switch import make_backend


def contract_steps(plan: Plan, ctx: Context) -> list[tuple[str, Step]]:
    """The contract: the contract halves of the expand operations, then `contract:`."""
    steps: list[tuple[str, Step]] = []
    for index, op in enumerate(plan.operations("expand")):
        with at_operation(plan, "expand", index, op):
            steps += keyed_steps(index, op, op.contract(ctx))
    for index, op in enumerate(plan.operations("contract")):
        with at_operation(plan, "contract", index, op):
            steps += [(f"c{k}", st) for k, st in keyed_steps(index, op, op.contract(ctx))]
    return steps


def validate_contract_ops(plan: Plan, ctx: Context, attempted: set[str] | None = None) -> None:
    """Check the operations under ``contract:`` against the live catalog.

    Run when `complete` schedules them and again before `contract` runs them; an
    operation with a step in ``attempted`` (already run, or tried and failed) is not
    checked again: a drop that ran may find its object gone.
    """
    for index, op in enumerate(plan.operations("contract")):
        prefix = f"c{index}.{op.op_name}."
        if attempted and any(k.startswith(prefix) for k in attempted):
            continue
        with at_operation(plan, "contract", index, op):
            op.validate_live(ctx)


def contract(opts: Options, release_name: str | None = None) -> list[PhaseResult]:
    """Run the due contract steps of completed releases, oldest first."""
    results: list[PhaseResult] = []
    with session(opts, "contract", release_name) as s:
        if not state_ready(s):
            return results
        with s.conn() as conn:
            records = STATE.contracts(conn, release_name)
            now = conn.exec_driver_sql("SELECT now()").scalar_one()
            releases = {r.name: r for r in STATE.releases(conn)}
        if release_name is not None and release_name not in releases:
            raise GateRefused(f"no release named {release_name}", gate="release-exists")
        pending = [r for r in records if r.status != "done"]
        _refuse_nothing_scheduled(releases, pending, release_name)
        results += _close_without_steps(s, opts, releases, pending, release_name)
        for name in dict.fromkeys(r.release for r in pending):
            results.append(_contract_release(s, opts, releases[name], records, now))
    return results


def _refuse_nothing_scheduled(
    releases: dict[str, Release], pending: list[ContractRecord], release_name: str | None
) -> None:
    """Nothing is scheduled until `complete`: say what to run, not "nothing to do"."""
    due = [r for r in releases.values() if r.phase in CONTRACT_DUE_PHASES]
    in_flight = [
        r for r in releases.values() if r.phase in FORWARD_PHASES and release_name in (None, r.name)
    ]
    if in_flight and not pending and not (release_name is None and due):
        open_release = in_flight[0]
        raise GateRefused(
            f"cannot contract {open_release.name}: it is {open_release.phase}, not completed; "
            "run `migrator complete PLAN` first",
            gate="completed",
        )


def _close_without_steps(
    s: Session,
    opts: Options,
    releases: dict[str, Release],
    pending: list[ContractRecord],
    release_name: str | None,
) -> list[PhaseResult]:
    """A release whose contract has nothing (left) to do is contracted at once: one with
    no contract steps, or one whose last run was stopped after its last step."""
    results = []
    unfinished = {r.release for r in pending}
    for release in releases.values():
        wanted = release_name is None or release.name == release_name
        ending = release.phase in CONTRACT_DUE_PHASES
        if wanted and ending and release.name not in unfinished:
            if not opts.dry_run:
                with s.conn() as conn:
                    history.after_contract(release.name, opts.observer)(conn)
                set_phase(s, release.name, ReleasePhase.CONTRACTED)
                s.event("contract.done", release.name, release.plan_hash, steps=[])
            results.append(PhaseResult(release.name, "contract"))
    return results


def _contract_release(
    s: Session, opts: Options, release: Release, records: list[ContractRecord], now: datetime
) -> PhaseResult:
    """One release's pending contract steps, run once its conditions hold (or --force)
    and its contract operations still pass against the catalog."""
    name = release.name
    mine = [r for r in records if r.release == name and r.status != "done"]
    if release.phase not in CONTRACT_DUE_PHASES:
        raise GateRefused(
            f"cannot contract {name}: it is {release.phase}, not completed",
            gate="completed",
        )
    resumed = any(r.release == name and r.status == "done" for r in records)
    verdicts = _judged(s, opts, release, mine, now, resumed=resumed)
    failing = [c for c in verdicts if not c.ok]
    result = PhaseResult(name, "contract")
    stored_plan = Plan.model_validate(release.plan)
    # The catalog may have changed since `complete` (a new view on a doomed
    # column): check again before the first step, so a refusal changes nothing.
    attempted = {r.key for r in records if r.release == name and r.status != "scheduled"}
    with s.conn() as conn:
        with prechecks_bounded(stored_plan):
            ctx = precheck_context(s, stored_plan, conn)
            validate_contract_ops(stored_plan, ctx, attempted)
        conn.rollback()
    executor = s.executor(stored_plan)
    if not opts.dry_run:
        set_phase(s, name, ReleasePhase.CONTRACTING)
        s.event(
            "contract.start",
            name,
            release.plan_hash,
            forced=[c.name for c in failing] if opts.force else [],
            reason=opts.force_reason or None,
            conditions={c.name: c.detail for c in verdicts},
            resumed=resumed,
        )
    for record in mine:
        st = Step(record.key, record.description, tuple(_statement(x) for x in record.statements))
        result.statements += [x.sql for x in st.statements]
        _run_contract_step(executor, opts, record, st, last=record is mine[-1])
        result.ran.append(record.key)
    if not opts.dry_run:
        with s.conn() as conn:
            history.after_contract(name, opts.observer)(conn)
        set_phase(s, name, ReleasePhase.CONTRACTED)
        s.event("contract.done", name, release.plan_hash, steps=result.ran)
    return result


def _judged(
    s: Session,
    opts: Options,
    release: Release,
    mine: list[ContractRecord],
    now: datetime,
    *,
    resumed: bool,
) -> list[Condition]:
    """The contract's conditions, each told to the observer; refused on the first that
    fails, unless --force. A contract that has begun is finished, not judged again: its
    conditions held (or were forced) before its first step, which the old version cannot
    outlive, and after a swap a doomed column's name is the new column's, so the new
    version's statements would read as uses of the doomed one."""
    name = release.name
    if resumed:
        opts.observer.info(
            f"{name}: its contract began with its conditions met; resuming at {mine[0].key}"
        )
        return []
    verdicts = _contract_conditions(s, release, mine, now)
    failing = [c for c in verdicts if not c.ok]
    for c in verdicts:
        mark = "ok" if c.ok else ("FORCED" if opts.force else "BLOCKS")
        opts.observer.info(f"condition {c.name}: {mark}: {c.detail}")
    if failing and not opts.force:
        first = failing[0]
        raise GateRefused(
            f"cannot contract {name} yet: {first.name}: {first.detail}; "
            "pass --force --reason '...' to run it anyway",
            gate=first.name,
        )
    return verdicts


def _run_contract_step(
    executor: Executor, opts: Options, record: ContractRecord, st: Step, *, last: bool
) -> None:
    """One scheduled step, its record marked done (or failed) with it; alembic_version
    moves with the last."""
    opts.observer.step_started(record.key, record.description)

    def done(conn: Connection) -> None:
        STATE.mark_contract(conn, record.release, record.key, "done")
        if last:
            history.after_contract(record.release, opts.observer)(conn)

    def failed(conn: Connection, reason: str) -> None:
        STATE.mark_contract(conn, record.release, record.key, "failed", reason)

    executor.run(record.key, st, on_done=done, on_failed=failed)


def _contract_conditions(
    s: Session, release: Release, records: list[ContractRecord], now: datetime
) -> list[Condition]:
    """Every condition the contract of one release waits for, checked in turn."""
    with s.conn() as conn:
        return contract_conditions(conn, release, records, now)


def contract_conditions(
    conn: Connection, release: Release, records: list[ContractRecord], now: datetime
) -> list[Condition]:
    """The verdict of every condition a release's contract waits for (status shows them)."""
    plan = Plan.model_validate(release.plan)
    stored = records[0].conditions if records else {}
    doomed = [Doomed(t, c) for t, c in stored.get("doomed", [])]
    old = plan.versions.old.application_name if plan.versions else None
    return [
        conditions.not_before(min(r.not_before for r in records), now),
        conditions.old_version_gone(conn, old),
        conditions.no_reads_of_doomed(conn, release.name, doomed),
        *_traffic_condition(plan),
    ]


def _traffic_condition(plan: Plan) -> list[Condition]:
    """The traffic backend sends nothing to blue (where the plan has a switch)."""
    if plan.switch is None:
        return []
    name = "traffic-off-blue"
    backend = make_backend(plan.switch)
    try:
        split = backend.current()
    except MigratorError as exc:
        return [Condition(name, False, f"cannot read the split from {backend.describe()}: {exc}")]
    if split is None:
        return [
            Condition(name, True, f"not checked: {backend.describe()} cannot tell", checked=False)
        ]
    if split.blue == 0:
        return [Condition(name, True, f"{backend.describe()}: {split}")]
    return [Condition(name, False, f"{backend.describe()} still sends {split.blue}% to blue")]


def _statement(data: dict[str, Any]) -> Statement:
    return Statement(str(data["sql"]), bool(data.get("autocommit", False)))
