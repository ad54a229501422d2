"""One plain typed function per verb. The CLI calls these; so do the tests.

Nothing here prints or reads the environment: progress goes to the observer, results
come back as values, failures as `MigratorError` subclasses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from migrator.backfill.batcher import batch_template
from migrator.backfill.keys import choose_walk
from migrator.backfill.lease import SharedLock, lock_init
from migrator.backfill.runner import Backfill
from migrator.backfill.runner import settings_from_plan as backfill_settings
from migrator.db.connection import connect, make_engine
from migrator.engine import conditions
from migrator.engine.catalog import Catalog
from migrator.engine.conditions import Condition
from migrator.engine.executor import Executor, RetryPolicy
from migrator.engine.lock import AdvisoryLock
from migrator.engine.state import ContractRecord, Release, StateStore
from migrator.engine.steps import BackfillSpec, Doomed, Statement, Step
from migrator.errors import GateRefused, MigratorError, ValidationFailed
from migrator.observer import NULL_OBSERVER, Observer
from migrator.ops.base import Context, Operation
from migrator.plan.loader import plan_positions
from migrator.plan.models import Plan
from migrator.render import history
from migrator.sqltext import schema_first_sql

STATE = StateStore()


@dataclass
class Options:
    """What every command needs besides the plan."""

    database_url: str
    observer: Observer = NULL_OBSERVER
    dry_run: bool = False
    actor: str = "migrator"
    accept_changed_plan: bool = False
    force: bool = False
    force_reason: str = ""
    strict: bool = False  # expand refuses (not only warns) while an earlier contract is due


@dataclass
class PhaseResult:
    """What a phase did: steps run, steps skipped as already done, the statements."""

    release: str
    phase: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    rows: int = 0

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json."""
        return asdict(self)


# -- sessions --------------------------------------------------------------------------------


@dataclass
class Session:
    """An engine, the advisory lock (unless a dry run), and the state schema."""

    engine: Engine
    opts: Options
    command: str

    def executor(self, plan: Plan | None = None) -> Executor:
        """An executor with the plan's lock settings."""
        db = plan.database if plan else None
        return Executor(
            self.engine,
            schema=plan.schema_name if plan else "public",
            lock_timeout=db.lock_timeout if db else 1.0,
            statement_timeout=db.statement_timeout if db else 0.0,
            policy=RetryPolicy(retries=db.retries if db else 10),
            observer=self.opts.observer,
            dry_run=self.opts.dry_run,
        )

    @contextmanager
    def conn(self) -> Iterator[Connection]:
        """A connection whose work is committed when the block ends without error."""
        with connect(self.engine) as conn:
            yield conn
            conn.commit()

    def event(
        self, action: str, release: str | None, plan_hash: str | None, **details: Any
    ) -> None:
        """Append to the audit log (not in a dry run)."""
        if self.opts.dry_run:
            return
        with self.conn() as conn:
            STATE.event(conn, self.opts.actor, action, release, plan_hash, **details)


@contextmanager
def session(opts: Options, command: str, release: str | None = None) -> Iterator[Session]:
    """Open a session: take the advisory lock and make sure the state schema exists."""
    engine = make_engine(opts.database_url)
    try:
        s = Session(engine, opts, command)
        if opts.dry_run:
            yield s
            return
        holder = f"migrator {command} {release or ''}".strip()
        with AdvisoryLock(engine, holder):
            with s.conn() as conn:
                STATE.init(conn)
            yield s
    finally:
        engine.dispose()


def _state_ready(s: Session) -> bool:
    with s.conn() as conn:
        return STATE.exists(conn)


def _release(s: Session, name: str) -> Release | None:
    if not _state_ready(s):
        return None
    with s.conn() as conn:
        return STATE.release(conn, name)


def operation_context(plan: Plan, conn: Connection) -> Context:
    """What the plan's operations may know while they build statements on ``conn``
    (whose transaction gets the plan's schema first on its search_path)."""
    schema_first = schema_first_sql(plan.schema_name, local=True)
    if schema_first is not None:
        conn.execute(text(schema_first))
    catalog = Catalog(conn)
    return Context(
        schema=plan.schema_name,
        release=plan.release,
        catalog=catalog,
        server_version=catalog.server_version,
    )


def keyed_steps(index: int, op: Operation, steps: Sequence[Step]) -> list[tuple[str, Step]]:
    """Steps with the keys the state store records them by (``0.add_column.add-column``)."""
    return [(f"{index}.{op.op_name}.{st.key}", st) for st in steps]


