"""Every operation of the catalogue, table-driven, on PostgreSQL 18 and 15.

For each operation: after expand, the old version's and the new version's reads and
writes all succeed; after rollback the catalog (pg_dump --schema-only) is the one from
before; expanded again, backfilled, completed and contracted, the final shape holds and
the data is intact. Then: every validation refusal (exit 2, nothing changed), INVALID
index clean-up, duplicates named by add_unique, the statement forms each step uses, and
a concurrent writer that create_index does not block.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.errors import ExitCode, MigratorError, ValidationFailed
from migrator.lint.sources import lint_plan
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import diff, schema_dump
from tests.support.ops_suite import (
    BASE,
    Case,
    Recorder,
    SetupDatabases,
    opts,
    plan_text,
    q,
    release_rows,
    run_release_case,
    setup_databases,
)
from tests.support.servers import Server

# The harness (Case, run_release_case) is tests/support/ops_suite.py, shared with the
# other tests/test_ops_*.py modules.


# -- the table of operations -----------------------------------------------------------------


CASES = [
    Case(
        "create_table",
        expand="""
        - create_table:
            table: payments
            columns:
              - {name: id, type: bigserial, nullable: false}
              - {name: user_id, type: bigint, nullable: false,
                 references: {table: users, column: id, on_delete: cascade}}
              - {name: amount, type: "numeric(12,2)", nullable: false, default: 0,
                 check: "amount >= 0"}
              - {name: ref, type: text, unique: true}
              - {name: created_at, type: timestamptz, nullable: false, default: "now()"}
            primary_key: [id]
            constraints:
              - {name: payments_ref_len, check: "length(ref) < 40"}
              - {name: payments_user_ref_key, unique: [user_id, ref]}
        """,
        old=[
            "SELECT id, name FROM users ORDER BY id LIMIT 5",
            "INSERT INTO users (name) VALUES ('old-writer')",
        ],
        new=[
            "INSERT INTO payments (user_id, amount, ref) VALUES (1, 9.5, 'p1')",
            "SELECT p.amount, u.name FROM payments p JOIN users u ON u.id = p.user_id",
        ],
        final=[
            (
                "SELECT conname, contype::text, convalidated FROM pg_constraint "
                "WHERE conrelid = 'payments'::regclass AND contype <> 'n' ORDER BY 1",
                [
                    ("payments_amount_check", "c", True),
                    ("payments_pkey", "p", True),
                    ("payments_ref_key", "u", True),
                    ("payments_ref_len", "c", True),
                    ("payments_user_id_fkey", "f", True),
                    ("payments_user_ref_key", "u", True),
                ],
            ),
            # The new version's row went with the rollback; the table is back, empty.
            ("SELECT count(*) FROM payments", [(0,)]),
        ],
    ),
    Case(
        "add_column with check, references, unique, final check and unique",
        expand="""
        - create_table:
            table: teams
            columns: [{name: id, type: bigint, nullable: false}]
            primary_key: [id]
        - add_column:
            table: users
            column: {name: code, type: text, unique: true, check: "code <> ''"}
        - add_column:
            table: users
            column: {name: team_id, type: bigint, references: {table: teams, column: id}}
        - add_column:
            table: users
            column: {name: handle, type: text}
            up: "'h-' || id"
            final: {nullable: false, unique: true, check: "length(handle) > 2"}
        """,
        old=[
            "INSERT INTO users (name) VALUES ('old')",
            "UPDATE users SET name = 'renamed' WHERE id = 2",
            "SELECT id, name, email FROM users WHERE id = 2",
        ],
        new=[
            "INSERT INTO teams VALUES (7)",
            "INSERT INTO users (name, code, team_id, handle) VALUES ('new', 'c1', 7, 'hx1')",
            "SELECT code, team_id, handle FROM users WHERE code = 'c1'",
        ],
        final=[
            (
                "SELECT conname, contype::text, convalidated FROM pg_constraint "
                "WHERE conrelid = 'users'::regclass AND contype <> 'n' ORDER BY 1",
                [
                    ("users_code_check", "c", True),
                    ("users_code_key", "u", True),
                    ("users_handle_check", "c", True),
                    ("users_handle_key", "u", True),
                    ("users_pkey", "p", True),
                    ("users_team_id_fkey", "f", True),
                ],
            ),
            (
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
                "AND attname = 'handle'",
                [(True,)],
            ),
            ("SELECT count(*) FROM users WHERE handle IS NULL", [(0,)]),
        ],
    ),
    Case(
        "rename_table",
        expand="""
        - rename_table: {from: users, to: accounts}
        """,
        old=[
            "SELECT id, name FROM users WHERE id = 3",
            "INSERT INTO users (name, email) VALUES ('via-view', 'v@x') RETURNING id",
            "UPDATE users SET name = 'changed' WHERE id = 3",
            "DELETE FROM users WHERE id = 4",
            "INSERT INTO users (id, name) VALUES (5, 'upsert') "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            "SELECT count(*) FROM users JOIN orders ON orders.user_id = users.id",
        ],
        new=[
            "SELECT name FROM accounts WHERE name = 'via-view'",
            "INSERT INTO accounts (name) VALUES ('new-writer')",
            "SELECT name FROM users WHERE name = 'new-writer'",
        ],
        final=[
            ("SELECT to_regclass('public.users') IS NULL", [(True,)]),
            ("SELECT relkind::text FROM pg_class WHERE relname = 'accounts'", [("r",)]),
            ("SELECT name FROM accounts WHERE id = 3", [("changed",)]),
        ],
        users_after="accounts",
    ),
    Case(
        "create_index",
        expand="""
        - create_index: {table: users, name: users_email_idx, columns: [email]}
        - create_index:
            table: users
            name: users_lower_name_idx
            columns: ["lower(name)"]
            where: "email IS NOT NULL"
            include: [legacy]
        - create_index: {table: orders, name: orders_user_amount_idx, columns: [user_id, amount],
                         unique: true}
        """,
        old=[
            "INSERT INTO users (name, email) VALUES ('old', 'old@x')",
            "SELECT id FROM users WHERE email = 'u1@example.com'",
        ],
        new=[
            "SELECT id FROM users WHERE lower(name) = 'user7' AND email IS NOT NULL",
            "INSERT INTO orders (user_id, amount) VALUES (1, 12345)",
        ],
        final=[
            (
                "SELECT c.relname, i.indisvalid, i.indisunique FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisprimary "
                "AND c.relnamespace = 'public'::regnamespace ORDER BY 1",
                [
                    ("orders_user_amount_idx", True, True),
                    ("users_email_idx", True, False),
                    ("users_lower_name_idx", True, False),
                ],
            )
        ],
    ),
    Case(
        "add_foreign_key",
        expand="""
        - add_foreign_key:
            table: orders
            name: orders_user_fk
            columns: [user_id]
            references: {table: users, columns: [id]}
            on_delete: cascade
        """,
        old=[
            "INSERT INTO orders (user_id, amount) VALUES (5, 1)",
            "SELECT sum(amount) FROM orders WHERE user_id = 5",
        ],
        new=["DELETE FROM users WHERE id = 50", "SELECT count(*) FROM orders WHERE user_id = 50"],
        final=[
            (
                "SELECT contype::text, convalidated, confdeltype::text FROM pg_constraint "
                "WHERE conname = 'orders_user_fk'",
                [("f", True, "c")],
            )
        ],
    ),
    Case(
        "add_check",
        expand="""
        - add_check: {table: orders, name: orders_amount_positive, expression: "amount >= 0"}
        """,
        old=["INSERT INTO orders (user_id, amount) VALUES (1, 3)"],
        new=["UPDATE orders SET amount = amount + 1 WHERE id = 1"],
        final=[
            (
                "SELECT convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conname = 'orders_amount_positive'",
                [(True, "CHECK ((amount >= (0)::numeric))")],
            )
        ],
    ),
    Case(
        "add_unique",
        expand="""
        - add_unique: {table: users, name: users_email_key, columns: [email]}
        """,
        old=[
            "INSERT INTO users (name, email) VALUES ('old', gen_random_uuid()::text)",
            "SELECT count(*) FROM users",
        ],
        new=["INSERT INTO users (name, email) VALUES ('n', 'n@x') ON CONFLICT (email) DO NOTHING"],
        final=[
            (
                "SELECT k.contype::text, i.indisvalid FROM pg_constraint k "
                "JOIN pg_index i ON i.indexrelid = k.conindid WHERE k.conname = 'users_email_key'",
                [("u", True)],
            )
        ],
    ),
    Case(
        "add_enum_value",
        setup=BASE + "CREATE TYPE mood AS ENUM ('sad', 'happy');"
        "ALTER TABLE users ADD COLUMN mood mood;",
        expand="""
        - add_enum_value: {type: mood, value: ok, after: sad}
        - add_enum_value: {type: mood, value: ecstatic}
        """,
        old=["UPDATE users SET mood = 'happy' WHERE id = 1", "SELECT mood FROM users WHERE id = 1"],
        new=[
            "UPDATE users SET mood = 'ok' WHERE id = 2",
            "SELECT count(*) FROM users WHERE mood > 'sad'",
        ],
        final=[
            (
                "SELECT array_agg(enumlabel ORDER BY enumsortorder)::text FROM pg_enum "
                "WHERE enumtypid = 'mood'::regtype",
                [("{sad,ok,happy,ecstatic}",)],
            )
        ],
        rollback_leaves="enum values",
    ),
    Case(
        "create_enum and a column of it",
        expand="""
        - create_enum: {name: plan_kind, values: [free, pro, "it's"]}
        - add_column:
            table: users
            column: {name: kind, type: plan_kind, default: "'free'"}
        """,
        old=["INSERT INTO users (name) VALUES ('old')"],
        new=["UPDATE users SET kind = 'it''s' WHERE id = 1", "SELECT kind FROM users WHERE id = 1"],
        final=[
            (
                "SELECT array_agg(enumlabel ORDER BY enumsortorder)::text FROM pg_enum "
                "WHERE enumtypid = 'plan_kind'::regtype",
                [("{free,pro,it's}",)],
            ),
            ("SELECT count(*) FROM users WHERE kind IS NULL", [(0,)]),
        ],
    ),
    Case(
        "set_not_null",
        contract="""
        - set_not_null: {table: users, column: name}
        """,
        old=["INSERT INTO users (name) VALUES ('old')"],
        final=[
            (
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
                "AND attname = 'name'",
                [(True,)],
            ),
            ("SELECT count(*) FROM pg_constraint WHERE conname LIKE '\\_migrator%'", [(0,)]),
        ],
    ),
    Case(
        "drop_column",
        contract="""
        - drop_column: {table: users, column: legacy}
        """,
        old=["SELECT legacy FROM users WHERE id = 1"],
        final=[
            (
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass "
                "AND attname = 'legacy' AND NOT attisdropped",
                [(0,)],
            )
        ],
    ),
    Case(
        "drop_table",
        setup=BASE + "CREATE TABLE audit_old (id int); INSERT INTO audit_old VALUES (1), (2);",
        contract="""
        - drop_table: {table: audit_old}
        """,
        old=["SELECT count(*) FROM audit_old"],
        final=[("SELECT to_regclass('public.audit_old') IS NULL", [(True,)])],
    ),
    Case(
        "drop_index",
        setup=BASE + "CREATE INDEX users_legacy_idx ON users (legacy);",
        contract="""
        - drop_index: {name: users_legacy_idx}
        """,
        old=["SELECT id FROM users WHERE legacy = 'l1'"],
        final=[("SELECT to_regclass('public.users_legacy_idx') IS NULL", [(True,)])],
    ),
    Case(
        "drop_constraint",
        setup=BASE + "ALTER TABLE users ADD CONSTRAINT users_name_len CHECK (length(name) < 50);",
        contract="""
        - drop_constraint: {table: users, name: users_name_len}
        """,
        final=[("SELECT count(*) FROM pg_constraint WHERE conname = 'users_name_len'", [(0,)])],
    ),
    Case(
        "operations on what the plan itself creates or renames",
        expand="""
        - create_table:
            table: teams
            columns: [{name: id, type: bigint, nullable: false}, {name: title, type: text}]
            primary_key: [id]
        - create_index: {table: teams, name: teams_title_idx, columns: [title]}
        - rename_table: {from: orders, to: purchases}
        - add_column:
            table: purchases
            column: {name: cents, type: bigint}
            up: "(amount * 100)::bigint"
            final: {nullable: false}
        - add_foreign_key:
            table: purchases
            name: purchases_user_fk
            columns: [user_id]
            references: {table: users, columns: [id]}
        - add_column:
            table: users
            column: {name: team_id, type: bigint, references: {table: teams, column: id}}
        """,
        old=[
            "INSERT INTO orders (user_id, amount) VALUES (1, 2.5)",
            "UPDATE orders SET amount = 7 WHERE id = 1",
            "SELECT sum(amount) FROM orders",
        ],
        new=[
            "INSERT INTO teams VALUES (1, 'core')",
            "INSERT INTO purchases (user_id, amount, cents) VALUES (2, 1, 100)",
            "SELECT cents FROM purchases WHERE id = 1 AND cents = 700",
        ],
        final=[
            ("SELECT count(*) FROM purchases WHERE cents IS DISTINCT FROM amount * 100", [(0,)]),
            ("SELECT to_regclass('public.orders') IS NULL", [(True,)]),
            (
                "SELECT conname, convalidated FROM pg_constraint WHERE contype = 'f' "
                "AND connamespace = 'public'::regnamespace ORDER BY 1",
                [("purchases_user_fk", True), ("users_team_id_fkey", True)],
            ),
            (
                "SELECT indisvalid FROM pg_index WHERE indexrelid = 'teams_title_idx'::regclass",
                [(True,)],
            ),
        ],
        orders_after="purchases",
    ),
    Case(
        "sql",
        expand="""
        - sql:
            expand: |
              CREATE TABLE notes (id bigint PRIMARY KEY, body text);
              INSERT INTO notes VALUES (1, 'semi;colon -- not a comment');
              CREATE INDEX CONCURRENTLY notes_body_idx ON notes (body);
              COMMENT ON TABLE notes IS 'made by raw SQL';
            contract: "ALTER TABLE notes ADD CONSTRAINT notes_body_nn CHECK (body IS NOT NULL)"
            rollback: "DROP INDEX CONCURRENTLY IF EXISTS notes_body_idx; DROP TABLE IF EXISTS notes"
        """,
        old=["SELECT count(*) FROM users"],
        new=["SELECT body FROM notes WHERE id = 1", "INSERT INTO notes VALUES (2, 'x')"],
        final=[
            ("SELECT body FROM notes WHERE id = 1", [("semi;colon -- not a comment",)]),
            ("SELECT count(*) FROM pg_constraint WHERE conname = 'notes_body_nn'", [(1,)]),
            (
                "SELECT indisvalid FROM pg_index WHERE indexrelid = 'notes_body_idx'::regclass",
                [(True,)],
            ),
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_operation_release(case: Case, db: str) -> None:
    run_release_case(case, db)


def test_rename_table_keeps_checksums(db: str) -> None:
    """The rows seen through the old name, the new name and after the contract agree."""
    q(db, BASE)
    digest = "SELECT md5(string_agg(id || name || email, ',' ORDER BY id)) FROM {t}"
    want = q(db, digest.format(t="users"))
    plan = parse_plan(plan_text("- rename_table: {from: users, to: accounts}"))
    commands.expand(plan, opts(db))
    assert q(db, digest.format(t="users")) == want == q(db, digest.format(t="accounts"))
    commands.complete(plan, opts(db))
    commands.contract(opts(db))
    assert q(db, digest.format(t="accounts")) == want


# -- refusals: exit 2, one line, nothing changed ---------------------------------------------

REFUSALS = [
    (
        "missing table",
        "- add_check: {table: nope, name: c, expression: 'true'}",
        "[]",
        "table public.nope does not exist",
    ),
    (
        "missing column",
        "- create_index: {table: users, name: i1, columns: [nope]}",
        "[]",
        "has no column nope",
    ),
    (
        "missing column of a foreign key",
        "- add_foreign_key: {table: orders, name: f, columns: [user_id], "
        "references: {table: users, columns: [nope]}}",
        "[]",
        "has no column nope",
    ),
    (
        "referenced columns not unique",
        "- add_foreign_key: {table: orders, name: f, columns: [user_id], "
        "references: {table: users, columns: [name]}}",
        "[]",
        "is not a primary key or unique",
    ),
    (
        "table name clash",
        "- create_table: {table: users, columns: [{name: a, type: int}]}",
        "[]",
        "named public.users already exists",
    ),
    (
        "index name clash",
        "- create_index: {table: orders, name: users_pkey, columns: [id]}",
        "[]",
        "an index named users_pkey already exists on users",
    ),
    (
        "constraint name clash",
        "- add_check: {table: users, name: users_pkey, expression: 'true'}",
        "[]",
        "users already has a constraint named users_pkey",
    ),
    (
        "column clash",
        "- add_column: {table: users, column: {name: email, type: text}}",
        "[]",
        "column email already exists",
    ),
    (
        "unknown type",
        "- add_column: {table: users, column: {name: x, type: nosuchtype}}",
        "[]",
        "unknown type 'nosuchtype'",
    ),
    (
        "an index of that name and shape was there before the release",
        "- create_index: {table: users, name: users_name_idx, columns: [name]}",
        "[]",
        "an index named users_name_idx already exists on users",
    ),
    (
        "a unique index of that name was there before the release",
        "- add_unique: {table: users, name: users_email_uidx, columns: [email]}",
        "[]",
        "an index named users_email_uidx already exists on users",
    ),
    (
        "table named like a type",
        "- create_table: {table: mood, columns: [{name: a, type: int}]}",
        "[]",
        "a type named public.mood already exists",
    ),
    (
        "serial column on an existing table",
        "- add_column: {table: users, column: {name: n, type: bigserial}}",
        "[]",
        "a bigserial column on an existing table rewrites it under ACCESS EXCLUSIVE",
    ),
    (
        "unknown type in create_table",
        "- create_table: {table: t2, columns: [{name: a, type: nosuchtype}]}",
        "[]",
        "unknown type 'nosuchtype'",
    ),
    (
        "bad check expression",
        "- add_check: {table: users, name: c1, expression: 'nope > 1'}",
        "[]",
        'column "nope" does not exist',
    ),
    (
        "enum anchor missing",
        "- add_enum_value: {type: mood, value: x, before: nope}",
        "[]",
        "mood has no value 'nope'",
    ),
    ("not an enum", "- add_enum_value: {type: users, value: x}", "[]", "is not an enum"),
    (
        "enum clash",
        "- create_enum: {name: mood, values: [a]}",
        "[]",
        "a type named public.mood already exists",
    ),
    (
        "rename onto an existing name",
        "- rename_table: {from: users, to: orders}",
        "[]",
        "named public.orders already exists",
    ),
    (
        "raw SQL with COMMIT",
        "- sql: {expand: 'CREATE TABLE t (a int); COMMIT', rollback: ''}",
        "[]",
        "COMMIT is not allowed",
    ),
    (
        "raw SQL without rollback",
        "- sql: {expand: 'CREATE TABLE t (a int)'}",
        "[]",
        "expand is given without rollback",
    ),
    (
        "raw SQL that does not parse",
        "- sql: {expand: 'CREATE TABLEX t', rollback: ''}",
        "[]",
        "not valid SQL",
    ),
    (
        "duplicates for add_unique",
        "- add_unique: {table: users, name: u1, columns: [legacy]}",
        "[]",
        "2 values of (legacy) in users occur more than once: ('dup') in 3 rows; "
        "('twice') in 2 rows",
    ),
    (
        "duplicates for a unique index",
        "- create_index: {table: users, name: u2, columns: [legacy], unique: true}",
        "[]",
        "('dup') in 3 rows",
    ),
    (
        "a later operation fails: the earlier ones are not run either",
        "- create_enum: {name: kind2, values: [a]}\n- add_column: {table: nope, column: "
        "{name: k, type: kind2}}",
        "[]",
        "table public.nope does not exist",
    ),
]

REFUSAL_SETUP = (
    BASE
    + """
