"""`migrator plan new --from-models` on a real PostgreSQL, round trip: models v1 make the
database; models v2 give a plan; the plan is released (check, expand, switch with the
command backend, backfill, complete) and its contract forced; then Alembic's own
comparison of the database with models v2 finds no difference, and the rows are kept."""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from typer.testing import CliRunner

from migrator import commands
from migrator.cli import app
from migrator.commands.release import release as run_release
from migrator.db.connection import make_engine
from migrator.errors import ExitCode, PlanError
from migrator.observer import Observer
from migrator.plan.loader import load_plan

V1 = """
import sqlalchemy as sa
metadata = sa.MetaData()
users = sa.Table(
    "users", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(40), nullable=False),
    sa.Column("email", sa.String(80)),
    sa.Column("score", sa.Integer),
    sa.Column("legacy", sa.Text),
)
"""

V2 = """
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.Text)                       # varchar(40) -> text
    contact_email: Mapped[str | None] = mapped_column(sa.String(80))  # renamed from email
    score: Mapped[int | None] = mapped_column(sa.BigInteger)           # int -> bigint
    nickname: Mapped[str | None] = mapped_column(sa.Text, index=True)  # new nullable, indexed
    status: Mapped[str] = mapped_column(sa.Text, server_default=sa.text("'active'"))
    phone: Mapped[str] = mapped_column(sa.Text)                        # NOT NULL, --fill
    code: Mapped[str | None] = mapped_column(sa.String(20))
    age: Mapped[int | None] = mapped_column(sa.CheckConstraint("age >= 0", name="users_age_check"))
    __table_args__ = (sa.UniqueConstraint("code", name="users_code_key"),)
    # legacy: dropped

class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    total: Mapped[int] = mapped_column(server_default=sa.text("0"))
"""


def _module(folder: Path, source: str) -> str:
    name = f"models_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


