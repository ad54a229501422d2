"""docs/tutorial.md as a newcomer follows it: its files written out, its schema loaded,
then each `migrator` command of its shell blocks run in order (all but `migrator db`,
whose server the practice folder would hold), each exiting 0, and the schema at the end
what the page says. The mistake it shows is the message the plan loader gives."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from migrator.cli import app
from migrator.errors import PlanError
from migrator.plan.loader import parse_plan
from tests.support.servers import Server

PAGE = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
# A block whose first line names a file (`-- schema.sql`, `# plans/x.yaml`) is that file.
NAMED = re.compile(r"(?:--|#) ((?:plans|queries)/[\w./-]+|[\w-]+\.sql)$")


def blocks() -> list[tuple[str, str]]:
    return FENCE.findall(PAGE.read_text())


def files() -> dict[str, str]:
    found: dict[str, str] = {}
    for _, code in blocks():
        match = NAMED.fullmatch(code.splitlines()[0])
        if match:
            found[match.group(1)] = code
    return found


def commands() -> list[list[str]]:
    """The page's `migrator ...` lines of its sh blocks, in order, without comments."""
    found: list[list[str]] = []
    for info, code in blocks():
        if info != "sh":
            continue
        for line in code.splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["migrator"] and words[1:2] != ["db"]:
                found.append(words[1:])
    return found


def test_the_page_has_what_the_test_runs() -> None:
    assert set(files()) == {
        "schema.sql",
        "plans/2027-01-shop.yaml",
        "plans/2027-02-nick.yaml",
        "queries/v1.sql",
        "queries/v2.sql",
    }
    verbs = [words[0] for words in commands()]
    assert verbs == [
        *["plan", "check", "expand", "expand", "backfill", "complete", "contract", "status"],
        *["expand", "rollback"],
    ], verbs


def test_the_tutorial_runs_as_written(
    fresh_db: str, pg_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, text in files().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute((tmp_path / "schema.sql").read_text())  # type: ignore[arg-type]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MIGRATOR_DATABASE_URL", fresh_db)
    monkeypatch.setenv("MIGRATOR_SCRATCH_URL", pg_server.admin_url)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    for words in commands():
        result = runner.invoke(app, words)
        assert result.exit_code == 0, (words, result.output)
        if words[0] == "check":
            # what the page says check ends with
            assert "✓ check passed: 0 errors, 1 warnings, 4 informational" in result.output
    with psycopg.connect(fresh_db) as conn:
        columns = dict(
            conn.execute(  # type: ignore[arg-type]
                "SELECT table_name || '.' || column_name, data_type || ' ' || is_nullable"
                " FROM information_schema.columns WHERE table_schema = 'public'"
            ).fetchall()
        )
        assert columns == {
            "customers.id": "bigint NO",
            "customers.name": "text NO",
            "customers.email": "text YES",
            "customers.phone": "text YES",
            "customers.score": "integer YES",
            "orders.id": "bigint NO",
            "orders.customer_id": "bigint YES",
            "orders.amount_cents": "integer NO",
            "orders.status": "text NO",
        }
        assert conn.execute(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_customer_fk'"
        ).fetchone() == (True,)


def test_the_mistake_shown_is_the_message_given() -> None:
    shown = next(code for info, code in blocks() if info == "text")
    text = files()["plans/2027-01-shop.yaml"].replace("table: customers", "tabel: customers", 1)
    with pytest.raises(PlanError) as caught:
        parse_plan(text, "plans/2027-01-shop.yaml")
    assert f"error: {caught.value}\n" in shown