CREATE TYPE mood AS ENUM ('sad', 'happy');
UPDATE users SET legacy = 'dup' WHERE id IN (1, 2, 3);
UPDATE users SET legacy = 'twice' WHERE id IN (4, 5);
CREATE INDEX users_name_idx ON users (name);
CREATE UNIQUE INDEX users_email_uidx ON users (email);
"""
)


@pytest.fixture(scope="module")
def refusal_db(server: Server) -> Iterator[tuple[str, str]]:
    """One database with REFUSAL_SETUP for every refusal on a version, and its dump: a
    refusal changes nothing (each test asserts it), so the next finds what it found."""
    url = server.create_database("refusals")
    try:
        q(url, REFUSAL_SETUP)
        yield url, schema_dump(url)
    finally:
        server.drop_database(url)


@pytest.mark.parametrize(
    ("expand", "contract", "message"),
    [r[1:] for r in REFUSALS],
    ids=[r[0] for r in REFUSALS],
)
def test_expand_refusals(
    refusal_db: tuple[str, str], expand: str, contract: str, message: str
) -> None:
    db, before = refusal_db
    plan = parse_plan(plan_text(expand, contract))
    with pytest.raises(ValidationFailed) as err:
        commands.expand(plan, opts(db))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before
    assert release_rows(db) == []


DEPENDANTS = (
    BASE
    + """
