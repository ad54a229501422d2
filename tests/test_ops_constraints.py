"""Constraint changes that fix data, drops with a way back, and plans whose later
operations use what earlier ones add (issue 16, sections 4, 5 and 7), on PostgreSQL 18
and 15, through the shared harness (tests/support/ops_suite.py): after expand the old
and the new version both work, rollback restores the schema exactly, the contract gives
the final shape with the data intact, reruns do nothing, every statement has the
lock-safe form. Then the refusals: exit 2, one line at file:line:column, nothing changed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.errors import ExitCode, MigratorError
from migrator.lint.sources import lint_plan
from migrator.plan.loader import load_plan, parse_plan
from tests.support.catalog_snapshot import schema_dump
from tests.support.ops_suite import BASE, Case, opts, plan_text, q, release_rows, run_release_case

CASES = [
    # Section 7: expressions over a column an earlier operation of the plan adds (or the
    # new name a rename gives) were refused, "column does not exist".
    Case(
        "add_check and create_index over columns added earlier in the plan",
        expand="""
        - add_column: {table: users, column: {name: score, type: int}}
        - add_check: {table: users, name: users_score_positive, expression: "score > 0"}
        - add_column: {table: users, column: {name: note, type: text}}
        - add_check: {table: users, name: users_note_short, expression: "length(note) < 99"}
        - create_index: {table: users, name: users_score_idx, columns: [score],
                         where: "score > 10 AND note IS NOT NULL"}
        - add_column:
            table: users
            column: {name: doubled, type: int}
            up: "score * 2"
        - alter_column:
            table: users
            column: legacy
            nullable: false
            up: "coalesce(legacy, 'none')"
            down: "coalesce(legacy, 'from-' || score)"
        """,
        old=["INSERT INTO users (name) VALUES ('old')"],
        new=[
            "INSERT INTO users (name, score, note) VALUES ('new', 5, 'y')",
            # the trigger of `up` reads the column added before it
            "SELECT 1 / (doubled - 9) FROM users WHERE name = 'new'",
        ],
        final=[
            (
                "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = "
                "'users'::regclass AND contype = 'c' ORDER BY 1",
                [("users_note_short", True), ("users_score_positive", True)],
            ),
            (
                "SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_score_idx'::regclass",
                [(True,)],
            ),
            (
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
                "AND attname = 'legacy'",
                [(True,)],
            ),
        ],
    ),
    # Section 4: tightenings that fix data, without a type change. The old version keeps
    # writing values the new constraints forbid; `up` rewrites them into the shadow, which
    # the new version writes by its name (_migrator_new_<column>).
    Case(
        "alter_column nullable false and a named check, with up and down",
        setup=BASE
        + "UPDATE users SET legacy = NULL WHERE id <= 3;"
        + "UPDATE users SET legacy = 'far-too-long' WHERE id = 4;",
        expand="""
        - alter_column:
            table: users
            column: legacy
            nullable: false
            check: {name: users_legacy_short, expression: "length(legacy) <= 6"}
            up: "left(coalesce(legacy, 'none'), 6)"
            down: "legacy"
        """,
        old=[
            "INSERT INTO users (name, legacy) VALUES ('old', NULL)",
            "UPDATE users SET legacy = 'much-too-long' WHERE id = 5",
            "SELECT legacy FROM users WHERE id = 5",
        ],
        new=[
            "INSERT INTO users (name, _migrator_new_legacy) VALUES ('new', 'fine')",
            "SELECT 1 / length(_migrator_new_legacy) FROM users WHERE id = 5",
        ],
        final=[
            ("SELECT count(*) FROM users WHERE legacy IS NULL OR length(legacy) > 6", [(0,)]),
            ("SELECT legacy FROM users WHERE id IN (1, 4) ORDER BY id", [("none",), ("far-to",)]),
            (
                "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
                "AND attname = 'legacy'",
                [(True,)],
            ),
            (
                "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = "
                "'users'::regclass AND contype = 'c'",
                [("users_legacy_short", True)],
            ),
        ],
    ),
    Case(
        "alter_column unique and references with up, named, on_delete in PostgreSQL's case",
        setup=BASE
        + "UPDATE users SET legacy = 'dup' WHERE id IN (1, 2, 3);"
        + "ALTER TABLE orders ADD COLUMN buyer bigint; UPDATE orders SET buyer = user_id;"
        + "UPDATE orders SET buyer = 999 WHERE id IN (1, 2);",
        expand="""
        - alter_column:
            table: users
            column: legacy
            unique: {name: users_legacy_uniq}
            up: "CASE WHEN legacy = 'dup' THEN legacy || '-' || id ELSE legacy END"
        - alter_column:
            table: orders
            column: buyer
            references: {table: users, column: id, name: orders_buyer_ref, on_delete: SET NULL}
            up: "CASE WHEN EXISTS (SELECT 1 FROM users u WHERE u.id = buyer) THEN buyer END"
        """,
        old=[
            "INSERT INTO users (name, legacy) VALUES ('old', 'dup')",
            "INSERT INTO orders (user_id, buyer) VALUES (1, 777)",
            "UPDATE orders SET buyer = 888 WHERE id = 3",
        ],
        new=[
            "INSERT INTO users (name, _migrator_new_legacy) VALUES ('new', 'unique-x')",
            "INSERT INTO orders (user_id, _migrator_new_buyer) VALUES (2, 5)",
        ],
        final=[
            ("SELECT count(*) = count(DISTINCT legacy) FROM users", [(True,)]),
            ("SELECT count(*) FROM orders WHERE buyer > 50", [(0,)]),
            (
                "SELECT conname, contype::text, convalidated, confdeltype::text "
                "FROM pg_constraint WHERE conname IN ('users_legacy_uniq', 'orders_buyer_ref') "
                "ORDER BY 1",
                [("orders_buyer_ref", "f", True, "n"), ("users_legacy_uniq", "u", True, " ")],
            ),
        ],
    ),
    # Section 5: drop_column with down, under expand. The column is NOT NULL with no
    # default: without the trigger the new version's inserts would fail.
    Case(
        "drop_column with down",
        setup=BASE
        + "ALTER TABLE users ADD COLUMN phone text NOT NULL DEFAULT 'none';"
        + "ALTER TABLE users ALTER COLUMN phone DROP DEFAULT;",
        expand="""
        - drop_column: {table: users, column: phone, down: "'unknown-' || name"}
        """,
        old=[
            "INSERT INTO users (name, phone) VALUES ('old', '555')",
            "SELECT 1 / count(*) FROM users WHERE name = 'old' AND phone = '555'",
        ],
        new=[
            "INSERT INTO users (name) VALUES ('new')",
            # the old version reads a value in the new version's row
            "SELECT 1 / count(*) FROM users WHERE name = 'new' AND phone = 'unknown-new'",
            "UPDATE users SET email = 'x@example.com' WHERE name = 'new'",
        ],
        final=[
            (
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users' "
                "AND column_name = 'phone'",
                [(0,)],
            ),
            ("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '_migrator%'", [(0,)]),
        ],
    ),
    # Section 5: drop_constraint with down, under expand. The new version writes values
    # the constraints forbid (into the shadow); `down` gives the old column ones they
    # accept; the contract swaps, leaving the constraints behind.
    Case(
        "drop_constraint check and unique with down",
        setup=BASE
        + "ALTER TABLE orders ADD CONSTRAINT orders_amount_small CHECK (amount < 1000);"
        + "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);",
        expand="""
        - drop_constraint:
            table: orders
            name: orders_amount_small
            column: amount
            down: "least(amount, 999)"
        - drop_constraint:
            table: users
            name: users_email_key
            column: email
            up: email
            down: "email || '#' || id"
        """,
        old=[
            "INSERT INTO orders (user_id, amount) VALUES (1, 5)",
            "UPDATE orders SET amount = 7 WHERE id = 3",
            "INSERT INTO users (name) VALUES ('old')",
            "UPDATE users SET email = 'changed@example.com' WHERE id = 7",
        ],
        new=[
            "INSERT INTO orders (user_id, _migrator_new_amount) VALUES (1, 5000)",
            "SELECT 1 / count(*) FROM orders WHERE _migrator_new_amount = 5000 AND amount = 999",
            "INSERT INTO users (name, _migrator_new_email) VALUES ('new', 'u1@example.com')",
        ],
        final=[
            (
                "SELECT count(*) FROM pg_constraint "
                "WHERE conname IN ('orders_amount_small', 'users_email_key')",
                [(0,)],
            ),
            (
                "SELECT attname, attnotnull, pg_get_expr(adbin, adrelid) FROM pg_attribute "
                "LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum "
                "WHERE attrelid = 'orders'::regclass AND attname = 'amount'",
                [("amount", True, "0")],
            ),
            (
                "WITH x AS (INSERT INTO orders (user_id, amount) VALUES (1, 5000) "
                "RETURNING amount) SELECT amount::int FROM x",
                [(5000,)],
            ),
        ],
    ),
    # Names on every constraint create_table makes; on_delete in PostgreSQL's spelling.
    Case(
        "create_table with named constraints",
        expand="""
        - create_table:
            table: payments
            columns:
              - {name: id, type: bigint, nullable: false}
              - {name: user_id, type: bigint,
                 references: {table: users, name: payments_payer, on_delete: CASCADE}}
              - {name: amount, type: int, check: {name: payments_positive, expression: "amount > 0"}}
              - {name: ref, type: text, unique: {name: payments_ref_uniq}}
            primary_key: {name: payments_pk, columns: [id]}
        - add_check: {table: payments, name: payments_small, expression: "amount < 10000"}
        """,
        new=["INSERT INTO payments VALUES (1, 1, 5, 'r1')"],
        final=[
            (
                "SELECT conname, contype::text, confdeltype::text FROM pg_constraint "
                "WHERE conrelid = 'payments'::regclass AND contype <> 'n' ORDER BY 1",
                [
                    ("payments_payer", "f", "c"),
                    ("payments_pk", "p", " "),
                    ("payments_positive", "c", " "),
                    ("payments_ref_uniq", "u", " "),
                    ("payments_small", "c", " "),
                ],
            ),
        ],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_operation_release(case: Case, db: str) -> None:
    run_release_case(case, db)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_statements_pass_the_lint_rules(case: Case, fresh_db: str) -> None:
    """Every statement the operations write, through migrator's own linter on the live
    catalog: no finding."""
    q(fresh_db, case.setup)
    plan = parse_plan(plan_text(case.expand, case.contract))
    engine = make_engine(fresh_db)
    try:
        with connect(engine) as conn:
            findings = lint_plan(plan, catalog=Catalog(conn))
    finally:
        engine.dispose()
    assert findings == []


# -- refusals: exit 2, one line at file:line:column, nothing changed -------------------------

REFUSALS = [
    (
        "constraint name taken in the database",
        "- add_check: {table: orders, name: orders_user_fk, expression: 'amount > 0'}",
        "orders already has a constraint named orders_user_fk",
    ),
    (
        "constraint name taken earlier in the plan",
        "- add_check: {table: users, name: users_name_set, expression: 'name IS NOT NULL'}\n"
        "- add_check: {table: users, name: users_name_set, expression: 'name <> '''''}",
        "users already has a constraint named users_name_set",
    ),
    (
        "drop_column's down that does not plan",
        "- drop_column: {table: users, column: legacy, down: 'nope || 1'}",
        'column "nope" does not exist',
    ),
    (
        "drop_constraint with down naming a column the constraint does not use",
        "- drop_constraint: {table: orders, name: orders_user_fk, column: amount, down: amount}",
        "orders_user_fk does not use column amount",
    ),
    (
        "alter_column unique whose up leaves duplicates",
        "- alter_column: {table: users, column: legacy, unique: true, up: 'left(legacy, 1)'}",
        "up 'left(legacy, 1)' gives 1 value more than once, which unique would refuse: "
        "'l' in 50 rows",
    ),
    (
        "alter_column up that does not plan",
        "- alter_column: {table: users, column: legacy, nullable: false, up: 'nope'}",
        'column "nope" does not exist',
    ),
    (
        "a create_table constraint name a later operation takes again",
        "- create_table: {table: t1, columns: [{name: a, type: int, check: "
        "{name: t1_a_positive, expression: 'a > 0'}}]}\n"
        "- add_check: {table: t1, name: t1_a_positive, expression: 'a < 9'}",
        "t1 already has a constraint named t1_a_positive",
    ),
    (
        "a named primary key whose index name is taken",
        "- create_table: {table: t1, columns: [{name: a, type: int}], "
        "primary_key: {name: users_pkey, columns: [a]}}",
        "named public.users_pkey already exists",
    ),
    (
        "an on_delete PostgreSQL does not have",
        "- add_column: {table: orders, column: {name: u2, type: bigint, "
        "references: {table: users, on_delete: SET EMPTY}}}",
        "on_delete",
    ),
    (
        "an expression over a column no operation adds",
        "- add_column: {table: users, column: {name: score, type: int}}\n"
        "- add_check: {table: users, name: c1, expression: 'scores > 0'}",
        'column "scores" does not exist',
    ),
]


@pytest.mark.parametrize(
    ("expand", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals(fresh_db: str, tmp_path: Path, expand: str, message: str) -> None:
    q(
        fresh_db,
        BASE + "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
        "REFERENCES users (id);",
    )
    before = schema_dump(fresh_db)
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text(expand))
    with pytest.raises(MigratorError) as err:  # the plan's loading, or its validation
        commands.expand(load_plan(path), opts(fresh_db))
    text = str(err.value)
    assert text.startswith(f"{path}:"), text  # file:line:column of the operation
    assert message in text
    assert "\n" not in text
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(fresh_db) == before
    assert release_rows(fresh_db) == []


PLACEMENT = [
    (
        "- drop_column: {table: users, column: legacy}",
        "[]",
        "drop_column cannot stand under expand: without down",
    ),
    ("[]", "- drop_column: {table: users, column: legacy, down: name}", "put it under expand:"),
    (
        "- drop_constraint: {table: users, name: users_pkey}",
        "[]",
        "drop_constraint cannot stand under expand: without column and down",
    ),
    (
        "[]",
        "- drop_constraint: {table: users, name: users_pkey, column: id, down: id}",
        "put it under expand:",
    ),
    (
        "- alter_column: {table: users, column: name, up: \"coalesce(name, '')\"}",
        "[]",
        "up and down go with a type change (type:) or a tightening",
    ),
]


@pytest.mark.parametrize(("expand", "contract", "message"), PLACEMENT)
def test_keys_decide_where_an_operation_stands(
    fresh_db: str, tmp_path: Path, expand: str, contract: str, message: str
) -> None:
    """drop_column's down and drop_constraint's column/down decide where they stand:
    one line at file:line:column (exit 2), at load time or before anything runs."""
    q(fresh_db, BASE)
    before = schema_dump(fresh_db)
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text(expand, contract))
    with pytest.raises(MigratorError) as err:
        commands.expand(load_plan(path), opts(fresh_db))
    text = str(err.value)
    assert text.startswith(f"{path}:") and message in text and "\n" not in text, text
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(fresh_db) == before