@contextmanager
def at_operation(plan: Plan, section: str, index: int, op: Operation) -> Iterator[None]:
    """Name the operation's place in the plan file (``file:line:column``) in a
    ValidationFailed raised for it, where the plan was read from a file."""
    try:
        yield
    except ValidationFailed as exc:
        positions = plan_positions(plan)
        mark = positions.operation(section, index, op.op_name) if positions else None
        if positions is not None and mark is not None:
            exc.message = f"{positions.source}:{mark.line}:{mark.column}: {exc.message}"
        raise


def _check_plan_hash(s: Session, plan: Plan, release: Release | None) -> None:
    """Refuse a plan that changed after its release started, unless the user accepts it."""
    if release is None or release.plan_hash == plan.digest():
        return
    if not s.opts.accept_changed_plan:
        raise GateRefused(
            f"the plan of release {plan.release} changed since it started "
            f"(stored hash {release.plan_hash[:12]}, file {plan.digest()[:12]}); "
            "revert the change, or pass --accept-changed-plan if it is intended",
            gate="plan-unchanged",
        )
    if not s.opts.dry_run:
        with s.conn() as conn:
            STATE.update_plan(conn, plan.release, plan.canonical(), plan.digest())
            STATE.event(
                conn,
                s.opts.actor,
                "plan.changed-accepted",
                plan.release,
                plan.digest(),
                previous_hash=release.plan_hash,
            )


def _run_steps(
    s: Session,
    plan: Plan,
    phase: str,
    steps: list[tuple[str, Step]],
    result: PhaseResult,
    last: Callable[[Connection], None] | None = None,
) -> None:
    """Run the steps not done yet; ``last`` runs in the last step's transaction (and
    again after all, idempotently: alembic_version bookkeeping, migrator.render.history)."""
    executor = s.executor(plan)
    done: dict[str, str] = {}
    if _state_ready(s) and _release(s, plan.release) is not None:
        with s.conn() as conn:
            done = STATE.step_status(conn, plan.release, phase)
    for position, (key, st) in enumerate(steps):
        if done.get(key) == "done":
            s.opts.observer.step_skipped(key, st.description)
            result.skipped.append(key)
            continue
        result.statements += [x.sql for x in st.statements]
        s.opts.observer.step_started(key, st.description)

        def mark(
            status: str,
            error: str | None = None,
            *,
            k: str = key,
            p: int = position,
            d: str = st.description,
        ) -> Any:
            def record(conn: Connection) -> None:
                STATE.mark_step(conn, plan.release, phase, k, p, d, status, error)

            return record

        def failed(
            conn: Connection,
            reason: str,
            *,
            k: str = key,
            p: int = position,
            d: str = st.description,
        ) -> None:
            STATE.mark_step(conn, plan.release, phase, k, p, d, "failed", reason)
            STATE.event(
                conn,
                s.opts.actor,
                f"{phase}.failed",
                plan.release,
                plan.digest(),
                step=k,
                error=reason,
            )

        on_done = mark("done")
        if last is not None and position == len(steps) - 1:
            on_done = _both(on_done, last)
        started = time.perf_counter()
        executor.run(key, st, on_start=mark("running"), on_done=on_done, on_failed=failed)
        s.opts.observer.step_done(key, st.description, time.perf_counter() - started)
        result.ran.append(key)
    if last is not None and not s.opts.dry_run:
        with s.conn() as conn:
            last(conn)


def _both(
    first: Callable[[Connection], None], second: Callable[[Connection], None]
) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        first(conn)
        second(conn)

    return run


def _phase(s: Session, release: str, phase: str) -> None:
    if not s.opts.dry_run:
        with s.conn() as conn:
            STATE.set_phase(conn, release, phase)


def _require_release(s: Session, plan: Plan, verb: str) -> Release:
    release = _release(s, plan.release)
    if release is None or release.phase in ("expanding", "rolling_back", "rolled_back"):
        state = "has not been expanded" if release is None else f"is {release.phase}"
        raise GateRefused(
            f"cannot {verb} release {plan.release}: it {state}; run `migrator expand` first",
            gate="expanded",
        )
    _check_plan_hash(s, plan, release)
    return release


# -- verbs -----------------------------------------------------------------------------------


def init(opts: Options) -> None:
    """Create the state schema ``migrator`` (idempotent)."""
    with session(opts, "init"):
        pass


