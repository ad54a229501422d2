"""The lint: every rule caught in its unsafe form and quiet in its safe form, verdicts by
server version, suppression, no false alarms on new tables, positions, and the rules
that need a real database (INVALID indexes, duplicates, row counts) on real PostgreSQL.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection
from typer.testing import CliRunner

from migrator.cli import app
from migrator.db.connection import connect, make_engine
from migrator.engine.catalog import Catalog
from migrator.errors import PlanError, UsageError
from migrator.lint import RULES, Finding, lint_plan, lint_sql, render_markdown
from migrator.lint.sources import lint_plan_report
from migrator.plan.loader import parse_plan
from tests.support.servers import Server

ROOT = Path(__file__).resolve().parent.parent


def rules_of(findings: list[Finding]) -> set[str]:
    return {f.rule for f in findings}


# -- every rule: an unsafe form that triggers it, a safe form that does not ------------------
#
# (rule, server major version, unsafe SQL, safe SQL). Raw SQL runs as psql runs it:
# statements outside BEGIN/COMMIT run alone.

CASES: list[tuple[str, int, str, str]] = [
    ("M001", 18, "CREATE INDEX i ON t (a)", "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)"),
    ("M002", 18, "DROP INDEX i", "DROP INDEX CONCURRENTLY IF EXISTS i"),
    (
        "M003",
        18,
        "BEGIN; CREATE INDEX CONCURRENTLY i ON t (a); COMMIT;",
        "DROP INDEX CONCURRENTLY IF EXISTS i; CREATE INDEX CONCURRENTLY i ON t (a);",
    ),
    (
        "M003",
        18,
        "BEGIN; DROP INDEX CONCURRENTLY IF EXISTS i; COMMIT;",
        "DROP INDEX CONCURRENTLY IF EXISTS i",
    ),
    ("M003", 18, "BEGIN; VACUUM t; COMMIT;", "VACUUM t"),
    (
        "M004",
        18,
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (a)",
        "DROP INDEX CONCURRENTLY IF EXISTS i; CREATE INDEX CONCURRENTLY i ON t (a)",
    ),
    (
        "M005",
        18,
        "ALTER TABLE o ADD CONSTRAINT o_u_fk FOREIGN KEY (u) REFERENCES users (id)",
        "ALTER TABLE o ADD CONSTRAINT o_u_fk FOREIGN KEY (u) REFERENCES users (id) NOT VALID",
    ),
    (
        "M005",
        18,
        "ALTER TABLE o ADD COLUMN u int REFERENCES users (id)",
        "ALTER TABLE o ADD COLUMN u int",
    ),
    (
        "M006",
        18,
        "ALTER TABLE o ADD CONSTRAINT pos CHECK (amount > 0)",
        "ALTER TABLE o ADD CONSTRAINT pos CHECK (amount > 0) NOT VALID",
    ),
    (
        "M007",
        18,
        "BEGIN; ALTER TABLE o ADD CONSTRAINT pos CHECK (amount > 0) NOT VALID; "
        "ALTER TABLE o VALIDATE CONSTRAINT pos; COMMIT;",
        "BEGIN; ALTER TABLE o ADD CONSTRAINT pos CHECK (amount > 0) NOT VALID; COMMIT; "
        "BEGIN; ALTER TABLE o VALIDATE CONSTRAINT pos; COMMIT;",
    ),
    (
        "M008",
        18,
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email)",
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key",
    ),
    (
        "M009",
        18,
        "ALTER TABLE users ADD PRIMARY KEY (id)",
        "ALTER TABLE users ADD CONSTRAINT users_pkey PRIMARY KEY USING INDEX users_pkey",
    ),
    (
        "M011",
        18,
        "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT now()",
    ),
    (
        "M012",
        18,
        "ALTER TABLE users ADD COLUMN n int NOT NULL",
        "ALTER TABLE users ADD COLUMN n int NOT NULL DEFAULT 0",
    ),
    (
        "M013",
        18,
        "ALTER TABLE users ADD COLUMN n bigserial",
        "ALTER TABLE users ADD COLUMN n bigint",
    ),
    (
        "M013",
        18,
        "ALTER TABLE users ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY",
        "CREATE TABLE fresh (n bigint GENERATED ALWAYS AS IDENTITY)",
    ),
    (
        "M013",
        18,
        "ALTER TABLE users ADD COLUMN n2 int GENERATED ALWAYS AS (n * 2) STORED",
        "ALTER TABLE users ADD COLUMN n2 int GENERATED ALWAYS AS (n * 2) VIRTUAL",
    ),
    (
        "M014",
        18,
        "ALTER TABLE users ALTER COLUMN phone SET NOT NULL",
        "BEGIN; ALTER TABLE users ADD CONSTRAINT nn CHECK (phone IS NOT NULL) NOT VALID; COMMIT; "
        "BEGIN; ALTER TABLE users VALIDATE CONSTRAINT nn; COMMIT; "
        "BEGIN; ALTER TABLE users ALTER COLUMN phone SET NOT NULL; "
        "ALTER TABLE users DROP CONSTRAINT nn; COMMIT;",
    ),
    (
        "M015",
        18,
        "ALTER TABLE users ALTER COLUMN email DROP NOT NULL",
        "ALTER TABLE users ADD COLUMN nick text; ALTER TABLE users ALTER COLUMN nick DROP NOT NULL",
    ),
    (
        "M016",
        18,
        "ALTER TABLE users ALTER COLUMN id TYPE bigint",
        "ALTER TABLE users ADD COLUMN code varchar(20); "
        "ALTER TABLE users ALTER COLUMN code TYPE varchar(40)",
    ),
    (
        "M017",
        18,
        "ALTER TABLE users ADD COLUMN code varchar(20)",
        "ALTER TABLE users ADD COLUMN code text",
    ),
    (
        "M017",
        18,
        "CREATE TABLE codes (c char(2))",
        "CREATE TABLE codes (c text CHECK (length(c) = 2))",
    ),
    (
        "M018",
        18,
        "ALTER DOMAIN price ADD CONSTRAINT pos CHECK (VALUE > 0)",
        "CREATE DOMAIN price AS numeric",
    ),
    (
        "M018",
        18,
        "ALTER DOMAIN price ADD CONSTRAINT pos CHECK (VALUE > 0)",
        "ALTER DOMAIN price ADD CONSTRAINT pos CHECK (VALUE > 0) NOT VALID",
    ),
    (
        "M018",
        18,
        "CREATE DOMAIN price AS numeric CHECK (VALUE > 0)",
        "CREATE DOMAIN price AS numeric",
    ),
    (
        "M019",
        18,
        "ALTER TABLE users RENAME COLUMN email TO contact_email",
        "BEGIN; ALTER TABLE users DROP COLUMN contact_email; "
        "ALTER TABLE users RENAME COLUMN email TO contact_email; COMMIT;",
    ),
    (
        "M020",
        18,
        "ALTER TABLE orders RENAME TO purchases",
        "BEGIN; ALTER TABLE orders RENAME TO purchases; "
        "CREATE VIEW orders AS SELECT * FROM purchases; COMMIT;",
    ),
    (
        "M021",
        18,
        "ALTER TABLE users DROP COLUMN legacy",
        "ALTER TABLE users ADD COLUMN tmp int; ALTER TABLE users DROP COLUMN tmp",
    ),
    ("M022", 18, "DROP TABLE orders", "CREATE TABLE scratch (a int); DROP TABLE scratch"),
    ("M023", 18, "TRUNCATE orders", "DELETE FROM orders WHERE id BETWEEN 1 AND 1000"),
    ("M023", 18, "UPDATE users SET flag = true", "UPDATE users SET flag = true WHERE id < 1000"),
    ("M023", 18, "DELETE FROM sessions", "DELETE FROM sessions WHERE expires < now()"),
    (
        "M023",
        18,
        "WITH gone AS (DELETE FROM sessions RETURNING id) SELECT count(*) FROM gone",
        "WITH gone AS (DELETE FROM sessions WHERE id < 100 RETURNING id) SELECT count(*) FROM gone",
    ),
    (
        "M024",
        11,
        "BEGIN; ALTER TYPE mood ADD VALUE 'calm'; COMMIT;",
        "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'calm'",
    ),
    (
        "M024",
        18,
        "ALTER TYPE mood RENAME VALUE 'sad' TO 'blue'",
        "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'calm'",
    ),
    (
        "M024",
        18,
        "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'calm' BEFORE 'happy'",
        "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'calm'",
    ),
    (
        "M025",
        18,
        "ALTER TABLE rooms ADD CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&)",
        "CREATE TABLE rooms2 (during tstzrange, EXCLUDE USING gist (during WITH &&))",
    ),
    (
        "M026",
        18,
        "ALTER TABLE users ADD COLUMN prefs json",
        "ALTER TABLE users ADD COLUMN prefs jsonb",
    ),
    (
        "M027",
        18,
        "ALTER TABLE events DETACH PARTITION events_2020",
        "ALTER TABLE events DETACH PARTITION events_2020 CONCURRENTLY",
    ),
    (
        "M027",
        18,
        "ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES FROM (1) TO (10)",
        "BEGIN; ALTER TABLE events_2027 ADD CONSTRAINT b CHECK (k >= 1 AND k < 10) NOT VALID; "
        "COMMIT; BEGIN; ALTER TABLE events_2027 VALIDATE CONSTRAINT b; COMMIT; "
        "ALTER TABLE events ATTACH PARTITION events_2027 FOR VALUES FROM (1) TO (10)",
    ),
    ("M028", 18, "REINDEX TABLE users", "REINDEX (CONCURRENTLY) TABLE users"),
    ("M028", 18, "VACUUM FULL users", "VACUUM (ANALYZE) users"),
    ("M028", 18, "CLUSTER users USING users_pkey", "ANALYZE users"),
    ("M028", 18, "REFRESH MATERIALIZED VIEW stats", "REFRESH MATERIALIZED VIEW CONCURRENTLY stats"),
    (
        "M029",
        18,
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS a int",
        "SET lock_timeout = '1s'; ALTER TABLE users ADD COLUMN IF NOT EXISTS a int",
    ),
    ("M030", 18, "CREATE TABLE fresh (a int)", "CREATE TABLE IF NOT EXISTS fresh (a int)"),
    (
        "M030",
        18,
        "ALTER TYPE mood ADD VALUE 'calm'",
        "ALTER TYPE mood ADD VALUE IF NOT EXISTS 'calm'",
    ),
    (
        "M031",
        18,
        "BEGIN; BEGIN; ALTER TABLE users ADD COLUMN a int; COMMIT;",
        "BEGIN; ALTER TABLE users ADD COLUMN a int; COMMIT;",
    ),
    (
        "M031",
        18,
        "BEGIN; ALTER TABLE users ADD COLUMN a int;",
        "BEGIN; ALTER TABLE users ADD COLUMN a int; COMMIT;",
    ),
    (
        "M032",
        18,
        "BEGIN; ALTER TABLE users ADD COLUMN a int; ALTER TABLE orders ADD COLUMN b int; COMMIT;",
        "BEGIN; ALTER TABLE users ADD COLUMN a int; COMMIT; "
        "BEGIN; ALTER TABLE orders ADD COLUMN b int; COMMIT;",
    ),
    (
        "M032",
        18,
        "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; LOCK TABLE orders; COMMIT;",
        "BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE; LOCK TABLE orders IN SHARE MODE; COMMIT;",
    ),
    (
        "M032",
        18,
        "BEGIN; ALTER TABLE users ADD COLUMN a int; UPDATE users SET a = 1 WHERE id < 100; COMMIT;",
        "BEGIN; ALTER TABLE users ADD COLUMN a int; COMMIT; "
        "BEGIN; UPDATE users SET a = 1 WHERE id < 100; COMMIT;",
    ),
    # Options written with a boolean value are read by their value.
    ("M028", 18, "REINDEX (CONCURRENTLY false) INDEX i", "REINDEX (CONCURRENTLY) INDEX i"),
    ("M028", 18, "REINDEX (CONCURRENTLY off) TABLE t", "REINDEX (CONCURRENTLY on) TABLE t"),
    ("M028", 18, "VACUUM (FULL true) t", "VACUUM (FULL false) t"),
    ("M028", 18, "VACUUM (FULL 1) t", "VACUUM (FULL 0, ANALYZE) t"),
    (
        "M003",
        18,
        "BEGIN; REINDEX (CONCURRENTLY true) INDEX i; COMMIT;",
        "REINDEX (CONCURRENTLY) INDEX i",
    ),
    # Rerunnability of what runs outside a transaction.
    ("M030", 18, "ALTER TABLE t DROP COLUMN c", "ALTER TABLE t DROP COLUMN IF EXISTS c"),
    ("M030", 18, "ALTER TABLE t DROP CONSTRAINT c", "ALTER TABLE t DROP CONSTRAINT IF EXISTS c"),
    (
        "M030",
        18,
        "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID",
        "ALTER TABLE t DROP CONSTRAINT IF EXISTS c, ADD CONSTRAINT c CHECK (a > 0) NOT VALID",
    ),
    (
        "M030",
        18,
        "ALTER TABLE t ADD CONSTRAINT t_fk FOREIGN KEY (a) REFERENCES u NOT VALID",
        "ALTER TABLE t DROP CONSTRAINT IF EXISTS t_fk; "
        "ALTER TABLE t ADD CONSTRAINT t_fk FOREIGN KEY (a) REFERENCES u NOT VALID",
    ),
    (
        "M030",
        18,
        "CREATE TEMP TABLE scratch (a int)",
        "CREATE TEMP TABLE scratch (a int) ON COMMIT DROP",
    ),
    # A generated or identity column is computed: NOT NULL needs no DEFAULT.
    (
        "M012",
        18,
        "ALTER TABLE t ADD COLUMN c int NOT NULL",
        "ALTER TABLE t ADD COLUMN c int NOT NULL GENERATED ALWAYS AS (a * 2) STORED",
    ),
    (
        "M012",
        18,
        "ALTER TABLE t ADD COLUMN c bigint NOT NULL",
        "ALTER TABLE t ADD COLUMN c bigint NOT NULL GENERATED ALWAYS AS IDENTITY",
    ),
    # Rules added after LINT-RULES.md's 32.
    (
        "M033",
        18,
        f"ALTER TABLE t ADD COLUMN {'c' * 64} text",
        f"ALTER TABLE t ADD COLUMN {'c' * 63} text",
    ),
    (
        "M033",
        18,
        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{"é" * 32}" ON t (a)',
        f'CREATE INDEX CONCURRENTLY IF NOT EXISTS "{"é" * 31}" ON t (a)',
    ),
    (
        "M034",
        18,
        "CREATE TABLE IF NOT EXISTS orders (id int PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY)",
    ),
    (
        "M034",
        18,
        "CREATE TABLE IF NOT EXISTS orders (id smallint, PRIMARY KEY (id))",
        "CREATE TABLE IF NOT EXISTS orders (id bigint, PRIMARY KEY (id))",
    ),
    (
        "M034",
        18,
        "BEGIN; CREATE TABLE users (id bigint PRIMARY KEY); "
        "ALTER TABLE orders ADD COLUMN user_id integer REFERENCES users; COMMIT;",
        "BEGIN; CREATE TABLE users (id bigint PRIMARY KEY); "
        "ALTER TABLE orders ADD COLUMN user_id bigint REFERENCES users; COMMIT;",
    ),
    (
        "M034",
        18,
        "BEGIN; CREATE TABLE users (id bigint PRIMARY KEY); CREATE TABLE orders (user_id int); "
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users; "
        "COMMIT;",
        "BEGIN; CREATE TABLE users (id bigint PRIMARY KEY); CREATE TABLE orders (user_id int); "
        "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
        "REFERENCES accounts; COMMIT;",
    ),
    (
        "M035",
        18,
        "CREATE TABLE IF NOT EXISTS orders (id bigserial PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS orders (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY)",
    ),
    (
        "M035",
        10,
        "BEGIN; CREATE TABLE orders (n serial8); COMMIT;",
        "BEGIN; CREATE TABLE orders (n int8 GENERATED ALWAYS AS IDENTITY); COMMIT;",
    ),
    (
        "M036",
        18,
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS seen_at timestamp",
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS seen_at timestamptz",
    ),
    (
        "M036",
        18,
        "CREATE TABLE IF NOT EXISTS e (at timestamp(3) without time zone)",
        "CREATE TABLE IF NOT EXISTS e (at timestamp(3) with time zone)",
    ),
    ("M037", 18, "DROP DATABASE IF EXISTS app", "ALTER DATABASE app SET lock_timeout = '1s'"),
    (
        "M038",
        18,
        "UPDATE t SET a = 1, b = 2, a = 3 WHERE id = 1",
        "UPDATE t SET a = 3, b = 2 WHERE id = 1",
    ),
    (
        "M038",
        18,
        "UPDATE t SET (a, b) = (1, 2), b = 3 WHERE id = 1",
        "UPDATE t SET d.x = 1, d.y = 2 WHERE id = 1",
    ),
    (
        "M038",
        18,
        "WITH moved AS (UPDATE t SET a = 1, a = 2 WHERE id = 1 RETURNING id) SELECT * FROM moved",
        "WITH moved AS (UPDATE t SET a = 1 WHERE id = 1 RETURNING id) SELECT * FROM moved",
    ),
    (
        "M039",
        18,
        "COMMENT ON COLUMN users.email IS 'login'",
        "CREATE TABLE IF NOT EXISTS notes (a int); COMMENT ON COLUMN notes.a IS 'x'",
    ),
    (
        "M039",
        18,
        "COMMENT ON TABLE users IS 'people'",
        "BEGIN; SET LOCAL lock_timeout = '1s'; ALTER TABLE users RENAME CONSTRAINT a TO b; "
        "COMMENT ON TABLE users IS 'people'; COMMIT;",
    ),
    (
        "M040",
        18,
        "BEGIN; LOCK TABLE users; COMMIT;",
        "BEGIN; LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE; COMMIT;",
    ),
    (
        "M040",
        18,
        "BEGIN; LOCK users IN SHARE MODE; COMMIT;",
        "BEGIN; CREATE TABLE n (a int); LOCK TABLE n; COMMIT;",
    ),
    # Exempt: the next statement takes that mode on that table anyway (a foreign key
    # takes SHARE ROW EXCLUSIVE on the table it references; dropping one it is known to
    # reference, ACCESS EXCLUSIVE).
    (
        "M040",
        18,
        "BEGIN; LOCK TABLE users; ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (u) "
        "REFERENCES users (id) NOT VALID; COMMIT;",
        "BEGIN; LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE; ALTER TABLE o ADD CONSTRAINT f "
        "FOREIGN KEY (u) REFERENCES users (id) NOT VALID; COMMIT;",
    ),
    (
        "M040",
        18,
        "BEGIN; LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE; UPDATE users SET a = 1 WHERE "
        "id = 1; ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES users (id) NOT "
        "VALID; COMMIT;",
        "BEGIN; LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE; LOCK TABLE o IN SHARE ROW "
        "EXCLUSIVE MODE; ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES users (id) "
        "NOT VALID; COMMIT;",
    ),
    (
        "M040",
        18,
        "BEGIN; LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE; COMMIT; BEGIN; ALTER TABLE o "
        "ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES users (id) NOT VALID; COMMIT;",
        "BEGIN; LOCK TABLE users; ALTER TABLE users ADD COLUMN n int; COMMIT;",
    ),
    (
        "M040",
        18,
        # Offline, which table a constraint of a live table references is unknown.
        "BEGIN; LOCK TABLE users; ALTER TABLE o DROP CONSTRAINT f; COMMIT;",
        "BEGIN; ALTER TABLE o ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES users (id) NOT "
        "VALID; COMMIT; BEGIN; LOCK TABLE users; ALTER TABLE o DROP CONSTRAINT f; COMMIT;",
    ),
    (
        "M040",
        18,
        # A key over the column the file added, renamed since (the swap's re-pointed
        # key takes its name back), goes with a DROP COLUMN; offline, a live one is unknown.
        "BEGIN; LOCK TABLE users; ALTER TABLE o DROP COLUMN u; COMMIT;",
        "BEGIN; ALTER TABLE o ADD CONSTRAINT f_new FOREIGN KEY (u) REFERENCES users (id) NOT "
        "VALID; COMMIT; BEGIN; ALTER TABLE o RENAME CONSTRAINT f_new TO f; COMMIT; "
        "BEGIN; LOCK TABLE users; ALTER TABLE o DROP COLUMN u; COMMIT;",
    ),
]

# Rules that need data from a live database, and the optional rules (off unless
# enabled): they have their own tests below.
LIVE_ONLY = {"M010"}
OPTIONAL = {"M041", "M042"}


def _id(case: tuple[str, int, str, str]) -> str:
    return f"{case[0]}-pg{case[1]}-{re.sub(r'[^a-z]+', '_', case[2].lower())[:40]}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_unsafe_form_is_caught(case: tuple[str, int, str, str]) -> None:
    rule, version, unsafe, _ = case
    findings = lint_sql(unsafe, version)
    assert rule in rules_of(findings), [f"{f.rule} {f.message}" for f in findings]
    caught = next(f for f in findings if f.rule == rule)
    assert caught.safe_form == RULES[rule].safe_form
    assert caught.sql and caught.line is not None


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_safe_form_is_quiet(case: tuple[str, int, str, str]) -> None:
    rule, version, _, safe = case
    findings = lint_sql(safe, version)
    assert rule not in rules_of(findings), [f"{f.rule} {f.message}" for f in findings]


def test_every_rule_has_a_case() -> None:
    assert set(RULES) == {f"M{n:03d}" for n in range(1, 43)}
    assert {c[0] for c in CASES} | LIVE_ONLY | OPTIONAL == set(RULES)
    assert {r.id for r in RULES.values() if r.optional} == OPTIONAL
    for r in RULES.values():
        assert r.reason and r.safe_form and r.catches and r.name


def test_docs_are_generated_from_the_registry() -> None:
    assert (ROOT / "docs" / "lint-rules.md").read_text(encoding="utf-8") == render_markdown()


# -- verdicts by server version ------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [(10, True), (11, False), (12, False), (18, False)],
)
def test_constant_default_rewrites_before_11(version: int, expected: bool) -> None:
    findings = lint_sql("ALTER TABLE users ADD COLUMN status text DEFAULT 'new'", version)
    assert ("M011" in rules_of(findings)) is expected


@pytest.mark.parametrize(
    ("version", "expected"), [(10, True), (11, True), (12, False), (15, False)]
)
def test_validated_check_lets_set_not_null_skip_the_scan_from_12(
    version: int, expected: bool
) -> None:
    findings = lint_sql(
        "BEGIN; ALTER TABLE users ADD CONSTRAINT nn CHECK (phone IS NOT NULL) NOT VALID; COMMIT;\n"
        "BEGIN; ALTER TABLE users VALIDATE CONSTRAINT nn; COMMIT;\n"
        "BEGIN; ALTER TABLE users ALTER COLUMN phone SET NOT NULL; COMMIT;\n",
        version,
    )
    assert ("M014" in rules_of(findings)) is expected


@pytest.mark.parametrize(
    ("version", "expected"), [(10, True), (11, True), (12, False), (18, False)]
)
def test_enum_add_value_in_a_transaction_before_12(version: int, expected: bool) -> None:
    findings = lint_sql("BEGIN; ALTER TYPE mood ADD VALUE IF NOT EXISTS 'calm'; COMMIT;", version)
    assert ("M024" in rules_of(findings)) is expected


def test_new_enum_value_used_in_the_same_transaction() -> None:
    text = (
        "BEGIN; ALTER TYPE mood ADD VALUE IF NOT EXISTS 'calm'; "
        "UPDATE people SET mood = 'calm' WHERE id = 1; COMMIT;"
    )
    (used,) = [f for f in lint_sql(text, 18) if f.rule == "M024"]
    assert "unsafe use of new value" in used.message and used.sql.startswith("UPDATE")
    split = text.replace("'calm'; UPDATE", "'calm'; COMMIT; BEGIN; UPDATE")
    assert "M024" not in rules_of(lint_sql(split, 18))


def test_the_not_null_check_must_be_on_the_same_column() -> None:
    findings = lint_sql(
        "BEGIN; ALTER TABLE users ADD CONSTRAINT nn CHECK (email IS NOT NULL) NOT VALID; COMMIT;\n"
        "BEGIN; ALTER TABLE users VALIDATE CONSTRAINT nn; COMMIT;\n"
        "BEGIN; ALTER TABLE users ALTER COLUMN phone SET NOT NULL; COMMIT;\n",
        15,
    )
    assert "M014" in rules_of(findings)


def test_volatility_of_an_unknown_function_is_a_warning_offline() -> None:
    findings = lint_sql("ALTER TABLE users ADD COLUMN code text DEFAULT make_code()", 18)
    (m011,) = [f for f in findings if f.rule == "M011"]
    assert m011.severity == "warning" and "make_code" in m011.message


def test_detach_concurrently_needs_14() -> None:
    (old,) = [f for f in lint_sql("ALTER TABLE e DETACH PARTITION e1", 13) if f.rule == "M027"]
    assert "PostgreSQL 14" in old.message


def test_features_missing_from_old_servers() -> None:
    reindex = lint_sql("REINDEX (CONCURRENTLY) INDEX users_pkey", 11)
    assert any(f.rule == "M028" and "needs PostgreSQL 12" in f.message for f in reindex)
    assert "M028" not in rules_of(lint_sql("REINDEX (CONCURRENTLY) INDEX users_pkey", 12))
    detach = lint_sql("ALTER TABLE e DETACH PARTITION e1 CONCURRENTLY", 13)
    assert any(f.rule == "M027" and "needs PostgreSQL 14" in f.message for f in detach)
    assert "M027" not in rules_of(lint_sql("ALTER TABLE e DETACH PARTITION e1 CONCURRENTLY", 14))


def test_concurrently_in_a_transaction_fails_even_on_a_new_table() -> None:
    text = "BEGIN; CREATE TABLE n (a int); CREATE INDEX CONCURRENTLY n_a ON n (a); COMMIT;"
    assert rules_of(lint_sql(text, 18)) == {"M003"}


# -- raw SQL: transactions and positions -------------------------------------------------------


def test_raw_sql_positions_point_at_each_statement() -> None:
    text = (
        "-- a migration written for psql\n"
        "SET lock_timeout = '2s';\n"
        "\n"
        "BEGIN;\n"
        "ALTER TABLE users\n"
        "    ADD COLUMN age int;\n"
        "  CREATE INDEX users_age ON users (age);\n"
        "COMMIT;\n"
    )
    findings = lint_sql(text, 18, file="m.sql")
    (m001,) = [f for f in findings if f.rule == "M001"]
    assert (m001.file, m001.line, m001.column) == ("m.sql", 7, 3)
    assert m001.sql == "CREATE INDEX users_age ON users (age)"
    # the index build under the ALTER's ACCESS EXCLUSIVE, in one transaction
    assert "M032" in rules_of(findings)
    assert "M029" not in rules_of(findings)


def test_assume_in_transaction() -> None:
    text = "CREATE INDEX CONCURRENTLY i ON t (a);"
    assert "M003" not in rules_of(lint_sql(text, 18))
    assert "M003" in rules_of(lint_sql(text, 18, assume_in_transaction=True))
    commit = lint_sql("ALTER TABLE t ADD COLUMN a int; COMMIT;", 18, assume_in_transaction=True)
    assert any(f.rule == "M031" and f.severity == "error" for f in commit)


def test_no_false_alarm_on_tables_created_in_the_same_file() -> None:
    text = """
    SET lock_timeout = '1s';
    BEGIN;
    CREATE TABLE audit (id bigint PRIMARY KEY, at timestamptz);
    CREATE INDEX audit_at ON audit (at);
    ALTER TABLE audit ADD COLUMN who text NOT NULL;
    ALTER TABLE audit ADD COLUMN n bigserial;
    ALTER TABLE audit ADD CONSTRAINT who_len CHECK (length(who) < 100);
    ALTER TABLE audit ALTER COLUMN who SET NOT NULL;
    ALTER TABLE audit ALTER COLUMN at TYPE timestamp;
    ALTER TABLE audit RENAME COLUMN who TO actor;
    UPDATE audit SET actor = 'x';
    COMMIT;
    """
    # No lock hazard; the type choices (a serial column, timestamp without time zone)
    # are judged on new tables too, since that is when they are made.
    assert [f.rule for f in lint_sql(text, 18)] == ["M035", "M036"]


PAGILA = ROOT / "tests" / "corpus" / "pagila-schema.sql"


def test_a_real_schema_written_by_others_raises_no_false_alarm() -> None:
    # pagila's pg_dump as one migration: everything it touches it created itself, so the
    # only finding is the CHECK on its `year` domain (a warning, and a true one).
    findings = lint_sql(PAGILA.read_text(encoding="utf-8"), 18, assume_in_transaction=True)
    # The type choices the later rules ask about (int keys, serial-style sequences,
    # timestamp without time zone) are true findings on pagila, not lock hazards.
    choices = {"M034", "M035", "M036"}
    assert [(f.rule, f.severity) for f in findings if f.rule not in choices] == [
        ("M018", "warning")
    ]
    assert {f.rule for f in findings} <= {"M018"} | choices and "M034" in rules_of(findings)
    # run by psql statement by statement, nothing can be rerun after a partial failure
    alone = lint_sql(PAGILA.read_text(encoding="utf-8"), 18)
    assert {f.rule for f in alone} - choices == {"M018", "M030"}


def test_sql_that_does_not_parse_names_file_line_column() -> None:
    with pytest.raises(PlanError) as info:
        lint_sql("SELECT 1;\nALTER TABLEX users ADD a int;", 18, file="bad.sql")
    assert info.value.location == "bad.sql:2:7"


# -- plans ---------------------------------------------------------------------------------


def plan_text(expand: str, contract: str = "", database: str = "") -> str:
    return (
        "release: r1\n"
        + (f"database:\n{database}" if database else "")
        + f"expand:\n{expand}"
        + (f"contract:\n{contract}" if contract else "")
    )


ADD_PHONE = """\
  - add_column:
      table: users
      column: {name: phone, type: text}
      up: "coalesce(legacy_phone, '')"
      final: {nullable: false}
