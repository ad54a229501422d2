"""`database.schema`: a plan for tables outside `public`, whose names it writes bare (a type
in a column spec, a cast in an `up`) as an application with that search_path would."""

from __future__ import annotations

import pytest

from migrator import commands
from migrator.plan.loader import parse_plan
from tests.test_backfill import opts, q

PLAN = """
release: r-schema
database: {{schema: {schema}}}
expand:
  - create_enum: {{name: mood, values: [ok, sad]}}
  - add_column:
      table: users
      column: {{name: mood, type: mood}}
      up: "CASE WHEN name = 'x' THEN 'ok'::mood ELSE 'sad'::mood END"
  - create_index: {{table: users, name: users_mood_idx, columns: [mood]}}
  - add_foreign_key:
      table: orders
      name: orders_user_fk
      columns: [user_id]
      references: {{table: users, columns: [id]}}
"""


@pytest.mark.parametrize("schema", ["public", "app"])
def test_a_whole_release_in_the_plans_schema(fresh_db: str, schema: str) -> None:
    q(
        fresh_db,
        f"CREATE SCHEMA IF NOT EXISTS {schema};"
        f"CREATE TABLE {schema}.users (id int PRIMARY KEY, name text);"
        f"INSERT INTO {schema}.users SELECT g, CASE WHEN g % 4 = 0 THEN 'x' END "
        "FROM generate_series(1, 100) g;"
        f"CREATE TABLE {schema}.orders (id int PRIMARY KEY, user_id int);"
        f"INSERT INTO {schema}.orders SELECT g, g FROM generate_series(1, 10) g",
    )
    plan = parse_plan(PLAN.format(schema=schema), "plans/r-schema.yaml")
    commands.expand(plan, opts(fresh_db))
    # The old version, whose sessions have the default search_path, inserts a row: the
    # sync trigger fills it with the plan's schema's type.
    q(fresh_db, f"INSERT INTO {schema}.users (id, name) VALUES (101, 'x'), (102, 'y')")
    commands.backfill(plan, opts(fresh_db))
    forced = opts(fresh_db)
    forced.force, forced.force_reason = True, "the test plays v1's retirement"
    commands.complete(plan, forced)
    commands.contract(forced, plan.release)
    assert q(
        fresh_db, f"SELECT mood::text, count(*) FROM {schema}.users GROUP BY 1 ORDER BY 1"
    ) == [("ok", 26), ("sad", 76)]
    assert q(
        fresh_db,
        "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "WHERE t.typname = 'mood'",
    ) == [(schema,)]
    assert q(
        fresh_db,
        "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_user_fk'",
    ) == [(True,)]


def test_rendered_revisions_put_the_plans_schema_first_too() -> None:
    from migrator.engine.steps import step
    from migrator.render.revisions import RenderedPhase, render_revision

    steps = [("0.sql.expand", step("expand", "x", "ALTER TABLE users ADD COLUMN m mood"))]
    for schema, expected in (("app", 2), ("public", 0)):
        text = render_revision(
            RenderedPhase("r", "expand", "abc", None, steps, downgrade=steps, schema=schema)
        )
        # upgrade and downgrade each put it first, as migrator's own runs do
        assert text.count("set_config('search_path', 'app' || ', ' ||") == expected, text
