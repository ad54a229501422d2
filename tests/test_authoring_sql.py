"""`migrator plan import sql` on a Django ``sqlmigrate``-style file written for the test:
parsed by pglast, released on a real PostgreSQL (check, expand, switch with the command
backend, backfill, complete, forced contract); then Alembic's comparison of the database
with the models the SQL leads to finds no difference. Statements with no operation keep
the lint's verdict; SQL that does not parse is one line at file:line:column, exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from migrator.cli import app
from migrator.db.connection import make_engine
from migrator.errors import ExitCode
from tests.test_authoring_models import differences, q, release_and_contract

BEFORE = sa.MetaData()
sa.Table(
    "shop_customer",
    BEFORE,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("fax", sa.String(20)),
)

AFTER = sa.MetaData()
sa.Table(
    "shop_customer",
    AFTER,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("contact_email", sa.String(254), nullable=False),
    sa.Column("loyalty", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("phone", sa.String(20)),
)
sa.Table(
    "shop_order",
    AFTER,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("customer_id", sa.BigInteger, nullable=False),
    sa.Column("total", sa.Numeric(10, 2), nullable=False),
    sa.ForeignKeyConstraint(
        ["customer_id"], ["shop_customer.id"], name="shop_order_customer_id_fk_shop_customer_id"
    ),
    sa.Index("shop_order_customer_id_idx", "customer_id"),
)

# What `manage.py sqlmigrate shop 0002` prints for such a change (written by hand).
SQLMIGRATE = """\
BEGIN;
--
-- Rename field email on customer to contact_email
--
ALTER TABLE "shop_customer" RENAME COLUMN "email" TO "contact_email";
--
-- Add field loyalty to customer
--
ALTER TABLE "shop_customer" ADD COLUMN "loyalty" integer DEFAULT 0 NOT NULL;
--
-- Add field phone to customer
--
ALTER TABLE "shop_customer" ADD COLUMN "phone" varchar(20) NULL;
--
-- Alter field name on customer
--
ALTER TABLE "shop_customer" ALTER COLUMN "name" TYPE text;
--
-- Remove field fax from customer
--
ALTER TABLE "shop_customer" DROP COLUMN "fax" CASCADE;
--
-- Create model Order
--
CREATE TABLE "shop_order" ("id" bigint NOT NULL PRIMARY KEY, "customer_id" bigint NOT NULL, "total" numeric(10, 2) NOT NULL);
ALTER TABLE "shop_order" ADD CONSTRAINT "shop_order_customer_id_fk_shop_customer_id" FOREIGN KEY ("customer_id") REFERENCES "shop_customer" ("id");
CREATE INDEX "shop_order_customer_id_idx" ON "shop_order" ("customer_id");
COMMIT;
"""


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["plan", "import", "sql", *args])


def test_sqlmigrate_output_round_trip(tmp_path: Path, fresh_db: str, pg_server: Any) -> None:
    engine = make_engine(fresh_db)
    BEFORE.create_all(engine)
    engine.dispose()
    q(
        fresh_db,
        "INSERT INTO shop_customer (name, email, fax) "
        "SELECT 'c' || g, 'c' || g || '@x', 'f' FROM generate_series(1, 40) g",
    )
    sql_file = tmp_path / "0002.sql"
    sql_file.write_text(SQLMIGRATE)
    plans = tmp_path / "plans"
    result = invoke(
        str(sql_file), "--release", "r-sql", "--plans-dir", str(plans), "--database-url", fresh_db
    )
    assert result.exit_code == 0, result.output
    path = plans / "r-sql.yaml"
    text = path.read_text()
    assert f"# from {sql_file}:5\n  - rename_column:" in text
    assert f"# from {sql_file}:9\n  # rows already there and rows the old version" in text
    assert f"# from {sql_file}:26\n  - add_foreign_key:" in text
    assert f"# from {sql_file}:27\n  - create_index:" in text
    expand, contract = text.split("\ncontract:\n")
    assert "drop_column" in contract and "fax" in contract
    header = " ".join(line.removeprefix("# ") for line in text.splitlines() if line[:1] == "#")
    assert f"BEGIN/COMMIT at {sql_file}:1, {sql_file}:28" in header

    release_and_contract(fresh_db, path, pg_server.admin_url, tmp_path / "lb")
    assert differences(fresh_db, AFTER) == []
    assert q(fresh_db, "SELECT count(*) FROM shop_customer WHERE contact_email = name || '@x'") == [
        (40,)
    ]


def test_statements_without_an_operation_carry_the_lint_verdict(tmp_path: Path) -> None:
    sql_file = tmp_path / "data.sql"
    sql_file.write_text(
        "ALTER TABLE shop_customer ADD COLUMN tier text;\n"
        "UPDATE shop_customer SET tier = 'gold';\n"
        "ALTER TABLE shop_customer ADD COLUMN code text NOT NULL;\n"
    )
    plans = tmp_path / "plans"
    result = invoke(str(sql_file), "--release", "r", "--plans-dir", str(plans))
    assert result.exit_code == ExitCode.FINDINGS, result.output
    text = (plans / "r.yaml").read_text()
    lines = text.splitlines()
    at = lines.index(f"  # from {sql_file}:2")
    assert lines[at + 1].startswith("  # lint: M023 (error)")  # the unbatched UPDATE
    assert lines[at + 1 :].index("  - sql:") > 0
    assert "expand: \"UPDATE shop_customer SET tier = 'gold'\"" in text
    # Two placeholders: the UPDATE's rollback and the value rows get for code.
    assert text.count("!fill") == 2
    assert "--fill shop_customer.code=EXPR" in result.output


def test_sql_that_does_not_parse_is_exit_2_at_file_line_column(tmp_path: Path) -> None:
    sql_file = tmp_path / "bad.sql"
    sql_file.write_text("SELECT 1;\nALTER TABLE x ADD COLUM y int;\n")
    result = invoke(str(sql_file), "--release", "r", "--plans-dir", str(tmp_path / "plans"))
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert f"{sql_file}:2:27: SQL does not parse: syntax error" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "plans").exists()


def test_colons_before_a_word_are_kept_as_written(tmp_path: Path) -> None:
    """A JSON literal in a default, a check, an index predicate: SQLAlchemy's text() read
    ``:2`` in ``'{"k":2}'`` as a bind parameter, and the plan got NULL in its place."""
    sql_file = tmp_path / "json.sql"
    sql_file.write_text(
        "ALTER TABLE shop_customer ADD COLUMN meta jsonb DEFAULT '{\"k\":2}'::jsonb;\n"
        "ALTER TABLE shop_customer ADD CONSTRAINT meta_ok CHECK (meta <> '{\"bad\":3}');\n"
        "CREATE TABLE shop_note (id bigint PRIMARY KEY, body jsonb DEFAULT '{\"n\":1}' "
        "CHECK (body <> '{\"x\":0}'));\n"
        "CREATE INDEX shop_note_k ON shop_note (id) WHERE body <> '{\"y\":5}'::jsonb;\n"
    )
    plans = tmp_path / "plans"
    result = invoke(str(sql_file), "--release", "r", "--plans-dir", str(plans))
    assert result.exit_code == 0, result.output
    text = (plans / "r.yaml").read_text()
    for literal in ('{"k":2}', '{"bad":3}', '{"n":1}', '{"x":0}', '{"y":5}'):
        assert literal in text, text
    assert "NULL" not in text and "\\:" not in text, text
