"""Several changes in one `alter_column` (issue 16, section 6): a type change together
with check, unique, nullable: false, references and default, through the one shadow
column, on PostgreSQL 18 and 15 through the shared harness (tests/support/ops_suite.py):
after expand the old and the new version both work (the old one writing values the new
constraints forbid, which `up` rewrites), rollback restores the schema exactly, the
contract gives the final type, constraints and indexes with the data intact, reruns do
nothing, every statement has the lock-safe form and passes the lint. Then what
PostgreSQL cannot build: exit 2, one line at file:line:column, nothing changed.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from migrator import commands
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.errors import ExitCode, MigratorError
from migrator.lint.sources import lint_plan
from migrator.plan.loader import load_plan, parse_plan
from tests.support.catalog_snapshot import schema_dump
from tests.support.ops_suite import BASE, Case, opts, plan_text, q, release_rows, run_release_case

COLUMN_OF = (
    "SELECT format_type(atttypid, atttypmod), attnotnull, pg_get_expr(adbin, adrelid) "
    "FROM pg_attribute LEFT JOIN pg_attrdef ON adrelid = attrelid AND adnum = attnum "
    "WHERE attrelid = '{t}'::regclass AND attname = '{c}'"
)
CONSTRAINTS_OF = (
    "SELECT conname, contype::text, convalidated, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE conrelid = '{t}'::regclass AND contype IN ('c', 'u', 'f') ORDER BY 1"
)
INDEXES_OF = (
    "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), indisvalid FROM pg_index "
    "WHERE indrelid = '{t}'::regclass ORDER BY 1"
)

CASES = [
    Case(
        "text to int with nullable false, check and unique",
        setup=BASE
        + "ALTER TABLE users ADD COLUMN code text;"
        + "UPDATE users SET code = id::text;"
        + "UPDATE users SET code = NULL WHERE id = 1;"
        + "UPDATE users SET code = 'n/a' WHERE id = 2;",
        expand="""
        - alter_column:
            table: users
            column: code
            type: int
            nullable: false
            check: {name: users_code_positive, expression: "code > 0"}
            unique: true
            up: "CASE WHEN code ~ '^[0-9]+$' THEN code::int ELSE 1000 + id END"
            down: "code::text"
        """,
        old=[
            # values neither the type nor the constraints take: up rewrites them
            "INSERT INTO users (name, code) VALUES ('old', 'bad')",
            "UPDATE users SET code = NULL WHERE id = 5",
            "SELECT code FROM users WHERE id = 5",
        ],
        new=[
            "INSERT INTO users (name, _migrator_new_code) VALUES ('new', 777)",
            "SELECT 1 / count(*) FROM users WHERE name = 'new' AND code = '777'",
            "SELECT 1 / (_migrator_new_code - 1004) FROM users WHERE id = 5",
        ],
        final=[
            (COLUMN_OF.format(t="users", c="code"), [("integer", True, None)]),
            (
                CONSTRAINTS_OF.format(t="users"),
                [
                    ("users_code_key", "u", True, "UNIQUE (code)"),
                    ("users_code_positive", "c", True, "CHECK ((code > 0))"),
                ],
            ),
            (
                INDEXES_OF.format(t="users"),
                [
                    (
                        "users_code_key",
                        "CREATE UNIQUE INDEX users_code_key ON public.users USING btree (code)",
                        True,
                    ),
                    (
                        "users_pkey",
                        "CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)",
                        True,
                    ),
                ],
            ),
            (
                "SELECT code FROM users WHERE id IN (1, 2, 3, 5) ORDER BY id",
                [(1001,), (1002,), (3,), (1005,)],
            ),
            ("SELECT code FROM users WHERE name = 'new'", [(777,)]),
            ("SELECT count(*) FROM users WHERE name = 'old' AND code <> 1000 + id", [(0,)]),
        ],
    ),
    Case(
        "text to bigint with references, default and its index",
        setup=BASE
        + "ALTER TABLE orders ADD COLUMN buyer text;"
        + "UPDATE orders SET buyer = user_id::text;"
        + "UPDATE orders SET buyer = '999' WHERE id IN (1, 2);"
        + "CREATE INDEX orders_buyer_idx ON orders (buyer);",
        expand="""
        - alter_column:
            table: orders
            column: buyer
            type: bigint
            default: 1
            references: {table: users, column: id, name: orders_buyer_fk, on_delete: set null}
            up: "CASE WHEN buyer::bigint BETWEEN 1 AND 50 THEN buyer::bigint END"
        """,
        old=[
            # a buyer no user has: up makes it NULL in the shadow
            "INSERT INTO orders (user_id, buyer) VALUES (1, '777')",
            "UPDATE orders SET buyer = '888' WHERE id = 3",
            "SELECT buyer FROM orders WHERE id = 3",
        ],
        new=[
            "INSERT INTO orders (user_id, _migrator_new_buyer) VALUES (2, 5)",
            "SELECT 1 / count(*) FROM orders WHERE _migrator_new_buyer = 5 AND buyer = '5'",
        ],
        final=[
            (COLUMN_OF.format(t="orders", c="buyer"), [("bigint", False, "1")]),
            (
                CONSTRAINTS_OF.format(t="orders"),
                [
                    (
                        "orders_buyer_fk",
                        "f",
                        True,
                        "FOREIGN KEY (buyer) REFERENCES users(id) ON DELETE SET NULL",
                    )
                ],
            ),
            (
                INDEXES_OF.format(t="orders"),
                [
                    (
                        "orders_buyer_idx",
                        "CREATE INDEX orders_buyer_idx ON public.orders USING btree (buyer)",
                        True,
                    ),
                    (
                        "orders_pkey",
                        "CREATE UNIQUE INDEX orders_pkey ON public.orders USING btree (id)",
                        True,
                    ),
                ],
            ),
            ("SELECT count(*) FROM orders WHERE buyer > 50", [(0,)]),
            (
                "SELECT buyer FROM orders WHERE id IN (1, 3, 4) ORDER BY id",
                [(None,), (None,), (5,)],
            ),
            ("INSERT INTO orders (user_id) VALUES (1) RETURNING buyer", [(1,)]),
        ],
    ),
    # A change that alone rewrites nothing (varchar(20) to text) but comes with `up` for
    # a new check: the values are rewritten through the shadow, not retyped in place.
    Case(
        "varchar to text with a check and up",
        setup=BASE
        + "ALTER TABLE users ALTER COLUMN legacy TYPE varchar(20);"
        + "UPDATE users SET legacy = 'much-too-long' WHERE id = 4;",
        expand="""
        - alter_column:
            table: users
            column: legacy
            type: text
            check: "length(legacy) <= 4"
            up: "left(legacy, 4)"
        """,
        old=["INSERT INTO users (name, legacy) VALUES ('old', 'longer-still')"],
        new=["INSERT INTO users (name, _migrator_new_legacy) VALUES ('new', 'ok')"],
        final=[
            (COLUMN_OF.format(t="users", c="legacy"), [("text", False, None)]),
            (
                CONSTRAINTS_OF.format(t="users"),
                [("users_legacy_check", "c", True, "CHECK ((length(legacy) <= 4))")],
            ),
            (
                "SELECT legacy FROM users WHERE id = 4 OR name = 'old'",
                [("much",), ("long",), ("long",)],
            ),
        ],
    ),
]

# What the swap keeps besides the data: a role granted columns only (GRANT SELECT (col))
# and USAGE on an identity's sequence, the comments on the sequence and on the columns.
# The roles are the cluster's, made once per server.
ROLES = """
DO $$ BEGIN CREATE ROLE mc_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE mc_writer; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
"""
GRANTED = """
CREATE TABLE tokens (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, code text);
INSERT INTO tokens (code) SELECT g::text FROM generate_series(1, 30) g;
COMMENT ON SEQUENCE tokens_id_seq IS 'token ids';
COMMENT ON COLUMN tokens.id IS 'the key';
COMMENT ON COLUMN tokens.code IS 'a code';
GRANT SELECT (id, code), UPDATE (code) ON tokens TO mc_reader;
GRANT SELECT (code) ON tokens TO mc_writer WITH GRANT OPTION;
GRANT USAGE ON SEQUENCE tokens_id_seq TO mc_writer;
GRANT SELECT ON SEQUENCE tokens_id_seq TO PUBLIC;
"""
PRIVILEGES_OF = (
    "SELECT * FROM (SELECT a.attname::text AS what, x.privilege_type AS privilege, "
    "coalesce(pg_get_userbyid(nullif(x.grantee, 0)), 'PUBLIC') AS grantee, x.is_grantable "
    "FROM pg_attribute a CROSS JOIN LATERAL aclexplode(a.attacl) x "
    "WHERE a.attrelid = 'tokens'::regclass AND NOT a.attisdropped UNION ALL "
    "SELECT 'sequence', x.privilege_type, coalesce(pg_get_userbyid(nullif(x.grantee, 0)), "
    "'PUBLIC'), x.is_grantable FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) x "
    "WHERE c.oid = pg_get_serial_sequence('tokens', 'id')::regclass "
    "AND x.grantee <> c.relowner) AS p "
    'ORDER BY what COLLATE "C", privilege COLLATE "C", grantee COLLATE "C"'
)
PRIVILEGES = [
    ("code", "SELECT", "mc_reader", False),
    ("code", "SELECT", "mc_writer", True),
    ("code", "UPDATE", "mc_reader", False),
    ("id", "SELECT", "mc_reader", False),
    ("sequence", "SELECT", "PUBLIC", False),
    ("sequence", "USAGE", "mc_writer", False),
]

CASES.append(
    Case(
        "identity and plain retypes keep grants and comments",
        setup=BASE + ROLES + GRANTED,
        expand="""
        - alter_column: {table: tokens, column: id, type: bigint}
        - alter_column: {table: tokens, column: code, type: int, check: "code > 0"}
        """,
        old=["INSERT INTO tokens (code) VALUES ('31')"],
        new=[
            "INSERT INTO tokens (_migrator_new_code) VALUES (32)",
            # the column grants reach the shadow: the new version may read it as mc_reader
            "SELECT 1 / count(*) FROM information_schema.column_privileges "
            "WHERE grantee = 'mc_reader' AND column_name = '_migrator_new_code'",
        ],
        final=[
            (COLUMN_OF.format(t="tokens", c="id"), [("bigint", True, None)]),
            (COLUMN_OF.format(t="tokens", c="code"), [("integer", False, None)]),
            (PRIVILEGES_OF, PRIVILEGES),
            (
                "SELECT obj_description(pg_get_serial_sequence('tokens', 'id')::regclass, "
                "'pg_class'), (SELECT array_agg(col_description(attrelid, attnum) "
                "ORDER BY attname) FROM pg_attribute WHERE attrelid = 'tokens'::regclass "
                "AND attnum > 0 AND NOT attisdropped)",
                [("token ids", ["a code", "the key"])],
            ),
        ],
    )
)


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


# -- what PostgreSQL cannot do: exit 2, one line at file:line:column, nothing changed -------

REFUSALS = [
    (
        "unique on a type without a btree operator class",
        "- alter_column: {table: users, column: legacy, type: json, unique: true,"
        " up: 'to_json(legacy)'}",
        "unique on legacy as json cannot be built: data type json has no default operator "
        'class for access method "btree"',
    ),
    (
        "references between key types without an equality",
        "- alter_column: {table: orders, column: user_id, type: text,"
        " references: {table: users, column: id}}",
        "references users.id cannot be built on user_id as text: PostgreSQL has no equality "
        "operator between text and bigint for a foreign key",
    ),
    (
        "a check that does not work on the new type",
        "- alter_column: {table: users, column: code, type: int, check: 'length(code) < 5'}",
        "check 'length(code) < 5' does not work on code as int: function length(integer) "
        "does not exist",
    ),
    (
        "a default on an identity column",
        "- alter_column: {table: tokens, column: id, type: bigint, default: 5}",
        "id is an identity column; PostgreSQL gives it no default",
    ),
    (
        "unique whose cast leaves duplicates",
        "- alter_column: {table: users, column: code, type: int, unique: true}",
        "gives 1 value more than once, which unique would refuse: '7' in 2 rows",
    ),
]


@pytest.mark.parametrize(
    ("expand", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals(fresh_db: str, tmp_path: Path, expand: str, message: str) -> None:
    q(
        fresh_db,
        BASE
        + "ALTER TABLE users ADD COLUMN code text; UPDATE users SET code = id::text;"
        + "UPDATE users SET code = '07' WHERE id = 1;"
        + "CREATE TABLE tokens (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);",
    )
    before = schema_dump(fresh_db)
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text(expand))
    with pytest.raises(MigratorError) as err:
        commands.expand(load_plan(path), opts(fresh_db))
    text = str(err.value)
    assert text.startswith(f"{path}:"), text  # file:line:column of the operation
    assert message in text, text
    assert "\n" not in text
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert schema_dump(fresh_db) == before
    assert release_rows(fresh_db) == []


def test_a_role_inserts_through_the_identity_swap(db: str) -> None:
    """mc_app, granted USAGE on the identity's sequence and some columns only, inserts
    and reads lastval() (which needs the sequence's USAGE) and the retyped column (which
    needs its column grant) without pause while the contract swaps tokens.id to bigint
    and tokens.code to int: every statement succeeds, before, during and after the swap."""
    q(
        db,
        ROLES
        + "DO $$ BEGIN CREATE ROLE mc_app LOGIN; "
        + "EXCEPTION WHEN duplicate_object THEN NULL; END $$;"
        + GRANTED
        + "GRANT USAGE ON SCHEMA public TO mc_app;"
        + "GRANT INSERT (code), SELECT (id, code) ON tokens TO mc_app;"
        + "GRANT USAGE ON SEQUENCE tokens_id_seq TO mc_app;",
    )
    plan = parse_plan(
        plan_text(
            "- alter_column: {table: tokens, column: id, type: bigint}\n"
            "- alter_column: {table: tokens, column: code, type: int}",
            lock_timeout="5s",
        )
    )
    commands.expand(plan, opts(db))
    commands.backfill(plan, opts(db))
    commands.complete(plan, opts(db))
    info = psycopg.conninfo.conninfo_to_dict(db)
    info["user"] = "mc_app"
    info.pop("password", None)
    app = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]

    ids: list[int] = []
    errors: list[BaseException] = []
    started, swapped, after_swap, stop = (threading.Event() for _ in range(4))

    def writer() -> None:
        after = 0
        try:
            with psycopg.connect(app, autocommit=True, prepare_threshold=None) as conn:
                conn.execute("SET lock_timeout = '20s'")
                while not stop.is_set():
                    n = 100 + len(ids)
                    row = conn.execute(
                        "INSERT INTO tokens (code) VALUES (%s) RETURNING id, lastval()", (str(n),)
                    ).fetchone()
                    assert row is not None and row[0] == row[1]
                    ids.append(int(row[0]))
                    got = conn.execute("SELECT code::text FROM tokens WHERE id = %s", (row[0],))
                    assert got.fetchone() == (str(n),)
                    if len(ids) >= 20:
                        started.set()
                    if swapped.is_set():
                        after += 1
                        if after >= 20:
                            after_swap.set()
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)
            started.set()
            after_swap.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert started.wait(60)
        commands.contract(opts(db))
        swapped.set()
        assert after_swap.wait(60)
    finally:
        stop.set()
        thread.join(60)
    assert errors == []
    assert ids == sorted(set(ids)) and ids[0] == 31  # 30 seeded
    assert q(db, COLUMN_OF.format(t="tokens", c="id")) == [("bigint", True, None)]
    kept = q(db, PRIVILEGES_OF)
    assert ("sequence", "USAGE", "mc_writer", False) in kept
    assert ("sequence", "USAGE", "mc_app", False) in kept
