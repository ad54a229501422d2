"""Operations and options of issue 16 section 6, table-driven on PostgreSQL 18 and 15.

Each case goes through tests/support/ops_suite.py's whole release: after expand the old
and new versions' reads and writes work; rollback gives back the same pg_dump
--schema-only; the contract gives the final shape with the data intact; reruns do
nothing; every statement has the lock-safe form and passes migrator's own lint. Then the
bad input of each: one line naming file:line:column, exit 2, nothing changed.
"""

from __future__ import annotations

import re

import pytest

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.errors import ExitCode, PlanError, ValidationFailed
from migrator.lint.sources import lint_plan
from migrator.ops import Context
from migrator.plan.loader import parse_plan
from tests.support.catalog_snapshot import schema_dump
from tests.support.ops_suite import (
    BASE,
    Case,
    opts,
    plan_text,
    q,
    release_rows,
    run_release_case,
)

KEYED = (
    BASE
    + """
ALTER TABLE orders ADD CONSTRAINT orders_amount_positive CHECK (amount >= 0);
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
"""
)

CONSTRAINTS_OF = (
    "SELECT conrelid::regclass::text, conname, contype::text FROM pg_constraint "
    "WHERE conrelid IN ('users'::regclass, 'orders'::regclass) AND contype <> 'n' ORDER BY 1, 2"
)

CASES = [
    Case(
        "rename_constraint",
        setup=KEYED,
        expand="""
        - rename_constraint: {table: orders, from: orders_amount_positive, to: orders_amount_ok}
        - rename_constraint: {table: users, from: users_email_key, to: users_email_unique}
        """,
        old=[
            "INSERT INTO users (name) VALUES ('old')",
            "UPDATE orders SET amount = 3 WHERE id = 1",
        ],
        new=[
            "INSERT INTO users (name, email) VALUES ('new', 'u1@example.com') "
            "ON CONFLICT ON CONSTRAINT users_email_unique DO NOTHING",
        ],
        final=[
            (
                CONSTRAINTS_OF,
                [
                    ("orders", "orders_amount_ok", "c"),
                    ("orders", "orders_pkey", "p"),
                    ("users", "users_email_unique", "u"),
                    ("users", "users_pkey", "p"),
                ],
            ),
            # The key constraint's index took the new name with it.
            ("SELECT to_regclass('users_email_unique') IS NOT NULL", [(True,)]),
        ],
    ),
    Case(
        "rename_constraint under contract",
        setup=KEYED,
        contract="- rename_constraint: {table: users, from: users_email_key, to: users_email_uq}",
        old=[
            "INSERT INTO users (name, email) VALUES ('old', 'u1@example.com') "
            "ON CONFLICT ON CONSTRAINT users_email_key DO NOTHING",
        ],
        final=[("SELECT to_regclass('users_email_uq') IS NOT NULL", [(True,)])],
    ),
]


IDENTITY_OF = (
    "SELECT c.relname::text, c.relreplident::text, "
    "(SELECT i.indexrelid::regclass::text FROM pg_index i "
    " WHERE i.indrelid = c.oid AND i.indisreplident) "
    "FROM pg_class c WHERE c.relname IN ('users', 'orders') ORDER BY 1"
)

