"""A transactional step commits without waiting for its WAL flush, and run() returns only
once it is flushed: its locks (ACCESS EXCLUSIVE for most DDL) are not held while the
commit waits on the disk, which under a backfill's write load made the application wait
(bench/retype.py: the blocker was at COMMIT)."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from migrator.db.connection import make_engine
from migrator.engine.executor import Executor, RetryPolicy
from migrator.engine.steps import step
from migrator.observer import Observer


def test_a_step_commits_asynchronously_and_is_flushed_when_run_returns(module_db: str) -> None:
    url = module_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE seen (setting text, lsn pg_lsn)")
        conn.execute("CREATE TABLE victim (id int)")
    engine = make_engine(url)
    try:
        Executor(engine).run(
            "0.test.step",
            step(
                "step",
                "a step that records how it commits",
                "ALTER TABLE victim ADD COLUMN note text",
                "INSERT INTO seen SELECT current_setting('synchronous_commit'), "
                "pg_current_wal_insert_lsn()",
            ),
        )
    finally:
        engine.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        setting, flushed = conn.execute(
            "SELECT setting, pg_current_wal_flush_lsn() >= lsn FROM seen"
        ).fetchone() or (None, None)
        assert setting == "off"
        assert flushed is True
        # The session's own setting is back for whatever the connection runs next.
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        assert conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'victim'::regclass "
            "AND attname = 'note'"
        ).fetchone() == (1,)


@pytest.mark.parametrize("pipeline", [True, False], ids=["pipeline", "libpq-without-pipeline"])
def test_a_server_that_refuses_the_flush_message_still_gets_its_step(
    module_db: str, pipeline: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EXECUTE on pg_logical_emit_message revoked (as a managed service may): the step
    has committed all the same, and run() does not call it failed. Also where libpq has
    no pipeline mode (before 14): the statements one by one, then their own COMMIT, so
    the refused message's rollback cannot take the step with it."""
    if not pipeline:
        monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: False))
    url = module_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "DO $$ BEGIN CREATE ROLE exec_owner LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )
        conn.execute("DROP TABLE IF EXISTS owned")
        conn.execute("CREATE TABLE owned (id int)")
        conn.execute("ALTER TABLE owned OWNER TO exec_owner")
        conn.execute(  # every overload (18 has a flush argument, 15 not)
            "DO $$ DECLARE f regprocedure; BEGIN FOR f IN SELECT oid::regprocedure FROM pg_proc "
            "WHERE proname = 'pg_logical_emit_message' LOOP "
            "EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f); END LOOP; END $$"
        )
    engine = make_engine(psycopg.conninfo.make_conninfo(url, user="exec_owner"))
    try:
        Executor(engine).run(
            "0.test.refused", step("refused", "a step", "ALTER TABLE owned ADD COLUMN note text")
        )
    finally:
        engine.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'owned'::regclass "
            "AND attname = 'note'"
        ).fetchone() == (1,)


def test_a_step_that_deadlocks_is_tried_again(module_db: str) -> None:
    """A step PostgreSQL rolls back to end a deadlock (here it locks parent, then child,
    while a session holding child waits for parent) is retried after the backoff, as
    after a lock timeout, and then runs; the other session goes on. Each moment is
    waited for in pg_locks."""
    url = module_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE dl_parent (id int); CREATE TABLE dl_child (id int)")
    retried: list[str] = []

    class Seen(Observer):
        def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
            retried.append(reason)

    engine = make_engine(url)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            Executor(engine, lock_timeout=60, policy=RetryPolicy(base=0.01), observer=Seen()).run(
                "0.test.deadlock",
                step(
                    "deadlock",
                    "parent, then child",
                    "LOCK TABLE dl_parent IN ACCESS EXCLUSIVE MODE",
                    "LOCK TABLE dl_child IN ACCESS EXCLUSIVE MODE",
                    "ALTER TABLE dl_child ADD COLUMN note text",
                ),
            )
        except BaseException as exc:
            failures.append(exc)

    def waiting_on(conn: psycopg.Connection[tuple[object, ...]], table: str) -> None:
        while not conn.execute(
            "SELECT FROM pg_locks WHERE NOT granted AND relation = %s::regclass", (table,)
        ).fetchall():
            time.sleep(0.01)

    try:
        with (
            psycopg.connect(url) as app,
            psycopg.connect(url, autocommit=True) as watch,
        ):
            # The application's session checks for deadlock last: the step is the one
            # PostgreSQL rolls back.
            app.execute("SET deadlock_timeout = '1h'")
            app.execute("LOCK TABLE dl_child IN ROW EXCLUSIVE MODE")
            runner = threading.Thread(target=run)
            runner.start()
            waiting_on(watch, "dl_child")
            app.execute("LOCK TABLE dl_parent IN ROW SHARE MODE")  # waits, then the step yields
            app.commit()
            runner.join(120)
    finally:
        engine.dispose()
    assert failures == [] and len(retried) >= 1 and "deadlock" in retried[0], (failures, retried)
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'dl_child'::regclass "
            "AND attname = 'note'"
        ).fetchone() == (1,)
