"""Least privilege: a whole release as the role that owns the application's tables, not a
superuser, with exactly the grants of docs/privileges.md; a role lacking one of them gets
one line naming it and exit code 4."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from migrator.db.connection import privilege_needed
from migrator.db.embedded import EmbeddedPostgres, memory_folder, start

DOCS = Path(__file__).resolve().parents[1] / "docs" / "privileges.md"
PLAN1 = """
release: r1
versions:
  old: {{name: v1, queries: q1}}
  new: {{name: v2, queries: q2}}
expand:
  - add_column:
      table: users
      column: {{name: phone, type: text}}
      up: "coalesce(legacy_phone, '')"
  - create_index: {{table: users, name: users_phone_idx, columns: [phone]}}
switch:
  command:
    to_green: "echo {{percent}} > {lb}"
    to_blue: "echo 0 > {lb}"
    status: "cat {lb}"
  watch: {{duration: 0, interval: 1}}
contract:
  not_before: 0s
  operations:
    - drop_column: {{table: users, column: legacy_phone}}
"""
PLAN2 = """
release: r2
after: r1
expand:
  - add_column: {table: users, column: {name: email, type: text}}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[EmbeddedPostgres]:
    """A server of its own with pg_stat_statements preloaded, for the contract's condition."""
    pg = start(
        temp_root=memory_folder(),  # in memory: see tests/support/servers.py
        settings={"shared_preload_libraries": "pg_stat_statements"},
    )
    yield pg
    pg.stop()


def documented_grants(database: str, role: str) -> list[str]:
    """The statements of the sql block in docs/privileges.md, for this database and role."""
    block = re.search(r"```sql\n(.*?)```", DOCS.read_text(), re.S)
    assert block, "docs/privileges.md has no sql block"
    text = "\n".join(line for line in block.group(1).splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in text.split(";") if s.strip()]
    assert len(statements) >= 4
    return [s.replace("appdb", database).replace("app_owner", role) for s in statements]


