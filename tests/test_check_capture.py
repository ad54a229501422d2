"""`migrator queries capture`: query sets from pg_stat_statements, both ways in."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from migrator.cli import app
from migrator.verify.capture import start_with_pg_stat_statements
from migrator.verify.queries import load_query_set
from tests.support.servers import Server

APP = """
import os, psycopg
with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
    conn.execute("CREATE TABLE account (id int PRIMARY KEY, email text, plan text)")
    for i in range(3):
        conn.execute("INSERT INTO account (id, email) VALUES (%s, %s)", (i, f"u{i}@x"))
    conn.execute("SELECT id, email FROM account WHERE email = %s", ("u1@x",))
    conn.execute("UPDATE account SET plan = 'pro' WHERE id = 2")
    conn.execute("SELECT count(*) FROM pg_catalog.pg_class")
"""


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_capture_a_command_against_a_fresh_embedded_server(tmp_path: Path) -> None:
    code, output = run(
        "queries", "capture", "--out", str(tmp_path / "v2"), "--", sys.executable, "-c", APP
    )
    assert code == 0, output
    text = (tmp_path / "v2" / "captured.sql").read_text()
    # normalised by pg_stat_statements: constants are $n
    assert "INSERT INTO account (id, email) VALUES ($1, $2)" in text
    assert "SELECT id, email FROM account WHERE email = $1" in text
    assert "UPDATE account SET plan = $1 WHERE id = $2" in text
    # DDL and catalog queries are not the application's queries
    assert "CREATE TABLE" not in text and "pg_class" not in text
    queries = load_query_set(tmp_path / "v2")
    assert len(queries) == 3 and all(q.error is None and q.preparable for q in queries)
    assert all(q.name.startswith("q") for q in queries)
    assert "3 statements written" in " ".join(output.split())


def test_a_failing_command_is_captured_and_exits_4(tmp_path: Path) -> None:
    failing = APP + "\nraise SystemExit(3)\n"
    code, output = run(
        "queries", "capture", "--out", str(tmp_path), "--", sys.executable, "-c", failing
    )
    assert code == 4
    assert "exited with status 3" in output
    assert "WHERE email = $1" in (tmp_path / "captured.sql").read_text()


@pytest.fixture(scope="module")
def stats_server() -> Iterator[str]:
    """A server with pg_stat_statements preloaded, standing in for production."""
    with tempfile.TemporaryDirectory(prefix="migrator-test-pss-") as folder:
        server = start_with_pg_stat_statements(Path(folder))
        try:
            url = server.create_database("prod")
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
                conn.execute("CREATE TABLE orders (id int, total numeric, status text)")
                conn.execute("SELECT pg_stat_statements_reset()")
                conn.execute("SELECT id, total FROM orders WHERE status = 'open' AND total > 10")
                conn.execute("DELETE FROM orders WHERE id = 7")
            yield url
        finally:
            server.stop()


def test_capture_from_a_live_database(tmp_path: Path, stats_server: str) -> None:
    code, output = run(
        "queries",
        "capture",
        "--database-url",
        stats_server,
        "--out",
        str(tmp_path),
        "--name",
        "v1.sql",
    )
    assert code == 0, output
    text = (tmp_path / "v1.sql").read_text()
    assert "SELECT id, total FROM orders WHERE status = $1 AND total > $2" in text
    assert "DELETE FROM orders WHERE id = $1" in text
    assert [q.error for q in load_query_set(tmp_path / "v1.sql")] == [None, None]


def test_capture_without_pg_stat_statements_is_a_usage_error(
    tmp_path: Path, pg_server: Server
) -> None:
    url = pg_server.create_database("nopss")
    try:
        code, output = run("queries", "capture", "--database-url", url, "--out", str(tmp_path))
        assert code == 2
        assert "pg_stat_statements is not installed" in output
    finally:
        pg_server.drop_database(url)


def test_capture_needs_a_source(tmp_path: Path) -> None:
    code, output = run("queries", "capture", "--out", str(tmp_path))
    assert code == 2 and "nothing to capture from" in output