"""


@pytest.mark.parametrize(("version", "expected"), [(11, {"M014"}), (12, set()), (18, set())])
def test_add_column_plan_by_version(version: int, expected: set[str]) -> None:
    plan = parse_plan(plan_text(ADD_PHONE), "plan.yaml")
    findings = lint_plan(plan, version)
    assert rules_of(findings) == expected
    for f in findings:
        assert f.operation == "expand[0].add_column"
        assert (f.file, f.line, f.column) == ("plan.yaml", 3, 5)
        assert f.message.startswith("contract step ")


@pytest.mark.parametrize(("version", "expected"), [(10, {"M011"}), (11, set())])
def test_add_column_constant_default_by_version(version: int, expected: set[str]) -> None:
    plan = parse_plan(
        plan_text(
            "  - add_column:\n      table: users\n"
            "      column: {name: status, type: text, default: \"'new'\"}\n"
        ),
        "plan.yaml",
    )
    assert rules_of(lint_plan(plan, version)) == expected


def test_sql_operation_positions_inside_a_block_scalar() -> None:
    text = plan_text(
        "  - sql:\n"
        "      expand: |\n"
        "        ALTER TABLE users ADD COLUMN nick text;\n"
        "        CREATE INDEX users_nick ON users (nick);\n"
        "      rollback: ALTER TABLE users DROP COLUMN IF EXISTS nick\n"
        "  - sql: {expand: \"UPDATE users SET nick = name\", rollback: ''}\n"
    )
    findings = lint_plan(parse_plan(text, "p.yaml"), 18)
    by_rule = {f.rule: f for f in findings}
    assert (by_rule["M001"].line, by_rule["M001"].column) == (6, 9)
    assert by_rule["M001"].operation == "expand[0].sql"
    assert (by_rule["M023"].line, by_rule["M023"].column) == (8, 20)
    assert by_rule["M023"].operation == "expand[1].sql"
    # the rollback drops the column the expand added: no M021
    assert "M021" not in by_rule


def test_plan_sql_that_does_not_parse_points_into_the_text() -> None:
    text = plan_text(
        "  - sql:\n"
        "      expand: |\n"
        "        SELECT 1;\n"
        "        ALTER TABLEX users ADD a int;\n"
        "      rollback: ''\n"
    )
    with pytest.raises(PlanError) as info:
        lint_plan(parse_plan(text, "p.yaml"), 18)
    assert info.value.location == "p.yaml:6:15"


def test_transaction_control_in_plan_sql() -> None:
    text = plan_text(
        "  - sql:\n"
        "      expand: |\n"
        "        BEGIN;\n"
        "        ALTER TABLE users ADD COLUMN nick text;\n"
        "        COMMIT;\n"
        "      rollback: ''\n"
    )
    findings = [f for f in lint_plan(parse_plan(text, "p.yaml"), 18) if f.rule == "M031"]
    assert [(f.sql, f.line) for f in findings] == [("BEGIN", 5), ("COMMIT", 7)]


def test_lock_timeout_off_in_plan() -> None:
    off = parse_plan(plan_text(ADD_PHONE, database="  lock_timeout: 0\n"), "p.yaml")
    assert "M029" in rules_of(lint_plan(off, 18))
    reset = plan_text("  - sql: {expand: 'SET LOCAL lock_timeout = 0', rollback: ''}\n")
    assert "M029" in rules_of(lint_plan(parse_plan(reset, "p.yaml"), 18))
    assert "M029" not in rules_of(lint_plan(parse_plan(plan_text(ADD_PHONE), "p.yaml"), 18))


def test_no_false_alarm_on_tables_created_earlier_in_the_plan() -> None:
    text = plan_text(
        "  - create_table:\n"
        "      table: invoices\n"
        "      columns: [{name: id, type: bigint}, {name: total, type: numeric}]\n"
        "      primary_key: [id]\n"
        "  - sql:\n"
        "      expand: |\n"
        "        CREATE INDEX invoices_total ON invoices (total);\n"
        "        ALTER TABLE invoices ADD COLUMN paid boolean NOT NULL;\n"
        "        ALTER TABLE invoices ADD CONSTRAINT total_pos CHECK (total >= 0);\n"
        "        ALTER TABLE invoices ALTER COLUMN total SET NOT NULL;\n"
        "        UPDATE invoices SET paid = false;\n"
        "      rollback: DROP TABLE IF EXISTS invoices\n"
    )
    report = lint_plan_report(parse_plan(text, "p.yaml"), 18)
    assert report.findings == [] and report.unlinted == []
    # The same statements on a table the plan did not create are all caught.
    live = text.replace("invoices", "bills").replace("- create_table:", "- sql_was:")
    live = live.split("  - sql_was:")[0] + "  - sql:" + live.split("  - sql:", 1)[1]
    caught = rules_of(lint_plan(parse_plan(live, "p.yaml"), 18))
    assert {"M001", "M012", "M006", "M014", "M023"} <= caught


def test_drop_in_contract_is_fine_in_expand_it_is_not() -> None:
    contract = plan_text(
        "  - sql: {expand: 'SELECT 1', rollback: ''}\n",
        contract="  - sql: {contract: 'ALTER TABLE users DROP COLUMN legacy'}\n"
        "  - sql: {contract: 'DROP TABLE old'}\n",
    )
    assert rules_of(lint_plan(parse_plan(contract, "p.yaml"), 18)) == set()
    # both in one transaction: ACCESS EXCLUSIVE on two tables at once
    together = contract.replace(
        "'ALTER TABLE users DROP COLUMN legacy'}\n  - sql: {contract: 'DROP TABLE old'}",
        "'ALTER TABLE users DROP COLUMN legacy; DROP TABLE old'}",
    )
    assert rules_of(lint_plan(parse_plan(together, "p.yaml"), 18)) == {"M032"}
    expand = plan_text("  - sql: {expand: 'ALTER TABLE users DROP COLUMN legacy', rollback: ''}\n")
    (m021,) = lint_plan(parse_plan(expand, "p.yaml"), 18)
    assert m021.rule == "M021" and m021.severity == "error"


# -- suppression -------------------------------------------------------------------------------

SUPPRESSED = """\
  - sql:
      expand: "UPDATE settings SET theme = 'dark'"
      rollback: ''
      lint:
        ignore:
          M023: {reason}