CASES += [
    Case(
        "set_replica_identity full and index",
        setup=BASE
        + "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"
        + "CREATE UNIQUE INDEX users_email_uidx ON users (email);",
        expand="""
        - set_replica_identity: {table: users, identity: {index: users_email_uidx}}
        - set_replica_identity: {table: orders, identity: full}
        """,
        old=[
            "UPDATE users SET name = 'o' WHERE id = 3",
            "DELETE FROM orders WHERE id = 100",
        ],
        new=["INSERT INTO orders (user_id, amount) VALUES (2, 5)"],
        final=[(IDENTITY_OF, [("orders", "f", None), ("users", "i", "users_email_uidx")])],
    ),
    Case(
        "set_replica_identity on an index the plan builds",
        expand="""
        - create_index: {table: orders, name: orders_id_amount_key, columns: [id, amount],
                         unique: true}
        - set_replica_identity: {table: orders, identity: {index: orders_id_amount_key}}
        """,
        old=["UPDATE orders SET amount = amount + 1 WHERE id = 1"],
        final=[(IDENTITY_OF, [("orders", "i", "orders_id_amount_key"), ("users", "d", None)])],
    ),
    Case(
        "set_replica_identity under contract",
        setup=BASE + "ALTER TABLE users REPLICA IDENTITY FULL;",
        contract="- set_replica_identity: {table: users, identity: default}",
        old=["UPDATE users SET name = 'o' WHERE id = 3"],
        final=[(IDENTITY_OF, [("orders", "d", None), ("users", "d", None)])],
    ),
]


COMMENTS_OF = (
    "SELECT c.relname::text, a.attname::text, col_description(c.oid, a.attnum) "
    "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 "
    "WHERE c.relname IN ('users', 'payments') AND col_description(c.oid, a.attnum) IS NOT NULL "
    "UNION ALL SELECT relname::text, NULL, obj_description(oid, 'pg_class') FROM pg_class "
    "WHERE relname IN ('users', 'payments') AND obj_description(oid, 'pg_class') IS NOT NULL "
    "ORDER BY 1, 2 NULLS FIRST"
)

CASES += [
    Case(
        "comments",
        setup=BASE + "COMMENT ON COLUMN users.email IS 'to be removed';"
        "COMMENT ON COLUMN users.legacy IS 'kept';",
        expand="""
        - create_table:
            table: payments
            comment: "money in; one row per charge"
            columns:
              - {name: id, type: bigint, nullable: false, comment: "the charge's id"}
              - {name: note, type: text}
            primary_key: [id]
        - add_column:
            table: users
            column: {name: nickname, type: text, comment: "shown instead of the name"}
        - alter_column: {table: users, column: name, comment: "the user's full name, it's"}
        - alter_column: {table: users, column: email, comment: null}
        """,
        old=["INSERT INTO users (name, email) VALUES ('old', 'o@example.com')"],
        new=["INSERT INTO payments (id, note) VALUES (1, 'n')"],
        final=[
            (
                COMMENTS_OF,
                [
                    ("payments", None, "money in; one row per charge"),
                    ("payments", "id", "the charge's id"),
                    ("users", "legacy", "kept"),
                    ("users", "name", "the user's full name, it's"),
                    ("users", "nickname", "shown instead of the name"),
                ],
            )
        ],
    ),
]


INDEXES_OF = (
    "SELECT indexname::text, regexp_replace(indexdef, '^.* USING ', '') FROM pg_indexes "
    "WHERE tablename IN ('users', 'orders') AND indexname LIKE '%\\_opt' ORDER BY 1"
)

CASES += [
    Case(
        "create_index options",
        expand="""
        - create_index:
            table: users
            name: users_email_opt
            columns: [{column: email, opclass: text_pattern_ops}]
            include: [name]
            storage_parameters: {fillfactor: 70, deduplicate_items: false}
        - create_index:
            table: orders
            name: orders_amount_opt
            columns: [user_id, {column: amount, order: desc, nulls: last}]
        - create_index:
            table: orders
            name: orders_id_opt
            method: brin
            columns: [id]
            storage_parameters: {pages_per_range: 16}
        - create_index:
            table: users
            name: users_legacy_opt
            columns: [legacy]
            unique: true
            nulls_not_distinct: true
        """,
        old=[
            "UPDATE users SET name = 'o', legacy = legacy || 'x' WHERE id = 4",
            "INSERT INTO orders (user_id, amount) VALUES (1, 2)",
        ],
        new=["SELECT id FROM users WHERE email LIKE 'u1%' ORDER BY id"],
        final=[
            (
                INDEXES_OF,
                [
                    ("orders_amount_opt", "btree (user_id, amount DESC NULLS LAST)"),
                    ("orders_id_opt", "brin (id) WITH (pages_per_range='16')"),
                    (
                        "users_email_opt",
                        "btree (email text_pattern_ops) INCLUDE (name) "
                        "WITH (fillfactor='70', deduplicate_items=off)",
                    ),
                    ("users_legacy_opt", "btree (legacy) NULLS NOT DISTINCT"),
                ],
            ),
        ],
    ),
]


