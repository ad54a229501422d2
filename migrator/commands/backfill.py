"""`migrator backfill`: fill the new structures for existing rows, batched and
resumable, under migrator's lock held shared so backfill processes run side by side.
Also the backfills a plan has, and those the switch waits for.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine

from migrator.backfill.batcher import batch_template
from migrator.backfill.keys import choose_walk
from migrator.backfill.lease import SharedLock, lock_init
from migrator.backfill.runner import Backfill
from migrator.backfill.runner import settings_from_plan as backfill_settings
from migrator.commands.session import (
    STATE,
    Options,
    PhaseResult,
    Session,
    operation_context,
    phase_forward,
    require_release,
    set_phase,
)
from migrator.db.connection import make_engine
from migrator.engine.catalog import Catalog
from migrator.engine.state import ReleasePhase
from migrator.engine.steps import BackfillSpec
from migrator.errors import ValidationFailed
from migrator.observer import Observer
from migrator.ops.base import Context, Operation
from migrator.plan.models import Plan
from migrator.sqltext import ident
from migrator.words import count


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


PROGRESS_EVENT = "backfill.progress"
# A sample of the backfill's progress goes to the audit log this often at most (and when
# the throttle's action changes), for `migrator report`'s rows/s and pauses over time.
PROGRESS_SAMPLE_INTERVAL = 2.0


class _ProgressLog(Observer):
    """Passes everything on to the user's observer, and keeps samples of the progress
    (rows, rows/s, the throttle's action) as `backfill.progress` events."""

    def __init__(self, inner: Observer, s: Session, plan: Plan) -> None:
        self.inner = inner
        self.session = s
        self.plan = plan
        self.last: dict[str, tuple[float, Any]] = {}  # step -> (when logged, throttle)
        self.pending: dict[str, dict[str, Any]] = {}  # step -> the sample not logged yet

    def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
        self.inner.statement(sql, step=step, autocommit=autocommit, dry_run=dry_run)

    def step_started(self, step: str, description: str) -> None:
        self.inner.step_started(step, description)

    def step_skipped(self, step: str, description: str) -> None:
        self.inner.step_skipped(step, description)

    def step_done(self, step: str, description: str, seconds: float) -> None:
        self.inner.step_done(step, description, seconds)

    def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
        self.inner.retry(step, attempt, wait, reason)

    def info(self, message: str) -> None:
        self.inner.info(message)

    def warning(self, message: str) -> None:
        self.inner.warning(message)

    def progress(self, task: str, done: int, total: int | None, **extra: Any) -> None:
        self.inner.progress(task, done, total, **extra)
        sample = {
            "step": task,
            "rows": done,
            "total": total,
            "rate": round(extra["rate"], 1) if extra.get("rate") else None,
            "throttle": extra.get("throttle"),
            "batch_size": extra.get("batch_size"),
        }
        now = time.monotonic()
        logged, throttle = self.last.get(task, (float("-inf"), "go"))
        if now - logged >= PROGRESS_SAMPLE_INTERVAL or sample["throttle"] != throttle:
            self._log(sample)
            self.last[task] = (now, sample["throttle"])
            self.pending.pop(task, None)
        else:
            self.pending[task] = sample

    def _log(self, sample: dict[str, Any]) -> None:
        with self.session.conn() as conn:
            STATE.event(
                conn,
                self.session.opts.actor,
                PROGRESS_EVENT,
                self.plan.release,
                self.plan.digest(),
                **sample,
            )

    def flush(self) -> None:
        """Log the last sample of each step (its end) if it was held back."""
        for sample in self.pending.values():
            self._log(sample)
        self.pending.clear()


def _vacuum(engine: Engine, spec: BackfillSpec, observer: Observer) -> None:
    """VACUUM (ANALYZE) the table a backfill rewrote, at autovacuum's pace.

    Every row it filled left a dead version behind, so autovacuum comes for the table
    soon after, and it holds SHARE UPDATE EXCLUSIVE for as long as it runs: seen by
    bench/retype.py (3M rows) blocking the contract's ACCESS EXCLUSIVE steps, which
    retried for 11 s while each attempt queued the application's reads behind it for
    its lock_timeout (autovacuum yields to a lock waiter only after deadlock_timeout).
    Done here, nothing waits on it: the backfill's phase takes no strong lock. A
    VACUUM under way on the table (autovacuum yields to this one) is waited for up to
    a minute; one that cannot start is left to autovacuum, as before.
    """
    table = ident(spec.schema, spec.table)
    with engine.connect() as conn:
        cursor = conn.execution_options(isolation_level="AUTOCOMMIT").connection.cursor()
        cursor.execute("SET lock_timeout = '60s'")
        # autovacuum's own cost delay (-1: it uses vacuum_cost_delay, the session's).
        cursor.execute(
            "SELECT set_config('vacuum_cost_delay', setting || unit, false) FROM pg_settings "
            "WHERE name = 'autovacuum_vacuum_cost_delay' AND setting::float8 >= 0"
        )
        try:
            cursor.execute(f"VACUUM (ANALYZE) {table}")
        except psycopg.Error as exc:
            observer.info(f"VACUUM of {table} after its backfill left to autovacuum: {exc}")
        finally:  # the pooled connection goes back as it came (if it is still there)
            with contextlib.suppress(psycopg.Error):
                cursor.execute("RESET lock_timeout")
                cursor.execute("RESET vacuum_cost_delay")


def backfill(plan: Plan, opts: Options, workers: int = 1) -> PhaseResult:
    """Fill the new structures for existing rows: batched, throttled, resumable.

    ``workers`` sessions of this process split the table's key range; other processes
    running the same backfill claim the ranges left, so they cooperate.
    """
    result = PhaseResult(plan.release, "backfill")
    with _backfill_session(opts, plan.release) as s:
        release = require_release(s, plan, "backfill")
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
                    f"-- {key}: {spec.description} in batches of {size}, {count(workers, 'worker')}, "
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
            if release.phase in (ReleasePhase.EXPANDED, ReleasePhase.SWITCHED):
                set_phase(s, plan.release, ReleasePhase.BACKFILLING)
            opts.observer.step_started(key, spec.description)
            samples = _ProgressLog(opts.observer, s, plan)
            try:
                try:
                    outcome = Backfill(
                        s.engine,
                        spec,
                        release=plan.release,
                        key=key,
                        settings=settings,
                        observer=samples,
                        restart=record is not None and record.status == "undone",
                    ).run()
                finally:
                    samples.flush()
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
            if outcome.rows:
                _vacuum(s.engine, spec, opts.observer)
            with s.conn() as conn:
                STATE.mark_step(
                    conn, plan.release, "backfill", key, position, spec.description, "done"
                )
            opts.observer.step_done(key, spec.description, outcome.seconds)
            result.ran.append(key)
            result.rows += outcome.rows
        if not opts.dry_run:
            phase_forward(s, plan.release, ReleasePhase.BACKFILLED)
            s.event("backfill.done", plan.release, plan.digest(), rows=result.rows)
    return result