"""


def test_suppression_with_a_reason() -> None:
    text = plan_text(SUPPRESSED.format(reason='"settings holds 40 rows"'))
    plan = parse_plan(text, "p.yaml")
    assert lint_plan(plan, 18) == []
    (waived,) = lint_plan(plan, 18, include_suppressed=True)
    assert waived.rule == "M023" and waived.suppressed == "settings holds 40 rows"


@pytest.mark.parametrize("reason", ["", '""', '"   "', "42"])
def test_suppression_without_a_reason_is_a_plan_error(reason: str) -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(plan_text(SUPPRESSED.format(reason=reason)), "p.yaml")
    assert info.value.location is not None and info.value.location.startswith("p.yaml:8:")
    assert "written reason" in str(info.value)


def test_suppression_of_an_unknown_rule_is_a_plan_error() -> None:
    text = plan_text(SUPPRESSED.replace("M023", "M099").format(reason='"why"'))
    with pytest.raises(PlanError) as info:
        lint_plan(parse_plan(text, "p.yaml"), 18)
    assert info.value.location == "p.yaml:8:11"


def test_suppression_only_covers_its_own_operation() -> None:
    text = plan_text(
        SUPPRESSED.format(reason='"tiny"')
        + "  - sql: {expand: \"UPDATE settings SET theme = 'x'\", rollback: ''}\n"
    )
    (left,) = lint_plan(parse_plan(text, "p.yaml"), 18)
    assert left.rule == "M023" and left.operation == "expand[1].sql"


def test_suppression_comment_in_a_sql_file() -> None:
    text = (
        "SET lock_timeout = '1s';\n"
        "-- migrator-lint: ignore M023 settings holds one row per tenant\n"
        "UPDATE settings SET theme = 'dark';\n"
        "UPDATE settings SET font = 'serif';\n"
    )
    (left,) = lint_sql(text, 18)
    assert left.rule == "M023" and left.line == 4
    waived = [f for f in lint_sql(text, 18, include_suppressed=True) if f.suppressed]
    assert [(f.line, f.suppressed) for f in waived] == [(3, "settings holds one row per tenant")]


@pytest.mark.parametrize(
    ("comment", "problem"),
    [
        ("-- migrator-lint: ignore M023", "written reason"),
        ("-- migrator-lint: ignore M777 x", "M777"),
    ],
)
def test_suppression_comment_needs_a_reason_and_a_rule(comment: str, problem: str) -> None:
    with pytest.raises(PlanError) as info:
        lint_sql(f"SELECT 1;\n  {comment}\nTRUNCATE t;", 18, file="m.sql")
    assert info.value.location == "m.sql:2:3" and problem in str(info.value)


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_cli_exit_codes_and_json(tmp_path: Path, runner: CliRunner) -> None:
    clean = tmp_path / "clean.yaml"
    clean.write_text(plan_text(ADD_PHONE))
    result = runner.invoke(app, ["lint", str(clean)])
    assert result.exit_code == 0, result.output

    dirty = tmp_path / "dirty.yaml"
    dirty.write_text(plan_text(ADD_PHONE))
    result = runner.invoke(app, ["lint", str(dirty), "--pg-version", "11"])
    assert result.exit_code == 1
    assert f"{dirty}:3:5: error M014" in result.output

    result = runner.invoke(app, ["lint", str(dirty), "--pg-version", "11", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["server_version"] == 110000 and data["clean"] is False
    assert [f["rule"] for f in data["findings"]] == ["M014"]
    assert data["findings"][0]["line"] == 3
    # Written as check takes it too: 11.22 and 110022 are PostgreSQL 11.
    for written in ("11.22", "110022"):
        result = runner.invoke(
            app, ["lint", str(dirty), "--pg-version", written, "--format", "json"]
        )
        assert result.exit_code == 1, result.output
        assert json.loads(result.output)["server_version"] == 110000
    result = runner.invoke(app, ["lint", str(dirty), "--pg-version", "eleven"])
    assert result.exit_code == 2 and "--pg-version" in result.output

    # For CI: GitHub annotations at the file, line and column; JUnit with a failure each.
    result = runner.invoke(app, ["lint", str(dirty), "--pg-version", "11", "--format", "github"])
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert line.startswith(f"::error file={dirty},line=3,col=5,title=migrator lint%3A M014")
    assert "Safe form: " in line
    result = runner.invoke(app, ["lint", str(dirty), "--pg-version", "11", "--format", "junit"])
    assert result.exit_code == 1
    suite = ET.fromstring(result.output.split("\n", 1)[1]).find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    case = suite.find("testcase")
    assert case is not None and case.get("classname") == "migrator.lint.M014"
    assert case.get("line") == "3" and case.find("failure") is not None
    result = runner.invoke(app, ["lint", str(clean), "--format", "junit"])
    assert result.exit_code == 0
    suite = ET.fromstring(result.output.split("\n", 1)[1]).find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("1", "0")

    waived = tmp_path / "waived.yaml"
    waived.write_text(plan_text(SUPPRESSED.format(reason='"settings holds 40 rows"')))
    result = runner.invoke(app, ["lint", str(waived)])
    assert result.exit_code == 0
    assert f"{waived}:4:16: suppressed M023: settings holds 40 rows" in result.output

    bad = tmp_path / "bad.yaml"
    bad.write_text(plan_text(SUPPRESSED.format(reason='""')))
    result = runner.invoke(app, ["lint", str(bad)])
    assert result.exit_code == 2
    assert "written reason" in result.output


def test_cli_sql_files(tmp_path: Path, runner: CliRunner) -> None:
    migration = tmp_path / "0042_add_index.sql"
    migration.write_text("SET lock_timeout = '1s';\nCREATE INDEX users_email ON users (email);\n")
    result = runner.invoke(app, ["lint", "--sql", str(migration)])
    assert result.exit_code == 1
    assert f"{migration}:2:1: error M001" in result.output
    fixed = tmp_path / "0043.sql"
    fixed.write_text(
        "DROP INDEX CONCURRENTLY IF EXISTS users_email;\n"
        "CREATE INDEX CONCURRENTLY users_email ON users (email);\n"
    )
    assert runner.invoke(app, ["lint", "--sql", str(fixed)]).exit_code == 0
    warned = tmp_path / "0044.sql"
    warned.write_text("SET lock_timeout = '1s';\nCREATE TABLE IF NOT EXISTS t (c varchar(3));\n")
    assert runner.invoke(app, ["lint", "--sql", str(warned)]).exit_code == 1
    assert runner.invoke(app, ["lint", "--sql", str(warned), "--fail-on", "error"]).exit_code == 0
    assert (
        runner.invoke(app, ["lint", "--sql", str(migration), "--fail-on", "error"]).exit_code == 1
    )
    assert runner.invoke(app, ["lint"]).exit_code == 2
    assert runner.invoke(app, ["lint", "--sql", str(tmp_path / "missing.sql")]).exit_code == 2


# -- rules that need a live database (real PostgreSQL) ---------------------------------------


@pytest.fixture
def live(fresh_db: str) -> Iterator[tuple[Connection, str]]:
    engine = make_engine(fresh_db)
    try:
        with connect(engine) as conn:
            yield conn, fresh_db
            conn.rollback()
    finally:
        engine.dispose()


def _run(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for s in statements:
            try:
                conn.execute(s)  # type: ignore[arg-type]
            except psycopg.errors.UniqueViolation:
                pass  # the failed concurrent build the test wants to leave behind


def test_invalid_index_left_by_a_failed_build(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(
        url,
        "CREATE TABLE users (id int PRIMARY KEY, email text)",
        "INSERT INTO users VALUES (1, 'a@x'), (2, 'a@x')",
        "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email)",
    )
    sql = "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS users_email_key ON users (email)"
    findings = lint_sql(sql, catalog=Catalog(conn))
    (m004,) = [f for f in findings if f.rule == "M004"]
    assert m004.severity == "error" and "INVALID" in m004.message
    fixed = "DROP INDEX CONCURRENTLY IF EXISTS users_email_key;\n" + sql.replace(
        "IF NOT EXISTS ", ""
    )
    assert "M004" not in rules_of(lint_sql(fixed, catalog=Catalog(conn)))


def test_lock_before_dropping_a_foreign_key_asks_what_it_references(
    live: tuple[Connection, str],
) -> None:
    """DROP CONSTRAINT of a foreign key (or DROP COLUMN of its column) takes ACCESS
    EXCLUSIVE on the table it references: a LOCK TABLE of that table just before it is
    exempt from M040 (and not counted again by M032), which the database says; of
    another table, or before a constraint or column of another kind, it is not."""
    conn, url = live
    _run(
        url,
        "CREATE TABLE users (id int PRIMARY KEY)",
        "CREATE TABLE teams (id int PRIMARY KEY)",
        "CREATE TABLE orders (user_id int CONSTRAINT orders_user_fk REFERENCES users, "
        "n int CONSTRAINT orders_n_check CHECK (n > 0))",
    )

    def rules(lock: str, constraint: str) -> set[str]:
        sql = (
            f"BEGIN; SET LOCAL lock_timeout = '1s'; LOCK TABLE {lock}; "
            f"ALTER TABLE orders DROP CONSTRAINT {constraint}; COMMIT;"
        )
        return rules_of(lint_sql(sql, catalog=Catalog(conn)))

    # (M022 remains: a raw SQL file's drop of a foreign key is no contract step.)
    assert rules("users", "orders_user_fk") == {"M022"}
    assert "M040" in rules("teams", "orders_user_fk")
    assert "M040" in rules("users", "orders_n_check")
    assert "M040" in rules("users", "orders_gone")

    def drop_column(lock: str, column: str) -> set[str]:
        sql = (
            f"BEGIN; SET LOCAL lock_timeout = '1s'; LOCK TABLE {lock}; "
            f"ALTER TABLE orders DROP COLUMN {column}; COMMIT;"
        )
        return rules_of(lint_sql(sql, catalog=Catalog(conn)))

    assert "M040" not in drop_column("users", "user_id")  # its key goes with it
    # ... renamed by the file first, too: it still stands (review finding).
    renamed = (
        "ALTER TABLE orders RENAME CONSTRAINT orders_user_fk TO orders_user_fk2;\n"
        "BEGIN; SET LOCAL lock_timeout = '1s'; LOCK TABLE users; "
        "ALTER TABLE orders DROP COLUMN user_id; COMMIT;"
    )
    assert "M040" not in rules_of(lint_sql(renamed, catalog=Catalog(conn)))
    assert "M040" in drop_column("users", "n")
    assert "M040" in drop_column("teams", "user_id")

    # A key the file has dropped already is not there to take the lock any more: the
    # database's answer, from before the file, does not count (review finding).
    dropped_first = "ALTER TABLE orders DROP CONSTRAINT orders_user_fk;\n"
    for then in ("DROP COLUMN user_id", "DROP CONSTRAINT orders_user_fk"):
        sql = (
            f"{dropped_first}BEGIN; SET LOCAL lock_timeout = '1s'; LOCK TABLE users; "
            f"ALTER TABLE orders {then}; COMMIT;"
        )
        assert "M040" in rules_of(lint_sql(sql, catalog=Catalog(conn))), then

    # Without ONLY, LOCK TABLE also locks a plain table's inheritance children, which
    # the key's DROP leaves alone: more than the DROP takes (reviewer's suspicion,
    # checked in pg_locks). A partitioned table's partitions the DROP locks too.
    _run(
        url,
        "CREATE TABLE vip () INHERITS (users)",
        "CREATE TABLE parts (id int PRIMARY KEY) PARTITION BY RANGE (id)",
        "CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (10)",
        "ALTER TABLE orders ADD CONSTRAINT orders_part_fk FOREIGN KEY (n) REFERENCES parts",
    )
    assert "M040" in rules("users", "orders_user_fk")
    assert rules("ONLY users", "orders_user_fk") == {"M022"}
    assert rules("parts", "orders_part_fk") == {"M022"}
    assert rules("ONLY parts", "orders_part_fk") == {"M022"}

    def m040(*statements: str) -> bool:
        sql = f"BEGIN; SET LOCAL lock_timeout = '1s'; {'; '.join(statements)}; COMMIT;"
        return "M040" in rules_of(lint_sql(sql, catalog=Catalog(conn)))

    # DROP TABLE drops the table's foreign keys, under ACCESS EXCLUSIVE on the tables
    # they reference.
    assert not m040("LOCK TABLE ONLY users", "DROP TABLE orders")
    assert m040("LOCK TABLE ONLY teams", "DROP TABLE orders")
    # Past quick work on the table the dropping statement locks anyway (a contract
    # step drops its trigger first), not past anything else.
    trigger = "DROP TRIGGER IF EXISTS t ON orders"
    function = "DROP FUNCTION IF EXISTS f()"
    drop = "ALTER TABLE orders DROP COLUMN user_id"
    assert not m040("LOCK TABLE ONLY users", trigger, function, drop)
    assert not m040("LOCK TABLE ONLY users", "ALTER TABLE orders ALTER n SET DEFAULT 1", drop)
    assert m040("LOCK TABLE ONLY users", "UPDATE orders SET n = 1", drop)
    assert m040("LOCK TABLE ONLY users", "DROP TRIGGER IF EXISTS t ON teams", drop)
    assert m040("LOCK TABLE ONLY users", "ALTER TABLE teams ADD COLUMN x int", drop)
    assert m040("LOCK TABLE ONLY users", trigger, function)


def test_unique_index_over_duplicates_names_them(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(
        url,
        "CREATE TABLE users (id int PRIMARY KEY, email text)",
        "INSERT INTO users VALUES (1, 'a@x'), (2, 'a@x'), (3, 'b@x'), (4, 'b@x'), (5, 'b@x'), "
        "(6, 'c@x'), (7, NULL), (8, NULL)",
    )
    sql = "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email)"
    (m010,) = [f for f in lint_sql(sql, catalog=Catalog(conn)) if f.rule == "M010"]
    assert "2 key value(s)" in m010.message
    assert "('b@x') x3" in m010.message and "('a@x') x2" in m010.message
    # a partial index that leaves the duplicates out is fine
    partial = sql + " WHERE id > 4"
    assert "M010" not in rules_of(lint_sql(partial, catalog=Catalog(conn)))
    # a predicate with a colon before a word reaches PostgreSQL as written
    colon = sql + """ WHERE email <> '{"k":2}'"""
    assert "M010" in rules_of(lint_sql(colon, catalog=Catalog(conn)))
    constraint = "ALTER TABLE users ADD CONSTRAINT k UNIQUE (email)"
    assert "M010" in rules_of(lint_sql(constraint, catalog=Catalog(conn)))


def test_dropped_table_row_count(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(
        url,
        "CREATE TABLE old_orders (id int)",
        "INSERT INTO old_orders SELECT generate_series(1, 3)",
        "CREATE TABLE empty_one (id int)",
    )
    text = plan_text(
        "  - sql: {expand: 'SELECT 1', rollback: ''}\n",
        contract="  - sql: {contract: 'DROP TABLE old_orders'}\n"
        "  - sql: {contract: 'DROP TABLE empty_one'}\n",
    )
    (m022,) = lint_plan(parse_plan(text, "p.yaml"), catalog=Catalog(conn))
    assert m022.rule == "M022" and m022.severity == "warning"
    assert "holds 3 rows" in m022.message and "old_orders" in m022.message
    expand = lint_sql("DROP TABLE IF EXISTS old_orders", catalog=Catalog(conn))
    assert any(f.rule == "M022" and "(3 rows)" in f.message for f in expand)


def test_type_change_judged_from_the_live_column(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(url, "CREATE TABLE users (id int, name varchar(20))")
    catalog = Catalog(conn)
    assert "M016" not in rules_of(
        lint_sql("ALTER TABLE users ALTER COLUMN name TYPE text", catalog=catalog)
    )
    assert "M016" not in rules_of(
        lint_sql("ALTER TABLE users ALTER COLUMN name TYPE varchar(40)", catalog=catalog)
    )
    (narrow,) = [
        f
        for f in lint_sql("ALTER TABLE users ALTER COLUMN name TYPE varchar(10)", catalog=catalog)
        if f.rule == "M016"
    ]
    assert narrow.severity == "error" and "varchar(20)" in narrow.message
    assert "M016" in rules_of(
        lint_sql("ALTER TABLE users ALTER COLUMN id TYPE bigint", catalog=catalog)
    )


def test_set_not_null_proven_by_a_live_check(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(
        url,
        "CREATE TABLE users (id int, phone text)",
        "ALTER TABLE users ADD CONSTRAINT phone_nn CHECK (phone IS NOT NULL)",
    )
    sql = "ALTER TABLE users ALTER COLUMN phone SET NOT NULL"
    assert "M014" not in rules_of(lint_sql(sql, catalog=Catalog(conn)))
    assert "M014" in rules_of(lint_sql(sql.replace("phone", "id"), catalog=Catalog(conn)))


def test_primary_key_using_index_on_nullable_columns(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(
        url,
        "CREATE TABLE users (id int, code int NOT NULL)",
        "CREATE UNIQUE INDEX users_id_key ON users (id)",
        "CREATE UNIQUE INDEX users_code_key ON users (code)",
    )
    catalog = Catalog(conn)
    scan = lint_sql(
        "ALTER TABLE users ADD CONSTRAINT users_pkey PRIMARY KEY USING INDEX users_id_key",
        catalog=catalog,
    )
    assert any(f.rule == "M009" and "users.id NOT NULL" in f.message for f in scan)
    no_scan = lint_sql(
        "ALTER TABLE users ADD CONSTRAINT users_pkey PRIMARY KEY USING INDEX users_code_key",
        catalog=catalog,
    )
    assert "M009" not in rules_of(no_scan)
    proven = lint_sql(
        "BEGIN; ALTER TABLE users ADD CONSTRAINT id_nn CHECK (id IS NOT NULL) NOT VALID; COMMIT;"
        "BEGIN; ALTER TABLE users VALIDATE CONSTRAINT id_nn; COMMIT;"
        "ALTER TABLE users ADD CONSTRAINT users_pkey PRIMARY KEY USING INDEX users_id_key",
        catalog=catalog,
    )
    assert "M009" not in rules_of(proven)


def test_volatility_asked_of_the_server(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(
        url,
        "CREATE TABLE users (id int)",
        "CREATE FUNCTION pick() RETURNS int LANGUAGE sql VOLATILE AS 'SELECT 1'",
        "CREATE FUNCTION fixed() RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT 1'",
    )
    catalog = Catalog(conn)
    bad = lint_sql("ALTER TABLE users ADD COLUMN a int DEFAULT pick()", catalog=catalog)
    assert any(f.rule == "M011" and f.severity == "error" for f in bad)
    good = lint_sql("ALTER TABLE users ADD COLUMN a int DEFAULT fixed()", catalog=catalog)
    assert "M011" not in rules_of(good)


def test_plan_ops_built_against_the_live_catalog(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(
        url,
        "CREATE TABLE users (id int PRIMARY KEY, email text, legacy_phone text)",
        "INSERT INTO users VALUES (1, 'a@x', '1'), (2, 'a@x', '2')",
    )
    text = plan_text(
        ADD_PHONE
        + "  - create_index: {table: users, name: users_email_idx, columns: [email]}\n"
        + "  - add_unique: {table: users, name: users_email_key, columns: [email]}\n"
    )
    plan = parse_plan(text, "p.yaml")
    report = lint_plan_report(plan, None, Catalog(conn))
    assert report.unlinted == []
    assert report.server_version >= 120000
    # the operations write lock-safe SQL; only the duplicates stand in the way
    assert rules_of(report.findings) == {"M010"}
    (m010,) = report.findings
    assert m010.operation == "expand[2].add_unique" and "('a@x') x2" in m010.message


def test_cli_with_a_database_reads_its_version_and_data(
    live: tuple[Connection, str], tmp_path: Path, runner: CliRunner
) -> None:
    _, url = live
    _run(
        url,
        "CREATE TABLE users (id int PRIMARY KEY, email text, legacy_phone text)",
        "INSERT INTO users VALUES (1, 'a@x', '1'), (2, 'a@x', '2')",
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        plan_text(
            ADD_PHONE + "  - add_unique: {table: users, name: users_email_key, columns: [email]}\n"
        )
    )
    result = runner.invoke(app, ["lint", str(plan), "--database-url", url, "--format", "json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.output)
    assert data["server_version"] >= 180000
    assert [(f["rule"], f["line"]) for f in data["findings"]] == [("M010", 8)]
    # the database is left as it was
    with psycopg.connect(url) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'users'"
        ).fetchone() == (1,)
    # an operation the database cannot take is named at its place in the plan file
    plan.write_text(plan_text(ADD_PHONE + "  - rename_column: {table: users, from: mail, to: e}\n"))
    result = runner.invoke(app, ["lint", str(plan), "--database-url", url])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"error: {plan}:8:5: cannot build its expand statements to lint them: rename_column "
        "users.mail: column mail does not exist"
    ), result.output


def test_cli_with_a_database_behind_a_table_lock(
    live: tuple[Connection, str], tmp_path: Path, runner: CliRunner
) -> None:
    """The lint's questions that read a table (its duplicates, its rows) take ACCESS
    SHARE on it: behind another session's ACCESS EXCLUSIVE the lint waits the plan's
    lock_timeout once, then stops with one line naming the table and its holder (exit
    5). Its catalog-only questions take no table lock: a lint that needs only them
    runs to its end while the lock is held."""
    _, url = live
    _run(url, "CREATE TABLE users (id int PRIMARY KEY, email text, legacy_phone text)")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        plan_text(
            ADD_PHONE + "  - add_unique: {table: users, name: users_email_key, columns: [email]}\n",
            database="  lock_timeout: 50ms\n",
        )
    )
    sql = tmp_path / "m.sql"
    sql.write_text(
        "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);\n"
        "ALTER TABLE users ADD COLUMN seen timestamptz DEFAULT clock_timestamp();\n"
    )
    with psycopg.connect(url) as holder:
        # LOCK returns once the lock is granted: the event the lint then meets.
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        locked = runner.invoke(app, ["lint", str(plan), "--database-url", url])
        catalog_only = runner.invoke(app, ["lint", "--sql", str(sql), "--database-url", url])
        holder.rollback()
    assert locked.exit_code == 5, locked.output
    [line] = locked.output.strip().splitlines()
    assert line.startswith(
        "error: the lint could not read public.users within lock_timeout 50ms after 0 retries: "
        f"pid {pid} holds ACCESS EXCLUSIVE on it (idle in transaction: LOCK TABLE"
    ), line
    assert catalog_only.exit_code in (0, 1), catalog_only.output
    assert "could not" not in catalog_only.output, catalog_only.output
    assert "M011: adds users.seen with a volatile DEFAULT" in catalog_only.output


def test_version_read_from_a_postgresql_15_server(pg15_server: Server) -> None:
    url = pg15_server.create_database("lint")
    try:
        _run(url, "CREATE TABLE users (id int PRIMARY KEY, legacy_phone text)")
        engine = make_engine(url)
        try:
            with connect(engine) as conn:
                report = lint_plan_report(
                    parse_plan(plan_text(ADD_PHONE), "p.yaml"), None, Catalog(conn)
                )
                assert report.server_version // 10000 == 15
                assert report.findings == [] and report.unlinted == []
                # the same plan judged as if on PostgreSQL 11
                old = lint_plan(parse_plan(plan_text(ADD_PHONE), "p.yaml"), 11, Catalog(conn))
                assert rules_of(old) == {"M014"}
        finally:
            engine.dispose()
    finally:
        pg15_server.drop_database(url)


EVERY_OPERATION = """\
release: pagila-lint
expand:
  - create_table:
      table: review
      columns:
        - {name: review_id, type: bigint}
        - {name: film_id, type: integer, references: {table: film, column: film_id}}
        - {name: body, type: text}
      primary_key: [review_id]
  - create_index: {table: review, name: review_film_idx, columns: [film_id]}
  - add_column:
      table: customer
      column: {name: phone, type: text}
      up: "'unknown'"
      final: {nullable: false}
  - rename_column: {table: customer, from: email, to: contact_email}
  - alter_column: {table: customer, column: active, type: bigint}
  - rename_table: {from: language, to: lang}
  - create_index: {table: rental, name: rental_return_idx, columns: [return_date]}
  - add_foreign_key:
      table: review
      name: review_film_fk2
      columns: [film_id]
      references: {table: film, columns: [film_id]}
  - add_check: {table: film, name: film_len_pos, expression: "length > 0"}
  - add_unique: {table: staff, name: staff_username_key, columns: [username]}
  - create_enum: {name: review_state, values: [draft, published]}
  - add_enum_value: {type: mpaa_rating, value: X}