CREATE VIEW user_names AS SELECT id, name FROM users;
CREATE INDEX users_name_idx ON users (name);
ALTER TABLE users ADD CONSTRAINT users_name_key UNIQUE (name);
CREATE TABLE profiles (user_name text REFERENCES users (name) DEFERRABLE);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TRIGGER users_name_touch BEFORE UPDATE OF name ON users FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW order_totals AS SELECT user_id, sum(amount) FROM orders GROUP BY user_id;
ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
CREATE UNIQUE INDEX users_email_uidx ON users (email);
CREATE TABLE subscriptions (email text REFERENCES users (email));
CREATE TABLE user_history (at timestamptz, snapshot users);
"""
)

DROP_REFUSALS = [
    (
        "drop_column",
        "- drop_column: {table: users, column: name}",
        "drop_column users.name: constraint profiles_user_name_fkey on table profiles, constraint "
        "users_name_key on table users, index users_name_idx, trigger users_name_touch on table users, view user_names depend on "
        "column users.name; drop or change them first (migrator never drops with CASCADE)",
    ),
    (
        "drop_table",
        "- drop_table: {table: users}",
        "drop_table users: column snapshot of table user_history (of its row type), "
        "constraint orders_user_fk on table orders, constraint "
        "profiles_user_name_fkey on table profiles, constraint subscriptions_email_fkey on table "
        "subscriptions, view user_names depend on table users",
    ),
    (
        "drop_table of a table a view reads",
        "- drop_table: {table: orders}",
        "view order_totals depends on table orders",
    ),
    (
        "drop_index behind a constraint",
        "- drop_index: {name: users_pkey}",
        "the index backs constraint users_pkey on users; use drop_constraint",
    ),
    (
        "drop_index of a constraint's index",
        "- drop_index: {name: users_name_key}",
        "the index backs constraint users_name_key on users; use drop_constraint",
    ),
    (
        "drop_index a foreign key relies on",
        "- drop_index: {name: users_email_uidx}",
        "constraint subscriptions_email_fkey on table subscriptions depends on index "
        "users_email_uidx",
    ),
    (
        "drop_constraint foreign keys rely on",
        "- drop_constraint: {table: users, name: users_pkey}",
        "constraint orders_user_fk on table orders depends on constraint users_pkey",
    ),
    (
        "drop_column missing",
        "- drop_column: {table: users, column: nope}",
        "public.users has no column nope",
    ),
    (
        "drop_constraint missing",
        "- drop_constraint: {table: users, name: nope}",
        "users has no constraint named nope",
    ),
    ("drop_index missing", "- drop_index: {name: nope}", "index public.nope does not exist"),
    (
        "set_not_null over NULLs",
        "- set_not_null: {table: users, column: legacy}",
        "3 rows of users hold NULL in legacy",
    ),
]


@pytest.mark.parametrize(
    ("contract", "message"), [r[1:] for r in DROP_REFUSALS], ids=[r[0] for r in DROP_REFUSALS]
)
def test_contract_refusals_at_complete(db: str, contract: str, message: str) -> None:
    """A drop with dependants is refused when complete would schedule it: nothing scheduled."""
    q(db, DEPENDANTS)
    q(db, "UPDATE users SET legacy = NULL WHERE id IN (1, 2, 3)")
    plan = parse_plan(plan_text("[]", contract))
    commands.expand(plan, opts(db))
    before = schema_dump(db)
    with pytest.raises(ValidationFailed) as err:
        commands.complete(plan, opts(db))
    assert message in str(err.value), str(err.value)
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before
    assert q(db, "SELECT count(*) FROM migrator.contracts") == [(0,)]
    assert release_rows(db) == [("r1", "expanded")]


def test_contract_refuses_a_dependant_that_appeared_after_complete(db: str) -> None:
    """Checked again when the contract runs: a view made since complete stops it whole."""
    q(db, BASE)
    plan = parse_plan(
        plan_text(
            "- add_check: {table: orders, name: orders_amount_ok, expression: 'amount >= 0'}",
            "- drop_column: {table: users, column: legacy}",
        )
    )
    commands.expand(plan, opts(db))
    commands.complete(plan, opts(db))
    q(db, "CREATE VIEW legacy_report AS SELECT legacy FROM users")
    before = schema_dump(db)
    with pytest.raises(ValidationFailed, match="view legacy_report depends on column users.legacy"):
        commands.contract(opts(db))
    assert schema_dump(db) == before  # not even the add_check's VALIDATE ran
    assert {s for (s,) in q(db, "SELECT status FROM migrator.contracts")} == {"scheduled"}
    q(db, "DROP VIEW legacy_report")
    commands.contract(opts(db))
    assert q(
        db, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'legacy'"
    ) == [(0,)]


def test_drop_table_says_how_many_rows(db: str) -> None:
    q(db, BASE)
    rec = Recorder()
    plan = parse_plan(plan_text("[]", "- drop_table: {table: orders}"))
    commands.expand(plan, opts(db))
    result = commands.complete(plan, opts(db, rec))
    assert any("drop table orders, which holds 100 rows" in m for m in rec.infos), rec.infos
    assert result.ran == ["c0.drop_table.drop-table"]


# -- indexes: INVALID leftovers, duplicates, concurrency -------------------------------------


def _leave_invalid_index(url: str, name: str) -> None:
    """A concurrent unique build that fails on duplicates leaves an INVALID index."""
    with pytest.raises(psycopg.errors.UniqueViolation):
        q(url, f"CREATE UNIQUE INDEX CONCURRENTLY {name} ON users (legacy)")
    assert q(url, f"SELECT indisvalid FROM pg_index WHERE indexrelid = '{name}'::regclass") == [
        (False,)
    ]


def test_invalid_index_is_dropped_and_rebuilt(db: str) -> None:
    q(db, BASE + "UPDATE users SET legacy = 'dup' WHERE id IN (1, 2);")
    _leave_invalid_index(db, "users_legacy_idx")
    q(db, "UPDATE users SET legacy = 'l2' WHERE id = 2")
    rec = Recorder()
    plan = parse_plan(
        plan_text(
            "- create_index: {table: users, name: users_legacy_idx, columns: [legacy], unique: true}"
        )
    )
    commands.expand(plan, opts(db, rec))
    sqls = [sql for _, sql, _ in rec.statements]
    assert sqls[0] == "DROP INDEX CONCURRENTLY IF EXISTS public.users_legacy_idx"
    assert sqls[1].startswith("CREATE UNIQUE INDEX CONCURRENTLY users_legacy_idx")
    assert rec.warnings == [
        "create_index users_legacy_idx: an INVALID index of that name, left by a failed "
        "build, is dropped and built again"
    ]
    assert q(
        db,
        "SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = 'users_legacy_idx'::regclass",
    ) == [(True, True)]
    # A rerun of the same release changes nothing.
    again = commands.expand(plan, opts(db))
    assert again.ran == []


def test_failed_index_build_is_rebuilt_on_rerun(db: str) -> None:
    """The build fails half way (a duplicate arrives); the rerun cleans up and finishes."""
    q(db, BASE + "UPDATE users SET legacy = 'dup' WHERE id IN (1, 2);")
    plan = parse_plan(
        plan_text("- add_unique: {table: users, name: users_legacy_key, columns: [legacy]}")
    )
    # Validation counts duplicates first...
    with pytest.raises(ValidationFailed, match=r"\('dup'\) in 2 rows"):
        commands.expand(plan, opts(db))
    q(db, "UPDATE users SET legacy = 'l2' WHERE id = 2")
    # ...and a build that fails anyway (an earlier attempt left an INVALID index of that
    # name) is cleaned up by the rerun.
    q(db, "UPDATE users SET legacy = 'dup' WHERE id IN (1, 2)")
    _leave_invalid_index(db, "users_legacy_key")
    q(db, "UPDATE users SET legacy = 'l2' WHERE id = 2")
    commands.expand(plan, opts(db))
    assert q(
        db,
        "SELECT k.contype::text, i.indisvalid FROM pg_constraint k JOIN pg_index i "
        "ON i.indexrelid = k.conindid WHERE k.conname = 'users_legacy_key'",
    ) == [("u", True)]
    assert q(db, "SELECT count(*) FROM pg_class WHERE relname LIKE 'users_legacy_key%'") == [(1,)]


@pytest.mark.parametrize(
    ("expand", "contract", "statement", "final"),
    [
        (
            "- create_index: {table: users, name: users_name_idx, columns: [name]}",
            "[]",
            "CREATE INDEX CONCURRENTLY%",
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_name_idx'::regclass",
        ),
        (
            "[]",
            "- drop_index: {name: users_legacy_idx}",
            "DROP INDEX CONCURRENTLY%",
            "SELECT to_regclass('public.users_legacy_idx') IS NULL",
        ),
    ],
    ids=["create_index", "drop_index"],
)
def test_index_builds_and_drops_do_not_block_writers(
    db: str, expand: str, contract: str, statement: str, final: str
) -> None:
    """While the statement waits for an open transaction, another session still writes.

    A plain CREATE INDEX would queue for SHARE (a plain DROP INDEX for ACCESS EXCLUSIVE)
    behind the open writer, and every later INSERT would queue behind it; the
    CONCURRENTLY forms take SHARE UPDATE EXCLUSIVE only.
    """
    q(db, BASE + "CREATE INDEX users_legacy_idx ON users (legacy);")
    plan = parse_plan(plan_text(expand, contract, lock_timeout="20s"))
    if contract != "[]":
        commands.expand(plan, opts(db))
        commands.complete(plan, opts(db))
    holder = psycopg.connect(db)
    holder.execute("INSERT INTO users (name) VALUES ('held open')")  # ROW EXCLUSIVE, open
    errors: list[BaseException] = []

    def run() -> None:
        try:
            if contract == "[]":
                commands.expand(plan, opts(db))
            else:
                commands.contract(opts(db))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        modes: list[tuple[object, ...]] = []
        for _ in range(200):
            modes = q(
                db,
                "SELECT l.mode, a.wait_event_type FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.relation = 'users'::regclass "
                f"AND a.query LIKE '{statement}'",
            )
            if modes and modes[0][1] == "Lock":
                break
            time.sleep(0.05)
        assert modes == [("ShareUpdateExclusiveLock", "Lock")], modes
        # The statement waits for the open transaction; writers do not wait for it.
        with psycopg.connect(db, autocommit=True) as writer:
            writer.execute("SET lock_timeout = '2s'")
            writer.execute("INSERT INTO users (name) VALUES ('not blocked')")
            writer.execute("UPDATE users SET name = 'also not blocked' WHERE id = 1")
            # 50 seeded + this one; the held-open row is not committed yet.
            assert writer.execute("SELECT count(*) FROM users").fetchone() == (51,)
    finally:
        holder.commit()
        holder.close()
        worker.join(60)
    assert not errors, errors
    assert q(db, final) == [(True,)]


def test_raw_sql_steps_split_by_the_parser(db: str) -> None:
    """CONCURRENTLY statements get their own autocommit step; the rest share transactions."""
    q(db, BASE)
    rec = Recorder()
    plan = parse_plan(
        plan_text(
            """
            - sql:
                expand: "ALTER TABLE users ADD COLUMN a int; ALTER TABLE users ADD COLUMN b int;
                  CREATE INDEX CONCURRENTLY users_a_idx ON users (a); SELECT 'x;y'"
                rollback: "DROP INDEX CONCURRENTLY IF EXISTS users_a_idx;
                  ALTER TABLE users DROP COLUMN IF EXISTS a, DROP COLUMN IF EXISTS b"
            """
        )
    )
    result = commands.expand(plan, opts(db, rec))
    assert result.ran == ["0.sql.expand-1", "0.sql.expand-2", "0.sql.expand-3"]
    modes = [(step, autocommit) for step, _, autocommit in rec.statements]
    assert modes == [
        ("0.sql.expand-1", False),
        ("0.sql.expand-1", False),
        ("0.sql.expand-2", True),
        ("0.sql.expand-3", False),
    ]
    assert rec.statements[3][1] == "SELECT 'x;y'"


def test_migrator_error_lines_name_the_operation(db: str) -> None:
    """The CLI prints str(error): where the operation is in the plan file, the operation
    and the object at fault, on one line."""
    q(db, BASE)
    text = plan_text(
        "- create_index: {table: users, name: users_name_idx, columns: [name]}\n"
        "- add_unique: {table: users, name: u, columns: [nope]}",
        "- drop_column: {table: nowhere, column: x}",
    )
    plan = parse_plan(text, "plans/r1.yaml")
    with pytest.raises(MigratorError) as err:
        commands.expand(plan, opts(db))
    assert str(err.value) == "plans/r1.yaml:5:5: add_unique u: public.users has no column nope"
    assert text.splitlines()[4].startswith("  - add_unique")
    fixed = parse_plan(text.replace("columns: [nope]", "columns: [name]"), "plans/r1.yaml")
    commands.expand(fixed, opts(db))
    with pytest.raises(MigratorError) as err:
        commands.complete(fixed, opts(db))
    assert str(err.value).startswith("plans/r1.yaml:9:7: drop_column"), str(err.value)


def test_rollback_after_a_failed_expand_undoes_what_ran_and_skips_the_rest(db: str) -> None:
    """Operations whose expand never ran roll back cleanly too (IF EXISTS, catalog checks)."""
    q(db, BASE)
    before = schema_dump(db)
    plan = parse_plan(
        plan_text(
            """
            - create_index: {table: users, name: users_name_idx, columns: [name]}
            - sql: {expand: "SELECT 1/0", rollback: ""}
            - rename_table: {from: orders, to: purchases}
            - add_column: {table: purchases, column: {name: cents, type: bigint}, up: "amount"}
            - add_check: {table: purchases, name: purchases_cents_ok, expression: "cents >= 0"}
            - add_unique: {table: users, name: users_email_key, columns: [email]}
            """
        )
    )
    with pytest.raises(MigratorError, match="division by zero"):
        commands.expand(plan, opts(db))
    assert q(db, "SELECT to_regclass('public.users_name_idx') IS NOT NULL") == [(True,)]
    # The audit log says who ran what and that it failed, and where.
    failed = q(
        db,
        "SELECT details->>'step', details->>'error' FROM migrator.events "
        "WHERE action = 'expand.failed'",
    )
    assert len(failed) == 1 and failed[0][0] == "1.sql.expand-1", failed
    assert "division by zero" in failed[0][1]
    commands.rollback(plan, opts(db))
    after = schema_dump(db)
    assert after == before, diff(before, after)


def test_index_build_cut_short_by_lock_timeout_is_rebuilt_on_retry(db: str) -> None:
    """CONCURRENTLY waits for older transactions under lock_timeout; when that cancels the
    build, the executor's retry drops the INVALID leftover and builds again, instead of
    IF NOT EXISTS skipping over it and reporting success."""
    q(db, BASE)
    plan = parse_plan(
        plan_text(
            "- create_index: {table: users, name: users_name_idx, columns: [name]}",
            lock_timeout="300ms",
        ).replace("retries: 2", "retries: 20")
    )
    holder = psycopg.connect(db)
    holder.execute("INSERT INTO users (name) VALUES ('held open')")
    timer = threading.Timer(1.5, holder.commit)
    timer.start()

    class Retries(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.retries: list[str] = []

        def retry(self, step: str, attempt: int, wait: float, reason: str) -> None:
            self.retries.append(reason)

    rec = Retries()
    try:
        commands.expand(plan, opts(db, rec))
    finally:
        timer.join()
        holder.close()
    assert rec.retries and all("lock timeout" in r for r in rec.retries), rec.retries
    assert q(
        db, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_name_idx'::regclass"
    ) == [(True,)]


def test_final_unique_duplicates_refused_at_complete(db: str) -> None:
    """Values that would break add_column's final UNIQUE are named before the contract is
    scheduled, not discovered half-way through it."""
    q(db, BASE)
    plan = parse_plan(
        plan_text(
            """
            - add_column:
                table: users
                column: {name: slug, type: text}
                up: "lower(name)"
                final: {unique: true, nullable: false}
            """
        )
    )
    commands.expand(plan, opts(db))
    commands.backfill(plan, opts(db))
    q(db, "UPDATE users SET slug = 'same' WHERE id IN (3, 4)")
    with pytest.raises(ValidationFailed) as err:
        commands.complete(plan, opts(db))
    assert str(err.value) == (
        "<plan>:4:5: add_column users.slug: final.unique: 1 value of (slug) in users occurs more than "
        "once: ('same') in 2 rows; remove the duplicates first"
    )
    assert q(db, "SELECT count(*) FROM migrator.contracts") == [(0,)]
    q(db, "UPDATE users SET slug = 'other' WHERE id = 4")
    commands.complete(plan, opts(db))
    commands.contract(opts(db))
    assert q(db, "SELECT contype::text FROM pg_constraint WHERE conname = 'users_slug_key'") == [
        ("u",)
    ]


def test_validate_in_the_contract_does_not_block_writers(db: str) -> None:
    """VALIDATE CONSTRAINT scans under SHARE UPDATE EXCLUSIVE: while it runs (slowed by a
    deliberately slow check), another session inserts and updates within a short
    lock_timeout, and pg_locks shows the validating session holding nothing stronger."""
    q(db, BASE)
    slow = "amount >= 0 AND pg_sleep(0.02) IS NOT NULL"
    plan = parse_plan(
        plan_text(f"- add_check: {{table: orders, name: orders_slow_ok, expression: '{slow}'}}")
    )
    commands.expand(plan, opts(db))
    commands.complete(plan, opts(db))
    errors: list[BaseException] = []

    def run() -> None:
        try:
            commands.contract(opts(db))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    try:
        modes: list[tuple[object, ...]] = []
        for _ in range(200):
            modes = q(
                db,
                "SELECT l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.relation = 'orders'::regclass AND l.granted "
                "AND a.query LIKE '%VALIDATE CONSTRAINT%' ORDER BY 1",
            )
            if modes:
                break
            time.sleep(0.02)
        assert modes == [("ShareUpdateExclusiveLock",)], modes
        with psycopg.connect(db, autocommit=True) as writer:
            writer.execute("SET lock_timeout = '500ms'")
            writer.execute("INSERT INTO orders (user_id, amount) VALUES (1, 1)")
            writer.execute("UPDATE orders SET amount = amount + 1 WHERE id = 2")
        assert worker.is_alive()  # the scan was still going while the writer wrote
    finally:
        worker.join(60)
    assert not errors, errors
    assert q(db, "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_slow_ok'") == [
        (True,)
    ]


def test_rename_table_contract_refuses_views_on_the_old_name(db: str) -> None:
    """A view built on the compatibility view would stop DROP VIEW half-way through the
    contract; complete names it and schedules nothing."""
    q(db, BASE)
    plan = parse_plan(plan_text("- rename_table: {from: users, to: accounts}"))
    commands.expand(plan, opts(db))
    q(db, "CREATE VIEW user_emails AS SELECT email FROM users")
    with pytest.raises(ValidationFailed) as err:
        commands.complete(plan, opts(db))
    assert str(err.value) == (
        "<plan>:4:5: rename_table users -> accounts: contract: view user_emails depends on view users "
        "(the old name, dropped by the contract); drop or change it first "
        "(migrator never drops with CASCADE)"
    )
    assert q(db, "SELECT count(*) FROM migrator.contracts") == [(0,)]
    q(db, "DROP VIEW user_emails")
    commands.complete(plan, opts(db))
    commands.contract(opts(db))
    assert q(db, "SELECT to_regclass('public.users') IS NULL") == [(True,)]


def test_cli_refuses_a_drop_with_dependants_exit_2_one_line(db: str, tmp_path: Path) -> None:
    """Through the CLI: exit 2, one line naming the dependants, nothing scheduled."""
    q(db, BASE + "CREATE VIEW user_legacy AS SELECT id, legacy FROM users;")
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text("[]", "- drop_column: {table: users, column: legacy}"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "migrator", *args, "--database-url", db],
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert cli("expand", str(plan)).returncode == 0
    proc = cli("complete", str(plan))
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "drop_column users.legacy: view user_legacy depends on column users.legacy" in lines[0]
    assert q(db, "SELECT count(*) FROM migrator.contracts") == [(0,)]


OWN_PARTS = """
CREATE TABLE metrics (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    raw int,
    doubled int GENERATED ALWAYS AS (raw * 2) STORED,
    tag text DEFAULT 'x' CHECK (tag <> '')
);
CREATE INDEX metrics_tag_idx ON metrics (tag);
CREATE STATISTICS metrics_stats ON raw, tag FROM metrics;
ALTER TABLE metrics ENABLE ROW LEVEL SECURITY;
CREATE POLICY metrics_pol ON metrics USING (tag <> 'hidden');
CREATE FUNCTION metrics_touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TRIGGER metrics_touch BEFORE UPDATE ON metrics FOR EACH ROW EXECUTE FUNCTION metrics_touch();
INSERT INTO metrics (raw) VALUES (1), (2);
"""


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (
            "raw",
            "generated column doubled of table metrics, statistics object metrics_stats "
            "depend on column metrics.raw",
        ),
        (
            "tag",
            "constraint metrics_tag_check on table metrics, index metrics_tag_idx, policy "
            "metrics_pol on table metrics, statistics object metrics_stats depend on column "
            "metrics.tag",
        ),
    ],
)
def test_drop_column_names_generated_columns_policies_and_statistics(
    db: str, column: str, message: str
) -> None:
    q(db, OWN_PARTS)
    plan = parse_plan(plan_text("[]", f"- drop_column: {{table: metrics, column: {column}}}"))
    commands.expand(plan, opts(db))
    with pytest.raises(ValidationFailed) as err:
        commands.complete(plan, opts(db))
    assert message in str(err.value)


def test_drop_table_takes_its_own_parts_without_refusal(db: str) -> None:
    """Its own indexes, constraints, triggers, policies, statistics and generated columns
    go with the table: nothing outside it depends on them, so nothing is refused."""
    q(db, OWN_PARTS)
    plan = parse_plan(plan_text("[]", "- drop_table: {table: metrics}"))
    commands.expand(plan, opts(db))
    commands.complete(plan, opts(db))
    commands.contract(opts(db))
    assert q(db, "SELECT to_regclass('public.metrics') IS NULL") == [(True,)]


# What the linter rightly says about a case's plan (the author asked for it).
EXPECTED_LINT = {
    "add_enum_value": {"M024"},  # a value placed AFTER another changes the sort order
    "drop_table": {"M022"},  # the table's rows are gone for good
    # The example's bigserial id: a warning (prefer identity); create_table's column
    # types have no identity form yet, so a plan suppresses it with its reason.
    "create_table": {"M035"},
}


@pytest.fixture(scope="module")
def read_only_dbs(server: Server) -> Iterator[SetupDatabases]:
    yield from setup_databases(server)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_statements_pass_the_lint_rules(case: Case, read_only_dbs: SetupDatabases) -> None:
    """Every statement an operation writes, held to docs/lint-rules.md by migrator's own linter
    against the live catalog: the lock each one takes is the one the rules allow. The lint
    only reads: cases of one setup share its database."""
    db = read_only_dbs(case.setup)
    plan = parse_plan(plan_text(case.expand, case.contract))
    engine = make_engine(db)
    try:
        with connect(engine) as conn:
            findings = lint_plan(plan, catalog=Catalog(conn))
    finally:
        engine.dispose()
    assert {f.rule for f in findings} == EXPECTED_LINT.get(case.id, set()), findings


def test_contract_drop_on_a_renamed_table_is_not_refused_for_the_old_name_view(db: str) -> None:
    """The view under the old name reads every column, but the contract drops it before
    the plan's own drops run: it is not a dependant to refuse for."""
    q(db, BASE)
    plan = parse_plan(
        plan_text(
            "- rename_table: {from: users, to: accounts}",
            "- drop_column: {table: accounts, column: legacy}",
        )
    )
    commands.expand(plan, opts(db))
    assert q(db, "SELECT obj_description('users'::regclass, 'pg_class')") == [
        ("migrator: the old name of accounts until the contract of r1",)
    ]
    commands.complete(plan, opts(db))
    commands.contract(opts(db))
    assert q(db, "SELECT to_regclass('public.users') IS NULL") == [(True,)]
    assert q(
        db, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'legacy'"
    ) == [(0,)]


def test_rerun_adopts_a_build_that_finished_but_was_not_recorded(db: str) -> None:
    """A crash after CREATE INDEX CONCURRENTLY finished but before the step was recorded:
    the index carries the release's mark, so the rerun keeps it (IF NOT EXISTS) instead of
    refusing the name or building again; the mark is cleared once recorded."""
    q(db, BASE)
    plan = parse_plan(
        plan_text("- create_index: {table: users, name: users_name_idx, columns: [name]}")
    )
    q(db, "CREATE INDEX CONCURRENTLY users_name_idx ON users (name)")
    q(db, "COMMENT ON INDEX users_name_idx IS 'migrator: built by release r1'")
    oid = q(db, "SELECT 'users_name_idx'::regclass::oid")
    rec = Recorder()
    commands.expand(plan, opts(db, rec))
    sqls = [sql for _, sql, _ in rec.statements]
    assert sqls[0].startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS users_name_idx")
    assert not any(sql.startswith("DROP INDEX") for sql in sqls)
    assert q(db, "SELECT 'users_name_idx'::regclass::oid") == oid  # the same index, kept
    assert q(db, "SELECT obj_description('users_name_idx'::regclass, 'pg_class')") == [(None,)]
