"""What every verb shares: its options and result, the session (engine, advisory
lock, state schema), the release and plan-hash gates, the step runner, and the context
the plan's operations build their statements in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from migrator.db.connection import connect, make_engine, sqlstate
from migrator.durations import format_duration
from migrator.engine.catalog import Catalog, LockWaits
from migrator.engine.executor import DEADLOCK_DETECTED, LOCK_NOT_AVAILABLE, Executor, RetryPolicy
from migrator.engine.lock import AdvisoryLock
from migrator.engine.state import (
    FORWARD_PHASES,
    NOT_EXPANDED_PHASES,
    Release,
    ReleasePhase,
    StateStore,
)
from migrator.engine.steps import Step
from migrator.errors import GateRefused, LockNotAcquired, ValidationFailed
from migrator.observer import NULL_OBSERVER, Observer
from migrator.ops.base import Context, Operation
from migrator.plan.loader import plan_positions
from migrator.plan.models import Plan
from migrator.sqltext import literal, schema_first_sql

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


def state_ready(s: Session) -> bool:
    """Whether the state schema exists (a dry run may find none)."""
    with s.conn() as conn:
        return STATE.exists(conn)


def find_release(s: Session, name: str) -> Release | None:
    """The release named so, or None (also where there is no state schema yet)."""
    if not state_ready(s):
        return None
    with s.conn() as conn:
        return STATE.release(conn, name)


def operation_context(plan: Plan, conn: Connection, waits: LockWaits | None = None) -> Context:
    """What the plan's operations may know while they build statements on ``conn``
    (whose transaction gets the plan's schema first on its search_path; with ``waits``,
    the lock_timeout its row reads wait under)."""
    setup = []
    schema_first = schema_first_sql(plan.schema_name, local=True)
    if schema_first is not None:
        setup.append(schema_first)
    if waits is not None:
        ms = f"{round(waits.lock_timeout * 1000)}ms"
        setup.append(f"SET LOCAL lock_timeout = {literal(ms)}")
    catalog = Catalog(conn, waits, setup)
    return Context(
        schema=plan.schema_name,
        release=plan.release,
        catalog=catalog,
        server_version=catalog.server_version,
    )


def precheck_context(s: Session, plan: Plan, conn: Connection) -> Context:
    """`operation_context` for the validation a phase runs before it changes anything:
    the prechecks that read rows (duplicates, NULLs, violating rows, conflicting pairs)
    or plan over them wait for each table's lock at most the plan's lock_timeout, with
    the steps' retries and backoff, each wait told to the observer (`Catalog.read_lock`).

    No statement_timeout: a count holds ACCESS SHARE only, which no read or write of
    the application waits for, and cancelling it would trade its exact answer for a
    failure; Ctrl-C stops it.
    """
    executor = s.executor(plan)
    policy, observer = executor.policy, s.opts.observer

    def pause(what: str, attempt: int, reason: str) -> None:
        wait = policy.wait(attempt)
        observer.retry(what, attempt, wait, reason)
        policy.sleep(wait)

    waits = LockWaits(executor.lock_timeout, policy.retries, pause)
    return operation_context(plan, conn, waits)


@contextmanager
def prechecks_bounded(plan: Plan) -> Iterator[None]:
    """A lock timeout or deadlock inside the prechecks that `Catalog.read_lock` did not
    take first (a table an expression reads through a function): one line, exit 5,
    nothing changed."""
    try:
        yield
    except DBAPIError as exc:
        state = sqlstate(exc)
        if state not in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED):
            raise
        timeout = format_duration(plan.database.lock_timeout)
        why = (
            "deadlocked with another session over a lock on a table they read"
            if state == DEADLOCK_DETECTED
            else f"could not take a lock within lock_timeout {timeout}: another session "
            "holds one on a table they read"
        )
        raise LockNotAcquired(
            f"the prechecks {why}; nothing was changed; rerun when it is done"
        ) from None


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


def check_plan_hash(s: Session, plan: Plan, release: Release | None) -> None:
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


def run_steps(
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
    if state_ready(s) and find_release(s, plan.release) is not None:
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
        try:
            executor.run(key, st, on_start=mark("running"), on_done=on_done, on_failed=failed)
        except GateRefused as exc:
            if exc.gate == "precheck":
                _locate_step(plan, phase, key, exc)
            raise
        s.opts.observer.step_done(key, st.description, time.perf_counter() - started)
        result.ran.append(key)
    if last is not None and not s.opts.dry_run:
        with s.conn() as conn:
            last(conn)


def _locate_step(plan: Plan, phase: str, key: str, exc: GateRefused) -> None:
    """Name the operation's place in the plan file in a guard's refusal (its step key
    starts with the operation's index: ``0.add_exclusion.check``)."""
    index = key.split(".", 1)[0]
    positions = plan_positions(plan)
    if positions is None or not index.isdigit() or phase not in ("expand", "contract"):
        return
    op = plan.operations("expand" if phase == "expand" else "contract")[int(index)]
    mark = positions.operation(phase, int(index), op.op_name)
    if mark is not None:
        exc.message = f"{positions.source}:{mark.line}:{mark.column}: {exc.message}"


def _both(
    first: Callable[[Connection], None], second: Callable[[Connection], None]
) -> Callable[[Connection], None]:
    def run(conn: Connection) -> None:
        first(conn)
        second(conn)

    return run


def set_phase(s: Session, release: str, phase: ReleasePhase) -> None:
    """Record the release's phase (not in a dry run)."""
    if not s.opts.dry_run:
        with s.conn() as conn:
            STATE.set_phase(conn, release, phase)


def require_release(s: Session, plan: Plan, verb: str) -> Release:
    """The release gate: the plan's release is expanded (and its plan unchanged)."""
    release = find_release(s, plan.release)
    if release is None or release.phase in NOT_EXPANDED_PHASES:
        state = "has not been expanded" if release is None else f"is {release.phase}"
        raise GateRefused(
            f"cannot {verb} release {plan.release}: it {state}; run `migrator expand` first",
            gate="expanded",
        )
    check_plan_hash(s, plan, release)
    return release


def init(opts: Options) -> None:
    """Create the state schema ``migrator`` (idempotent)."""
    with session(opts, "init"):
        pass


def phase_forward(s: Session, release: str, phase: ReleasePhase) -> None:
    """Move the phase forward only: rerunning expand after the switch keeps 'switched'."""
    current = find_release(s, release)
    if current is None or current.phase not in FORWARD_PHASES:
        return
    if (
        FORWARD_PHASES.index(phase) > FORWARD_PHASES.index(current.phase)
        or current.phase == ReleasePhase.EXPANDING
    ):
        set_phase(s, release, phase)
