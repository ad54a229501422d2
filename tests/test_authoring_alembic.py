"""`migrator plan import alembic`: a chain of three hand-written revisions read without a
database, released on a real PostgreSQL (check, expand, switch with the command backend,
backfill, complete, forced contract); then Alembic's comparison of the database with the
models the revisions lead to finds no difference. Bad input is one line and exit 2."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from migrator.cli import app
from migrator.db.connection import make_engine
from migrator.errors import ExitCode
from tests.test_authoring_models import differences, q, release_and_contract

BEFORE = sa.MetaData()
sa.Table(
    "users",
    BEFORE,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("score", sa.Integer),
    sa.Column("legacy", sa.Text),
)

AFTER = sa.MetaData()
sa.Table(
    "users",
    AFTER,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("score", sa.BigInteger),
    sa.Column("nickname", sa.Text, index=True),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),
    sa.Column("phone", sa.Text, nullable=False),
)
sa.Table(
    "orders",
    AFTER,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
)

REVISIONS = {
    "a1_nickname.py": '''
        """nickname"""
        import sqlalchemy as sa
        from alembic import op

        revision = "a1"
        down_revision = None


        def upgrade():
            op.add_column("users", sa.Column("nickname", sa.Text()))
            op.create_index("ix_users_nickname", "users", ["nickname"])


        def downgrade():
            op.drop_index("ix_users_nickname")
            op.drop_column("users", "nickname")
    ''',
    "b2_orders.py": '''
        """orders, status"""
        import sqlalchemy as sa
        from alembic import op

        revision = "b2"
        down_revision = "a1"


        def upgrade():
            op.create_table(
                "orders",
                sa.Column("id", sa.BigInteger(), primary_key=True),
                sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
            )
            op.add_column(
                "users", sa.Column("status", sa.Text(), nullable=False, server_default="active")
            )


        def downgrade():
            op.drop_column("users", "status")
            op.drop_table("orders")
    ''',
    "c3_score.py": '''
        """score bigint, phone, legacy gone"""
        import sqlalchemy as sa
        from alembic import op

        revision = "c3"
        down_revision = "b2"


        def upgrade():
            op.alter_column("users", "score", type_=sa.BigInteger(), existing_type=sa.Integer())
            op.drop_column("users", "legacy")
            op.add_column("users", sa.Column("phone", sa.Text(), nullable=False))


        def downgrade():
            pass
    ''',
}


def scripts(folder: Path, revisions: dict[str, str]) -> Path:
    versions = folder / "migrations" / "versions"
    versions.mkdir(parents=True)
    for name, source in revisions.items():
        (versions / name).write_text(textwrap.dedent(source).lstrip())
    ini = folder / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = %(here)s/migrations\n")
    return ini


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, ["plan", "import", "alembic", *args])


def test_three_revisions_round_trip(tmp_path: Path, fresh_db: str, pg_server: Any) -> None:
    engine = make_engine(fresh_db)
    BEFORE.create_all(engine)
    engine.dispose()
    q(fresh_db, "INSERT INTO users (name, score) SELECT 'u' || g, g FROM generate_series(1, 30) g")
    ini = scripts(tmp_path, REVISIONS)
    plans = tmp_path / "plans"
    result = invoke(
        "--alembic-config", str(ini), "--release", "r-alembic", "--plans-dir", str(plans),
        "--fill", "users.phone='n/a'",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    path = plans / "r-alembic.yaml"
    text = path.read_text()
    versions = ini.parent / "migrations" / "versions"
    # Each operation names its revision file and line.
    assert f"# from {versions / 'a1_nickname.py'}:10 (Alembic revision a1)" in text
    assert f"# from {versions / 'c3_score.py'}:12 (Alembic revision c3)" in text
    expand, contract = text.split("\ncontract:\n")
    assert "create_index:" in expand and "drop_column" in contract and "legacy" in contract
    assert "final:\n        nullable: false" in expand

    release_and_contract(fresh_db, path, pg_server.admin_url, tmp_path / "lb")
    assert differences(fresh_db, AFTER) == []
    assert q(fresh_db, "SELECT count(*), sum(score) FROM users WHERE phone = 'n/a'") == [(30, 465)]
    assert q(fresh_db, "SELECT DISTINCT status FROM users") == [("active",)]


def test_execute_becomes_sql_with_the_lint_verdict_and_a_rollback_placeholder(
    tmp_path: Path,
) -> None:
    ini = scripts(
        tmp_path,
        {
            "d4.py": """
                import sqlalchemy as sa
                from alembic import op

                revision = "d4"
                down_revision = None


                def upgrade():
                    op.execute("UPDATE users SET name = lower(name)")
            """
        },
    )
    plans = tmp_path / "plans"
    result = invoke("d4", "--alembic-config", str(ini), "--plans-dir", str(plans))
    assert result.exit_code == ExitCode.FINDINGS, result.output
    text = (plans / "alembic-d4.yaml").read_text()
    assert (
        "  - sql:\n      expand: UPDATE users SET name = lower(name)\n      rollback: !fill" in text
    )
    assert "# lint: M023" in text  # the verdict of migrator's lint on the statement
    assert "write the SQL that undoes this statement" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["zz9"], "Can't locate revision identified by 'zz9'"),
        (["a1:zz9"], "Can't locate revision identified by 'zz9'"),
    ],
)
def test_a_range_that_does_not_exist_is_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    ini = scripts(tmp_path, REVISIONS)
    result = invoke(*args, "--alembic-config", str(ini), "--plans-dir", str(tmp_path / "plans"))
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "plans").exists()


def test_a_revision_without_safe_equivalent_is_named_at_its_line(tmp_path: Path) -> None:
    ini = scripts(
        tmp_path,
        {
            "e5.py": """
                from alembic import op

                revision = "e5"
                down_revision = None


                def upgrade():
                    op.alter_column("users", "name", new_column_name="full_name")
            """
        },
    )
    result = invoke("--alembic-config", str(ini), "--plans-dir", str(tmp_path / "plans"))
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert f"{ini.parent / 'migrations' / 'versions' / 'e5.py'}:8: revision e5" in result.output
    assert "rename_column" in result.output
    assert not (tmp_path / "plans").exists()


def test_a_revision_asking_for_offline_mode_and_an_open_range(tmp_path: Path) -> None:
    """A revision that asks `context.is_offline_mode()` (as `migrator render`'s baseline
    does) is read as under `alembic upgrade --sql`, by the import and by `lint --alembic`
    (before: NameError, the context proxy not established); `REV:` is REV to the heads
    (before: an AssertionError with no message)."""
    ini = scripts(
        tmp_path,
        {
            "f6.py": """
                from alembic import context, op

                revision = "f6"
                down_revision = None


                def upgrade():
                    if context.is_offline_mode():
                        op.execute("CREATE TABLE users (id bigint PRIMARY KEY)")
                    else:
                        raise RuntimeError("read online")
            """,
            "g7.py": """
                import sqlalchemy as sa
                from alembic import op

                revision = "g7"
                down_revision = "f6"


                def upgrade():
                    op.add_column("users", sa.Column("nick", sa.Text()))
            """,
        },
    )
    plans = tmp_path / "plans"
    result = invoke("f6:", "--alembic-config", str(ini), "--plans-dir", str(plans))
    assert result.exit_code == 0, result.output
    text = (plans / "alembic-g7.yaml").read_text()
    assert "add_column:" in text and "nick" in text and "CREATE TABLE" not in text
    linted = CliRunner().invoke(app, ["lint", "--alembic", "--alembic-config", str(ini)])
    assert linted.exit_code == 0, linted.output