def as_role(url: str, role: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["user"] = role
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def cli(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "migrator", *args, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def _database_with(server: EmbeddedPostgres, role: str, grants: list[str]) -> str:
    """A new database, ``grants`` given to a new login role (not a superuser) that then
    creates and fills the application's table there."""
    name = f"priv_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    admin = server.url_for(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        for statement in grants:
            conn.execute(statement.replace("{database}", name))  # type: ignore[arg-type]
    url = as_role(admin, role)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert row.fetchone() == (False,)
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, legacy_phone text)")
        conn.execute("INSERT INTO users SELECT g, 'p' || g FROM generate_series(1, 3000) g")
    return url


def test_a_whole_release_runs_as_the_tables_owner_with_the_documented_grants(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    role = f"app_owner_{uuid.uuid4().hex[:6]}"
    url = _database_with(server, role, documented_grants("{database}", role))
    (tmp_path / "q1").mkdir()
    (tmp_path / "q2").mkdir()
    (tmp_path / "q1" / "users.sql").write_text(
        "SELECT id, legacy_phone FROM users WHERE id = $1;\n"
    )
    (tmp_path / "q2" / "users.sql").write_text("SELECT id, phone FROM users WHERE id = $1;\n")
    lb = tmp_path / "lb"
    lb.write_text("0\n")
    (tmp_path / "plan1.yaml").write_text(PLAN1.format(lb=lb))
    (tmp_path / "plan2.yaml").write_text(PLAN2)
    said = {}
    for args in (
        ("init",),
        ("check", "plan1.yaml"),
        ("expand", "plan1.yaml"),
        ("switch", "plan1.yaml"),
        ("backfill", "plan1.yaml"),
        ("complete", "plan1.yaml"),
        ("contract",),
        ("expand", "plan2.yaml"),
        ("rollback", "plan2.yaml"),
    ):
        done = cli(*args, url=url, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        said[" ".join(args)] = done.stdout + done.stderr
    # The pg_stat_statements condition really looked (pg_read_all_stats), and the index
    # was built concurrently by the table's owner.
    assert "doomed-objects-unused: ok: no statement since completion uses" in said["contract"]
    assert "CREATE INDEX CONCURRENTLY users_phone_idx" in said["expand plan1.yaml"]
    with psycopg.connect(url) as conn:
        columns = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'users' "
                "ORDER BY ordinal_position"
            ).fetchall()
        ]
        assert columns == ["id", "phone"]
        assert conn.execute("SELECT count(*) FROM users WHERE phone = 'p' || id").fetchone() == (
            3000,
        )
        others = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'migrator' AND c.relowner <> (SELECT oid FROM pg_roles "
            "WHERE rolname = current_user)"
        ).fetchone()
        assert others == (0,)


def test_a_role_without_one_grant_gets_one_line_naming_it(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """All the documented grants but CREATE ON DATABASE: init says so, and changes nothing."""
    role = f"app_owner_{uuid.uuid4().hex[:6]}"
    grants = [g for g in documented_grants("{database}", role) if "ON DATABASE" not in g]
    url = _database_with(server, role, grants)
    done = cli("init", url=url, cwd=tmp_path)
    assert done.returncode == 4, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.fullmatch(
        r"error: database error: permission denied for database priv_\w+ \[42501\]: "
        r"the role needs CREATE ON DATABASE priv_\w+ \(see docs/privileges.md\)",
        lines[0],
    ), lines[0]
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regnamespace('migrator')").fetchone() == (None,)


def test_the_privilege_is_named_from_the_statement() -> None:
    denied = "permission denied for table users"
    assert privilege_needed(denied, None, "LOCK TABLE ONLY users IN ACCESS EXCLUSIVE MODE") == (
        "UPDATE (or DELETE, TRUNCATE) ON TABLE users"
    )
    assert privilege_needed(denied, None, "LOCK TABLE users IN ACCESS SHARE MODE") == (
        "SELECT ON TABLE users"
    )
    assert privilege_needed("permission denied for schema app", None, "CREATE TABLE x ()") == (
        "CREATE ON SCHEMA app"
    )
    assert privilege_needed("permission denied for schema app", None, "SELECT 1") == (
        "USAGE ON SCHEMA app"
    )
    assert privilege_needed("permission denied for table users", None, "UPDATE users") == (
        "UPDATE ON TABLE users"
    )
    assert privilege_needed("must be owner of table users", None, "ALTER TABLE users") == (
        "ownership of table users"
    )
    assert privilege_needed("permission denied for database d", None, "CREATE SCHEMA m") == (
        "CREATE ON DATABASE d"
    )
    assert privilege_needed("something else", None, "SELECT 1") is None


PLAN3 = """
release: r3
expand:
  - add_column:
      table: users
      column: {name: phone, type: text}
      up: "coalesce(legacy_phone, '')"
  - alter_column: {table: users, column: legacy_phone, type: varchar(40)}
"""


def test_only_release_phase_is_callable_by_other_roles(
    server: EmbeddedPostgres, tmp_path: Path
) -> None:
    """The schema `migrator` is usable by PUBLIC for release_phase(); the functions an
    expand puts there (sync triggers, the saved column) and one an earlier migrator left
    with PostgreSQL's default PUBLIC EXECUTE are not callable by another role."""
    role = f"app_owner_{uuid.uuid4().hex[:6]}"
    url = _database_with(server, role, documented_grants("{database}", role))
    assert cli("init", url=url, cwd=tmp_path).returncode == 0
    with psycopg.connect(url, autocommit=True) as conn:  # as an earlier migrator made it
        conn.execute("CREATE FUNCTION migrator.left_over() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    (tmp_path / "plan3.yaml").write_text(PLAN3)
    done = cli("expand", "plan3.yaml", url=url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert cli("init", url=url, cwd=tmp_path).returncode == 0
    reader = f"app_reader_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(reader)))
    with psycopg.connect(url, autocommit=True) as conn:
        functions = [
            r[0]
            for r in conn.execute(
                "SELECT p.oid::regprocedure::text FROM pg_proc p "
                "WHERE p.pronamespace = 'migrator'::regnamespace ORDER BY 1"
            ).fetchall()
        ]
    # release_phase, left_over, the sync trigger's, the retype's and the saved column's.
    assert len(functions) == 5 and "migrator.release_phase(text)" in functions, functions
    with psycopg.connect(as_role(url, reader), autocommit=True) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert conn.execute("SELECT * FROM migrator.release_phase('r3')").fetchall() == [
            ("expanded", False)
        ]
        for function in functions:
            if function == "migrator.release_phase(text)":
                continue
            assert conn.execute(
                "SELECT has_function_privilege(%s, 'EXECUTE')", (function,)
            ).fetchone() == (False,), function
        for function in ("migrator.left_over()", next(f for f in functions if "before" in f)):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SELECT {}").format(sql.SQL(function)))  # type: ignore[arg-type]