contract:
  - drop_column: {table: address, column: address2}
  - drop_index: {name: idx_last_name}
  - drop_constraint: {table: rental, name: rental_staff_id_fkey}
  - set_not_null: {table: address, column: postal_code}
  - drop_table: {table: film_text}
"""


@pytest.mark.parametrize("version", [None, 12])
def test_every_operation_writes_sql_its_own_lint_passes(
    live: tuple[Connection, str], version: int | None
) -> None:
    conn, url = live
    _run(url, PAGILA.read_text(encoding="utf-8"))
    report = lint_plan_report(parse_plan(EVERY_OPERATION, "pagila.yaml"), version, Catalog(conn))
    assert report.unlinted == []
    assert [f"{f.rule} {f.operation} {f.message}" for f in report.findings] == []
    # Before PostgreSQL 12 no CHECK lets SET NOT NULL skip its scan: both tightenings say so.
    old = lint_plan_report(parse_plan(EVERY_OPERATION, "pagila.yaml"), 11, Catalog(conn))
    assert sorted((f.rule, f.operation) for f in old.findings) == [
        ("M014", "contract[3].set_not_null"),
        ("M014", "expand[2].add_column"),
    ]


def test_dropping_a_foreign_key_known_from_the_catalog(live: tuple[Connection, str]) -> None:
    conn, url = live
    _run(
        url,
        "CREATE TABLE users (id int PRIMARY KEY)",
        "CREATE TABLE orders (id int, user_id int CONSTRAINT orders_user_fk REFERENCES users, "
        "CONSTRAINT orders_id_pos CHECK (id > 0))",
    )
    expand = plan_text(
        "  - sql: {expand: 'ALTER TABLE orders DROP CONSTRAINT orders_user_fk', rollback: ''}\n"
    )
    (m022,) = lint_plan(parse_plan(expand, "p.yaml"), catalog=Catalog(conn))
    assert m022.rule == "M022" and m022.severity == "error" and "orders_user_fk" in m022.message
    check = expand.replace("orders_user_fk", "orders_id_pos")
    assert lint_plan(parse_plan(check, "p.yaml"), catalog=Catalog(conn)) == []
    contract = plan_text(
        "  - sql: {expand: 'SELECT 1', rollback: ''}\n",
        contract="  - sql: {contract: 'ALTER TABLE orders DROP CONSTRAINT orders_user_fk'}\n",
    )
    assert lint_plan(parse_plan(contract, "p.yaml"), catalog=Catalog(conn)) == []


@pytest.mark.parametrize("form", ["list", "map"])
def test_positions_of_contract_operations(form: str) -> None:
    item = "  - sql: {contract: 'ALTER TABLE users ALTER COLUMN phone SET NOT NULL'}\n"
    contract = (
        item
        if form == "list"
        else "  not_before: 1h\n  operations:\n  " + item.replace("\n", "\n  ").rstrip(" ")
    )
    text = plan_text("  - sql: {expand: 'SELECT 1', rollback: ''}\n", contract=contract)
    (m014,) = lint_plan(parse_plan(text, "p.yaml"), 18)
    assert m014.operation == "contract[0].sql"
    line = 5 if form == "list" else 7
    assert (m014.line, m014.column) == (line, text.splitlines()[line - 1].index("ALTER") + 1)


def test_each_statement_kind_has_its_checks_registered() -> None:
    # The dispatch is by node type: a CREATE INDEX goes through the index checks, and
    # the lock checks see every statement (registered for ast.Node).
    from migrator.lint.registry import registered

    table = registered()
    assert "create_index" in table["IndexStmt"] and "drop_index" in table["DropStmt"]
    assert "alter_table" in table["AlterTableStmt"] and "reindex" in table["ReindexStmt"]
    assert {"lock_timeout", "unbounded_writes"} <= set(table["Node"])


def test_lint_and_check_report_one_finding_type() -> None:
    from migrator.verify.report import CheckReport
    from migrator.verify.report import Finding as CheckFinding

    sql = "SET lock_timeout = '1s'; CREATE INDEX i ON users (email)"
    (found,) = lint_sql(sql, 18, assume_in_transaction=True)
    assert isinstance(found, CheckFinding) and found.check == "lint" and found.rule == "M001"
    assert found.message == found.reason and found.safe_form == found.fix
    # check writes the lint's finding with the same writer it uses for its own
    report = CheckReport("r", "h", "plan.yaml", "x", 180000)
    report.lint.append(found)
    (line,) = report.to_github()
    assert line.startswith("::error file=plan.yaml,line=1,col=26,title=migrator check%3A M001::")


def test_reindex_system_is_not_told_to_use_concurrently(fresh_db: str) -> None:
    # PostgreSQL refuses to reindex its catalogs concurrently (the server says so).
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="system catalogs"):
        _run(fresh_db, "REINDEX (CONCURRENTLY) SYSTEM")
    (plain,) = [f for f in lint_sql("REINDEX SYSTEM", 18) if f.rule == "M028"]
    assert "has no CONCURRENTLY form" in plain.message and "maintenance window" in plain.message
    (refused,) = [f for f in lint_sql("REINDEX (CONCURRENTLY) SYSTEM", 18) if f.rule == "M028"]
    assert "fails with CONCURRENTLY" in refused.message
    assert "REINDEX SYSTEM has no concurrent form" in refused.safe_form
    # while a table's REINDEX is still pointed at CONCURRENTLY, which it has
    (table,) = [f for f in lint_sql("REINDEX TABLE t", 18) if f.rule == "M028"]
    assert "blocks writes" in table.message


def test_boolean_options_mean_what_the_server_reads(fresh_db: str) -> None:
    # The forms the cases above judge as not full / not concurrent run as such.
    _run(fresh_db, "CREATE TABLE t (a int)", "CREATE INDEX i ON t (a)")
    _run(fresh_db, "VACUUM (FULL false) t", "REINDEX (CONCURRENTLY false) INDEX i")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("BEGIN")
        # not concurrent, so it is allowed inside a transaction block
        conn.execute("REINDEX (CONCURRENTLY false) INDEX i")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            conn.execute("REINDEX (CONCURRENTLY) INDEX i")
        conn.execute("ROLLBACK")


def test_new_rules_match_what_the_server_does(fresh_db: str) -> None:
    # M033: the server keeps 63 bytes of a longer name; M038: it refuses the UPDATE.
    long = "c" * 70
    _run(fresh_db, f"CREATE TABLE t (id bigint, {long} text, a int)")
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        row = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 't'::regclass AND attnum = 2"
        ).fetchone()
        assert row == ("c" * 63,)
        with pytest.raises(psycopg.errors.SyntaxError, match="multiple assignments"):
            conn.execute("UPDATE t SET a = 1, a = 2")


def test_identity_is_not_asked_for_before_postgresql_10() -> None:
    sql = "BEGIN; CREATE TABLE orders (id bigserial PRIMARY KEY); COMMIT;"
    assert "M035" not in rules_of(lint_sql(sql, 9))
    assert "M035" in rules_of(lint_sql(sql, 10))


def test_optional_rules_are_off_unless_enabled() -> None:
    unqualified = (
        "BEGIN; SET LOCAL lock_timeout = '1s'; ALTER TABLE users ADD COLUMN a text; COMMIT;"
    )
    assert "M041" not in rules_of(lint_sql(unqualified, 18))
    (found,) = [f for f in lint_sql(unqualified, 18, enable=["M041"]) if f.rule == "M041"]
    assert "users" in found.message and "search_path" in found.message
    qualified = (
        "BEGIN; SET LOCAL lock_timeout = '1s'; "
        "WITH c AS (SELECT 1) SELECT * FROM c; ALTER TABLE public.users ADD COLUMN a text; "
        "CREATE TEMP TABLE scratch (a int) ON COMMIT DROP; INSERT INTO scratch VALUES (1); COMMIT;"
    )
    assert "M041" not in rules_of(lint_sql(qualified, 18, enable=["M041"]))

    slow = "SET lock_timeout = '1s'; BEGIN; UPDATE users SET a = 1 WHERE id < 10; COMMIT;"
    assert "M042" not in rules_of(lint_sql(slow, 18))
    assert "M042" in rules_of(lint_sql(slow, 18, enable=["M042"]))
    bounded = "SET lock_timeout = '1s'; SET statement_timeout = '5min'; " + slow
    assert "M042" not in rules_of(lint_sql(bounded, 18, enable=["M042"]))
    # a plan: the executor sets the plan's database.statement_timeout
    plan = parse_plan(plan_text(ADD_PHONE), "p.yaml")
    assert "M042" in rules_of(lint_plan(plan, 18, enable=["M042"]))
    bounded_plan = parse_plan(plan_text(ADD_PHONE, database="  statement_timeout: 5m\n"), "p.yaml")
    assert "M042" not in rules_of(lint_plan(bounded_plan, 18, enable=["M042"]))
    with pytest.raises(UsageError, match="the optional rules are M041, M042"):
        lint_sql(slow, 18, enable=["M001"])


def test_cli_enables_an_optional_rule(tmp_path: Path, runner: CliRunner) -> None:
    sql = tmp_path / "m.sql"
    sql.write_text("SET lock_timeout = '1s';\nALTER TABLE users ADD COLUMN IF NOT EXISTS a text;\n")
    assert runner.invoke(app, ["lint", "--sql", str(sql)]).exit_code == 0
    result = runner.invoke(app, ["lint", "--sql", str(sql), "--enable", "M041"])
    assert result.exit_code == 1 and "M041" in result.output
    result = runner.invoke(app, ["lint", "--sql", str(sql), "--enable", "M999"])
    assert result.exit_code == 2 and "--enable M999" in result.output


def test_a_column_referencing_an_existing_int_key_matches_it() -> None:
    # The key decides: a new column referencing an existing int key is int like it.
    sql = "ALTER TABLE IF EXISTS orders ADD COLUMN IF NOT EXISTS user_id int REFERENCES users"
    assert "M034" not in rules_of(lint_sql(sql, 18))
