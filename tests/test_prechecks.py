"""The prechecks (rows a new unique would find duplicated, rows breaking a new check or
NOT NULL, conflicting pairs, ...) read rows before anything changes: they wait for their
table's lock at most the plan's lock_timeout, with the steps' retries, and one that
cannot have it ends in one line naming the table and who holds it, exit 5, nothing
changed. On PostgreSQL 18 only: the lock queue is the same on 15.

Each test holds ACCESS EXCLUSIVE in a connection of its own, runs expand in a thread,
and knows the precheck is waiting from pg_locks (a not granted lock on the table),
never from a timer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import psycopg
import pytest

from migrator import commands
from migrator.errors import ExitCode, LockNotAcquired
from migrator.observer import Observer
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import schema_dump
from tests.support.ops_suite import BASE, q, release_rows

WAITING = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted "
    "AND relation = 'users'::regclass AND pid <> %s"
)


def _plan(lock_timeout: str, retries: int) -> str:
    return (
        "release: r1\n"
        f"database: {{lock_timeout: {lock_timeout}, retries: {retries}}}\n"
        "expand:\n"
        "  - add_unique: {table: users, name: users_email_key, columns: [email]}\n"
        "contract:\n  not_before: 0s\n  operations: []\n"
    )


class Retries(Observer):
    """Keeps the retries the observer is told of."""

    def __init__(self) -> None:
        self.retries: list[tuple[str, int]] = []

    def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
        self.retries.append((step, attempt))


@pytest.fixture
def before(fresh_db: str) -> str:
    """The seeded database's schema, dumped before anyone locks it."""
    q(fresh_db, BASE)
    return schema_dump(fresh_db)


@pytest.fixture
def holder(fresh_db: str, before: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection holding ACCESS EXCLUSIVE on users, in a transaction left open."""
    conn = psycopg.connect(fresh_db)
    conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    yield conn
    conn.close()


def _in_thread(run: Callable[[], object]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            run()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, errors


def _wait_for_waiting(url: str, holder_pid: int, thread: threading.Thread) -> None:
    """Until pg_locks shows another session than the holder waiting for users (the
    event), while the expand runs; fails if the expand ended without ever waiting."""
    with psycopg.connect(url, autocommit=True) as watch:
        while thread.is_alive():
            row = watch.execute(WAITING, (holder_pid,)).fetchone()
            if row is not None and row[0]:
                return
            watch.execute("SELECT pg_sleep(0.01)")
    pytest.fail("the expand ended without waiting for the lock on users")


def test_a_precheck_held_out_of_its_table_ends_after_its_retries(
    fresh_db: str, before: str, holder: psycopg.Connection[tuple[object, ...]]
) -> None:
    observer = Retries()
    plan = parse_plan(_plan("1s", 1), "plans/r1.yaml")
    thread, errors = _in_thread(
        lambda: commands.expand(plan, commands.Options(database_url=fresh_db, observer=observer))
    )
    _wait_for_waiting(fresh_db, holder.info.backend_pid, thread)
    thread.join()
    assert len(errors) == 1 and isinstance(errors[0], LockNotAcquired), errors
    line = str(errors[0])
    assert line.startswith(
        "the prechecks could not read public.users within lock_timeout 1s after 1 retries: "
        f"pid {holder.info.backend_pid} holds ACCESS EXCLUSIVE on it (idle in transaction: "
        "LOCK TABLE users IN ACCESS EXCLUSIVE MODE); nothing was changed"
    ), line
    assert "\n" not in line
    assert errors[0].exit_code == ExitCode.INTERRUPTED
    assert observer.retries == [("precheck public.users", 1)]
    holder.rollback()
    assert schema_dump(fresh_db) == before
    assert release_rows(fresh_db) == []


def test_a_precheck_goes_on_once_the_lock_is_released(
    fresh_db: str, holder: psycopg.Connection[tuple[object, ...]]
) -> None:
    """The holder commits while the precheck waits: the expand goes on, within the same
    try or a retry, and adds the constraint."""
    plan = parse_plan(_plan("2s", 5), "plans/r1.yaml")
    thread, errors = _in_thread(lambda: commands.expand(plan, commands.Options(fresh_db)))
    _wait_for_waiting(fresh_db, holder.info.backend_pid, thread)
    holder.commit()
    thread.join()
    assert errors == []
    assert q(
        fresh_db,
        "SELECT conname::text FROM pg_constraint WHERE conrelid = 'users'::regclass AND contype = 'u'",
    ) == [("users_email_key",)]
