"""Names with quotes, spaces, dollar signs and non-ASCII characters in a plan (the
release, tables, columns, an index, a constraint) go through a whole release by the CLI:
check, expand, rollback (to an identical catalog), expand again, backfill, switch,
complete, contract, status. Every object ends up named as written, and nothing a name
holds is ever run as SQL (a canary table would be dropped)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import yaml
from psycopg import sql

from tests.support.catalog_snapshot import diff, schema_dump
from tests.support.switch_env import command_section
from tests.test_backfill_secrets import run as run_cli

RELEASE = "rel \"ä\" 'x'; DROP TABLE canary; --"
TABLE = 'Kunden "Ü" Liste'
# Long enough (in bytes, not characters) that migrator's trigger and function names
# made from it are cut to PostgreSQL's 63 bytes.
OLD = "Télé'phone $migrator$ ünïcödé ÿ ß ø æ å ĳ ŀ ñ"
NEW = 'neue "Nr" $$; DROP TABLE canary; --'
EXTRA = "naïve col"
GONE = 'obsolète "wert"'
INDEX = 'idx "ü" \' ; x'
CHECK = 'chk "ü"'
ROWS = 500


def _q(*parts: str) -> str:
    return sql.Identifier(*parts).as_string()


def plan(lb: Path) -> dict[str, object]:
    return {
        "release": RELEASE,
        "versions": {
            "old": {"name": "v1", "queries": "q1"},
            "new": {"name": "v2", "queries": "q2"},
        },
        "expand": [
            {"rename_column": {"table": TABLE, "from": OLD, "to": NEW}},
            {
                "add_column": {
                    "table": TABLE,
                    "column": {"name": EXTRA, "type": "text"},
                    "up": f"upper({_q(OLD)})",
                }
            },
            {"alter_column": {"table": TABLE, "column": "n", "type": "bigint"}},
            {"create_index": {"table": TABLE, "name": INDEX, "columns": [EXTRA]}},
            {"add_check": {"table": TABLE, "name": CHECK, "expression": f"{_q('n')} >= 0"}},
        ],
        "backfill": {"batch_size": 100},
        "switch": command_section(lb),
        "contract": {
            "not_before": "0s",
            "operations": [{"drop_column": {"table": TABLE, "column": GONE}}],
        },
    }


def cli(*args: str, url: str, cwd: Path) -> tuple[int, str]:
    return run_cli(*args, "--database-url", url, cwd=cwd)


def q(url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params or None)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def test_a_release_of_awkward_names_runs_end_to_end(fresh_db: str, tmp_path: Path) -> None:
    t = _q(TABLE)
    q(fresh_db, "CREATE TABLE canary (id int)")
    q(
        fresh_db,
        f"CREATE TABLE {t} (id bigint PRIMARY KEY, {_q(OLD)} text, n integer NOT NULL, {_q(GONE)} int);"
        f"INSERT INTO {t} SELECT g, 'tel ' || g || ' é''\"', g FROM generate_series(1, {ROWS}) g",
    )
    for version, column in (("q1", OLD), ("q2", NEW)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "app.sql").write_text(
            f"SELECT id, {_q(column)} FROM {t} WHERE id = $1;\n"
            f"UPDATE {t} SET {_q(column)} = $2 WHERE id = $1;\n"
        )
    lb = tmp_path / "lb"
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan(lb), allow_unicode=True))
    before = schema_dump(fresh_db)
    said: dict[str, str] = {}

    def run(*args: str, want: int = 0) -> str:
        code, output = cli(*args, url=fresh_db, cwd=tmp_path)
        assert code == want, (args, output)
        said[" ".join(args)] = output
        return output

    run("init")
    run("check", "plan.yaml")
    run("expand", "plan.yaml")
    run("rollback", "plan.yaml")
    after = schema_dump(fresh_db)
    assert after == before, diff(before, after)
    run("expand", "plan.yaml")
    # Both versions write through their own name while the release is in flight.
    q(fresh_db, f"UPDATE {t} SET {_q(OLD)} = 'old wrote' WHERE id = 1")
    q(fresh_db, f"UPDATE {t} SET {_q(NEW)} = 'new wrote' WHERE id = 2")
    assert q(fresh_db, f"SELECT {_q(OLD)}, {_q(NEW)} FROM {t} WHERE id IN (1, 2) ORDER BY id") == [
        ("old wrote", "old wrote"),
        ("new wrote", "new wrote"),
    ]
    status = json.loads(run("status", "--json"))
    assert status["releases"][0]["name"] == RELEASE, status
    run("backfill", "plan.yaml")
    run("switch", "plan.yaml")
    run("complete", "plan.yaml")
    run("contract")
    shown = run("status")
    assert "ä" in shown and "Traceback" not in shown

    assert q(fresh_db, "SELECT to_regclass('canary') IS NOT NULL") == [(True,)]
    columns = q(
        fresh_db,
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        t,
    )
    assert [c[0] for c in columns] == ["id", NEW, EXTRA, "n"], columns
    assert q(fresh_db, f"SELECT count(*) FROM {t} WHERE {_q(EXTRA)} = upper({_q(NEW)})") == [
        (ROWS,)
    ]
    assert q(
        fresh_db,
        f"SELECT count(*) FROM {t} WHERE {_q(NEW)} = 'tel ' || id || ' é''\"' AND id > 2",
    ) == [(ROWS - 2,)]
    assert q(fresh_db, "SELECT relname FROM pg_class WHERE relname = %s", INDEX) == [(INDEX,)]
    assert q(
        fresh_db, "SELECT conname, convalidated FROM pg_constraint WHERE conname = %s", CHECK
    ) == [(CHECK, True)]
    # Nothing migrator made for the transition is left.
    assert q(
        fresh_db,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
        t,
    ) == [(0,)]
    assert q(
        fresh_db,
        "SELECT count(*) FROM pg_proc WHERE pronamespace = 'migrator'::regnamespace "
        "AND proname <> 'release_phase'",
    ) == [(0,)]
    assert all("Traceback" not in output for output in said.values())
