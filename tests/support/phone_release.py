"""The release the gate and contract-condition tests walk: v1 -> v2 adding users.phone,
filled from legacy_phone by a backfill, and legacy_phone dropped by the contract; v1 is
told apart by its application_name (api-v1)."""

from __future__ import annotations

from typing import Any

import psycopg

PLAN = """
release: r1
versions:
  old: {name: v1, application_name: api-v1}
  new: {name: v2, application_name: api-v2}
expand:
  - add_column:
      table: users
      column: {name: phone, type: text}
      up: "coalesce(legacy_phone, '')"
      final: {nullable: false}
contract:
  - drop_column: {table: users, column: legacy_phone}
"""

SEED = (
    "CREATE TABLE users (id int PRIMARY KEY, name text, legacy_phone text);"
    "INSERT INTO users SELECT g, 'u' || g, 'p' || g FROM generate_series(1, 20) g"
)


def plan() -> Any:
    """PLAN, parsed."""
    from migrator.plan.loader import parse_plan

    return parse_plan(PLAN)


def seed(url: str) -> None:
    """The users table as v1 left it, with 20 rows to backfill."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED)