def expand(plan: Plan, opts: Options) -> PhaseResult:
    """Add what the new version needs; nothing the old version uses changes."""
    result = PhaseResult(plan.release, "expand")
    with session(opts, "expand", plan.release) as s:
        release = _release(s, plan.release)
        _check_plan_hash(s, plan, release)
        if release is None or release.phase == "rolled_back":
            _gate_new_release(s, plan)
            _gate_earlier_contracts(s, plan)
        with s.conn() as conn:
            done = (
                STATE.step_status(conn, plan.release, "expand")
                if release and release.phase != "rolled_back"
                else {}
            )
            ctx = operation_context(plan, conn)
            steps: list[tuple[str, Step]] = []
            for index, op in enumerate(plan.operations("expand")):
                prefix = f"{index}.{op.op_name}."
                mine = {k: v for k, v in done.items() if k.startswith(prefix)}
                if mine and all(v == "done" for v in mine.values()):
                    continue  # all done on an earlier run
                with at_operation(plan, "expand", index, op):
                    if not any(v == "done" for v in mine.values()):
                        op.validate_live(ctx)  # a half-done operation was validated before
                    steps += keyed_steps(index, op, op.expand(ctx))
            conn.rollback()
        for note in dict.fromkeys(ctx.notes):  # what the operations want the user to know
            opts.observer.warning(note)
        if not opts.dry_run:
            with s.conn() as conn:
                STATE.start_release(conn, plan.release, plan.after, plan.canonical(), plan.digest())
                STATE.event(conn, opts.actor, "expand.start", plan.release, plan.digest())
        _run_steps(
            s,
            plan,
            "expand",
            steps,
            result,
            last=history.after_expand(plan.release, plan.after, opts.observer),
        )
        if not opts.dry_run:
            _phase_forward(s, plan.release, "expanded")
            s.event("expand.done", plan.release, plan.digest(), steps=result.ran)
    return result


_ORDER = ("expanding", "expanded", "switching", "switched", "backfilling", "backfilled")


def _phase_forward(s: Session, release: str, phase: str) -> None:
    """Move the phase forward only: rerunning expand after the switch keeps 'switched'."""
    current = _release(s, release)
    if current is None or current.phase not in _ORDER:
        return
    if _ORDER.index(phase) > _ORDER.index(current.phase) or current.phase == "expanding":
        _phase(s, release, phase)


def _gate_new_release(s: Session, plan: Plan) -> None:
    """One release in flight, and a linear history."""
    if not _state_ready(s):
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
    if not _state_ready(s):
        return
    with s.conn() as conn:
        due = [c for c in STATE.contracts(conn) if c.status != "done" and c.release != plan.release]
    if not due:
        return
    names = ", ".join(dict.fromkeys(c.release for c in due))
    message = (
        f"the contract of {names} is still due ({len(due)} steps); run `migrator contract` first"
    )
    if s.opts.strict:
        raise GateRefused(f"cannot expand {plan.release}: {message}", gate="earlier-contract")
    s.opts.observer.warning(message)


def _operation_specs(plan: Plan, ctx: Context) -> list[tuple[str, Operation, BackfillSpec]]:
    """The backfills of the plan's operations, each with its step key and operation."""
    return [
        (f"{index}.{op.op_name}.{spec.key}", op, spec)
        for index, op in enumerate(plan.operations("expand"))
        for spec in op.backfills(ctx)
    ]


def backfill_specs(plan: Plan, ctx: Context) -> list[tuple[str, BackfillSpec]]:
    """Every backfill of the plan: the `up` of each operation, then `backfill.updates`."""
    specs = [(key, spec) for key, _, spec in _operation_specs(plan, ctx)]
    for index, update in enumerate(plan.backfill.updates):
        specs.append(
            (
                f"update.{index}.{update.table}",
                BackfillSpec(
                    key=f"update.{index}",
                    schema=plan.schema_name,
                    table=update.table,
                    set=dict(update.set),
                    needs=update.where or "true",
                    description=f"update {update.table}",
                ),
            )
        )
    return specs


def unfilled_before_switch(plan: Plan, conn: Connection) -> list[str]:
    """The backfills the new version needs done before it gets traffic (see
    `Operation.fills_before_switch`) that are not done yet, described."""
    if not any(op.fills_before_switch for op in plan.operations("expand")):
        return []
    ctx = operation_context(plan, conn)
    done = {r.key for r in STATE.steps(conn, plan.release, "backfill") if r.status == "done"}
    return [
        spec.description or key
        for key, op, spec in _operation_specs(plan, ctx)
        if op.fills_before_switch and key not in done
    ]


@contextmanager
def _backfill_session(opts: Options, release: str) -> Iterator[Session]:
    """Like `session`, but migrator's lock is held shared: backfill processes of a
    release (pods of a Job) run side by side; other commands still exclude them."""
    engine = make_engine(opts.database_url)
    try:
        s = Session(engine, opts, "backfill")
        if opts.dry_run:
            yield s
            return
        with SharedLock(engine, f"migrator backfill {release}"):
            with s.conn() as conn:
                lock_init(conn)
                STATE.init(conn)
            yield s
    finally:
        engine.dispose()


