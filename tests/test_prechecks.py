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
from psycopg import sql as psql

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


UNIQUES = (
    "SELECT conname::text FROM pg_constraint WHERE contype = 'u' "
    "AND conrelid IN ('users'::regclass, 'tags'::regclass, 'orders'::regclass) ORDER BY 1"
)


def _plan_of(tables: list[str], lock_timeout: str, retries: int) -> str:
    """A unique constraint a table, in this order: each precheck reads its table's rows."""
    uniques = {"users": "[email]", "tags": "[name]", "orders": "[id, amount]"}
    ops = "".join(
        f"  - add_unique: {{table: {t}, name: {t}_u, columns: {uniques[t]}}}\n" for t in tables
    )
    return (
        f"release: r1\ndatabase: {{lock_timeout: {lock_timeout}, retries: {retries}}}\n"
        f"expand:\n{ops}contract:\n  not_before: 0s\n  operations: []\n"
    )


def _until(url: str, query: str, *args: object, thread: threading.Thread) -> None:
    """Until ``query`` answers true (the event), while the expand runs."""
    with psycopg.connect(url, autocommit=True) as watch:
        while thread.is_alive():
            if watch.execute(query, args).fetchone() == (True,):  # type: ignore[arg-type]
                return
            watch.execute("SELECT pg_sleep(0.01)")
    pytest.fail(f"the expand ended before {query}")


def _waits_for(table: str) -> str:
    return (
        "SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        f"WHERE l.relation = '{table}'::regclass AND NOT l.granted "
        "AND a.application_name NOT LIKE 'test-%%')"
    )


class LocksDuringPause(Retries):
    """At each retry (told before the backoff's sleep), the locks any other session
    still holds on users."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.seen: list[list[tuple[object, ...]]] = []

    def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
        super().retry(step, attempt, wait, reason)
        with psycopg.connect(self.url, autocommit=True) as conn:
            self.seen.append(
                conn.execute(
                    "SELECT mode, granted FROM pg_locks WHERE relation = 'users'::regclass "
                    "AND pid <> pg_backend_pid()"
                ).fetchall()
            )


def test_a_precheck_releases_what_it_holds_before_it_waits_again(
    fresh_db: str, before: str
) -> None:
    """users is read and locked, orders is held: during the backoff nothing of
    migrator's is left on users, so an application's ALTER TABLE users does not queue
    behind the wait (before: ACCESS SHARE on users through every backoff)."""
    holder = psycopg.connect(fresh_db, application_name="test-holder")
    holder.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    observer = LocksDuringPause(fresh_db)
    plan = parse_plan(_plan_of(["users", "orders"], "50ms", 1), "plans/r1.yaml")
    with pytest.raises(LockNotAcquired) as caught:
        commands.expand(plan, commands.Options(database_url=fresh_db, observer=observer))
    assert str(caught.value).startswith(
        "the prechecks could not read public.orders within lock_timeout 50ms after 1 retries: "
        f"pid {holder.info.backend_pid} holds ACCESS EXCLUSIVE on it"
    ), caught.value
    holder.close()
    assert observer.retries == [("precheck public.orders", 1)]
    assert observer.seen == [[]]
    assert schema_dump(fresh_db) == before


@pytest.fixture
def deadlock_parties(
    fresh_db: str, before: str
) -> Iterator[
    tuple[psycopg.Connection[tuple[object, ...]], psycopg.Connection[tuple[object, ...]]]
]:
    """migrator's sessions look for deadlocks after 20 ms; the application's ("app",
    holding orders) after 10 minutes, so migrator's wait is the one that finds the
    cycle. "tags" is held by a third session until the app waits on users: only then
    does migrator ask for orders."""
    q(fresh_db, "CREATE TABLE tags (id int PRIMARY KEY, name text)")
    with psycopg.connect(fresh_db, autocommit=True) as admin:
        name = admin.execute("SELECT current_database()").fetchone()
        assert name is not None
        admin.execute(
            psql.SQL("ALTER DATABASE {} SET deadlock_timeout = '20ms'").format(
                psql.Identifier(str(name[0]))
            )
        )
    app = psycopg.connect(fresh_db, application_name="test-app")
    app.execute("SET deadlock_timeout = '10min'")
    app.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
    tags = psycopg.connect(fresh_db, application_name="test-tags")
    tags.execute("LOCK TABLE tags IN ACCESS EXCLUSIVE MODE")
    yield app, tags
    app.close()
    tags.close()


def _deadlock(
    url: str,
    parties: tuple[psycopg.Connection[tuple[object, ...]], psycopg.Connection[tuple[object, ...]]],
    expand: threading.Thread,
) -> threading.Thread:
    """migrator holds users and waits on tags; the app asks for users (and waits); tags
    is let go, so migrator asks for orders, which the app holds: a deadlock that
    migrator's session finds. Returns the app's thread, which ends once it has users."""
    app, tags = parties
    _until(url, _waits_for("tags"), thread=expand)
    app_thread, app_errors = _in_thread(
        lambda: app.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
    )
    _until(
        url,
        "SELECT EXISTS (SELECT FROM pg_locks WHERE relation = 'users'::regclass "
        "AND NOT granted AND pid = %s)",
        app.info.backend_pid,
        thread=expand,
    )
    tags.commit()
    return app_thread


def test_a_deadlock_while_taking_a_precheck_lock_is_exit_5_naming_the_table(
    fresh_db: str, deadlock_parties: tuple[psycopg.Connection[tuple[object, ...]], ...]
) -> None:
    plan = parse_plan(_plan_of(["users", "tags", "orders"], "1m", 0), "plans/r1.yaml")
    expand, errors = _in_thread(lambda: commands.expand(plan, commands.Options(fresh_db)))
    app_thread = _deadlock(fresh_db, deadlock_parties, expand)  # type: ignore[arg-type]
    expand.join()
    app_thread.join()  # the app has users: migrator let go of it
    assert len(errors) == 1 and isinstance(errors[0], LockNotAcquired), errors
    line = str(errors[0])
    assert line.startswith(
        "the prechecks could not read public.orders taking its lock deadlocked with another "
        f"session after 0 retries: pid {deadlock_parties[0].info.backend_pid} holds ACCESS "
        "EXCLUSIVE on it"
    ), line
    assert errors[0].exit_code == ExitCode.INTERRUPTED
    deadlock_parties[0].rollback()
    assert q(fresh_db, UNIQUES) == []
    assert release_rows(fresh_db) == []


def test_after_a_deadlock_the_precheck_lets_the_other_side_go_on_and_retries(
    fresh_db: str, deadlock_parties: tuple[psycopg.Connection[tuple[object, ...]], ...]
) -> None:
    """With a retry left, migrator rolls back (the app gets users and goes on), waits
    for orders again, and once the app commits the expand adds all three constraints."""
    observer = Retries()
    plan = parse_plan(_plan_of(["users", "tags", "orders"], "1m", 1), "plans/r1.yaml")
    expand, errors = _in_thread(
        lambda: commands.expand(plan, commands.Options(fresh_db, observer=observer))
    )
    app_thread = _deadlock(fresh_db, deadlock_parties, expand)  # type: ignore[arg-type]
    app_thread.join()  # the app has users while migrator is still in its expand
    _until(fresh_db, _waits_for("orders"), thread=expand)
    deadlock_parties[0].commit()
    expand.join()
    assert errors == []
    assert observer.retries == [("precheck public.orders", 1)]
    assert q(fresh_db, UNIQUES) == [("orders_u",), ("tags_u",), ("users_u",)]