DEFAULTS_OF = (
    "SELECT table_name::text, column_name::text, data_type::text, column_default "
    "FROM information_schema.columns WHERE (table_name, column_name) IN "
    "(('users', 'legacy'), ('orders', 'amount')) ORDER BY 1"
)

CASES += [
    Case(
        "alter_column default: null",
        setup=BASE + "ALTER TABLE users ALTER COLUMN legacy SET DEFAULT 'none';",
        expand="""
        - alter_column: {table: users, column: legacy, default: null}
        - alter_column: {table: orders, column: amount, type: bigint, default: null}
        """,
        # The old version inserts relying on both defaults, until the contract.
        old=[
            "INSERT INTO users (name) VALUES ('old')",
            "INSERT INTO orders (user_id) VALUES (1)",
            "SELECT count(*) FROM users WHERE legacy = 'none'",
        ],
        new=["INSERT INTO orders (user_id, _migrator_new_amount) VALUES (1, 5)"],
        final=[
            (
                DEFAULTS_OF,
                [("orders", "amount", "bigint", None), ("users", "legacy", "text", None)],
            ),
        ],
    ),
]


FOREIGN_KEYS_OF = (
    "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY 1"
)

CASES += [
    Case(
        "foreign key options",
        expand="""
        - add_foreign_key:
            table: orders
            name: orders_user_fk
            columns: [user_id]
            references: {table: users, columns: [id]}
            on_update: CASCADE
            match: full
            deferrable: true
            initially_deferred: true
        - add_column:
            table: orders
            column:
              name: referrer_id
              type: bigint
              references: {table: users, column: id, on_update: set null, deferrable: true}
        - create_table:
            table: payments
            columns:
              - {name: id, type: bigint, nullable: false}
              - {name: user_id, type: bigint,
                 references: {table: users, column: id, on_delete: cascade, on_update: cascade}}
              - {name: order_id, type: bigint}
            primary_key: [id]
            constraints:
              - name: payments_order_fk
                foreign_key: {columns: [order_id, user_id],
                              references: {table: orders, columns: [id, user_id]},
                              match: full, deferrable: true}
        """,
        setup=BASE + "ALTER TABLE orders ADD CONSTRAINT orders_id_user_key UNIQUE (id, user_id);",
        old=["UPDATE users SET id = 1000 WHERE id = 50"],
        # Deferred: the row may point nowhere until the transaction ends.
        new=[
            "INSERT INTO orders (user_id, amount) VALUES (999, 1); "
            "DELETE FROM orders WHERE user_id = 999"
        ],
        final=[
            (
                FOREIGN_KEYS_OF,
                [
                    (
                        "orders_referrer_id_fkey",
                        "FOREIGN KEY (referrer_id) REFERENCES users(id) ON UPDATE SET NULL "
                        "DEFERRABLE",
                    ),
                    (
                        "orders_user_fk",
                        "FOREIGN KEY (user_id) REFERENCES users(id) MATCH FULL ON UPDATE CASCADE "
                        "DEFERRABLE INITIALLY DEFERRED",
                    ),
                    (
                        "payments_order_fk",
                        "FOREIGN KEY (order_id, user_id) REFERENCES orders(id, user_id) "
                        "MATCH FULL DEFERRABLE",
                    ),
                    (
                        "payments_user_id_fkey",
                        "FOREIGN KEY (user_id) REFERENCES users(id) ON UPDATE CASCADE "
                        "ON DELETE CASCADE",
                    ),
                ],
            ),
        ],
    ),
]