def backfill(plan: Plan, opts: Options, workers: int = 1) -> PhaseResult:
    """Fill the new structures for existing rows: batched, throttled, resumable.

    ``workers`` sessions of this process split the table's key range; other processes
    running the same backfill claim the ranges left, so they cooperate.
    """
    result = PhaseResult(plan.release, "backfill")
    with _backfill_session(opts, plan.release) as s:
        release = _require_release(s, plan, "backfill")
        with s.conn() as conn:
            ctx = operation_context(plan, conn)
            specs = backfill_specs(plan, ctx)
            records = {r.key: r for r in STATE.steps(conn, plan.release, "backfill")}
            for _, spec in specs:
                if not Catalog(conn).table_exists(spec.schema, spec.table):
                    raise ValidationFailed(
                        f"backfill: table {spec.schema}.{spec.table} does not exist"
                    )
        settings = backfill_settings(plan, workers)  # refuses workers < 1
        for position, (key, spec) in enumerate(specs):
            record = records.get(key)
            if record is not None and record.status == "done":
                opts.observer.step_skipped(key, spec.description)
                result.skipped.append(key)
                continue
            if opts.dry_run:
                size = settings.batch_size or f"auto ({plan.backfill.target_batch_time:g}s)"
                with s.conn() as conn:
                    walk = choose_walk(conn, spec.schema, spec.table)
                opts.observer.info(
                    f"-- {key}: {spec.description} in batches of {size}, {workers} worker(s), "
                    f"by {walk.describe()}; each batch, its own transaction:"
                )
                opts.observer.statement(
                    batch_template(spec, walk), step=key, autocommit=False, dry_run=True
                )
                continue
            with s.conn() as conn:
                STATE.mark_step(
                    conn, plan.release, "backfill", key, position, spec.description, "running"
                )
            if release.phase in ("expanded", "switched"):
                _phase(s, plan.release, "backfilling")
            opts.observer.step_started(key, spec.description)
            try:
                outcome = Backfill(
                    s.engine,
                    spec,
                    release=plan.release,
                    key=key,
                    settings=settings,
                    observer=opts.observer,
                    restart=record is not None and record.status == "undone",
                ).run()
            except Exception as exc:
                # Shown by `migrator status`; the checkpoint stays, so a rerun resumes.
                with s.conn() as conn:
                    STATE.mark_step(
                        conn,
                        plan.release,
                        "backfill",
                        key,
                        position,
                        spec.description,
                        "failed",
                        str(exc),
                    )
                    STATE.event(
                        conn,
                        opts.actor,
                        "backfill.failed",
                        plan.release,
                        plan.digest(),
                        step=key,
                        error=str(exc),
                    )
                raise
            with s.conn() as conn:
                STATE.mark_step(
                    conn, plan.release, "backfill", key, position, spec.description, "done"
                )
            opts.observer.step_done(key, spec.description, outcome.seconds)
            result.ran.append(key)
            result.rows += outcome.rows
        if not opts.dry_run:
            _phase_forward(s, plan.release, "backfilled")
            s.event("backfill.done", plan.release, plan.digest(), rows=result.rows)
    return result


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


def complete(plan: Plan, opts: Options) -> PhaseResult:
    """Mark the release done and schedule its contract for later."""
    result = PhaseResult(plan.release, "complete")
    with session(opts, "complete", plan.release) as s:
        release = _require_release(s, plan, "complete")
        if release.phase in ("completed", "contracting", "contracted"):
            return result
        if not opts.force:
            from migrator.commands.switch import require_all_green

            require_all_green(plan, opts)  # complete retires blue: all traffic must be on green
        with s.conn() as conn:
            ctx = operation_context(plan, conn)
            expand_status = STATE.step_status(conn, plan.release, "expand")
            backfill_status = STATE.step_status(conn, plan.release, "backfill")
            todo_backfills = [
                key for key, _ in backfill_specs(plan, ctx) if backfill_status.get(key) != "done"
            ]
            undone = [k for k, v in expand_status.items() if v != "done"]
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
            STATE.set_phase(conn, plan.release, "completed")
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


