"""The executor: every statement migrator runs goes through here, or is printed here.

- A transactional step runs in one transaction with ``SET LOCAL lock_timeout``; its
  record in the state store commits in the same transaction, so it happens exactly once.
- An autocommit step (CREATE INDEX CONCURRENTLY and friends) runs in an explicit
  autocommit block; it is recorded as running before and done after, and its
  statements are written to be rerun safely.
- On lock_not_available (55P03) the step waits with exponential backoff and jitter and
  tries again, up to ``retries`` times, telling the observer about each wait.
- In a dry run nothing runs and nothing is recorded: statements go to the observer.

Plan SQL is sent through the driver's cursor with no parameters, so a ``%`` or ``:x``
in an expression reaches PostgreSQL as written.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from migrator.db.connection import connect, describe_db_error, note_statement, sqlstate
from migrator.durations import format_duration
from migrator.engine.steps import PRECHECK_REFUSED, Step
from migrator.errors import GateRefused, LockNotAcquired, StepFailed
from migrator.observer import NULL_OBSERVER, Observer
from migrator.sqltext import literal, schema_first_sql

LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK_DETECTED = "40P01"

# Writes a step's record in the step's own transaction (or around an autocommit block).
StepRecorder = Callable[[Connection], None]


@dataclass
class RetryPolicy:
    """Exponential backoff with jitter after lock timeouts."""

    retries: int = 10
    base: float = 0.2
    cap: float = 10.0
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random

    def wait(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): half fixed, half jitter."""
        ceiling = min(self.cap, self.base * 2 ** (attempt - 1))
        return float(ceiling / 2 + self.rng() * ceiling / 2)


