"""No password in any output: one sentinel password goes through every command of a
release (CLI subprocesses, in URL, query-string and libpq keyword form, with --json and
--debug, and in URLs that do not parse), and is then searched for in everything they
wrote and in every text and jsonb column of the state schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql

from tests.test_backfill import plan_text, q

SENTINEL = "Zq9sentinelPw"
SEED = """
CREATE TABLE users (id bigint PRIMARY KEY, legacy_phone text);
INSERT INTO users SELECT g, 'p' || g FROM generate_series(1, 3000) g;
"""


def forms(url: str) -> dict[str, str]:
    """The test database's URL with the sentinel password, three ways."""
    info = psycopg.conninfo.conninfo_to_dict(url)
    assert url.startswith("postgresql://postgres@"), url
    keywords = " ".join(f"{k}={v}" for k, v in info.items()) + f" password={SENTINEL}"
    return {
        "userinfo": url.replace("postgres@", f"postgres:{SENTINEL}@", 1),
        "query": url + ("&" if "?" in url else "?") + f"password={SENTINEL}",
        "keywords": keywords,
    }


def run(*args: str, cwd: Path) -> tuple[int, str]:
    """A CLI run; its exit code and everything it wrote."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    env["COLUMNS"] = "200"
    done = subprocess.run(
        [sys.executable, "-m", "migrator", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env=env,
    )
    return done.returncode, done.stdout + done.stderr


def state_columns_holding(url: str, needle: str) -> list[str]:
    """Every text, varchar and jsonb column of every table in ``migrator`` holding it."""
    found = []
    with psycopg.connect(url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'migrator' AND data_type IN "
            "('text', 'character varying', 'jsonb', 'json', 'ARRAY', 'USER-DEFINED')"
        ).fetchall()
        assert len(columns) > 10, columns
        for table, column in columns:
            query = sql.SQL("SELECT count(*) FROM migrator.{} WHERE {}::text LIKE %s").format(
                sql.Identifier(table), sql.Identifier(column)
            )
            if conn.execute(query, (f"%{needle}%",)).fetchone()[0]:  # type: ignore[index]
                found.append(f"migrator.{table}.{column}")
    return found


def test_no_command_writes_the_password_anywhere(fresh_db: str, tmp_path: Path) -> None:
    q(fresh_db, SEED)
    plan = tmp_path / "plan.yaml"
    plan.write_text(plan_text(batch="500"))
    url = forms(fresh_db)
    runs: list[tuple[str, int, str]] = []

    def cli(*args: str) -> int:
        code, output = run(*args, cwd=tmp_path)
        runs.append((" ".join(args), code, output))
        return code

    # A whole release, the URL spelled three ways.
    assert cli("init", "--database-url", url["userinfo"]) == 0, runs[-1]
    assert cli("expand", str(plan), "--database-url", url["query"]) == 0, runs[-1]
    assert cli("status", "--json", "--database-url", url["keywords"]) == 0, runs[-1]
    assert cli("backfill", str(plan), "--json", "--database-url", url["userinfo"]) == 0, runs[-1]
    assert cli("backfill", str(plan), "--database-url", url["keywords"]) == 0, runs[-1]
    # A forced step whose reason quotes the URL: the audit keeps the reason, not the password.
    reason = f"checked by hand on {url['userinfo']}"
    assert cli(
        "complete", str(plan), "--force", "--reason", reason, "--database-url", url["query"]
    ) in (0, 3), runs[-1]
    assert cli("status", "--database-url", url["userinfo"]) == 0, runs[-1]
    assert cli("status", "--json", "--database-url", url["query"]) == 0, runs[-1]
    cli("rollback", str(plan), "--json", "--database-url", url["userinfo"])
    # URLs that do not parse, and failures with tracebacks under --debug.
    assert cli("status", "--database-url", f"postgresql//postgres:{SENTINEL}@h/d") == 2
    assert cli("--debug", "status", "--database-url", f"postgres:/u:{SENTINEL}@h/d") == 2
    assert cli("--debug", "status", "--database-url", f"host=h password='{SENTINEL} x") == 2
    missing = url["userinfo"].replace("/f_", "/nosuchdb_", 1)
    assert cli("--debug", "expand", str(plan), "--database-url", missing) == 4, runs[-1]
    assert cli("--debug", "status", "--json", "--database-url", missing) == 4, runs[-1]
    wrong_port = f"host=127.0.0.1 port=1 dbname=d user=u password={SENTINEL}"
    assert cli("--debug", "backfill", str(plan), "--database-url", wrong_port) == 4, runs[-1]

    # The runs said something (the searches below look at real output) ...
    assert all(output.strip() for _, _, output in runs)
    assert "***" in "".join(output for _, _, output in runs)
    assert any("Traceback" in output for _, _, output in runs), "no --debug traceback was shown"
    # ... and never the password.
    leaks = [(args, output) for args, _, output in runs if SENTINEL in output]
    assert not leaks, leaks
    assert state_columns_holding(fresh_db, SENTINEL) == []
    # The reason itself was recorded (scrubbed), so the search above looked at it.
    assert state_columns_holding(fresh_db, "checked by hand on") == ["migrator.events.details"]


def test_every_spelling_of_a_password_is_redacted() -> None:
    """The redaction itself, for each form a user may type (no server needed)."""
    from migrator.db.connection import normalise_url, redact, scrub_secrets
    from migrator.errors import UsageError

    cases = {
        "postgresql//u:pw1-secret@h/d": "postgresql//u:***@h/d",
        "postgresql://u:pw2-secret@h/d?sslmode=require": "postgresql://u:***@h/d?sslmode=require",
        "postgresql://u@h/d?password=pw3-secret": "postgresql://u@h/d?password=***",
        "host=h password=pw4-secret dbname=d": "host=h password=*** dbname=d",
        "host=h password='pw5 secret' dbname=d": "host=h password=*** dbname=d",
        "postgresql://u:pw6%40secret@h/d": "postgresql://u:***@h/d",
    }
    for given, shown in cases.items():
        assert redact(given) == shown, given
    try:
        normalise_url("postgresql//u:pw7-secret@h/d")
    except UsageError as exc:
        assert "pw7-secret" not in str(exc) and "u:***@h/d" in str(exc)
    else:
        raise AssertionError("an unparseable URL was accepted")
    # The keyword form is a valid way to name a database; its password is kept.
    keywords = normalise_url("host=db.example port=5433 dbname=app user=u password=pw8-secret")
    assert (keywords.host, keywords.port, keywords.database) == ("db.example", 5433, "app")
    assert keywords.password == "pw8-secret"
    # Every password met so far is gone from any later message, however it is escaped.
    said = "pw1-secret 'pw5 secret' pw6@secret pw6%40secret \"pw8-secret\" pw3-secret"
    assert scrub_secrets(said) == '*** *** *** *** "***" ***'  # the quoted form masked whole


def test_a_short_password_is_masked_where_it_stands_as_one() -> None:
    """A password of one to three characters is masked in a URL's userinfo and as a
    password key's value; elsewhere the text stays as it is (masking every "a" would
    make the output unreadable and spell the password out all the same)."""
    from migrator.db.secrets import BARE_MIN, remember_secrets, scrub_secrets

    assert BARE_MIN == 4
    remember_secrets("postgresql://u:a@h/d")
    remember_secrets("host=h password=Q7 dbname=d")
    remember_secrets("postgresql://u@h/d?password=%40")  # "@", escaped
    said = (
        "a banana at postgresql://u:a@h/d, x:a, host=h password=Q7 dbname=d; "
        '{"password": "a", "url": "postgresql://u@h/d?password=%40&sslmode=disable"} '
        "password='Q7' PASSWORD: a Q7Q7 @ %40"
    )
    assert scrub_secrets(said) == (
        "a banana at postgresql://u:***@h/d, x:a, host=h password=*** dbname=d; "
        '{"password": "***", "url": "postgresql://u@h/d?password=***&sslmode=disable"} '
        "password='***' PASSWORD: *** Q7Q7 @ %40"
    )
    # Four characters and more: masked wherever they stand, as before.
    remember_secrets("postgresql://u:Zk4x@h/d")
    assert scrub_secrets("Zk4x, postgresql://u:Zk4x@h/d") == "***, postgresql://u:***@h/d"


def test_a_one_character_password_through_the_cli(tmp_path: Path) -> None:
    """The CLI's output of a URL that does not parse, password "a": masked in the URL,
    every other "a" of the message kept."""
    code, output = run("status", "--database-url", "postgresql//u:a@h/d", cwd=tmp_path)
    assert code == 2, output
    assert "postgresql//u:***@h/d" in output and "u:a@" not in output, output
    assert "not a database URL" in output, output
    assert "expected postgresql://USER@HOST:PORT/DBNAME" in output, output


def test_a_dropped_connection_is_told_in_one_whole_line() -> None:
    """A client-side error has no server message; its text is several lines, of which
    the last alone read "database error:  before or while processing the request."."""
    import psycopg

    from migrator.db.connection import describe_db_error

    lost = psycopg.OperationalError(
        "server closed the connection unexpectedly\n"
        "\tThis probably means the server terminated abnormally\n"
        "\tbefore or while processing the request."
    )
    line = describe_db_error(lost)
    assert line.startswith("server closed the connection unexpectedly This probably"), line
    assert "\n" not in line