def contract(opts: Options, release_name: str | None = None) -> list[PhaseResult]:
    """Run the due contract steps of completed releases, oldest first."""
    results: list[PhaseResult] = []
    with session(opts, "contract", release_name) as s:
        if not _state_ready(s):
            return results
        with s.conn() as conn:
            records = STATE.contracts(conn, release_name)
            now = conn.exec_driver_sql("SELECT now()").scalar_one()
            releases = {r.name: r for r in STATE.releases(conn)}
        if release_name is not None and release_name not in releases:
            raise GateRefused(f"no release named {release_name}", gate="release-exists")
        pending = [r for r in records if r.status != "done"]
        # A release whose contract has nothing (left) to do is contracted at once: one
        # with no contract steps, or one whose last run was stopped after its last step.
        unfinished = {r.release for r in pending}
        for release in releases.values():
            wanted = release_name is None or release.name == release_name
            ending = release.phase in ("completed", "contracting")
            if wanted and ending and release.name not in unfinished:
                if not opts.dry_run:
                    with s.conn() as conn:
                        history.after_contract(release.name, opts.observer)(conn)
                    _phase(s, release.name, "contracted")
                    s.event("contract.done", release.name, release.plan_hash, steps=[])
                results.append(PhaseResult(release.name, "contract"))
        for name in dict.fromkeys(r.release for r in pending):
            release = releases[name]
            mine = [r for r in pending if r.release == name]
            if release.phase not in ("completed", "contracting"):
                raise GateRefused(
                    f"cannot contract {name}: it is {release.phase}, not completed",
                    gate="completed",
                )
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
            result = PhaseResult(name, "contract")
            stored_plan = Plan.model_validate(release.plan)
            # The catalog may have changed since `complete` (a new view on a doomed
            # column): check again before the first step, so a refusal changes nothing.
            attempted = {r.key for r in records if r.release == name and r.status != "scheduled"}
            with s.conn() as conn:
                validate_contract_ops(stored_plan, operation_context(stored_plan, conn), attempted)
                conn.rollback()
            executor = s.executor(stored_plan)
            if not opts.dry_run:
                _phase(s, name, "contracting")
                s.event(
                    "contract.start",
                    name,
                    release.plan_hash,
                    forced=[c.name for c in failing] if opts.force else [],
                    reason=opts.force_reason or None,
                    conditions={c.name: c.detail for c in verdicts},
                )
            for record in mine:
                st = Step(
                    record.key,
                    record.description,
                    tuple(_statement(x) for x in record.statements),
                )
                result.statements += [x.sql for x in st.statements]
                opts.observer.step_started(record.key, record.description)

                def done(
                    conn: Connection,
                    *,
                    r: str = name,
                    k: str = record.key,
                    end: bool = (record is mine[-1]),
                ) -> None:
                    STATE.mark_contract(conn, r, k, "done")
                    if end:  # alembic_version moves with the last step
                        history.after_contract(r, opts.observer)(conn)

                def failed(
                    conn: Connection, reason: str, *, r: str = name, k: str = record.key
                ) -> None:
                    STATE.mark_contract(conn, r, k, "failed", reason)

                executor.run(record.key, st, on_done=done, on_failed=failed)
                result.ran.append(record.key)
            if not opts.dry_run:
                with s.conn() as conn:
                    history.after_contract(name, opts.observer)(conn)
                _phase(s, name, "contracted")
                s.event("contract.done", name, release.plan_hash, steps=result.ran)
            results.append(result)
    return results


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
    from migrator.switch import make_backend

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
    from migrator.commands.switch import rollback_traffic

    moved = rollback_traffic(plan, opts)
    if moved is not None:
        result.phase = "traffic-rollback"
        result.ran.append(moved.summary())
        return result
    with session(opts, "rollback", plan.release) as s:
        release = _release(s, plan.release)
        if release is None:
            raise GateRefused(
                f"release {plan.release} has not been expanded; there is nothing to roll back",
                gate="expanded",
            )
        if release.phase == "rolled_back":
            return result
        if release.phase not in (
            "expanding",
            "expanded",
            "backfilling",
            "backfilled",
            "rolling_back",
        ):
            raise GateRefused(
                f"cannot roll back the schema of {plan.release}: it is {release.phase}; "
                "after the switch the new version depends on it",
                gate="not-switched",
            )
        _check_plan_hash(s, plan, release)
        with s.conn() as conn:
            steps, notes = rollback_steps(plan, conn)
            conn.rollback()
        for note in notes:  # what cannot be undone (an enum value)
            opts.observer.warning(note)
        if not opts.dry_run:
            _phase(s, plan.release, "rolling_back")
            s.event("rollback.start", plan.release, plan.digest())
        _run_steps(
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
                STATE.set_phase(conn, plan.release, "rolled_back")
                STATE.event(conn, opts.actor, "rollback.done", plan.release, plan.digest())
    return result


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None
