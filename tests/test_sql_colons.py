"""Plan SQL with a colon before a word (a JSON literal, a time of day written with a space)
reaches PostgreSQL as written: it is never read as a bind parameter by the driver layer."""

from __future__ import annotations

import psycopg

from migrator import commands
from migrator.observer import Observer
from migrator.plan.loader import parse_plan

PLAN = """
release: 2026-12-colons
expand:
  - add_column:
      table: events
      column: {name: meta, type: jsonb}
      up: "jsonb_build_object('legacy', legacy) || '{\\"k\\":2}'::jsonb"
      final: {nullable: false, check: "meta <> '{\\"bad\\":3}'::jsonb"}
  - add_column:
      table: events
      column: {name: tags, type: jsonb, default: "'{\\"source\\":1}'::jsonb", nullable: false}
backfill: {batch_size: 100}
"""


def q(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description else []


def test_json_literals_in_up_default_and_check(fresh_db: str) -> None:
    q(
        fresh_db,
        "CREATE TABLE events (id bigint PRIMARY KEY, legacy text);"
        "INSERT INTO events SELECT g, 'l' || g FROM generate_series(1, 10) g",
    )
    plan = parse_plan(PLAN)
    options = commands.Options(database_url=fresh_db, observer=Observer())
    commands.expand(plan, options)
    commands.backfill(plan, options)
    assert q(fresh_db, "SELECT meta FROM events WHERE id = 1") == [({"legacy": "l1", "k": 2},)]
    q(fresh_db, "INSERT INTO events (id, legacy) VALUES (11, 'x')")
    assert q(fresh_db, "SELECT meta ->> 'k', tags FROM events WHERE id = 11") == [
        ("2", {"source": 1})
    ]