@dataclass
class Executor:
    """Runs steps against one database, or prints them in a dry run."""

    engine: Engine | None
    lock_timeout: float = 1.0
    statement_timeout: float = 0.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    observer: Observer = NULL_OBSERVER
    dry_run: bool = False
    schema: str = "public"
    """The plan's schema, put first on the search_path while a step runs."""

    def _settings(self) -> list[str]:
        return [
            f"lock_timeout = {literal(_ms(self.lock_timeout))}",
            f"statement_timeout = {literal(_ms(self.statement_timeout))}",
        ]

    def run(
        self,
        name: str,
        step: Step,
        *,
        on_start: StepRecorder | None = None,
        on_done: StepRecorder | None = None,
        on_failed: Callable[[Connection, str], None] | None = None,
    ) -> None:
        """Run one step, retrying lock timeouts and deadlocks; record it through the
        callbacks.

        ``on_done`` runs inside the step's own transaction for a transactional step.
        """
        if self.dry_run:
            mode = "autocommit block" if step.autocommit else "transaction"
            self.observer.info(f"-- {name}: {step.description} ({mode})")
            for statement in step.statements:
                self.observer.statement(
                    statement.sql, step=name, autocommit=step.autocommit, dry_run=True
                )
            return
        assert self.engine is not None
        attempt = 0
        while True:
            try:
                if step.autocommit:
                    self._run_autocommit(name, step, on_start, on_done)
                else:
                    self._run_transaction(name, step, on_done)
                return
            except (DBAPIError, psycopg.Error) as exc:
                reason = describe_db_error(exc, self.engine.url)
                # A deadlock is a lock wait too: PostgreSQL rolled the step back so that
                # the other session (an application's INSERT of a child row, which takes
                # the child and then the parent a step locked first) goes on; the step
                # tries again after the backoff, as after a lock timeout.
                waited = sqlstate(exc) in (LOCK_NOT_AVAILABLE, DEADLOCK_DETECTED)
                if waited and attempt < self.policy.retries:
                    attempt += 1
                    wait = self.policy.wait(attempt)
                    self.observer.retry(name, attempt, wait, reason)
                    self.policy.sleep(wait)
                    continue
                if on_failed is not None:
                    with connect(self.engine) as conn:
                        on_failed(conn, reason)
                        conn.commit()
                if sqlstate(exc) == PRECHECK_REFUSED:
                    raise GateRefused(_primary(exc) or reason, gate="precheck") from None
                if sqlstate(exc) == DEADLOCK_DETECTED:
                    raise LockNotAcquired(
                        f"step {name} deadlocked with another session over its locks "
                        f"after {attempt} retries: rerun when the load is lighter"
                    ) from None
                if sqlstate(exc) == LOCK_NOT_AVAILABLE:
                    raise LockNotAcquired(
                        f"step {name} could not take its lock within lock_timeout "
                        f"{format_duration(self.lock_timeout)} after {attempt} retries: "
                        "long transactions are holding it; rerun when they are done"
                    ) from None
                raise StepFailed(reason, step=name) from None

    def _run_transaction(self, name: str, step: Step, on_done: StepRecorder | None) -> None:
        assert self.engine is not None
        with connect(self.engine) as conn:
            with conn.begin():
                self._settings_for(conn.connection.cursor(), "SET LOCAL")
                # The record first: it commits with the step or not at all either way,
                # and its round trips stay out of the time the step's locks are held.
                # The step's statements end with COMMIT (the context's own commit then
                # finds nothing to do).
                if on_done is not None:
                    on_done(conn)
                driver = conn.connection.driver_connection
                assert isinstance(driver, psycopg.Connection)
                self._pipelined(driver, name, step)
            # The step has committed: nothing from here on is its failure.
            _await_flush(driver)

    def _run_autocommit(
        self, name: str, step: Step, on_start: StepRecorder | None, on_done: StepRecorder | None
    ) -> None:
        assert self.engine is not None
        with connect(self.engine) as conn:
            if on_start is not None:
                on_start(conn)
                conn.commit()
            auto = conn.execution_options(isolation_level="AUTOCOMMIT")
            cursor = auto.connection.cursor()
            try:
                self._execute(cursor, name, step, "SET")
            finally:
                cursor.execute("RESET lock_timeout")
                cursor.execute("RESET statement_timeout")
                cursor.execute("RESET search_path")
        if on_done is not None:
            with connect(self.engine) as conn:
                on_done(conn)
                conn.commit()

    def _settings_for(self, cursor: Any, set_command: str) -> None:
        """The timeouts and the search_path (``SET LOCAL`` in a transaction, ``SET`` in
        autocommit)."""
        for setting in self._settings():
            cursor.execute(f"{set_command} {setting}")
        schema_first = schema_first_sql(self.schema, local=set_command == "SET LOCAL")
        if schema_first is not None:
            cursor.execute(schema_first)

    def _pipelined(self, conn: psycopg.Connection[Any], name: str, step: Step) -> None:
        """A transaction's statements and its COMMIT sent together (libpq's pipeline
        mode): from the first lock a step takes to its commit, no statement waits for
        the client to be scheduled again (at load 14 on 2 cores, each round trip cost
        milliseconds while a swap held ACCESS EXCLUSIVE). The statement that failed is
        the first whose result did not come back; nothing after it ran, COMMIT neither."""
        # Its COMMIT does not wait for the WAL flush, which under write load (a backfill,
        # a checkpoint) took tens to hundreds of milliseconds while the step's locks, an
        # ACCESS EXCLUSIVE one among them, made the application wait (bench/retype.py's
        # lock sampler: blocked by COMMIT). A crash before the flush loses the step and
        # its record together (one transaction), so the rerun runs it again; the caller
        # waits for the flush after the locks are gone. PostgreSQL itself still flushes
        # first a commit that drops relation files.
        conn.cursor().execute("SET LOCAL synchronous_commit = off")
        if not psycopg.Pipeline.is_supported():
            self._statements(conn.cursor(), name, step)
            conn.cursor().execute("COMMIT")
            return
        cursors = [conn.cursor() for _ in step.statements]
        try:
            with conn.pipeline():
                for cursor, statement in zip(cursors, step.statements, strict=True):
                    self.observer.statement(
                        statement.sql, step=name, autocommit=False, dry_run=False
                    )
                    cursor.execute(statement.sql)
                conn.cursor().execute("COMMIT")
        except psycopg.Error as exc:
            failed = next(
                (x for c, x in zip(cursors, step.statements, strict=True) if c.pgresult is None),
                None,
            )
            if failed is not None:
                note_statement(exc, failed.sql)  # names a missing privilege
            raise

    def _execute(self, cursor: Any, name: str, step: Step, set_command: str) -> None:
        """The timeouts, then the step's statements one by one."""
        self._settings_for(cursor, set_command)
        self._statements(cursor, name, step)

    def _statements(self, cursor: Any, name: str, step: Step) -> None:
        """The step's statements, each told to the observer as it starts."""
        for statement in step.statements:
            self.observer.statement(
                statement.sql, step=name, autocommit=step.autocommit, dry_run=False
            )
            try:
                cursor.execute(statement.sql)
            except psycopg.Error as exc:
                note_statement(exc, statement.sql)  # names a missing privilege
                raise


def _await_flush(driver: psycopg.Connection[Any]) -> None:
    """Return once a step committed with synchronous_commit off is flushed.

    Its own transaction writes WAL (a logical decoding message, a no-op for
    replication), so its commit waits for the flush (and the synchronous standbys) as
    the server is set to, which covers the step's commit record too: the step is as
    durable as before, but its locks were not held meanwhile. (An xid alone would not
    do: a commit that wrote no WAL of its own is not flushed.) A server that refuses
    the message (EXECUTE revoked) or a connection lost here leaves the step done all
    the same: the WAL writer flushes it within wal_writer_delay, and a crash before
    that loses the step with its record, so the rerun runs it again.
    """
    try:
        driver.execute("SELECT pg_logical_emit_message(true, 'migrator', 'flush')")
        driver.commit()
    except psycopg.Error:
        with contextlib.suppress(psycopg.Error):
            driver.rollback()


def _primary(exc: BaseException) -> str | None:
    """The server's message alone (a guard's message is the whole refusal)."""
    orig = getattr(exc, "orig", exc)
    return orig.diag.message_primary if isinstance(orig, psycopg.Error) else None


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"