CASES += [
    Case(
        "add_check with up",
        expand="""
        - add_check:
            table: orders
            name: orders_amount_min
            expression: "amount >= 10"
            column: amount
            up: "10"
        """,
        old=[
            "SELECT sum(amount) FROM orders",
            "INSERT INTO orders (user_id, amount) VALUES (1, 11)",
        ],
        new=["UPDATE orders SET amount = 12 WHERE id = 20"],
        final=[
            ("SELECT min(amount), count(*) FILTER (WHERE amount = 10) FROM orders", [(10, 10)]),
            (
                "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_amount_min'",
                [(True,)],
            ),
        ],
    ),
]


CASES += [
    Case(
        "create_table table-level constraints",
        expand="""
        - create_table:
            table: bookings
            columns:
              - {name: id, type: bigint, nullable: false}
              - {name: room, type: text, nullable: false}
              - {name: during, type: tstzrange, nullable: false}
              - {name: user_id, type: bigint}
              - {name: note, type: text}
            primary_key: {name: bookings_pk, columns: [id]}
            constraints:
              - {name: bookings_room_code, check: "room <> ''"}
              - {name: bookings_room_note_key, unique: [room, id], include: [note]}
              - name: bookings_user_fk
                foreign_key: {columns: [user_id], references: {table: users, columns: [id]},
                              on_delete: set null}
              - name: bookings_no_overlap
                exclude:
                  using: gist
                  elements: [{column: during, with: "&&"}]
                  where: "room <> 'lobby'"
        """,
        old=["INSERT INTO users (name) VALUES ('old')"],
        new=[
            "INSERT INTO bookings VALUES "
            "(1, 'a', tstzrange('2026-01-01', '2026-01-02'), 1, 'n'), "
            "(2, 'lobby', tstzrange('2026-01-01', '2026-01-02'), 1, 'n')",
        ],
        final=[
            (
                "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'bookings'::regclass AND contype <> 'n' ORDER BY 1",
                [
                    (
                        "bookings_no_overlap",
                        "EXCLUDE USING gist (during WITH &&) WHERE ((room <> 'lobby'::text))",
                    ),
                    ("bookings_pk", "PRIMARY KEY (id)"),
                    ("bookings_room_code", "CHECK ((room <> ''::text))"),
                    ("bookings_room_note_key", "UNIQUE (room, id) INCLUDE (note)"),
                    (
                        "bookings_user_fk",
                        "FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE SET NULL",
                    ),
                ],
            ),
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_operation_release(case: Case, db: str) -> None:
    run_release_case(case, db)


# What the linter rightly says about a case's plan (the author asked for it).
EXPECTED_LINT: dict[str, set[str]] = {
    # COMMENT ON an existing table's column, in a step of its own: it waits behind a
    # VACUUM or an index build on the table (a warning; the comment is what was asked).
    "comments": {"M039"},
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_statements_pass_the_lint_rules(case: Case, db: str) -> None:
    """Every statement the operations write, through migrator's own linter on the live
    catalog: only the findings the case expects."""
    q(db, case.setup)
    plan = parse_plan(plan_text(case.expand, case.contract))
    engine = make_engine(db)
    try:
        with connect(engine) as conn:
            findings = lint_plan(plan, catalog=Catalog(conn))
    finally:
        engine.dispose()
    assert {f.rule for f in findings} == EXPECTED_LINT.get(case.id, set()), findings


# -- bad input ------------------------------------------------------------------------------

# (id, expand, message); the plan's first operation is at line 4, column 5.
REFUSALS = [
    (
        "rename_constraint of a missing constraint",
        "- rename_constraint: {table: users, from: nope, to: users_nope}",
        "rename_constraint users.nope -> users_nope: users has no constraint named nope",
    ),
    (
        "rename_constraint onto a taken name",
        "- rename_constraint: {table: orders, from: orders_amount_positive, to: orders_pkey}",
        "orders already has a constraint named orders_pkey",
    ),
    (
        "rename_constraint whose index would clash",
        "- rename_constraint: {table: users, from: users_email_key, to: orders}",
        "the constraint's index would be renamed orders, and a relation named public.orders "
        "already exists",
    ),
    (
        "create_index with an operator class the method lacks",
        "- create_index: {table: users, name: i1, columns: [{column: name, opclass: nope_ops}]}",
        'create_index i1: PostgreSQL refuses the index: operator class "nope_ops" does not '
        'exist for access method "btree"',
    ),
    (
        "create_index with a storage parameter out of bounds",
        "- create_index: {table: users, name: i1, columns: [name], "
        "storage_parameters: {fillfactor: 5}}",
        'PostgreSQL refuses the index: value 5 out of bounds for option "fillfactor"',
    ),
    (
        "create_index with a storage parameter the method lacks",
        "- create_index: {table: users, name: i1, columns: [name], method: hash, "
        "storage_parameters: {pages_per_range: 4}}",
        'PostgreSQL refuses the index: unrecognized parameter "pages_per_range"',
    ),
    (
        "nulls_not_distinct without unique",
        "- create_index: {table: users, name: i1, columns: [name], nulls_not_distinct: true}",
        "create_index i1: nulls_not_distinct goes with unique: true",
    ),
    (
        "nulls_not_distinct over several NULLs",
        "- create_index: {table: users, name: i1, columns: [legacy], unique: true, "
        "nulls_not_distinct: true}",
        "create_index i1: 2 rows of users hold NULL in legacy, which clash under "
        "nulls_not_distinct; remove the duplicates first",
    ),
    (
        "default: null on an identity column",
        "- alter_column: {table: tickets, column: id, default: null}",
        "alter_column tickets.id: id is an identity column, which has no default to drop",
    ),
    (
        "add_check whose up rewrites a missing column",
        "- add_check: {table: orders, name: c, expression: 'amount > 0', column: nope, up: '1'}",
        "add_check c: public.orders has no column nope",
    ),
    (
        "an exclusion over a column the table lacks",
        "- create_table: {table: t, columns: [{name: a, type: tstzrange}], constraints: "
        "[{name: t_x, exclude: {elements: [{column: nope, with: '&&'}]}}]}",
        "create_table t: constraint t_x names unknown column nope",
    ),
    (
        "replica identity nothing on a published table",
        "- set_replica_identity: {table: orders, identity: nothing}",
        "set_replica_identity orders: nothing names no row, and publication orders_changes "
        "publishes its updates or deletes: PostgreSQL would refuse every UPDATE and DELETE on it",
    ),
    (
        "replica identity on an index that is not unique",
        "- set_replica_identity: {table: users, identity: {index: users_name_idx}}",
        "set_replica_identity users: index users_name_idx is not unique; a replica identity "
        "index is unique",
    ),
    (
        "replica identity on a nullable column's index",
        "- set_replica_identity: {table: users, identity: {index: users_legacy_uidx}}",
        "index users_legacy_uidx has nullable column legacy",
    ),
    (
        "replica identity on another table's index",
        "- set_replica_identity: {table: users, identity: {index: orders_pkey}}",
        "index orders_pkey is on orders, not on users",
    ),
]


REFUSAL_SETUP = (
    KEYED
    + """
CREATE INDEX users_name_idx ON users (name);
CREATE UNIQUE INDEX users_legacy_uidx ON users (legacy);
UPDATE users SET legacy = NULL WHERE id IN (7, 8);
CREATE PUBLICATION orders_changes FOR TABLE orders;
CREATE TABLE tickets (id int GENERATED ALWAYS AS IDENTITY, code text);
"""
)


@pytest.mark.parametrize(
    ("expand", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_bad_input_is_one_line_at_its_place(db: str, expand: str, message: str) -> None:
    q(db, REFUSAL_SETUP)
    before = schema_dump(db)
    plan = parse_plan(plan_text(expand), "plans/r1.yaml")
    with pytest.raises(ValidationFailed) as err:
        commands.expand(plan, opts(db))
    line = str(err.value)
    assert re.match(r"plans/r1\.yaml:4:5: ", line), line
    assert message in line, line
    assert "\n" not in line
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(db) == before
    assert release_rows(db) == []


# (id, expand, line:column, message): refused when the plan is read, before any database.
PLAN_ERRORS: list[tuple[str, str, str, str]] = [
    (
        "rename_constraint without to",
        "- rename_constraint: {table: users, from: users_email_key}",
        "4:5",
        "missing required key 'to'",
    ),
    (
        "a comment that is not text",
        "- alter_column: {table: users, column: name, comment: [a]}",
        "4:57",
        "comment: Input should be a valid string",
    ),
    (
        "an index key with an unknown option",
        "- create_index: {table: users, name: i1, columns: [{column: name, opclas: x}]}",
        "4:69",
        "unknown key 'opclas'",
    ),
    (
        "initially_deferred without deferrable",
        "- add_foreign_key: {table: orders, name: f, columns: [user_id], "
        "references: {table: users, columns: [id]}, initially_deferred: true}",
        "4:5",
        "initially_deferred: true needs deferrable: true",
    ),
    (
        "a match PostgreSQL does not have",
        "- add_foreign_key: {table: orders, name: f, columns: [user_id], "
        "references: {table: users, columns: [id]}, match: partial}",
        "4:117",
        "match: Input should be 'simple' or 'full' (got 'partial')",
    ),
    (
        "add_check with up but no column",
        "- add_check: {table: orders, name: c, expression: 'amount > 0', up: '1'}",
        "4:5",
        "column and up go together",
    ),
    (
        "include without unique",
        "- create_table: {table: t, columns: [{name: a, type: int}], "
        "constraints: [{name: c, check: 'a > 0', include: [a]}]}",
        "4:77",
        "include goes with unique",
    ),
    (
        "replica identity of an unknown kind",
        "- set_replica_identity: {table: users, identity: partial}",
        "4:52",
        "Input should be 'default', 'full' or 'nothing' (got 'partial')",
    ),
    (
        "replica identity index spelled wrong",
        "- set_replica_identity: {table: users, identity: {idx: users_pkey}}",
        "4:53",
        "unknown key 'idx'",
    ),
]


@pytest.mark.parametrize(
    ("expand", "where", "message"), [r[1:] for r in PLAN_ERRORS], ids=[r[0] for r in PLAN_ERRORS]
)
def test_malformed_keys_are_named_at_file_line_column(
    expand: str, where: str, message: str
) -> None:
    with pytest.raises(PlanError) as err:
        parse_plan(plan_text(expand), "plans/r1.yaml")
    line = str(err.value).splitlines()[0]
    assert line.startswith(f"plans/r1.yaml:{where}: "), line
    assert message in line, line
    assert err.value.exit_code == ExitCode.BAD_INPUT


def test_nulls_not_distinct_before_15_is_refused_naming_the_version(db: str) -> None:
    """The version gate alone: the operation validated against the live catalog with the
    server version a PostgreSQL 14 would report (no PostgreSQL 14 is installed here)."""
    q(db, BASE)
    plan = parse_plan(
        plan_text(
            "- create_index: {table: users, name: i1, columns: [legacy], unique: true, "
            "nulls_not_distinct: true}"
        )
    )
    op = plan.operations("expand")[0]
    engine = make_engine(db)
    try:
        with connect(engine) as conn:
            ctx = Context(schema="public", release="r1", catalog=Catalog(conn))
            ctx.server_version = 140011
            with pytest.raises(ValidationFailed) as err:
                op.validate_live(ctx)
    finally:
        engine.dispose()
    assert str(err.value) == (
        "create_index i1: nulls_not_distinct needs PostgreSQL 15 or later; this server is 14"
    )
