"""rename_column and alter_column, table-driven, on PostgreSQL 18 and 15.

For each case: after expand, the old version's and the new version's reads and writes
all succeed and each write is seen through both names; after rollback the catalog
(pg_dump --schema-only) is the one from before; expanded again and backfilled, every
existing row is copied; completed and contracted, the final shape holds and the data
that was there is intact. Then: both versions writing the same rows at once while the
backfill runs end consistent; the statement forms; the refusals.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from migrator import commands
from migrator.errors import ExitCode, MigratorError
from migrator.observer import Observer
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import diff, schema_dump
from tests.support.functions import calls
from tests.support.ops_suite import SetupDatabases, setup_databases
from tests.support.servers import Server


def q(url: str, query: str) -> list[tuple[object, ...]]:
    """Run SQL as an application would: its own connection, autocommit, a time limit."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '10s'")
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


class Recorder(Observer):
    """Keeps every statement with its step and mode."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, str, bool]] = []

    def statement(self, sql: str, *, step: str, autocommit: bool, dry_run: bool) -> None:
        self.statements.append((step, sql, autocommit))


def opts(url: str, observer: Observer | None = None) -> commands.Options:
    return commands.Options(
        database_url=url,
        observer=observer or Observer(),
        force=True,
        force_reason="test: no old version is connected",
    )


def plan_for(expand: str) -> str:
    body = "\n".join("  " + line for line in expand.strip("\n").splitlines())
    return (
        "release: r1\n"
        "database: {lock_timeout: 2s, retries: 2}\n"
        f"expand:\n{body}\n"
        "contract: {not_before: 0s, operations: []}\n"
    )


SEED = """
CREATE TABLE users (
    id serial PRIMARY KEY,
    name varchar(40),
    email text NOT NULL DEFAULT ('nobody-' || md5(random()::text) || '@example.com'),
    score smallint CHECK (score >= 0),
    price text,
    CONSTRAINT users_email_len CHECK (length(email) > 3)
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_score_idx ON users (score) WHERE score IS NOT NULL;
COMMENT ON COLUMN users.email IS 'where we write';
CREATE VIEW user_emails AS SELECT id, email, score FROM users;
CREATE VIEW high_scores AS SELECT id, email FROM user_emails WHERE score > 40;
CREATE TABLE orders (
    id serial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    amount numeric(6,2) NOT NULL DEFAULT 0
);
INSERT INTO users (name, email, score, price)
SELECT 'user' || g, 'u' || g || '@example.com', g, (g * 100)::text FROM generate_series(1, 60) g;
INSERT INTO orders (user_id, amount) SELECT 1 + g % 60, g FROM generate_series(1, 120) g;
"""


@dataclass
class Case:
    """One release: the plan, who reads and writes after expand, what holds at the end."""

    id: str
    expand: str
    old: list[str] = field(default_factory=list)  # the old version, after expand
    new: list[str] = field(default_factory=list)  # the new version, after expand
    # After both versions wrote: (query, expected rows) -- writes seen through both names.
    both: list[tuple[str, list[tuple[object, ...]]]] = field(default_factory=list)
    # Writes the rollback could not undo (values the old type or NOT NULL cannot hold).
    before_rollback: list[str] = field(default_factory=list)
    setup: str = ""
    # Lint findings that are right for the case: (rule, the step kind it must be in).
    lint: set[tuple[str, str]] = field(default_factory=set)
    # After the backfill: a query that counts rows not copied yet (must be 0).
    not_copied: str | None = None
    final: list[tuple[str, list[tuple[object, ...]]]] = field(default_factory=list)
    # The seeded data, before (old names) and after the contract (new names): equal.
    checksum_before: str = (
        "SELECT md5(string_agg(email, ',' ORDER BY id)) FROM users WHERE id <= 60"
    )
    checksum_after: str = "SELECT md5(string_agg(email, ',' ORDER BY id)) FROM users WHERE id <= 60"


CASES = [
    Case(
        "rename a column with a default, NOT NULL, unique index, check, comment and views",
        expand="- rename_column: {table: users, from: email, to: contact_email}",
        old=[
            "INSERT INTO users (id, name, email) VALUES (1001, 'old', 'old@example.com')",
            "INSERT INTO users (id, name) VALUES (1002, 'old-default')",
            # an application session whose search_path does not hold the table's schema
            "SET search_path = ''; INSERT INTO public.users (id, email) "
            "VALUES (1003, 'path@example.com')",
            "UPDATE users SET email = 'old2@example.com' WHERE id = 1001",
            "SELECT id, email FROM users WHERE email LIKE 'u1%' ORDER BY id",
            "SELECT count(*) FROM high_scores",
        ],
        new=[
            "INSERT INTO users (id, name, contact_email) VALUES (2001, 'new', 'new@example.com')",
            "INSERT INTO users (id, name) VALUES (2002, 'new-default')",  # the old default
            "UPDATE users SET contact_email = 'new2@example.com' WHERE id = 2001",
            "UPDATE users SET contact_email = 'moved@example.com' WHERE id = 5",
            "SELECT id FROM users WHERE lower(contact_email) = 'new2@example.com'",
            "INSERT INTO users (id, contact_email) VALUES (2003, 'up@example.com') "
            "ON CONFLICT (lower(contact_email)) DO NOTHING",
        ],
        both=[
            (
                "SELECT id, left(email, 7), email = contact_email FROM users "
                "WHERE id IN (5, 1001, 1002, 1003, 2001, 2002) ORDER BY id",
                [
                    (5, "moved@e", True),
                    (1001, "old2@ex", True),
                    (1002, "nobody-", True),
                    (1003, "path@ex", True),
                    (2001, "new2@ex", True),
                    (2002, "nobody-", True),
                ],
            ),
        ],
        not_copied="SELECT count(*) FROM users WHERE contact_email IS DISTINCT FROM email",
        final=[
            (
                "SELECT column_name, column_default LIKE '%random()%', is_nullable "
                "FROM information_schema.columns "
                "WHERE table_name = 'users' AND column_name IN ('email', 'contact_email')",
                [("contact_email", True, "NO")],
            ),
            (
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'users_email_key'",
                [
                    (
                        "CREATE UNIQUE INDEX users_email_key ON public.users "
                        "USING btree (lower(contact_email))",
                    )
                ],
            ),
            (
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conname = 'users_email_len'",
                [("CHECK ((length(contact_email) > 3))",)],
            ),
            ("SELECT col_description('users'::regclass, 3)", [("where we write",)]),
            ("SELECT count(*) FROM high_scores WHERE email LIKE '%@example.com'", [(20,)]),
            ("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '\\_migrator%'", [(0,)]),
            ("SELECT count(*) FROM pg_class WHERE relname LIKE '\\_migrator%'", [(0,)]),
        ],
        checksum_after="SELECT md5(string_agg(CASE WHEN id = 5 THEN 'u5@example.com' "
        "ELSE contact_email END, ',' ORDER BY id)) FROM users WHERE id <= 60",
    ),
    Case(
        "rename a foreign key column",
        expand="- rename_column: {table: orders, from: user_id, to: customer_id}",
        old=["INSERT INTO orders (id, user_id, amount) VALUES (1001, 3, 1)"],
        new=[
            "INSERT INTO orders (id, customer_id, amount) VALUES (2001, 4, 2)",
            "SELECT count(*) FROM orders o JOIN users u ON u.id = o.customer_id",
        ],
        both=[
            (
                "SELECT id, user_id, customer_id FROM orders WHERE id > 1000 ORDER BY id",
                [(1001, 3, 3), (2001, 4, 4)],
            )
        ],
        not_copied="SELECT count(*) FROM orders WHERE customer_id IS DISTINCT FROM user_id",
        final=[
            (
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                "'orders'::regclass AND contype = 'f'",
                [("FOREIGN KEY (customer_id) REFERENCES users(id) ON DELETE CASCADE",)],
            ),
        ],
        checksum_before="SELECT md5(string_agg(user_id::text, ',' ORDER BY id)) FROM orders "
        "WHERE id <= 120",
        checksum_after="SELECT md5(string_agg(customer_id::text, ',' ORDER BY id)) FROM orders "
        "WHERE id <= 120",
    ),
    Case(
        "retype the primary key that a foreign key and two views use (shadow, swap)",
        expand="- alter_column: {table: users, column: id, type: bigint}\n"
        "- alter_column: {table: orders, column: id, type: bigint}",
        old=[
            "INSERT INTO orders (user_id, amount) VALUES (7, 3.5)",
            "UPDATE orders SET amount = 9 WHERE id = 3",
            "INSERT INTO users (name) VALUES ('old')",
            "SELECT count(*) FROM high_scores",
        ],
        new=[
            "INSERT INTO orders (user_id, amount) VALUES (8, 4.5)",
            "SELECT max(_migrator_new_id) FROM orders",
            "INSERT INTO users (name, _migrator_new_id) VALUES ('new', 5000)",
        ],
        both=[
            (
                "SELECT count(*) FROM orders WHERE _migrator_new_id IS DISTINCT FROM id "
                "AND id > 120",
                [(0,)],
            ),
            (
                "SELECT name, id, _migrator_new_id FROM users WHERE name IN ('old', 'new') "
                "ORDER BY name",
                [("new", 5000, 5000), ("old", 61, 61)],
            ),
        ],
        not_copied="SELECT count(*) FROM orders WHERE _migrator_new_id IS DISTINCT FROM id",
        final=[
            (
                "SELECT format_type(atttypid, atttypmod), attnotnull FROM pg_attribute "
                "WHERE attrelid = 'orders'::regclass AND attname = 'id'",
                [("bigint", True)],
            ),
            (
                "SELECT pg_get_serial_sequence('orders', 'id'), "
                "pg_get_expr(adbin, adrelid) LIKE 'nextval%' FROM pg_attrdef "
                "WHERE adrelid = 'orders'::regclass AND adnum = (SELECT attnum FROM "
                "pg_attribute WHERE attrelid = 'orders'::regclass AND attname = 'id')",
                [("public.orders_id_seq", True)],
            ),
            (
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'orders'::regclass AND contype IN ('p', 'f') ORDER BY 1",
                [
                    ("orders_pkey", "PRIMARY KEY (id)"),
                    (
                        "orders_user_id_fkey",
                        "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE",
                    ),
                ],
            ),
            ("INSERT INTO orders (user_id) VALUES (1) RETURNING id > 120", [(True,)]),
            (
                "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint "
                "WHERE conname = 'orders_user_id_fkey'",
                [("FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE", True)],
            ),
            (
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'user_emails'::regclass AND attname = 'id'",
                [("bigint",)],
            ),
            ("SELECT count(*) FROM high_scores", [(20,)]),
            ("SELECT pg_get_serial_sequence('users', 'id')", [("public.users_id_seq",)]),
        ],
        checksum_before="SELECT md5(string_agg(id || ':' || user_id || ':' || amount, ',' "
        "ORDER BY id)) FROM orders WHERE id <= 120 AND id <> 3",
        checksum_after="SELECT md5(string_agg(id || ':' || user_id || ':' || amount, ',' "
        "ORDER BY id)) FROM orders WHERE id <= 120 AND id <> 3",
    ),
    Case(
        "retype smallint to integer under a check, a partial index and two views",
        expand="- alter_column: {table: users, column: score, type: integer}",
        old=[
            "INSERT INTO users (id, score) VALUES (1001, 77)",
            "UPDATE users SET score = 99 WHERE id = 2",
            "SELECT count(*) FROM high_scores",
        ],
        new=[
            "INSERT INTO users (id, _migrator_new_score) VALUES (2001, 70000 - 69990)",
            "UPDATE users SET _migrator_new_score = 55 WHERE id = 3",
        ],
        both=[
            (
                "SELECT id, score, _migrator_new_score FROM users WHERE id IN (2, 3, 1001, 2001) "
                "ORDER BY id",
                [(2, 99, 99), (3, 55, 55), (1001, 77, 77), (2001, 10, 10)],
            )
        ],
        not_copied="SELECT count(*) FROM users WHERE _migrator_new_score IS DISTINCT FROM score",
        final=[
            (
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'users'::regclass AND attname = 'score'",
                [("integer",)],
            ),
            ("INSERT INTO users (id, score) VALUES (3001, 100000) RETURNING score", [(100000,)]),
            ("SELECT count(*) FROM high_scores WHERE id = 3001", [(1,)]),
            (
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'users_score_idx'",
                [
                    (
                        "CREATE INDEX users_score_idx ON public.users USING btree (score) "
                        "WHERE (score IS NOT NULL)",
                    )
                ],
            ),
            (
                "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint "
                "WHERE conname = 'users_score_check'",
                [("CHECK ((score >= 0))", True)],
            ),
        ],
        checksum_before="SELECT md5(string_agg(score::text, ',' ORDER BY id)) FROM users "
        "WHERE id BETWEEN 4 AND 60",
        checksum_after="SELECT md5(string_agg(score::text, ',' ORDER BY id)) FROM users "
        "WHERE id BETWEEN 4 AND 60",
    ),
    Case(
        "retype text to numeric with up and down",
        expand="- alter_column:\n"
        "    table: users\n"
        "    column: price\n"
        "    type: numeric(10,2)\n"
        "    up: price::numeric / 100\n"
        "    down: (price * 100)::bigint::text",
        old=["INSERT INTO users (id, price) VALUES (1001, '1250')"],
        new=[
            "INSERT INTO users (id, _migrator_new_price) VALUES (2001, 3.5)",
            "UPDATE users SET _migrator_new_price = 0.25 WHERE id = 1",
        ],
        both=[
            (
                "SELECT id, price, _migrator_new_price::text FROM users "
                "WHERE id IN (1, 1001, 2001) ORDER BY id",
                [(1, "25", "0.25"), (1001, "1250", "12.50"), (2001, "350", "3.50")],
            )
        ],
        not_copied="SELECT count(*) FROM users WHERE _migrator_new_price IS NULL",
        final=[
            (
                "SELECT price::text FROM users WHERE id IN (2, 1001) ORDER BY id",
                [("2.00",), ("12.50",)],
            ),
        ],
        checksum_before="SELECT md5(string_agg(price, ',' ORDER BY id)) FROM users "
        "WHERE id BETWEEN 2 AND 60",
        checksum_after="SELECT md5(string_agg((price * 100)::bigint::text, ',' ORDER BY id)) "
        "FROM users WHERE id BETWEEN 2 AND 60",
    ),
    Case(
        "binary-coercible changes in place: varchar(40) to text, numeric(6,2) to numeric(9,2)",
        expand="- alter_column: {table: users, column: name, type: text}\n"
        "- alter_column: {table: orders, column: amount, type: 'numeric(9,2)'}",
        before_rollback=[
            "DELETE FROM users WHERE id = 2001",
            "DELETE FROM orders WHERE amount > 9999",
        ],
        # the rollback narrows the types back: a rewrite, and varchar again
        lint={("M016", "rollback"), ("M017", "rollback")},
        old=["INSERT INTO users (id, name) VALUES (1001, 'old')"],
        new=[
            "INSERT INTO users (id, name) VALUES (2001, repeat('x', 100))",
            "INSERT INTO orders (user_id, amount) VALUES (1, 1234567.5)",
        ],
        both=[
            (
                "SELECT count(*) FROM pg_attribute WHERE attname LIKE '\\_migrator%' "
                "AND NOT attisdropped",
                [(0,)],
            )
        ],
        final=[
            (
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid IN ('users'::regclass, 'orders'::regclass) "
                "AND attname IN ('name', 'amount') ORDER BY 1",
                [("amount", "numeric(9,2)"), ("name", "text")],
            ),
        ],
    ),
    Case(
        "nullable, default, check, unique and references without a type change",
        setup="CREATE TABLE teams (code text PRIMARY KEY);"
        "INSERT INTO teams VALUES ('a'), ('b');"
        "ALTER TABLE users ADD COLUMN team text;"
        "UPDATE users SET team = CASE WHEN id % 2 = 0 THEN 'a' ELSE 'b' END;",
        expand="- alter_column: {table: users, column: email, nullable: true, "
        "default: \"'none@example.com'\"}\n"
        "- alter_column: {table: users, column: name, nullable: false, "
        "check: \"name <> ''\", unique: true}\n"
        "- alter_column: {table: users, column: team, references: {table: teams, column: code}}\n"
        "- alter_column: {table: orders, column: amount, nullable: true}",
        before_rollback=["DELETE FROM users WHERE id = 2001"],
        lint={("M015", "expand")},  # DROP NOT NULL: warned, as designed
        old=[
            "INSERT INTO users (id, name) VALUES (1001, 'old-1001')",
            "SELECT email FROM users WHERE id = 1001",
        ],
        new=["INSERT INTO users (id, name, email) VALUES (2001, 'new-2001', NULL)"],
        both=[
            (
                "SELECT id, email FROM users WHERE id IN (1001, 2001) ORDER BY id",
                [(1001, "none@example.com"), (2001, None)],
            )
        ],
        final=[
            (
                "SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = "
                "'users'::regclass AND attname IN ('name', 'email') ORDER BY 1",
                [("email", False), ("name", True)],
            ),
            (
                "SELECT conname, contype::text, convalidated FROM pg_constraint "
                "WHERE conname IN ('users_name_check', 'users_name_key', 'users_team_fkey') "
                "ORDER BY 1",
                [
                    ("users_name_check", "c", True),
                    ("users_name_key", "u", True),
                    ("users_team_fkey", "f", True),
                ],
            ),
        ],
    ),
]


CASES.append(
    Case(
        "json columns (no equality operator): rename one, retype another to jsonb",
        lint={("M026", "expand")},  # the copy of a json column is json too: warned
        setup="ALTER TABLE users ADD COLUMN prefs json, ADD COLUMN meta json;"
        "UPDATE users SET prefs = json_build_object('n', id), meta = json_build_object('m', id);",
        expand="- rename_column: {table: users, from: prefs, to: settings}\n"
        "- alter_column: {table: users, column: meta, type: jsonb}",
        old=[
            "INSERT INTO users (id, prefs, meta) VALUES (1001, '{\"a\": 1}', '{\"b\": 2}')",
            "UPDATE users SET prefs = '{\"c\": 3}' WHERE id = 2",
        ],
        new=[
            "INSERT INTO users (id, settings, _migrator_new_meta) "
            "VALUES (2001, '{\"x\": 1}', '{\"y\": 2}')",
            "UPDATE users SET settings = '{\"z\": 9}' WHERE id = 3",
        ],
        both=[
            (
                "SELECT id, prefs::text, settings::text FROM users "
                "WHERE id IN (2, 3, 1001, 2001) ORDER BY id",
                [
                    (2, '{"c": 3}', '{"c": 3}'),
                    (3, '{"z": 9}', '{"z": 9}'),
                    (1001, '{"a": 1}', '{"a": 1}'),
                    (2001, '{"x": 1}', '{"x": 1}'),
                ],
            ),
            (
                "SELECT id, meta::text, _migrator_new_meta::text FROM users "
                "WHERE id IN (1001, 2001) ORDER BY id",
                [(1001, '{"b": 2}', '{"b": 2}'), (2001, '{"y": 2}', '{"y": 2}')],
            ),
        ],
        not_copied="SELECT count(*) FROM users WHERE settings::text IS DISTINCT FROM "
        "prefs::text OR (_migrator_new_meta IS NULL AND meta IS NOT NULL)",
        final=[
            (
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'users'::regclass AND attname IN ('prefs', 'settings', "
                "'meta') AND NOT attisdropped ORDER BY 1",
                [("meta", "jsonb"), ("settings", "json")],
            ),
        ],
        checksum_before="SELECT md5(string_agg(prefs::text || meta::jsonb::text, ',' "
        "ORDER BY id)) "
        "FROM users WHERE id BETWEEN 4 AND 60",
        checksum_after="SELECT md5(string_agg(settings::text || meta::jsonb::text, ',' "
        "ORDER BY id)) "
        "FROM users WHERE id BETWEEN 4 AND 60",
    )
)


def _run(url: str, case: Case) -> None:
    plan = parse_plan(plan_for(case.expand), "plan.yaml")
    q(url, SEED)
    if case.setup:
        q(url, case.setup)
    before = schema_dump(url)
    checksum = q(url, case.checksum_before)

    commands.expand(plan, opts(url))
    for sql in case.old + case.new:
        q(url, sql)
    for sql, rows in case.both:
        assert q(url, sql) == rows, sql

    for sql in case.before_rollback:
        q(url, sql)
    commands.rollback(plan, opts(url))
    after = schema_dump(url)
    assert after == before, diff(before, after)

    commands.expand(plan, opts(url))
    commands.backfill(plan, opts(url))
    if case.not_copied:
        assert q(url, case.not_copied) == [(0,)]
    commands.complete(plan, opts(url))
    commands.contract(opts(url), plan.release)
    for sql, rows in case.final:
        assert q(url, sql) == rows, sql
    assert q(url, case.checksum_after) == checksum
    # nothing of the transition is left, not even in a name
    assert q(
        url,
        "SELECT (SELECT count(*) FROM pg_constraint WHERE conname LIKE '%\\_migrator%'), "
        "(SELECT count(*) FROM pg_class WHERE relname LIKE '\\_migrator%'), "
        "(SELECT count(*) FROM pg_trigger WHERE tgname LIKE '\\_migrator%'), "
        "(SELECT count(*) FROM pg_proc WHERE proname LIKE '%before' "
        " AND pronamespace = 'migrator'::regnamespace)",
    ) == [(0, 0, 0, 0)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_release(case: Case, db: str) -> None:
    _run(db, case)


# -- both versions writing at once -------------------------------------------------------------


@pytest.mark.parametrize(
    ("expand", "old_col", "new_col", "new_value", "consistent"),
    [
        (
            "- rename_column: {table: users, from: email, to: contact_email}",
            "email",
            "contact_email",
            "'n' || {i} || '@example.com'",
            "contact_email IS DISTINCT FROM email",
        ),
        (
            "- alter_column: {table: users, column: score, type: bigint}",
            "score",
            "_migrator_new_score",
            "abs({i}) % 30000",
            "_migrator_new_score IS DISTINCT FROM score",
        ),
    ],
    ids=["rename_column", "alter_column"],
)
def test_concurrent_writers_end_consistent(
    db: str, expand: str, old_col: str, new_col: str, new_value: str, consistent: str
) -> None:
    q(db, SEED)
    q(
        db,
        "INSERT INTO users (name, email, score) SELECT 'more' || g, 'm' || g || '@example.com', "
        "g FROM generate_series(61, 3000) g",
    )
    plan = parse_plan(plan_for(expand), "plan.yaml")
    commands.expand(plan, opts(db))
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(column: str, value: str, seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(db, autocommit=True) as conn:
                i = seed * 100000
                while not stop.is_set():
                    i += 1
                    row = rng.randint(1, 3000)
                    expr = value.format(i=i) if "{i}" in value else f"'o{i}@example.com'"
                    conn.execute(f"UPDATE users SET {column} = {expr} WHERE id = {row}")
                    if i % 20 == 0:
                        again = value.format(i=-i) if "{i}" in value else f"'o{-i}@example.com'"
                        conn.execute(f"INSERT INTO users (name, {column}) VALUES ('w', {again})")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    old_value = "'o' || {i} || '@example.com'" if old_col == "email" else "abs({i}) % 20000"
    threads = [
        threading.Thread(target=writer, args=(old_col, old_value, 1)),
        threading.Thread(target=writer, args=(new_col, new_value, 2)),
    ]
    for t in threads:
        t.start()
    try:
        commands.backfill(plan, opts(db))
        time.sleep(1.0)  # and on a while after it, on rows the backfill already did
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert not errors, errors
    assert q(db, f"SELECT count(*) FROM users WHERE {consistent}") == [(0,)]
    writes = q(db, "SELECT count(*) FROM users WHERE name = 'w'")[0][0]
    assert isinstance(writes, int) and writes > 0


@pytest.mark.parametrize(
    ("expand", "function", "backfill_batch", "old_write", "new_write", "check"),
    [
        (
            "- rename_column: {table: users, from: email, to: contact_email}",
            "public_users_email_contact_email_sync",
            "UPDATE users SET contact_email = email "
            "WHERE id <= 30 AND contact_email IS DISTINCT FROM email",
            "UPDATE users SET email = 'old' || id || '@example.com' WHERE id IN (41, 42)",
            "UPDATE users SET contact_email = 'new' || id || '@example.com' WHERE id = 43",
            "SELECT count(*) FROM users WHERE id IN (41, 42, 43) AND email = contact_email",
        ),
        (
            "- alter_column:\n"
            "    table: users\n"
            "    column: price\n"
            "    type: numeric(10,2)\n"
            "    up: price::numeric / 100\n"
            "    down: (price * 100)::bigint::text",
            "public_users_price_retype",
            'UPDATE users SET "_migrator_new_price" = (price::numeric / 100) '
            'WHERE id <= 30 AND "_migrator_new_price" IS NULL',
            "UPDATE users SET price = '777' WHERE id IN (41, 42)",
            'UPDATE users SET "_migrator_new_price" = 8.5 WHERE id = 43',
            "SELECT count(*) FROM users WHERE id IN (41, 42, 43) "
            'AND price::numeric / 100 = "_migrator_new_price"',
        ),
    ],
    ids=["rename_column", "alter_column"],
)
def test_sync_function_runs_only_when_it_has_work(
    db: str,
    expand: str,
    function: str,
    backfill_batch: str,
    old_write: str,
    new_write: str,
    check: str,
) -> None:
    """The UPDATE trigger's WHEN condition keeps PL/pgSQL out of the application's
    unrelated updates and out of the backfill's own batches; writes from either version
    to the synced columns still run it, once per row."""
    q(db, SEED)
    commands.expand(parse_plan(plan_for(expand), "plan.yaml"), opts(db))
    start = calls(db, "migrator", function)
    assert (
        calls(
            db,
            "migrator",
            function,
            backfill_batch,
            # On rows the backfill did: a row not copied yet is copied by any update.
            "UPDATE users SET name = name || '!' WHERE id <= 20",
            "UPDATE users SET score = score + 1 WHERE id <= 20",
        )
        == start
    )
    assert calls(db, "migrator", function, old_write, new_write) == start + 3
    assert q(db, check) == [(3,)]
    # A row the backfill has not reached yet: any update copies it.
    assert calls(db, "migrator", function, "UPDATE users SET name = 'x' WHERE id = 50") == start + 4


# -- statement forms ---------------------------------------------------------------------------


def test_statement_forms(db: str) -> None:
    """Indexes concurrently in autocommit blocks, constraints NOT VALID then validated in
    another transaction, the swap in one transaction on one table."""
    q(db, SEED)
    plan = parse_plan(
        plan_for(
            "- rename_column: {table: users, from: email, to: contact_email}\n"
            "- alter_column: {table: users, column: id, type: bigint}\n"
        ),
        "plan.yaml",
    )
    rec = Recorder()
    commands.expand(plan, opts(db, rec))
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    commands.contract(opts(db, rec), plan.release)
    by_step: dict[str, list[tuple[str, bool]]] = {}
    for step_key, sql, autocommit in rec.statements:
        by_step.setdefault(step_key, []).append((sql, autocommit))
    for step_key, statements in by_step.items():
        for sql, autocommit in statements:
            upper = sql.upper()
            if "CREATE" in upper and "INDEX" in upper and "FUNCTION" not in upper:
                assert "CONCURRENTLY" in upper and autocommit, (step_key, sql)
            if "ADD CONSTRAINT" in upper and "USING INDEX" not in upper:
                assert upper.endswith("NOT VALID"), (step_key, sql)
                assert not any("VALIDATE" in s.upper() for s, _ in statements), step_key
            if "VALIDATE CONSTRAINT" in upper:
                assert len(statements) == 1, step_key
        tables = {sql.split()[2] for sql, _ in statements if sql.upper().startswith("ALTER TABLE")}
        assert len(tables) <= 1, (step_key, tables)
    swap = by_step["1.alter_column.swap"]
    assert any("DROP COLUMN id" in sql for sql, _ in swap)
    assert any("RENAME COLUMN _migrator_new_id TO id" in sql for sql, _ in swap)


# -- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expand", "message"),
    [
        ("- rename_column: {table: nope, from: a, to: b}", "table public.nope does not exist"),
        ("- rename_column: {table: users, from: nope, to: b}", "column nope does not exist"),
        ("- rename_column: {table: users, from: email, to: name}", "column name already exists"),
        ("- alter_column: {table: users, column: score, type: nosuchtype}", "unknown type"),
        ("- alter_column: {table: users, column: nope, type: text}", "column nope does not exist"),
        ("- alter_column: {table: users, column: score}", "nothing to change"),
        ("- alter_column: {table: users, column: score, type: smallint}", "already has type"),
        (
            "- alter_column: {table: users, column: score, type: integer, up: 'nosuch + 1'}",
            "nosuch",
        ),
        ("- alter_column: {table: users, column: score, up: 'score'}", "up and down go with"),
        (
            "- alter_column: {table: users, column: score, unique: true}\n",
            "",
        ),
        ("- alter_column: {table: users, column: id, nullable: true}", "primary key"),
        (
            # a type change takes a check, one that works on the new type (issue 16 s6)
            "- alter_column: {table: users, column: email, type: integer,"
            " check: 'length(email) > 0'}",
            "does not work on email as integer: function length(integer) does not exist",
        ),
    ],
)
def test_refusals(db: str, expand: str, message: str) -> None:
    q(db, SEED)
    if message == "":
        # duplicates make a unique index fail half-way: refused before anything runs
        q(db, "UPDATE users SET score = 1 WHERE id IN (1, 2, 3)")
        message = "more than once"
    before = schema_dump(db)
    with pytest.raises(MigratorError) as info:
        commands.expand(parse_plan(plan_for(expand), "plan.yaml"), opts(db))
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert message in str(info.value)
    assert schema_dump(db) == before


def test_identity_column_rename_is_refused(db: str) -> None:
    q(db, "CREATE TABLE t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v text)")
    with pytest.raises(MigratorError, match="identity column"):
        commands.expand(
            parse_plan(plan_for("- rename_column: {table: t, from: id, to: key}"), "p.yaml"),
            opts(db),
        )


def test_drop_not_null_and_backfill_order_are_warned(db: str) -> None:
    q(db, SEED)
    warnings: list[str] = []

    class Warn(Observer):
        def warning(self, message: str) -> None:
            warnings.append(message)

    plan = parse_plan(
        plan_for(
            "- alter_column: {table: users, column: email, nullable: true}\n"
            "- rename_column: {table: users, from: name, to: full_name}"
        ),
        "p.yaml",
    )
    commands.expand(plan, opts(db, Warn()))
    assert any("old version may now read NULLs" in w for w in warnings), warnings
    assert any("`migrator switch` waits for it" in w for w in warnings), warnings
    assert q(
        db,
        "SELECT is_nullable FROM information_schema.columns "
        "WHERE table_name = 'users' AND column_name = 'email'",
    ) == [("YES",)]


@pytest.fixture(scope="module")
def read_only_dbs(server: Server) -> Iterator[SetupDatabases]:
    yield from setup_databases(server)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lint_finds_nothing_unsafe(
    case: Case, read_only_dbs: SetupDatabases, tmp_path: Path
) -> None:
    """Every statement the operations write (expand, rollback, contract) passes the lint
    of docs/lint-rules.md, judged against the live catalog, but for the findings a case
    expects (the rollback of an in-place widening narrows the type back with a rewrite;
    DROP NOT NULL is warned about). The lint only reads: cases of one setup share its
    database."""
    from migrator.commands.lint import lint

    db = read_only_dbs(SEED, case.setup) if case.setup else read_only_dbs(SEED)
    path = tmp_path / "plan.yaml"
    path.write_text(plan_for(case.expand))
    result = lint(path, database_url=db)
    assert not result.unlinted, result.unlinted
    found = {(f.rule, f.message.split()[0]) for f in result.findings}
    assert found == case.lint, [(f.rule, f.message) for f in result.findings]


def test_retype_under_a_foreign_key_from_a_partitioned_table(db: str, server: Server) -> None:
    q(
        db,
        "CREATE TABLE p (id int PRIMARY KEY);"
        "CREATE TABLE q (id int, pid int REFERENCES p (id)) PARTITION BY RANGE (id);"
        "CREATE TABLE q1 PARTITION OF q FOR VALUES FROM (0) TO (100);"
        "INSERT INTO p SELECT generate_series(1, 10); INSERT INTO q VALUES (1, 1), (2, 7);",
    )
    plan = parse_plan(plan_for("- alter_column: {table: p, column: id, type: bigint}"), "p.yaml")
    if server.version < 180000:
        with pytest.raises(MigratorError, match="q.q_pid_fkey on a partitioned table"):
            commands.expand(plan, opts(db))
        return
    commands.expand(plan, opts(db))
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    commands.contract(opts(db), plan.release)
    assert q(
        db,
        "SELECT conrelid::regclass::text, pg_get_constraintdef(oid), convalidated "
        "FROM pg_constraint WHERE contype = 'f' AND confrelid = 'p'::regclass ORDER BY 1",
    ) == [
        ("q", "FOREIGN KEY (pid) REFERENCES p(id)", True),
        ("q1", "FOREIGN KEY (pid) REFERENCES p(id)", True),
    ]
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        q(db, "INSERT INTO q VALUES (3, 99)")


def test_nothing_slow_runs_under_access_exclusive(db: str) -> None:
    """A second connection samples pg_locks while the contract of a retype runs: the
    validations and index builds are seen, and never while ACCESS EXCLUSIVE is held on the
    table (LINT rule 32)."""
    q(
        db,
        "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL CHECK (v >= 0));"
        "CREATE TABLE ref (id int PRIMARY KEY, big_id int NOT NULL REFERENCES big (id));"
        "INSERT INTO big SELECT g, g FROM generate_series(1, 60000) g;"
        "INSERT INTO ref SELECT g, g FROM generate_series(1, 60000) g;",
    )
    plan = parse_plan(plan_for("- alter_column: {table: big, column: id, type: bigint}"), "p.yaml")
    commands.expand(plan, opts(db))
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    samples: list[tuple[str, str]] = []
    stop = threading.Event()

    def watch() -> None:
        with psycopg.connect(db, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "SELECT l.mode, a.query FROM pg_locks l JOIN pg_stat_activity a "
                    "ON a.pid = l.pid WHERE l.granted AND a.pid <> pg_backend_pid() "
                    "AND l.relation IN ('big'::regclass, 'ref'::regclass) "
                    "AND a.state = 'active'"
                ).fetchall()
                samples.extend((str(m), str(s)) for m, s in rows)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        commands.contract(opts(db), plan.release)
    finally:
        stop.set()
        watcher.join(timeout=30)
    slow = ("VALIDATE CONSTRAINT", "CREATE INDEX", "CREATE UNIQUE INDEX")
    seen_slow = [s for m, s in samples if any(x in s for x in slow)]
    assert seen_slow, f"the sampler saw no validation at all ({len(samples)} samples)"
    under_ae = [s for m, s in samples if m == "AccessExclusiveLock" and any(x in s for x in slow)]
    assert not under_ae, under_ae
    assert q(
        db,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'big'::regclass AND attname = 'id'",
    ) == [("bigint",)]


def test_retype_under_an_exclusion_constraint_is_refused(db: str) -> None:
    q(
        db,
        "CREATE TABLE booking (id int PRIMARY KEY, during tsrange, EXCLUDE USING gist (during WITH &&))",
    )
    before = schema_dump(db)
    plan = parse_plan(
        plan_for("- alter_column: {table: booking, column: during, type: tstzrange}"), "p.yaml"
    )
    with pytest.raises(MigratorError, match="exclusion constraint booking_during_excl") as info:
        commands.expand(plan, opts(db))
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before


@pytest.mark.parametrize("domain", ["score_nn", "score_over_nn"])
def test_retype_to_a_not_null_domain_is_refused(db: str, domain: str) -> None:
    """A shadow column of a domain that refuses NULL cannot be added to a table with
    rows, nor take the old version's INSERTs (the domain is checked before the sync
    trigger fills it): refused at the plan's line, nothing changed. Also through a
    domain over such a domain."""
    q(db, SEED)
    q(db, "CREATE DOMAIN score_nn AS integer NOT NULL; CREATE DOMAIN score_over_nn AS score_nn")
    before = schema_dump(db)
    plan = parse_plan(
        plan_for(f"- alter_column: {{table: users, column: score, type: {domain}}}"), "p.yaml"
    )
    with pytest.raises(MigratorError, match=f"{domain} is a domain that does not allow NULL") as e:
        commands.expand(plan, opts(db))
    assert e.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before


def test_dry_run_changes_nothing_and_prints_every_step(db: str) -> None:
    q(db, SEED)
    before = schema_dump(db)
    plan = parse_plan(
        plan_for(
            "- rename_column: {table: users, from: email, to: contact_email}\n"
            "- alter_column: {table: users, column: score, type: integer}\n"
            "- alter_column: {table: users, column: name, type: text}"
        ),
        "p.yaml",
    )
    rec = Recorder()
    dry = commands.Options(database_url=db, observer=rec, dry_run=True)
    commands.expand(plan, dry)
    assert schema_dump(db) == before
    steps = {step_key for step_key, _, _ in rec.statements}
    assert {
        "0.rename_column.sync-trigger",
        "1.alter_column.add-shadow",
        "2.alter_column.retype",
    } <= steps


def test_expand_stopped_by_a_lock_resumes_and_rolls_back_clean(db: str) -> None:
    """A long transaction holds the table: the expand gives up after its retries (exit 5),
    having changed only what it recorded; rerun, it finishes; rolled back, nothing is left."""
    from migrator.errors import LockNotAcquired

    q(db, SEED)
    before = schema_dump(db)
    text = plan_for(
        "- alter_column: {table: orders, column: amount, type: 'numeric(9,2)'}\n"
        "- rename_column: {table: users, from: email, to: contact_email}\n"
        "- alter_column: {table: users, column: score, type: integer}"
    ).replace("lock_timeout: 2s, retries: 2", "lock_timeout: 100ms, retries: 1")
    plan = parse_plan(text, "p.yaml")
    with psycopg.connect(db) as blocker:
        blocker.execute("LOCK TABLE users IN ACCESS SHARE MODE")  # as a long report would
        with pytest.raises(LockNotAcquired) as info:
            commands.expand(plan, opts(db))
        assert info.value.exit_code == ExitCode.INTERRUPTED
        blocker.rollback()
    # the first operation (on orders) went through and is recorded; users is untouched
    assert q(
        db,
        "SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass "
        "AND attname LIKE '\\_migrator%' AND NOT attisdropped",
    ) == [(0,)]
    assert q(
        db,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'orders'::regclass AND attname = 'amount'",
    ) == [("numeric(9,2)",)]
    result = commands.expand(plan, opts(db))
    assert not any(k.startswith("0.") for k in result.ran), result.ran  # done before
    assert "1.rename_column.sync-trigger" in result.ran
    assert q(db, "SELECT count(*) FROM users WHERE _migrator_new_score IS NULL") == [(60,)]
    commands.rollback(plan, opts(db))
    after = schema_dump(db)
    assert after == before, diff(before, after)


def test_retype_under_a_rule_is_refused(db: str) -> None:
    q(db, SEED)
    q(
        db,
        "CREATE TABLE score_log (v smallint);"
        "CREATE RULE log_scores AS ON UPDATE TO users DO ALSO "
        "INSERT INTO score_log VALUES (NEW.score)",
    )
    plan = parse_plan(
        plan_for("- alter_column: {table: users, column: score, type: integer}"), "p.yaml"
    )
    with pytest.raises(MigratorError, match="rule log_scores on table users"):
        commands.expand(plan, opts(db))


# A role granted the renamed column alone (GRANT SELECT (email)), with the key it filters
# on and the columns it inserts: the role is the cluster's, made once per server.
COLUMN_ROLE = """
DO $$ BEGIN CREATE ROLE rc_app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
GRANT USAGE ON SCHEMA public TO rc_app;
GRANT SELECT (id, email), UPDATE (email), INSERT (name, email) ON users TO rc_app;
GRANT USAGE ON SEQUENCE users_id_seq TO rc_app;
"""
COLUMN_ACL = (
    "SELECT a.attname::text, x.privilege_type, pg_get_userbyid(x.grantee)::text "
    "FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) x "
    "WHERE a.attrelid = 'users'::regclass AND a.attname IN ('email', 'contact_email') "
    'ORDER BY a.attname::text COLLATE "C", x.privilege_type COLLATE "C"'
)


def test_rename_keeps_a_column_only_grant(db: str) -> None:
    """rc_app, granted the column and not the table, keeps reading and writing it by the
    old name through the expand, by the new name from the expand on (the new column gets
    the old one's column privileges), and by the new name after the contract (the old
    column's storage, and its grants, become the new name)."""
    q(db, SEED + COLUMN_ROLE)
    info = psycopg.conninfo.conninfo_to_dict(db)
    info["user"] = "rc_app"
    info.pop("password", None)
    app = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]

    def as_app(*sqls: str) -> None:
        for sql in sqls:
            q(app, sql)

    old = (
        "SELECT email FROM users WHERE id = 1",
        "UPDATE users SET email = 'o' || id || '@example.com' WHERE id = 2",
        "INSERT INTO users (name, email) VALUES ('old', 'old@example.com')",
    )

    def new(phase: str) -> tuple[str, ...]:
        return (
            "SELECT contact_email FROM users WHERE id = 1",
            "UPDATE users SET contact_email = 'n' || id || '@example.com' WHERE id = 3",
            f"INSERT INTO users (name, contact_email) VALUES ('new', '{phase}@example.com')",
        )

    granted = [
        ("INSERT", "rc_app"),
        ("SELECT", "rc_app"),
        ("UPDATE", "rc_app"),
    ]
    assert q(db, COLUMN_ACL) == [("email", p, r) for p, r in granted]
    plan = parse_plan(plan_for("- rename_column: {table: users, from: email, to: contact_email}"))
    commands.expand(plan, opts(db))
    as_app(*old, *new("expanded"))
    assert q(db, COLUMN_ACL) == [
        *(("contact_email", p, r) for p, r in granted),
        *(("email", p, r) for p, r in granted),
    ]
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    commands.contract(opts(db))
    as_app(*new("contracted"))
    assert q(db, COLUMN_ACL) == [("contact_email", p, r) for p, r in granted]