def _import(folder: Path, name: str) -> Any:
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def q(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def differences(url: str, metadata: sa.MetaData) -> list[Any]:
    """Alembic's comparison of the database with the models (types and defaults too)."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)  # --from-models imports from the working directory
    yield tmp_path


def release_and_contract(url: str, path: Path, scratch_url: str | None, state: Path) -> None:
    """The release as the switch tests drive it (command backend), then the contract
    forced (the old version is gone in this test). Without a scratch server the phases run
    one by one with no check and no switch (see the PostgreSQL 15 test)."""
    if scratch_url is None:
        plan = load_plan(path)
        opts = commands.Options(database_url=url, observer=Observer(), actor="tester@test")
        commands.expand(plan, opts)
        commands.backfill(plan, opts)
        commands.complete(plan, opts)
        opts.force, opts.force_reason = True, "test: v1 is gone"
        commands.contract(opts, plan.release)
        return
    state.write_text("0\n")
    text = path.read_text() + textwrap.dedent(
        f"""\
        switch:
          command:
            to_green: "echo {{percent}} > {state}"
            to_blue: "echo 0 > {state}"
            status: "cat {state}"
          watch: {{duration: 0, interval: 1}}
        """
    )
    path.write_text(text)
    plan = load_plan(path)
    opts = commands.Options(database_url=url, observer=Observer(), actor="tester@test")
    run_release(plan, path, opts, scratch_url=scratch_url)
    assert state.read_text() == "100\n"
    forced = commands.Options(
        database_url=url,
        observer=Observer(),
        actor="tester@test",
        force=True,
        force_reason="test: v1 is gone",
    )
    commands.contract(forced, plan.release)


def test_round_trip_v1_to_v2(work: Path, fresh_db: str, pg_server: Any) -> None:
    v1 = _import(work, _module(work, V1))
    engine = make_engine(fresh_db)
    v1.metadata.create_all(engine)
    engine.dispose()
    q(
        fresh_db,
        "INSERT INTO users (name, email, score, legacy) "
        "SELECT 'u' || g, 'u' || g || '@x', g, 'l' FROM generate_series(1, 50) g",
    )
    v2_name = _module(work, V2)
    result = CliRunner().invoke(
        app,
        [
            "plan", "new", "r-v2",
            "--from-models", f"{v2_name}:Base",
            "--database-url", fresh_db,
            "--plans-dir", str(work / "plans"),
            "--rename", "users.email=contact_email",
            "--fill", "users.phone='+1-' || id",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    path = work / "plans" / "r-v2.yaml"
    text = path.read_text()
    # Additions in expand in their safe forms, each with its source; the drop in contract.
    assert "# from the model " + v2_name + ":User.phone\n" in text
    assert "rename_column:" in text and "from: email" in text
    expand, contract = text.split("\ncontract:\n")
    assert "drop_column" in contract and "legacy" in contract and "- drop_" not in expand
    assert "up: \"'+1-' || id\"" in expand and "final:\n        nullable: false" in expand
    assert "create_index:" in expand and "add_unique:" in expand
    assert "type: bigint" in expand and "up: score::bigint" in expand
    assert "name: age\n        type: integer\n        check: age >= 0" in expand
    validated = CliRunner().invoke(app, ["plan", "validate", str(path)])
    assert validated.exit_code == 0, validated.output

    release_and_contract(fresh_db, path, pg_server and pg_server.admin_url, work / "lb")

    v2 = _import(work, v2_name)
    assert differences(fresh_db, v2.Base.metadata) == []
    # The data came along: the renamed column kept its values, the retyped one too,
    # and the new NOT NULL columns hold the filled value and the default.
    assert q(fresh_db, "SELECT count(*) FROM users WHERE contact_email = name || '@x'") == [(50,)]
    assert q(fresh_db, "SELECT sum(score) FROM users") == [(1275,)]
    assert q(fresh_db, "SELECT count(*) FROM users WHERE phone = '+1-' || id") == [(50,)]
    assert q(fresh_db, "SELECT DISTINCT status FROM users") == [("active",)]
    # Alembic does not compare CHECK constraints: the one on the new column is looked up.
    assert q(
        fresh_db, "SELECT convalidated FROM pg_constraint WHERE conname = 'users_age_check'"
    ) == [(True,)]


def test_without_rename_the_drop_and_add_say_they_lose_data(work: Path, fresh_db: str) -> None:
    v1 = _import(work, _module(work, V1))
    engine = make_engine(fresh_db)
    v1.metadata.create_all(engine)
    engine.dispose()
    v2_name = _module(work, V2)
    result = CliRunner().invoke(
        app,
        [
            "plan", "new", "r-v2",
            "--from-models", f"{v2_name}:Base",
            "--database-url", fresh_db,
            "--plans-dir", str(work / "plans"),
        ],
    )  # fmt: skip
    # phone is NOT NULL with no default and no --fill: a placeholder, exit 1.
    assert result.exit_code == ExitCode.FINDINGS, result.output
    path = work / "plans" / "r-v2.yaml"
    lines = path.read_text().splitlines()
    placeholder = next(i for i, line in enumerate(lines) if "!fill" in line)
    column = lines[placeholder].index("!fill") + 1
    assert f"{path}:{placeholder + 1}:{column}: write an SQL expression" in result.output
    assert "--fill users.phone=EXPR" in result.output
    text = "\n".join(lines)
    assert "rename_column" not in text
    # The comment right above each half of the pair names the loss and the flag.
    for op, key in (
        ("add_column", "        name: contact_email"),
        ("drop_column", "      column: email"),
    ):
        at = lines.index(key)
        start = next(i for i in range(at, 0, -1) if lines[i].startswith(f"  - {op}:"))
        comment = []
        for line in reversed(lines[:start]):
            if not line.startswith("  #"):
                break
            comment.insert(0, line.removeprefix("  # "))
        said = " ".join(comment)
        assert "LOSES DATA" in said and said.endswith("--rename users.email=contact_email"), said
    assert "LOSES DATA" in text
    with pytest.raises(PlanError) as refused:
        load_plan(path)
    assert refused.value.location == f"{path}:{placeholder + 1}:{column}"
    assert "write an SQL expression over the row of users" in str(refused.value)
    validated = CliRunner().invoke(app, ["plan", "validate", str(path)])
    assert validated.exit_code == ExitCode.BAD_INPUT
    assert f"{path}:{placeholder + 1}:{column}" in validated.output


def test_schema_before_comes_from_the_plan_chain(work: Path, pg_server: Any) -> None:
    """Without --database-url the schema before is built from the plans in the folder,
    as `migrator check` builds it (a baseline, then each earlier plan)."""
    plans = work / "plans"
    plans.mkdir()
    (plans / "schema.sql").write_text(
        "CREATE TABLE users (id serial PRIMARY KEY, name varchar(40) NOT NULL,"
        " email varchar(80), score integer, legacy text);\n"
    )
    (plans / "r1.yaml").write_text(
        "release: r1\nbaseline: schema.sql\nexpand:\n"
        "  - add_column: {table: users, column: {name: nickname, type: text}}\n"
    )
    name = _module(work, V2)
    result = CliRunner().invoke(
        app,
        [
            "plan", "new", "r2",
            "--from-models", f"{name}:Base",
            "--scratch-url", pg_server.admin_url,
            "--plans-dir", str(plans),
            "--fill", "users.phone=''",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = (plans / "r2.yaml").read_text()
    assert "after: r1\n" in text
    # nickname came with r1: only its index is new.
    assert "name: nickname" not in text and "ix_users_nickname" in text
    assert "with baseline schema.sql + r1." in " ".join(
        line.removeprefix("# ") for line in text.splitlines()
    )


@pytest.mark.parametrize(
    ("target", "source", "message"),
    [
        ("{m}:Base", "raise RuntimeError('no config here')\n", "does not import: RuntimeError: no config here"),
        ("{m}:Base", "import not_a_module_anywhere\n", "No module named 'not_a_module_anywhere'"),
        ("{m}:thing", "thing = 42\n", "thing is a int, not a SQLAlchemy MetaData or a declarative base"),
        ("{m}:nope", "x = 1\n", "has no attribute nope"),
        ("{m}", "x = 1\n", "expected MODULE:ATTR"),
    ],
)  # fmt: skip
def test_bad_models_are_one_line_and_exit_2(
    work: Path, fresh_db: str, target: str, source: str, message: str
) -> None:
    name = _module(work, source)
    result = CliRunner().invoke(
        app,
        [
            "plan", "new", "r",
            "--from-models", target.format(m=name),
            "--database-url", fresh_db,
            "--plans-dir", str(work / "plans"),
        ],
    )  # fmt: skip
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (work / "plans").exists()


def test_round_trip_on_postgresql_15(work: Path, pg15_server: Any) -> None:
    """The same round trip on Debian's PostgreSQL 15 (skipped where it is absent), phase
    by phase without `check` (check's copy of a 15 schema is tested in test_check.py)."""
    url = pg15_server.create_database("a15")
    try:
        assert q(url, "SHOW server_version_num")[0][0].startswith("15")
        test_round_trip_v1_to_v2(work, url, None)
    finally:
        pg15_server.drop_database(url)


def test_a_type_without_casts_is_a_placeholder_for_up_and_down(work: Path, fresh_db: str) -> None:
    q(fresh_db, "CREATE TABLE events (id serial PRIMARY KEY, done boolean, at date)")
    name = _module(
        work,
        """
        import sqlalchemy as sa
        metadata = sa.MetaData()
        sa.Table(
            "events", metadata,
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("done", sa.Date),     # boolean -> date: no cast either way
            sa.Column("at", sa.Text),       # date -> text: casts both ways
        )
        """,
    )
    result = CliRunner().invoke(
        app,
        [
            "plan", "new", "r",
            "--from-models", f"{name}:metadata",
            "--database-url", fresh_db,
            "--plans-dir", str(work / "plans"),
        ],
    )  # fmt: skip
    assert result.exit_code == ExitCode.FINDINGS, result.output
    text = (work / "plans" / "r.yaml").read_text()
    assert "up: at::text" in text and "down: at::date" in text
    assert "PostgreSQL has no cast from boolean to date" in result.output
    assert "PostgreSQL has no cast from date to boolean" in result.output
    assert text.count("!fill") == 2
    # Nothing was changed in the database: the comparison only reads it.
    assert q(
        fresh_db,
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'events' "
        "ORDER BY ordinal_position",
    ) == [("integer",), ("boolean",), ("date",)]
