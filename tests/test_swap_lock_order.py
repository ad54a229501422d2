"""The contract's swap takes its locks in the order an application's query does: a view
over the table before the table. A query on the view locks the view, then the table; a
swap that locked the table first and then dropped the view deadlocked with it (the
query, waiting first, was the one PostgreSQL aborted: bench/faults.py's
DeadlockDetected on customer_list). Each moment of the interleaving is waited for in
pg_locks, never for a time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from migrator import commands
from migrator.observer import Observer
from migrator.plan.loader import parse_plan

PLAN = """
release: swap-order
database: {lock_timeout: 60s, retries: 0}
expand:
  - alter_column: {table: items, column: qty, type: bigint}
contract:
  not_before: 0s
"""

SEED = """
CREATE TABLE items (id int PRIMARY KEY, qty int);
INSERT INTO items SELECT g, g FROM generate_series(1, 20) g;
CREATE VIEW items_view AS SELECT id, qty FROM items;
"""


def opts(url: str) -> commands.Options:
    return commands.Options(
        database_url=url, observer=Observer(), force=True, force_reason="test: no old version"
    )


def until(url: str, query: str, what: str, alive: Callable[[], bool]) -> None:
    """Poll pg_locks until ``query`` finds a row (each poll is a round trip: no timer
    decides the outcome; the bound only ends a test that went wrong)."""
    deadline = time.monotonic() + 120
    with psycopg.connect(url, autocommit=True) as conn:
        while not conn.execute(query).fetchall():
            assert alive(), f"stopped before {what}"
            assert time.monotonic() < deadline, f"never saw {what}"
            time.sleep(0.01)


def test_swap_and_a_query_on_the_view_do_not_deadlock(fresh_db: str) -> None:
    url = fresh_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED)
    plan = parse_plan(PLAN)
    commands.expand(plan, opts(url))
    commands.backfill(plan, opts(url))
    commands.complete(plan, opts(url))

    failures: list[BaseException] = []

    def contract() -> None:
        try:
            commands.contract(opts(url))
        except BaseException as exc:
            failures.append(exc)

    rows: list[tuple[object, ...]] = []

    def query() -> None:
        try:
            with psycopg.connect(url, autocommit=True, application_name="app view") as conn:
                rows.extend(conn.execute("SELECT id, qty FROM items_view ORDER BY id").fetchall())
        except BaseException as exc:
            failures.append(exc)

    # An application write in flight holds the table: the swap queues for its lock.
    with psycopg.connect(url) as writer:
        writer.execute("UPDATE items SET qty = qty WHERE id = 1")
        swap = threading.Thread(target=contract)
        swap.start()
        until(
            url,
            "SELECT FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND l.relation = 'items'::regclass "
            "AND l.mode = 'AccessExclusiveLock' AND a.query LIKE 'DROP TRIGGER%'",
            "the swap waiting for the table",
            swap.is_alive,
        )
        # A query on the view comes meanwhile and waits too (behind the swap).
        reader = threading.Thread(target=query)
        reader.start()
        until(
            url,
            "SELECT FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.application_name = 'app view'",
            "the query waiting",
            reader.is_alive,
        )
        writer.commit()
    swap.join(300)
    reader.join(300)
    assert not failures, failures
    assert rows == [(i, i) for i in range(1, 21)]
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'items'::regclass AND attname = 'qty'"
        ).fetchall() == [("bigint",)]
        assert conn.execute("SELECT phase FROM migrator.releases").fetchall() == [("contracted",)]


class Statements(Observer):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
        self.seen.append((step, sql))


def test_a_referencing_table_is_locked_exclusively_by_one_step(fresh_db: str) -> None:
    """Dropping the old foreign key takes ACCESS EXCLUSIVE on both tables; the new one
    takes its name in that same transaction, not in a step of its own after the swap
    (which took the referencing table's ACCESS EXCLUSIVE lock once more)."""
    url = fresh_db
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE users (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);"
            "CREATE TABLE orders (user_id int REFERENCES users (id));"
            "INSERT INTO users DEFAULT VALUES; INSERT INTO orders VALUES (1)"
        )
    plan = parse_plan(PLAN.replace("items, column: qty", "users, column: id"))
    for verb in (commands.expand, commands.backfill, commands.complete):
        verb(plan, opts(url))
    seen = Statements()
    commands.contract(
        commands.Options(
            database_url=url, observer=seen, force=True, force_reason="test: no old version"
        )
    )
    exclusive = {
        step
        for step, sql in seen.seen
        if "orders" in sql and ("DROP CONSTRAINT" in sql or "RENAME CONSTRAINT" in sql)
    }
    assert len(exclusive) == 1, exclusive
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT conname, convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'orders'::regclass"
        ).fetchall() == [
            ("orders_user_id_fkey", True, "FOREIGN KEY (user_id) REFERENCES users(id)")
        ]
